"""`troc pending` and `troc balance` show a certified payment held parked
for want of the payer's history (docs/witness.md §6.1, "What the node
shows"), and `troc accept` takes it by the id `pending -q` prints; an
uncertified parked one is not shown (nothing here checked it)."""

from __future__ import annotations

from pathlib import Path

from tests.parked_payment import parked_payments
from troc.cli import render
from troc.node import ops
from troc.node.local import open_local_node


def test_pending_and_balance_show_a_parked_certified_payment(tmp_path: Path) -> None:
    made = parked_payments(tmp_path)
    paid = ops.eid(made.paid.id)
    with open_local_node(tmp_path / "n", made.newcomer) as n:
        pending = ops.run_op(n, "pending", {})
        assert [(t["transfer"], t["amount"]) for t in pending["incoming"]] == [(paid, 7)]
        [row] = pending["incoming"]
        assert (row["status"], row["final"], row["history_checked"]) == ("pending", True, False)
        text = render.pending(tmp_path / "n")(pending)
        assert f"final, payer's history still being fetched: `troc accept {paid[:12]}`" in text
        assert ops.eid(made.unchecked.id)[:12] not in text

        balance = ops.run_op(n, "balance", {})
        assert (balance["balance"], balance["pending_in"]) == (0, 7)
        assert (balance["pending_in_final"], balance["pending_in_parked"]) == (7, 7)
        text = render.balance(tmp_path / "n")(balance)
        assert "incoming, not yet accepted: 7 h" in text
        assert "of which final, the payer's history still being fetched" in text
        assert "not final yet" not in text

        ops.run_op(n, "accept", {"transfer": paid[:12]})
        assert ops.run_op(n, "pending", {})["incoming"] == []
        balance = ops.run_op(n, "balance", {})
        assert (balance["pending_in"], balance["pending_in_parked"]) == (0, 0)
        head = n.store.head(made.community, made.newcomer.public)
        assert head is not None
        assert head.balance == 7
