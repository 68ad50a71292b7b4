"""``troc campaign`` (issue 15): the operations over real SQLite homes
(three members, their entries shared between their stores), and through the
real ``troc`` command its ``--json`` output and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_directory import DAY, T0, Clock, _troc, everyone_knows
from tests.cli.test_directory import trio_ as trio_  # the fixture: ada, bruno, chloe
from tests.cli.test_requests_cli import homes as homes  # the fixture: two CLI homes
from tests.cli.test_requests_cli import troc
from troc.errors import RefusedError
from troc.node import ops
from troc.node.local import LocalNode
from troc.protocol.entry import CommunityId


def balances(node: LocalNode, community: CommunityId) -> dict[str, int]:
    return {ops.mid(m): b for m, b in node.balances(community).items()}


def test_a_campaign_succeeds_and_another_fails_on_every_node(
    trio_: tuple[list[LocalNode], CommunityId, Clock],
) -> None:
    """ada (the author), bruno and chloe (credit limit 20) share every entry."""
    nodes, community, clock = trio_
    ada, bruno, chloe = nodes
    made = ops.run_op(
        ada, "campaign.create", {"title": "Oven", "goal": "25", "deadline_ms": T0 + DAY}
    )
    oven = made["campaign"]
    everyone_knows(nodes, community)
    ops.run_op(bruno, "campaign.pledge", {"campaign": oven[:10], "amount": 15})
    ops.run_op(chloe, "campaign.pledge", {"campaign": oven, "amount": "12"})
    # Reserved: bruno cannot spend what he pledged.
    with pytest.raises(RefusedError) as info:
        ops.run_op(bruno, "pay", {"to": ops.mid(chloe.member), "amount": 6})
    assert info.value.reason == "overdraft"
    # No withdrawal before the close (docs/protocol.md §10.5).
    with pytest.raises(RefusedError) as info:
        ops.run_op(bruno, "campaign.withdraw", {"campaign": oven})
    assert info.value.reason == "not_closed"
    everyone_knows(nodes, community)
    # The node's guard: not before the deadline, unless early.
    with pytest.raises(RefusedError) as info:
        ops.run_op(ada, "campaign.close", {"campaign": oven})
    assert info.value.reason == "before_deadline"
    closed = ops.run_op(ada, "campaign.close", {"campaign": oven, "early": True})
    assert (closed["state"], closed["pledges"], closed["pledged"]) == ("succeeded", 2, 27)
    everyone_knows(nodes, community)
    want = {ops.mid(ada.member): 27, ops.mid(bruno.member): -15, ops.mid(chloe.member): -12}
    for n in nodes:
        assert balances(n, community) == want
        shown = ops.run_op(n, "campaign.show", {"campaign": oven})
        assert shown["state"] == "succeeded"
        assert sorted(p["status"] for p in shown["pledge_list"]) == ["paid", "paid"]
    with pytest.raises(RefusedError) as info:
        ops.run_op(bruno, "campaign.withdraw", {"campaign": oven})
    assert info.value.reason == "pledge_counted"

    # A second campaign misses its goal: both pledgers get the full amount back.
    clock.now += 2 * DAY
    shed = ops.run_op(
        bruno, "campaign.create", {"title": "Shed", "goal": 100, "deadline_ms": clock.now + DAY}
    )["campaign"]
    everyone_knows(nodes, community)
    ops.run_op(ada, "campaign.pledge", {"campaign": shed, "amount": 20})
    ops.run_op(chloe, "campaign.pledge", {"campaign": shed, "amount": 8})
    everyone_knows(nodes, community)
    clock.now += 2 * DAY
    with pytest.raises(RefusedError) as info:  # past the deadline: the node's guard
        ops.run_op(ada, "campaign.pledge", {"campaign": shed, "amount": 1})
    assert info.value.reason == "past_deadline"
    assert ops.run_op(bruno, "campaign.close", {"campaign": shed})["state"] == "failed"
    everyone_knows(nodes, community)
    ops.run_op(ada, "campaign.withdraw", {"campaign": shed})
    ops.run_op(chloe, "campaign.withdraw", {"campaign": shed})
    everyone_knows(nodes, community)
    for n in nodes:
        assert balances(n, community) == want
        listed = ops.run_op(n, "campaign.list", {})["campaigns"]
        assert [(c["title"], c["state"]) for c in listed] == [
            ("Shed", "failed"),
            ("Oven", "succeeded"),
        ]
        assert ops.run_op(n, "campaign.list", {"text": "oven"})["campaigns"][0]["pledged"] == 27
        assert ops.run_op(n, "campaign.list", {"open": True})["campaigns"] == []
    statuses = [
        p["status"] for p in ops.run_op(ada, "campaign.show", {"campaign": shed})["pledge_list"]
    ]
    assert statuses == ["withdrawn", "withdrawn"]
    # The history of the author shows the close (its pledges as entry ids).
    history = ops.run_op(ada, "history", {})
    assert json.dumps(history)


def test_the_command_json_and_exit_codes(tmp_path: Path) -> None:
    home = tmp_path / "ada"
    assert _troc(home, "init", "--name", "ada").returncode == 0
    made = _troc(home, "community", "create", "--name", "V", "--unit", "h", "--credit-limit", "9")
    assert made.returncode == 0, made.stderr
    created = _troc(
        home, "--json", "campaign", "create", "--title", "Oven", "--goal", "5", "--days", "3"
    )
    assert created.returncode == 0, created.stderr
    oven = json.loads(created.stdout)["campaign"]
    listed = json.loads(_troc(home, "--json", "campaign", "list").stdout)["campaigns"]
    assert [(c["campaign"], c["state"], c["pledged"]) for c in listed] == [(oven, "open", 0)]
    own = _troc(home, "--json", "campaign", "pledge", oven[:8], "2")
    assert own.returncode == 4, own.stderr  # refused: one's own campaign
    assert json.loads(own.stdout)["error"]["reason"] == "self_payment"
    early = _troc(home, "--json", "campaign", "close", oven[:8])
    assert early.returncode == 4
    assert json.loads(early.stdout)["error"]["reason"] == "before_deadline"
    closed = _troc(home, "--json", "campaign", "close", oven[:8], "--early")
    assert closed.returncode == 0, closed.stderr
    assert json.loads(closed.stdout)["state"] == "failed"
    shown = _troc(home, "campaign", "show", oven[:8])
    assert shown.returncode == 0, shown.stderr
    assert "0 h of 5 h (0%, 0 pledges), failed" in shown.stdout
    usage = _troc(home, "campaign", "create", "--title", "x", "--goal", "5")
    assert usage.returncode == 2


def test_a_pledge_lapses_after_the_deadline_and_a_close_counting_it_wins(
    trio_: tuple[list[LocalNode], CommunityId, Clock], tmp_path: Path
) -> None:
    """docs/protocol.md §10.5 through the operations, on real SQLite homes:
    before the deadline a pledge with no close stays reserved; after it,
    ``campaign.withdraw`` lets it lapse; a close that counts it (signed by
    an author who did not hold the lapse) wins on every node, and
    ``balance`` shows each step (reserved, lapsed, lapse_undone)."""
    from troc.cli import campaigns as cli_campaigns
    from troc.cli import render

    nodes, community, clock = trio_
    ada, bruno, chloe = nodes
    oven = ops.run_op(
        ada, "campaign.create", {"title": "Oven", "goal": 25, "deadline_ms": T0 + DAY}
    )["campaign"]
    everyone_knows(nodes, community)
    ops.run_op(bruno, "campaign.pledge", {"campaign": oven, "amount": 15})
    ops.run_op(chloe, "campaign.pledge", {"campaign": oven, "amount": 12})
    everyone_knows(nodes, community)
    mine = ops.run_op(bruno, "balance", {})
    assert (mine["balance"], mine["reserved"], mine["lapsed"]) == (-15, 15, 0)
    text = render.balance(tmp_path)(mine)
    assert "reserved by pledges (campaigns not closed yet): 15 hours" in text
    with pytest.raises(RefusedError) as info:  # one line, naming the deadline
        ops.run_op(bruno, "campaign.withdraw", {"campaign": oven})
    assert info.value.reason == "not_closed"
    assert "past its deadline (2026-01-02 00:00 UTC)" in str(info.value)
    assert "\n" not in str(info.value)

    clock.now = T0 + DAY  # the deadline passes with no close
    done = ops.run_op(bruno, "campaign.withdraw", {"campaign": oven})
    assert done["lapse"] is True
    mine = ops.run_op(bruno, "balance", {})
    assert (mine["balance"], mine["reserved"], mine["lapsed"]) == (0, 0, 15)
    assert "close counting it would still win" in cli_campaigns._withdrawn_text(done)
    shown = ops.run_op(ada, "campaign.show", {"campaign": oven})
    assert (shown["state"], shown["deadline_passed"]) == ("open", True)
    assert (shown["pledged"], shown["pledges"]) == (27, 2)  # ada has not seen the lapse
    everyone_knows([bruno, chloe], community)
    shown = ops.run_op(chloe, "campaign.show", {"campaign": oven})
    assert (shown["pledged"], shown["pledges"]) == (12, 1)  # the lapsed pledge left
    assert "pledgers may take their pledges back" in cli_campaigns._show_text(shown)

    # ada has not received bruno's lapse: her close counts both pledges.
    closed = ops.run_op(ada, "campaign.close", {"campaign": oven})
    assert (closed["state"], closed["pledges"]) == ("succeeded", 2)
    everyone_knows(nodes, community)
    want = {ops.mid(ada.member): 27, ops.mid(bruno.member): -15, ops.mid(chloe.member): -12}
    for n in nodes:
        assert balances(n, community) == want
        shown = ops.run_op(n, "campaign.show", {"campaign": oven})
        rows = {p["pledger"]: (p["status"], p["lapse"]) for p in shown["pledge_list"]}
        assert rows[ops.mid(bruno.member)] == ("paid", True)
    mine = ops.run_op(bruno, "balance", {})
    assert (mine["reserved"], mine["lapsed"], mine["lapse_undone"], mine["undone"]) == (0, 0, 15, 0)
    assert "a close had counted them: 15 hours" in render.balance(tmp_path)(mine)

    # A close signed by a node that holds a lapse leaves that pledge out.
    shed = ops.run_op(
        ada, "campaign.create", {"title": "Shed", "goal": 5, "deadline_ms": clock.now + DAY}
    )["campaign"]
    everyone_knows(nodes, community)
    ops.run_op(bruno, "campaign.pledge", {"campaign": shed, "amount": 5})
    ops.run_op(chloe, "campaign.pledge", {"campaign": shed, "amount": 5})
    everyone_knows(nodes, community)
    clock.now += 2 * DAY
    ops.run_op(chloe, "campaign.withdraw", {"campaign": shed})
    everyone_knows(nodes, community)
    closed = ops.run_op(ada, "campaign.close", {"campaign": shed})
    assert (closed["state"], closed["pledges"], closed["pledged"]) == ("succeeded", 1, 5)
    everyone_knows(nodes, community)
    assert ops.run_op(chloe, "balance", {})["lapsed"] == 5
    assert balances(bruno, community)[ops.mid(chloe.member)] == -12


def test_in_a_witnessed_community_the_close_names_only_final_pledges(tmp_path: Path) -> None:
    """docs/protocol.md §10.6: a close is valid only once every pledge it
    names is final, so the author's node names the final ones (a pledge not
    certified yet lapses, as one that arrives late) instead of refusing."""
    from tests.helpers import WITNESS_KEYS, certify
    from tests.helpers import key as test_key
    from troc.node.local import open_local_node

    clock = Clock()
    with (
        open_local_node(tmp_path / "ada", test_key(1), clock) as ada,
        open_local_node(tmp_path / "bruno", test_key(2), clock) as bruno,
        open_local_node(tmp_path / "chloe", test_key(3), clock) as chloe,
    ):
        witnesses = tuple(k.public for k in WITNESS_KEYS)
        community = ada.create_community(
            "W", "h", 20, finality="witnessed", witnesses=witnesses, faults=1
        )
        for m in (bruno, chloe):
            m.join(ada.community(community).genesis)
        nodes = [ada, bruno, chloe]

        def share_certified(certified: bool = True) -> None:
            """Every node gets every entry and, if ``certified``, its certificate."""
            everyone_knows(nodes, community)
            for m in nodes:
                for e in m.history(community, limit=1000):
                    if certified:
                        for n in nodes:
                            n.ingest_certificate(certify(e))

        share_certified()
        oven = ops.run_op(
            ada, "campaign.create", {"title": "Oven", "goal": 5, "deadline_ms": T0 + DAY}
        )["campaign"]
        share_certified()
        ops.run_op(bruno, "campaign.pledge", {"campaign": oven, "amount": 6})
        share_certified()
        ops.run_op(chloe, "campaign.pledge", {"campaign": oven, "amount": 4})
        everyone_knows(nodes, community)  # chloe's pledge: held, not final
        closed = ops.run_op(ada, "campaign.close", {"campaign": oven, "early": True})
        assert (closed["state"], closed["pledges"], closed["pledged"]) == ("succeeded", 1, 6)


def test_withdraw_on_the_command_line_before_and_after_the_deadline(
    homes: tuple[Path, Path, str],
) -> None:
    """`troc campaign withdraw` (in-process, click's CliRunner, real homes):
    before the deadline with no close, one line on stderr and exit 4 (with
    --json, the error document); after it, the pledge lapses (`lapse`:
    true), and `troc balance` shows what is reserved and what lapsed."""
    from troc.node.local import open_local_node

    ada, bruno, bruno_id = homes
    made = ["--json", "campaign", "create", "--title", "Oven", "--goal", "5"]
    past = json.loads(troc(ada, *made, "--deadline", "2020-01-01").stdout)["campaign"]
    future = json.loads(troc(ada, *made, "--days", "3").stdout)["campaign"]
    ada_id = json.loads(troc(ada, "--json", "whoami").stdout)["member"]
    with (  # bruno's node receives ada's log, as sync would bring it
        open_local_node(ada, None, member=ops.member_of(ada_id)) as a,
        open_local_node(bruno, None, member=ops.member_of(bruno_id)) as b,
    ):
        community = a.communities()[0].id
        for stored in a.store.log(community, a.member, after_seq=0, limit=100):
            assert b.ingest(stored.entry.wire).ok
    assert troc(bruno, "campaign", "pledge", future[:10], "3").exit_code == 0
    early = troc(bruno, "campaign", "withdraw", future[:10])
    assert early.exit_code == 4
    assert len(early.stderr.strip().splitlines()) == 1, early.stderr
    assert "neither closed nor past its deadline" in early.stderr
    early = troc(bruno, "--json", "campaign", "withdraw", future[:10])
    assert json.loads(early.stdout)["error"]["reason"] == "not_closed"
    assert troc(bruno, "campaign", "pledge", past[:10], "2", "--late").exit_code == 0
    lapsed = troc(bruno, "--json", "campaign", "withdraw", past[:10])
    assert lapsed.exit_code == 0, lapsed.output
    assert json.loads(lapsed.stdout)["lapse"] is True
    shown = json.loads(troc(bruno, "--json", "balance").stdout)
    assert (shown["balance"], shown["reserved"], shown["lapsed"]) == (-3, 3, 2)
    text = troc(bruno, "balance").stdout
    assert "reserved by pledges (campaigns not closed yet): 3 h" in text
    assert "pledges taken back after the deadline: 2 h" in text
