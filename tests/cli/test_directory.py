"""Profiles, the member directory and statements (issue 14 parts 3 and 4):
the operations over real SQLite homes, their renderings, and through the
real `troc` command a bundle written by one home and verified by a fresh
process that has no home at all.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.helpers import key
from troc.cli import directory as cli_directory
from troc.node import directory, ops
from troc.node.local import LocalNode, open_local_node
from troc.node.notices import PROFILE_IS_PUBLIC
from troc.protocol.entry import CommunityId, Kind

DAY = 24 * 3600 * 1000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        self.now += 1000
        return self.now


def _share(src: LocalNode, dst: LocalNode, community: CommunityId) -> None:
    for author, _head in list(src.store.heads(community)):
        for stored in src.store.log(community, author, after_seq=0, limit=1000):
            dst.ingest(stored.entry.wire)


@pytest.fixture
def trio_(tmp_path: Path) -> Iterator[tuple[list[LocalNode], CommunityId, Clock]]:
    """ada founded a community, bruno and chloe joined; all three know it all."""
    clock = Clock()
    with ExitStack() as stack:
        nodes = [
            stack.enter_context(open_local_node(tmp_path / n, key(i), clock))
            for i, n in enumerate(("ada", "bruno", "chloe"), 1)
        ]
        ada, bruno, chloe = nodes
        community = ada.create_community("Valley LETS", "hours", 20, member_name="ada")
        bruno.join(ada.community(community).genesis, name="bruno")
        chloe.join(ada.community(community).genesis)
        for a in nodes:
            for b in nodes:
                if a is not b:
                    _share(a, b, community)
        yield nodes, community, clock


def everyone_knows(nodes: list[LocalNode], community: CommunityId) -> None:
    for a in nodes:
        for b in nodes:
            if a is not b:
                _share(a, b, community)


def test_profiles_members_and_offers_show_names(
    trio_: tuple[list[LocalNode], CommunityId, Clock],
) -> None:
    (ada, bruno, chloe), community, _clock = trio_
    done = directory.op_profile_set(bruno, {"name": "Bruno B.", "place": "Riverside"})
    assert done.result["public"] == PROFILE_IS_PUBLIC
    assert done.signed is not None  # what a running node follows for --wait
    assert done.signed.kind is Kind.PROFILE
    # A second profile changes only what it names.
    ops.run_op(bruno, "profile.set", {"about": "fixes bikes", "languages": ["fr", "en", "fr"]})
    ops.run_op(chloe, "profile.set", {"name": "Chloé", "place": "Old town"})
    ops.run_op(ada, "vouch", {"member": ops.mid(chloe.member)})
    ops.run_op(bruno, "vouch", {"member": ops.mid(chloe.member)})
    ops.run_op(bruno, "offer.add", {"title": "Bike repair"})
    ops.run_op(ada, "pay", {"to": ops.mid(bruno.member), "amount": 3})
    everyone_knows([ada, bruno, chloe], community)

    shown = ops.run_op(ada, "profile.show", {"member": ops.mid(bruno.member)})
    assert shown["profile"]["name"] == "Bruno B."
    assert shown["profile"]["place"] == "Riverside"
    assert shown["profile"]["about"] == "fixes bikes"
    assert shown["profile"]["languages"] == ["en", "fr"]
    assert shown["since_ms"] is not None
    # No profile: the join's name.
    assert ops.run_op(bruno, "profile.show", {"member": ops.mid(ada.member)})["name"] == "ada"

    members = ops.run_op(chloe, "members", {"balances": True})["members"]
    by_name = {m["name"]: m for m in members}
    assert set(by_name) == {"ada", "Bruno B.", "Chloé"}
    assert by_name["Chloé"]["vouches"] == 2
    assert by_name["Bruno B."]["offers"] == 1
    assert (by_name["ada"]["balance"], by_name["Bruno B."]["balance"]) == (-3, 0)
    assert "balance" not in ops.run_op(chloe, "members", {})["members"][0]
    for search, found in (("bruno", ["Bruno B."]), ("OLD TOWN", ["Chloé"]), ("zzz", [])):
        rows = ops.run_op(chloe, "members", {"search": search})["members"]
        assert [m["name"] for m in rows] == found
    text = cli_directory._members_text(ops.run_op(chloe, "members", {"balances": True}))
    assert "~Chloé" in text
    assert "BALANCE" in text

    # Offers (and every other view's names) show the author's profile name.
    offers = ops.run_op(ada, "offer.list", {})
    assert offers["names"] == {ops.mid(bruno.member): "Bruno B."}


def test_statement_over_a_period(trio_: tuple[list[LocalNode], CommunityId, Clock]) -> None:
    (ada, bruno, chloe), community, clock = trio_
    ops.run_op(chloe, "profile.set", {"name": "Chloé"})
    everyone_knows([ada, bruno, chloe], community)
    t1 = ops.run_op(ada, "pay", {"to": ops.mid(bruno.member), "amount": 5, "memo": "bread"})
    clock.now += 2 * DAY
    t2 = ops.run_op(chloe, "pay", {"to": ops.mid(bruno.member), "amount": 2, "memo": "jam"})
    everyone_knows([ada, bruno, chloe], community)
    ops.run_op(bruno, "accept", {"transfer": t1["transfer"]})
    ops.run_op(bruno, "accept", {"transfer": t2["transfer"]})
    clock.now += 2 * DAY
    ops.run_op(bruno, "pay", {"to": ops.mid(chloe.member), "amount": 1, "memo": "thanks"})

    whole = ops.run_op(bruno, "statement", {})
    assert [(m["kind"], m["amount"], m["balance"]) for m in whole["movements"]] == [
        ("accept", 5, 5),
        ("accept", 2, 7),
        ("transfer", -1, 6),
    ]
    assert whole["movements"][1]["name"] == "Chloé"
    assert whole["movements"][1]["memo"] == "jam"
    assert whole["totals"] == {"opening": 0, "in": 7, "out": 1, "closing": 6, "movements": 3}

    # The last day alone: the opening balance carries what came before.
    last = ops.run_op(bruno, "statement", {"from_ms": clock.now - DAY // 2})
    assert last["totals"] == {"opening": 7, "in": 0, "out": 1, "closing": 6, "movements": 1}
    rows = list(csv.reader(io.StringIO(cli_directory.statement_csv(last))))
    assert rows[0][:3] == ["date", "seq", "kind"]
    assert [r[2] for r in rows[1:]] == ["opening", "transfer", "closing"]
    assert (rows[-1][6], rows[-1][7]) == ("-1", "6")
    text = cli_directory._statement_text(whole)
    assert "opening 0, in 7, out 1, closing 6 hours (3 movements)" in text
    # Before anything: an empty period.
    empty = ops.run_op(bruno, "statement", {"to_ms": T0})
    assert empty["totals"]["movements"] == 0


def _troc(
    home: Path | None, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TROC_")}
    env["TROC_PASSPHRASE"] = "test"
    if home is None:
        env["HOME"] = str(cwd)  # no per-user home either
        env["XDG_DATA_HOME"] = str(cwd / "no-data")  # type: ignore[operator]
    head = [] if home is None else ["--home", str(home)]
    return subprocess.run(
        [sys.executable, "-m", "troc", *head, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=cwd,
    )


def test_bundle_verifies_in_a_process_without_a_home(tmp_path: Path) -> None:
    home = tmp_path / "ada"
    assert _troc(home, "init", "--name", "ada").returncode == 0
    made = _troc(home, "community", "create", "--name", "V", "--unit", "h", "--credit-limit", "9")
    assert made.returncode == 0, made.stderr
    setp = _troc(home, "profile", "set", "--name", "Ada L.", "--place", "Hilltop")
    assert setp.returncode == 0, setp.stderr
    assert "is public" in setp.stderr
    assert _troc(home, "pay", ops.mid(key(3).public), "4", "--to-unknown").returncode == 0
    bundle = tmp_path / "ada-statement.troc"
    wrote = _troc(home, "--json", "statement", "--bundle", str(bundle))
    assert wrote.returncode == 0, wrote.stderr
    mine = json.loads(_troc(home, "--json", "statement").stdout)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    checked = _troc(None, "--json", "verify", str(bundle), cwd=elsewhere)
    assert checked.returncode == 0, checked.stderr
    v = json.loads(checked.stdout)
    assert v["verified"] is True
    assert (
        v["totals"]
        == mine["totals"]
        == {
            "opening": 0,
            "in": 0,
            "out": 4,
            "closing": -4,
            "movements": 1,
        }
    )
    assert (v["member_name"], v["finality"], v["final"]) == ("Ada L.", "optimistic", None)
    human = _troc(None, "verify", str(bundle), cwd=elsewhere)
    assert "VERIFIED statement of ~Ada L." in human.stdout
    assert "a hidden fork by the member" in human.stdout
    assert list(elsewhere.iterdir()) == []  # no home was made

    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x40
    bad = tmp_path / "changed.troc"
    bad.write_bytes(bytes(data))
    refused = _troc(None, "--json", "verify", str(bad), cwd=elsewhere)
    assert refused.returncode == 4, refused.stderr
    assert json.loads(refused.stdout)["error"]["kind"] == "refused"
    assert refused.stderr.count("\n") == 1
