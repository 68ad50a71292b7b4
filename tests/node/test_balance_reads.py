"""``balance`` reads a payer's pending outgoing transfers once: a payer with
many unanswered payments asks for its balance often (bench/finality.py polls
it). It reads their expiries, remembered by the store, and decodes only the
declined and expired ones. What it says is as before: declined ones, expired
ones, open ones apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import key
from troc.node import _store_queries, ops, store
from troc.node.local import open_local_node
from troc.protocol.entry import Entry, Kind


def test_balance_reads_the_pending_transfers_once_and_sorts_them(tmp_path: Path) -> None:
    now = [1_800_000_000_000]
    with (
        open_local_node(tmp_path / "ada", key(1), lambda: now[0]) as ada,
        open_local_node(tmp_path / "bruno", key(2), lambda: now[0]) as bruno,
    ):
        community = ada.create_community("Valley", "h", 100)
        bruno.join(ada.community(community).genesis)
        for stored in bruno.store.log(community, bruno.member, after_seq=0, limit=10):
            ada.ingest(stored.entry.wire)
        to = {"to": ops.mid(bruno.member)}
        kept = ops.run_op(ada, "pay", {**to, "amount": 2})["transfer"]
        refused = ops.run_op(ada, "pay", {**to, "amount": 3})["transfer"]
        late = ops.run_op(ada, "pay", {**to, "amount": 5, "expires_ms": now[0] + 1000})["transfer"]
        for stored in ada.store.log(community, ada.member, after_seq=0, limit=10):
            bruno.ingest(stored.entry.wire)
        ops.run_op(bruno, "decline", {"transfer": refused})
        for stored in bruno.store.log(community, bruno.member, after_seq=0, limit=10):
            ada.ingest(stored.entry.wire)
        now[0] += 2000  # the third has expired, unanswered

        reads = [0]
        pending_out_expiries = ada.store.pending_out_expiries

        def counting(*args: Any) -> Any:
            reads[0] += 1
            return pending_out_expiries(*args)

        ada.store.pending_out_expiries = counting  # type: ignore[method-assign]
        balance = ops.run_op(ada, "balance", {})
    assert reads[0] == 1
    assert (balance["pending_out"], balance["declined_out"], balance["expired_out"]) == (10, 3, 5)
    assert (balance["declined"], balance["expired"]) == ([refused], [late])
    assert kept not in balance["declined"] + balance["expired"]


def test_balance_decodes_only_the_declined_and_expired_transfers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read again, a balance decodes none of the open, unexpired transfers
    (it decoded every pending transfer on every read: ~9 ms at 1,000), and a
    remembered expiry still expires when the clock passes it."""
    now = [1_800_000_000_000]
    with (
        open_local_node(tmp_path / "ada", key(1), lambda: now[0]) as ada,
        open_local_node(tmp_path / "bruno", key(2), lambda: now[0]) as bruno,
    ):
        community = ada.create_community("Valley", "h", 1000, transfer_expiry_ms=60_000)
        bruno.join(ada.community(community).genesis)
        for stored in bruno.store.log(community, bruno.member, after_seq=0, limit=10):
            ada.ingest(stored.entry.wire)
        to = {"to": ops.mid(bruno.member)}
        refused = ops.run_op(ada, "pay", {**to, "amount": 3})["transfer"]
        soon = ops.run_op(ada, "pay", {**to, "amount": 5, "expires_ms": now[0] + 1000})["transfer"]
        for _ in range(40):
            ops.run_op(ada, "pay", {**to, "amount": 1})
        for stored in ada.store.log(community, ada.member, after_seq=0, limit=100):
            bruno.ingest(stored.entry.wire)
        ops.run_op(bruno, "decline", {"transfer": refused})
        for stored in bruno.store.log(community, bruno.member, after_seq=0, limit=10):
            ada.ingest(stored.entry.wire)
        first = ops.run_op(ada, "balance", {})
        # One more after the first read: not remembered yet, read with its expiry.
        newest = ops.run_op(ada, "pay", {**to, "amount": 7, "expires_ms": now[0] + 1500})
        now[0] += 2000  # those two have expired (their own expiry), the rest not yet

        decoded: list[bytes] = []
        for module in (store, _store_queries):
            decode = module.decode_trusted

            def counting(wire: bytes, decode: Any = decode) -> Any:
                decoded.append(wire)
                return decode(wire)

            monkeypatch.setattr(module, "decode_trusted", counting)
        ada.store._stored.clear()  # no entry cached: what is read is decoded
        second = ops.run_op(ada, "balance", {})
        transfers = {ops.eid(e.id) for e in map(Entry.decode, decoded) if e.kind is Kind.TRANSFER}
        assert transfers <= {refused, soon, newest["transfer"]}  # of 43 pending
        now[0] += 60_000  # every one has expired (the community's delay)
        third = ops.run_op(ada, "balance", {})
    assert (first["expired"], first["declined"], first["pending_out"]) == ([], [refused], 48)
    assert (second["expired"], second["declined"]) == ([soon, newest["transfer"]], [refused])
    assert (third["expired_out"], third["declined"]) == (52, [refused])
