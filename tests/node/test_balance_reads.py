"""``balance`` reads a payer's pending outgoing transfers once: a payer with
many unanswered payments asks for its balance often (bench/finality.py polls
it), and each read decodes every pending transfer. What it says is as before:
declined ones, expired ones, open ones apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers import key
from troc.node import ops
from troc.node.local import open_local_node


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
        pending_out_states = ada.store.pending_out_states  # what pending_out reads too

        def counting(*args: Any) -> Any:
            reads[0] += 1
            return pending_out_states(*args)

        ada.store.pending_out_states = counting  # type: ignore[method-assign]
        balance = ops.run_op(ada, "balance", {})
    assert reads[0] == 1
    assert (balance["pending_out"], balance["declined_out"], balance["expired_out"]) == (10, 3, 5)
    assert (balance["declined"], balance["expired"]) == ([refused], [late])
    assert kept not in balance["declined"] + balance["expired"]
