"""Campaigns (issue 15) with real `troc run` processes on 127.0.0.1: five
members pledge, one is offline when the author closes, the campaign succeeds
and every node, the offline one once back, shows the same balances; a second
campaign misses its goal and its pledgers get their full capacity back; a
pledger whose home is copied spends its reserved amount twice and is caught.

Commands that show the CLI run as `troc` processes; polling goes through
each running node's control socket (no process start per poll)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Member, copy_home, members, wait_until

pytestmark = pytest.mark.slow

DAY_MS = 24 * 3600 * 1000


def ask(m: Member, op: str, params: dict[str, Any] | None = None) -> Any:
    reply = m.control(op, params)
    assert reply["ok"], reply
    return reply["result"]


def balances_of(m: Member) -> dict[str, int]:
    return dict(ask(m, "balances")["balances"])


def agree(nodes: list[Member], expect: dict[str, int]) -> None:
    wait_until(
        "every node to report the same balances",
        lambda: all(balances_of(m) == expect for m in nodes),
    )


def test_five_pledge_one_offline_at_the_close_and_a_missed_goal(tmp_path: Path) -> None:
    names = ("ada", "b1", "b2", "b3", "b4", "b5")
    with members(tmp_path, *names) as (ada, *backers):
        ada("community", "create", "--name", "Valley", "--unit", "h", "--credit-limit", "50")
        ada.start()
        invitation = ask(ada, "community.invite")["invitation"]
        for m in backers:
            m("community", "join", invitation)
            m.start(ada.addr)
        everyone = [ada, *backers]
        wait_until(
            "every node to hold the six joins",
            lambda: all(len(balances_of(m)) == 6 for m in everyone),
        )
        deadline = int(time.time() * 1000) + DAY_MS
        oven = ada("campaign", "create", "--title", "Oven", "--goal", "100", "--days", "1").json[
            "campaign"
        ]
        wait_until(
            "the campaign to reach every backer",
            lambda: all(ask(m, "campaign.list")["campaigns"] for m in backers),
        )
        amounts = list(zip(backers, (30, 25, 20, 15, 10), strict=True))
        backers[0]("campaign", "pledge", oven[:10], "30")  # the command once; then the socket
        for m, amount in amounts[1:]:
            ask(m, "campaign.pledge", {"campaign": oven, "amount": amount})
        wait_until(
            "ada to hold the five pledges",
            lambda: ask(ada, "campaign.show", {"campaign": oven})["pledges"] == 5,
        )
        offline = backers[-1]
        offline.stop()
        closed = ada("campaign", "close", oven[:10], "--early").json
        assert (closed["state"], closed["pledged"]) == ("succeeded", 100)
        expect = {ada.member: 100, **{m.member: -a for m, a in amounts}}
        online = everyone[:-1]
        agree(online, expect)
        offline.start(ada.addr)  # paid while away, with no step of its own
        agree([offline], expect)
        assert ask(offline, "campaign.show", {"campaign": oven})["state"] == "succeeded"

        # A campaign that misses its goal: the pledges come back in full.
        b1, b2, b3 = backers[:3]
        shed = ask(b1, "campaign.create", {"title": "Shed", "goal": 50, "deadline_ms": deadline})[
            "campaign"
        ]
        wait_until(
            "the second campaign to reach b2 and b3",
            lambda: all(len(ask(m, "campaign.list")["campaigns"]) == 2 for m in (b2, b3)),
        )
        ask(b2, "campaign.pledge", {"campaign": shed, "amount": 10})
        ask(b3, "campaign.pledge", {"campaign": shed, "amount": 5})
        wait_until(
            "b1 to hold both pledges",
            lambda: ask(b1, "campaign.show", {"campaign": shed})["pledges"] == 2,
        )
        assert ask(b1, "campaign.close", {"campaign": shed, "early": True})["state"] == "failed"
        for m in (b2, b3):
            wait_until(
                f"{m.name} to see the close",
                lambda m=m: ask(m, "campaign.show", {"campaign": shed})["state"] == "failed",
            )
            ask(m, "campaign.withdraw", {"campaign": shed})
        agree(everyone, expect)


def both(*calls: Any) -> None:
    """Run the calls at once (process starts and commands: each is mostly
    waiting for a process), and re-raise the first failure."""
    with ThreadPoolExecutor(len(calls)) as pool:
        for done in [pool.submit(c) for c in calls]:
            done.result()


def test_a_pledger_who_forks_to_spend_its_reserved_amount_is_caught(tmp_path: Path) -> None:
    """docs/protocol.md §10.4 with real processes: bruno's home is copied;
    one copy pledges his whole capacity, the other pays the same units to
    chiara, at the same seq. Ada closes counting the pledge, chiara accepts
    the payment: once the nodes meet, bruno is frozen at the fork, neither
    credit counts (nothing is credited twice) and every node, the pledger's
    other copy included, shows the same balances."""
    with members(tmp_path, "ada", "bruno", "chiara") as (ada, bruno, chiara):
        ada("community", "create", "--name", "Valley", "--unit", "h", "--credit-limit", "10")
        ada.start()
        invitation = ask(ada, "community.invite")["invitation"]
        both(*(partial(m, "community", "join", invitation) for m in (bruno, chiara)))
        deadline = int(time.time() * 1000) + DAY_MS
        oven = ask(ada, "campaign.create", {"title": "Oven", "goal": 10, "deadline_ms": deadline})[
            "campaign"
        ]
        both(partial(bruno.start, ada.addr), partial(chiara.start, ada.addr))
        wait_until(
            "bruno to hold the campaign and chiara's join",
            lambda: bool(ask(bruno, "campaign.list")["campaigns"]) and len(balances_of(bruno)) == 3,
        )
        bruno.stop()
        twin = copy_home(bruno, "bruno-twin", tmp_path)
        # Offline, each copy uses the same 10 units at the same place in the log.
        pledge = partial(bruno, "campaign", "pledge", oven[:10], "10")
        paid: list[str] = []
        pay = partial(twin, "pay", chiara.member, "10", "--memo", "the pledged units")
        both(pledge, lambda: paid.append(pay().json["transfer"]))
        bruno.start(ada.addr, chiara.addr)
        wait_until(
            "ada to hold the pledge",
            lambda: ask(ada, "campaign.show", {"campaign": oven})["pledges"] == 1,
        )
        closed = ask(ada, "campaign.close", {"campaign": oven, "early": True})
        assert (closed["state"], closed["pledged"]) == ("succeeded", 10)
        bruno.stop()
        twin.start(ada.addr, chiara.addr)  # the other copy: its branch reaches everyone
        try:
            wait_until(
                "chiara to hold the twin's payment",
                lambda: [t["transfer"] for t in ask(chiara, "pending")["incoming"]] == paid,
            )
            ask(chiara, "accept", {"transfer": paid[0]})
            nodes = [ada, chiara, twin]  # twin: bruno's key, on the copy of his home
            for m in nodes:
                wait_until(
                    f"{m.name} to detect bruno's fork",
                    lambda m=m: [f["member"] for f in ask(m, "forks")["forks"]] == [bruno.member],
                )
            # Both credits came from bruno's frozen part: neither counts.
            agree(nodes, {ada.member: 0, bruno.member: 0, chiara.member: 0})
            for m in nodes:
                assert ask(m, "balance", {"member": bruno.member})["frozen"] is True
                shown = ask(m, "campaign.show", {"campaign": oven})
                assert shown["state"] == "succeeded"
                assert [p["counts"] for p in shown["pledge_list"]] == [False]
        finally:
            twin.stop()
