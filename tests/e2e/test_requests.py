"""Payment requests with real `troc` processes on 127.0.0.1 (issue 14 part 1):
a request made on one node is paid from its `troc-request:` text on a node
that has never synced with it, then accepted once the two meet."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import balances, members, wait_until

pytestmark = pytest.mark.slow


def test_request_paid_by_its_text_then_accepted(tmp_path: Path) -> None:
    with members(tmp_path, "ada", "bruno") as (ada, bruno):
        ada(
            "community",
            "create",
            "--name",
            "Valley LETS",
            "--unit",
            "hours",
            "--credit-limit",
            "20",
        )
        bruno("community", "join", ada("community", "invite").json["invitation"])
        # Neither node runs, and bruno's has never seen ada's log.
        made = ada("request", bruno.member, "3", "--memo", "bike repair", "--expires", "2h").json
        assert made["text"].startswith("troc-request:")
        paid = bruno("pay", "--request", made["text"].upper()).json  # as a QR reader gives it
        assert paid["request"] == made["request"]
        again = bruno("pay", "--request", made["text"], check=False)
        assert again.code == 4, again.err
        assert "already paid" in again.err
        assert bruno("balance").json["pending_out"] == 3

        ada.start()
        bruno.start(ada.addr)
        wait_until(
            "ada to see the payment",
            lambda: [t["transfer"] for t in ada("pending").json["incoming"]] == [paid["transfer"]],
        )
        [mine] = ada("request", "list").json["outgoing"]
        assert (mine["request"], mine["state"], mine["by"]) == (
            made["request"],
            "paid",
            paid["transfer"],
        )
        assert ada("pending").json["requests"] == []  # it was to bruno, and it is paid
        ada("accept", paid["transfer"])
        expect = {ada.member: 3, bruno.member: -3}
        wait_until("both to agree", lambda: balances(ada) == balances(bruno) == expect)
        [theirs] = bruno("request", "list").json["incoming"]
        assert theirs["state"] == "paid"


def test_request_shown_pending_then_refused(tmp_path: Path) -> None:
    with members(tmp_path, "ada", "bruno") as (ada, bruno):
        ada(
            "community", "create", "--name", "Valley LETS", "--unit", "hours", "--credit-limit", "9"
        )
        ada.start()
        bruno("community", "join", ada("community", "invite").json["invitation"])
        bruno.start(ada.addr)
        wait_until("ada to see bruno join", lambda: bruno.member in balances(ada))
        q = ada("request", bruno.member, "5", "--memo", "jam").json["request"]
        wait_until(
            "the request to reach bruno's pending list",
            lambda: [r["request"] for r in bruno("pending").json["requests"]] == [q],
        )
        bruno("request", "refuse", q[:10], "--reason", "no jam came")
        assert bruno("pending").json["requests"] == []
        refused = bruno("pay", "--request", q[:10], check=False)
        assert refused.code == 4, refused.err
        wait_until(
            "ada to see the refusal",
            lambda: ada("request", "list").json["outgoing"][0]["state"] == "refused",
        )


def test_take_back_races_a_late_accept_and_the_accept_wins(tmp_path: Path) -> None:
    """Issue 14 part 2 on real processes: bruno's transfer expires unanswered;
    with both nodes offline, he takes it back and ada accepts it anyway
    (--late). When the two nodes meet, both count the accept and undo the
    take-back, and bruno's balance says what he lost."""
    with members(tmp_path, "ada", "bruno") as (ada, bruno):
        ada(
            "community", "create", "--name", "Valley LETS", "--unit", "hours",
            "--credit-limit", "20", "--transfer-expiry", "14d",
        )  # fmt: skip
        ada.start()
        bruno("community", "join", ada("community", "invite").json["invitation"])
        bruno.start(ada.addr)
        wait_until("ada to see bruno join", lambda: bruno.member in balances(ada))
        t = bruno("pay", ada.member, "3", "--expires", "2s").json["transfer"]
        wait_until(
            "ada to see the transfer",
            lambda: [x["transfer"] for x in ada("pending").json["incoming"]] == [t],
        )
        ada.stop()  # both nodes go offline, ada without answering
        bruno.stop()
        wait_until(
            "the transfer to expire",
            lambda: bruno("pending").json["outgoing"][0]["status"] == "expired",
            timeout=10,
        )
        refused = bruno("reclaim", t, check=False)  # not declined: reclaim is not the way
        assert refused.code == 4, refused.err
        bruno("take-back", t[:10])
        b = bruno("balance").json
        assert (b["balance"], b["taken_back"], b["pending_out"]) == (0, 3, 0)
        # Offline, ada's node still lists it: expired, so accepting needs --late.
        [late] = ada("pending").json["incoming"]
        assert late["status"] == "expired"
        no = ada("accept", t, check=False)
        assert no.code == 4, no.err
        assert "expired" in no.err
        ada("accept", t, "--late")
        ada.start()
        bruno.start(ada.addr)
        expect = {ada.member: 3, bruno.member: -3}
        wait_until("the accept to win on both", lambda: balances(ada) == balances(bruno) == expect)
        b = bruno("balance").json
        assert (b["balance"], b["undone"], b["taken_back"]) == (-3, 3, 0)
