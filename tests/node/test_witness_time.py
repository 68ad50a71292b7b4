"""A certified take-back shows when the witnesses' clocks said it expired
(docs/witness.md §3.5): `history`, `balance` and `pending`, as JSON and as text, on a
real store, from the timed certificate the node keeps."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import T0, key
from troc.cli import render
from troc.node import steps
from troc.node.local import open_local_node
from troc.node.opdata import cid
from troc.protocol.entry import Entry, Join
from troc.protocol.vote import Certificate, TimeAttestation, Vote

P, Q = key(1), key(2)
WKEYS = [key(200 + i) for i in range(4)]


def test_a_certified_take_backs_time_shows_in_history_and_balance(tmp_path: Path) -> None:
    clock = [T0]
    with open_local_node(tmp_path, P, lambda: clock[0]) as node:
        c = node.create_community(
            "W", "h", 100, finality="witnessed", witnesses=tuple(k.public for k in WKEYS)
        )
        join = Entry.create(Q, community=c, seq=1, prev=None, timestamp_ms=T0, body=Join())
        assert node.ingest(join.wire).ok
        t = node.pay(c, Q.public, 5, expires_ms=T0 + 1_000)
        clock[0] = T0 + 5_000
        k = node.take_back(c, t.ref)
        times = [T0 + 4_000, T0 + 9_000, T0 + 4_500]  # witnesses 0, 1, 2
        cert = Certificate.from_votes(
            (Vote.sign(w, c, k.ref) for w in WKEYS[:3]),
            (TimeAttestation.sign(w, c, k.ref, ms) for w, ms in zip(WKEYS, times, strict=False)),
        )
        assert node.ingest_certificate(cert.encode()).ok

        history = steps.op_history(node, {"community": cid(c)}).result
        (row,) = [e for e in history["entries"] if e["kind"] == "take_back"]
        assert row["witnesses_time_ms"] == T0 + 4_500  # the lower median
        assert row["witnesses_time"] == (
            "taken back: the witnesses' clocks said 2023-11-14 22:13:24 UTC"
        )
        (paid,) = [e for e in history["entries"] if e["kind"] == "transfer"]
        assert "witnesses_time_ms" not in paid
        assert "taken back: the witnesses' clocks said" in render.history(tmp_path)(history)

        balance = steps.op_balance(node, {"community": cid(c)}).result
        assert [b["witnesses_time_ms"] for b in balance["taken_back_certified"]] == [T0 + 4_500]
        assert "the witnesses' clocks said 2023-11-14" in render.balance(tmp_path)(balance)

        pending = steps.op_pending(node, {"community": cid(c)}).result
        assert [p["witnesses_time_ms"] for p in pending["taken_back"]] == [T0 + 4_500]
        assert "the witnesses' clocks said 2023-11-14" in render.pending(tmp_path)(pending)
