"""What the ledger commands tell a member, and what they refuse (issue 11).

Two members' nodes over real SQLite homes exchange their logs directly
(what sync would carry); the commands' operations (troc.node.ops) and their
human renderings are checked, and the exit codes through the real `troc`
command.
"""

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
from troc.cli import render
from troc.errors import RefusedError
from troc.node import ops
from troc.node.local import LocalNode, open_local_node
from troc.protocol.entry import CommunityId


def _share(src: LocalNode, dst: LocalNode, community: CommunityId) -> None:
    """Give ``dst`` every entry ``src`` holds (what a sync would do)."""
    for author, _head in list(src.store.heads(community)):
        for stored in src.store.log(community, author, after_seq=0, limit=1000):
            dst.ingest(stored.entry.wire)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[LocalNode, LocalNode, CommunityId]]:
    """ada founded a community; bruno joined it and both know it."""
    with ExitStack() as stack:
        ada = stack.enter_context(open_local_node(tmp_path / "ada", key(1)))
        bruno = stack.enter_context(open_local_node(tmp_path / "bruno", key(2)))
        community = ada.create_community("Valley LETS", "hours", 20)
        bruno.join(ada.community(community).genesis)
        _share(bruno, ada, community)
        yield ada, bruno, community


def test_a_declined_transfer_says_so_in_pending_and_balance(
    pair: tuple[LocalNode, LocalNode, CommunityId], tmp_path: Path
) -> None:
    ada, bruno, community = pair
    kept = ops.run_op(ada, "pay", {"to": ops.mid(bruno.member), "amount": 2})["transfer"]
    refused = ops.run_op(ada, "pay", {"to": ops.mid(bruno.member), "amount": 3})["transfer"]
    _share(ada, bruno, community)
    ops.run_op(bruno, "decline", {"transfer": refused})
    _share(bruno, ada, community)

    pending = ops.run_op(ada, "pending", {})
    status = {t["transfer"]: t["status"] for t in pending["outgoing"]}
    assert status == {kept: "pending", refused: "declined"}
    text = render.pending(tmp_path / "ada")(pending)
    assert f"declined: `troc reclaim {refused[:12]}` takes it back" in text
    assert "waiting for an answer" in text  # the other one

    balance = ops.run_op(ada, "balance", {})
    assert (balance["pending_out"], balance["declined_out"]) == (5, 3)
    assert balance["declined"] == [refused]
    text = render.balance(tmp_path / "ada")(balance)
    assert "outgoing, not yet accepted: 2 hours" in text
    assert "outgoing, declined by the payee: 3 hours" in text
    assert f"(`troc reclaim ID` takes it back: {refused[:12]})" in text

    # The payee's side lists what it has not answered, as pending.
    incoming = ops.run_op(bruno, "pending", {})["incoming"]
    assert [(t["transfer"], t["status"]) for t in incoming] == [(kept, "pending")]

    # Reclaimed, it is gone from both views.
    ops.run_op(ada, "reclaim", {"transfer": refused[:12]})
    assert [t["status"] for t in ops.run_op(ada, "pending", {})["outgoing"]] == ["pending"]
    balance = ops.run_op(ada, "balance", {})
    assert (balance["pending_out"], balance["declined_out"], balance["declined"]) == (2, 0, [])


def test_paying_someone_who_never_joined_is_refused(
    pair: tuple[LocalNode, LocalNode, CommunityId],
) -> None:
    ada, bruno, community = pair
    stranger = ops.mid(key(3).public)
    with pytest.raises(RefusedError) as caught:
        ops.run_op(ada, "pay", {"to": stranger, "amount": 2})
    assert caught.value.reason == "unknown_payee"
    assert "--to-unknown" in str(caught.value)
    assert ada.balance(community).pending_out == 0  # nothing was signed
    assert ops.describe_error(caught.value)["kind"] == "refused"  # exit 4

    # The member knows better (a join not synced yet): paid anyway.
    paid = ops.run_op(ada, "pay", {"to": stranger, "amount": 2, "to_unknown": True})
    assert paid["transfer"].startswith("e")
    assert ada.balance(community).pending_out == 2
    # A member is paid without the flag.
    ops.run_op(ada, "pay", {"to": ops.mid(bruno.member), "amount": 1})


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


def test_pay_to_unknown_exit_codes(tmp_path: Path) -> None:
    """Through the command, offline: exit 4 and one line saying why; the flag pays."""
    home = tmp_path / "ada"
    assert _troc(home, "init", "--name", "ada").returncode == 0
    made = _troc(home, "community", "create", "--name", "V", "--unit", "h", "--credit-limit", "9")
    assert made.returncode == 0, made.stderr
    stranger = ops.mid(key(3).public)
    refused = _troc(home, "--json", "pay", stranger, "2")
    assert refused.returncode == 4, refused.stderr
    error = json.loads(refused.stdout)["error"]
    assert (error["kind"], error["reason"]) == ("refused", "unknown_payee")
    assert refused.stderr.count("\n") == 1
    assert "not a member of 'V'" in refused.stderr
    balance = json.loads(_troc(home, "--json", "balance").stdout)
    assert balance["pending_out"] == 0
    paid = _troc(home, "--json", "pay", stranger, "2", "--to-unknown")
    assert paid.returncode == 0, paid.stderr
    assert json.loads(_troc(home, "--json", "balance").stdout)["pending_out"] == 2


def test_not_final_says_which_witnesses_cannot_be_reached() -> None:
    """`pay`/`accept --wait` in words: the votes so far, and each witness not reached."""
    w1, w2 = ops.mid(key(5).public), ops.mid(key(6).public)
    data = {
        "accept": "eabc",
        "finality": {
            "final": False,
            "problem": None,
            "votes": 1,
            "quorum": 3,
            "witnesses": 4,
            "unreachable": {w2: "no answer in time", w1: "no address known for it"},
        },
    }
    lines = render.created("accept")(data).splitlines()
    assert lines[:2] == [
        "eabc",
        "not final yet: 1 of 3 witness votes; the node keeps asking the witnesses"
        " (see troc balance)",
    ]
    assert sorted(lines[2:]) == sorted(
        [
            f"  cannot reach witness {w1[:14]}…: no address known for it",
            f"  cannot reach witness {w2[:14]}…: no answer in time",
        ]
    )
    data["finality"] = {**data["finality"], "final": True, "votes": 3, "unreachable": {}}
    assert render.created("accept")(data) == "eabc\nfinal: certified by 3 witnesses (3 needed)"
    data["finality"]["votes"] = 4  # a fourth answered before the certificate was made
    assert render.created("accept")(data) == "eabc\nfinal: certified by 4 witnesses (3 needed)"
    # The line shown while waiting names them too.
    fin = {"final": False, "votes": 0, "quorum": 3, "witnesses": 4, "unreachable": {w1: "x"}}
    line = render.finality_progress(fin, 2.0, 20.0)
    assert line == (
        f"witnesses: 0 of 3 votes needed (4 witnesses, cannot reach {w1[:14]}…); waited 2 of 20 s"
    )
