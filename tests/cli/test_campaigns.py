"""``troc campaign`` (issue 15): the operations over real SQLite homes
(three members, their entries shared between their stores), and through the
real ``troc`` command its ``--json`` output and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.helpers import key
from troc.errors import RefusedError
from troc.node import ops
from troc.node.local import LocalNode, open_local_node
from troc.protocol.entry import CommunityId

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 24 * 3600 * 1000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        self.now += 1000
        return self.now


def share(nodes: list[LocalNode], community: CommunityId) -> None:
    """Every node gets every entry the others hold."""
    for src in nodes:
        for dst in nodes:
            if src is dst:
                continue
            for author, _head in list(src.store.heads(community)):
                for stored in src.store.log(community, author, after_seq=0, limit=1000):
                    dst.ingest(stored.entry.wire)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[list[LocalNode], CommunityId, Clock]]:
    """ada founded a community (credit limit 50), bruno and chloe joined."""
    clock = Clock()
    with ExitStack() as stack:
        nodes = [
            stack.enter_context(open_local_node(tmp_path / n, key(i), clock))
            for i, n in enumerate(("ada", "bruno", "chloe"), 1)
        ]
        ada, bruno, chloe = nodes
        community = ada.create_community("Valley LETS", "hours", 50, member_name="ada")
        bruno.join(ada.community(community).genesis, name="bruno")
        chloe.join(ada.community(community).genesis)
        share(nodes, community)
        yield nodes, community, clock


def balances(node: LocalNode, community: CommunityId) -> dict[str, int]:
    return {ops.mid(m): b for m, b in node.balances(community).items()}


def test_a_campaign_succeeds_and_another_fails_on_every_node(
    world: tuple[list[LocalNode], CommunityId, Clock],
) -> None:
    nodes, community, clock = world
    ada, bruno, chloe = nodes
    made = ops.run_op(
        ada, "campaign.create", {"title": "Oven", "goal": "60", "deadline_ms": T0 + DAY}
    )
    oven = made["campaign"]
    share(nodes, community)
    ops.run_op(bruno, "campaign.pledge", {"campaign": oven[:10], "amount": 40})
    ops.run_op(chloe, "campaign.pledge", {"campaign": oven, "amount": "30"})
    # Reserved: bruno cannot spend what he pledged.
    with pytest.raises(RefusedError) as info:
        ops.run_op(bruno, "pay", {"to": ops.mid(chloe.member), "amount": 11})
    assert info.value.reason == "overdraft"
    # No withdrawal before the close (docs/protocol.md §10.5).
    with pytest.raises(RefusedError) as info:
        ops.run_op(bruno, "campaign.withdraw", {"campaign": oven})
    assert info.value.reason == "not_closed"
    share(nodes, community)
    # The node's guard: not before the deadline, unless early.
    with pytest.raises(RefusedError) as info:
        ops.run_op(ada, "campaign.close", {"campaign": oven})
    assert info.value.reason == "before_deadline"
    closed = ops.run_op(ada, "campaign.close", {"campaign": oven, "early": True})
    assert (closed["state"], closed["pledges"], closed["pledged"]) == ("succeeded", 2, 70)
    share(nodes, community)
    want = {ops.mid(ada.member): 70, ops.mid(bruno.member): -40, ops.mid(chloe.member): -30}
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
    share(nodes, community)
    ops.run_op(ada, "campaign.pledge", {"campaign": shed, "amount": 20})
    ops.run_op(chloe, "campaign.pledge", {"campaign": shed, "amount": 10})
    share(nodes, community)
    clock.now += 2 * DAY
    with pytest.raises(RefusedError) as info:  # past the deadline: the node's guard
        ops.run_op(ada, "campaign.pledge", {"campaign": shed, "amount": 1})
    assert info.value.reason == "past_deadline"
    assert ops.run_op(bruno, "campaign.close", {"campaign": shed})["state"] == "failed"
    share(nodes, community)
    ops.run_op(ada, "campaign.withdraw", {"campaign": shed})
    ops.run_op(chloe, "campaign.withdraw", {"campaign": shed})
    share(nodes, community)
    for n in nodes:
        assert balances(n, community) == want
        listed = ops.run_op(n, "campaign.list", {})["campaigns"]
        assert [(c["title"], c["state"]) for c in listed] == [
            ("Shed", "failed"),
            ("Oven", "succeeded"),
        ]
        assert ops.run_op(n, "campaign.list", {"text": "oven"})["campaigns"][0]["pledged"] == 70
        assert ops.run_op(n, "campaign.list", {"open": True})["campaigns"] == []
    statuses = [
        p["status"] for p in ops.run_op(ada, "campaign.show", {"campaign": shed})["pledge_list"]
    ]
    assert statuses == ["withdrawn", "withdrawn"]
    # The history of the author shows the close (its pledges as entry ids).
    history = ops.run_op(ada, "history", {})
    assert json.dumps(history)


def _troc(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TROC_")}
    env["TROC_PASSPHRASE"] = "test"
    return subprocess.run(
        [sys.executable, "-m", "troc", "--home", str(home), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


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
