"""A member's whole journey, with real `troc run` processes on 127.0.0.1,
driven only through the `troc` command."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import TROC, Member, balances, copy_home, members, troc, wait_until

pytestmark = pytest.mark.slow


def _same_everywhere(nodes: list[Member], expect: dict[str, int] | None = None) -> None:
    def agree() -> bool:
        views = [balances(m) for m in nodes]
        return all(v == views[0] for v in views) and (expect is None or views[0] == expect)

    wait_until("every node to report the same balances", agree)


def test_three_members_trade_and_agree(tmp_path: Path) -> None:
    with members(tmp_path, "ada", "bruno", "chiara") as (ada, bruno, chiara):
        created = ada(
            "community",
            "create",
            "--name",
            "Valley LETS",
            "--unit",
            "hours",
            "--credit-limit",
            "20",
        ).json
        ada.start()
        invitation = ada("community", "invite").json["invitation"]
        assert invitation.startswith("troc-invite:")
        for m in (bruno, chiara):
            joined = m("community", "join", invitation).json
            assert joined["community"] == created["community"]
            m.start(ada.addr)
        for m in (bruno, chiara):
            m("contact", "add", "ada", ada.member)
        bruno("contact", "add", "chiara", chiara.member)

        offer = ada(
            "offer", "add", "--title", "Bicycle repair", "--tag", "bikes", "--price", "3"
        ).json["offer"]
        wait_until(
            "the offer to reach chiara",
            lambda: (
                [o["offer"] for o in chiara("offer", "search", "bicycle").json["offers"]] == [offer]
            ),
        )

        t1 = bruno("pay", "ada", "3", "--memo", "brakes", "--offer", offer[:12]).json["transfer"]
        t2 = chiara("pay", "ada", "5", "--memo", "lessons").json["transfer"]
        t3 = bruno("pay", "chiara", "4").json["transfer"]
        wait_until(
            "ada to see both transfers",
            lambda: {t["transfer"] for t in ada("pending").json["incoming"]} == {t1, t2},
        )
        ada("accept", t1[:10])
        ada("decline", t2)
        wait_until(
            "chiara to see the transfer and ada's decline",
            lambda: (
                [t["transfer"] for t in chiara("pending").json["incoming"]] == [t3]
                and chiara("reclaim", t2, check=False).code == 0
            ),
        )
        chiara("accept", t3)

        expect = {ada.member: 3, bruno.member: -7, chiara.member: 4}
        _same_everywhere([ada, bruno, chiara], expect)
        b = bruno("balance").json
        assert (b["balance"], b["credit_limit"], b["pending_out"]) == (-7, 20, 0)
        history = bruno("history").json["entries"]
        assert [e["kind"] for e in history][:2] == ["transfer", "transfer"]

        # The same journey's state survives a clean stop and start.
        chiara.stop()
        chiara.start(ada.addr)
        _same_everywhere([ada, bruno, chiara], expect)


def test_late_node_and_killed_node_catch_up(tmp_path: Path) -> None:
    with members(tmp_path, "ada", "bruno", "chiara") as (ada, bruno, chiara):
        ada("community", "create", "--name", "V", "--unit", "h", "--credit-limit", "1000")
        ada.start()
        invitation = ada("community", "invite").json["invitation"]
        bruno("community", "join", invitation)
        chiara("community", "join", invitation)
        bruno.start(ada.addr)
        for i in range(20):
            ada("pay", bruno.member, str(i + 1))
        # chiara starts later and catches up from whoever she reaches.
        chiara.start(bruno.addr)
        _same_everywhere([ada, bruno, chiara])
        assert balances(chiara)[bruno.member] == 0  # nothing accepted yet
        # bruno is killed (SIGKILL) while accepting, then restarted.
        pending = [t["transfer"] for t in bruno("pending").json["incoming"]]
        assert len(pending) == 20
        accepted = [bruno("accept", t).json["accept"] for t in pending[:10]]
        bruno.stop(signal.SIGKILL)
        bruno.start(ada.addr)
        history = {e["entry"] for e in bruno("history", "--limit", "100").json["entries"]}
        assert set(accepted) <= history  # every acknowledged entry survived
        _same_everywhere([ada, bruno, chiara])
        assert balances(chiara)[bruno.member] == sum(range(1, 21)) - sum(
            t["amount"] for t in bruno("pending").json["incoming"]
        )


def test_one_key_on_two_nodes_is_caught_and_frozen(tmp_path: Path) -> None:
    with members(tmp_path, "ada", "bruno", "chiara") as (ada, bruno, chiara):
        ada("community", "create", "--name", "V", "--unit", "h", "--credit-limit", "10")
        invitation = ada("community", "invite").json["invitation"]
        bruno("community", "join", invitation)
        chiara("community", "join", invitation)
        bruno.start()
        chiara.start(bruno.addr)
        ada.start(bruno.addr)
        _same_everywhere([ada, bruno, chiara])
        ada.stop()
        # The same member on a second machine: a copy of the whole home.
        twin = copy_home(ada, "ada-twin", tmp_path)
        # Offline, each spends the same credit at the same place in the log.
        ada("pay", bruno.member, "10", "--memo", "to bruno")
        twin("pay", chiara.member, "10", "--memo", "to chiara")
        ada.start(bruno.addr)
        wait_until(
            "bruno to hold ada's payment", lambda: len(bruno("pending").json["incoming"]) == 1
        )
        ada.stop()
        twin.start(chiara.addr)
        try:
            for m in (bruno, chiara):
                wait_until(
                    f"{m.name} to detect the fork",
                    lambda m=m: [f["member"] for f in m("forks").json["forks"]] == [ada.member],
                )
                assert m("balance", ada.member).json["frozen"] is True
            # Neither double spend counts anywhere.
            _same_everywhere([bruno, chiara])
            assert balances(bruno)[ada.member] == 0
        finally:
            twin.stop()


def test_errors_are_one_line_with_distinct_codes_and_change_nothing(tmp_path: Path) -> None:
    with members(tmp_path, "ada", "bruno") as (ada, bruno):
        home = tmp_path / "nobody"
        r = troc(home, "balance", check=False)
        assert r.code == 3
        assert "troc init" in r.err
        assert r.json["error"]["kind"] == "key"

        ada("community", "create", "--name", "V", "--unit", "h", "--credit-limit", "10")
        bruno("community", "join", ada("community", "invite").json["invitation"])
        before = ada("history").json

        def refused(args: list[str], code: int, words: str) -> None:
            r = ada(*args, check=False)
            assert r.code == code, (args, r)
            assert words in r.err, r.err
            assert len(r.err.strip().splitlines()) == 1, r.err
            assert "error" in r.json

        # ada has not seen bruno join (his join leaves with his first run).
        refused(["pay", bruno.member, "1"], 4, "--to-unknown")
        refused(["pay", bruno.member, "11", "--to-unknown"], 4, "credit limit")  # overdraft
        refused(["pay", ada.member, "1"], 4, "cannot pay itself")
        refused(["pay", bruno.member, "0"], 2, "positive")
        refused(["pay", bruno.member, "1.5"], 2, "positive")
        typo = bruno.member[:-2] + ("a" if bruno.member[-2] != "a" else "b") + bruno.member[-1]
        refused(["pay", typo, "1"], 2, "checksum")
        refused(["pay", "nobody", "1"], 5, "neither a member id nor a contact")
        refused(["pay", bruno.member, "1", "--community", "Elsewhere"], 5, "unknown community")
        refused(["community", "join", "troc-invite:garbage"], 2, "invitation")
        refused(["community", "join", "hello"], 2, "not a troc invitation")
        refused(["accept", "eaaaaaaaaa"], 2, "no transfer")
        refused(["status"], 6, "no node is running")
        r = troc(ada.home, "pay", bruno.member, "1", "--to-unknown", check=False)
        assert r.code == 0  # the right passphrase works
        before["entries"].insert(0, ada("history").json["entries"][0])
        wrong = dict(os.environ, TROC_PASSPHRASE="wrong")
        p = subprocess.run(
            [*TROC, "--home", str(ada.home), "pay", bruno.member, "1"],
            capture_output=True,
            text=True,
            env=wrong,
            timeout=60,
        )
        assert p.returncode == 3
        assert "wrong passphrase" in p.stderr
        assert ada("history").json == before  # nothing changed by any refusal

        ada.start()
        port = ada.addr.split("/tcp/")[1].split("/")[0]
        r = troc(bruno.home, "run", "--listen", f"/ip4/127.0.0.1/tcp/{port}", check=False)
        assert r.code == 7, r
        assert "in use" in r.err


def test_vouch_admission_through_an_invitation(tmp_path: Path) -> None:
    with members(tmp_path, "ada", "bruno", "chiara") as (ada, bruno, chiara):
        ada(
            "community",
            "create",
            "--name",
            "V",
            "--unit",
            "h",
            "--credit-limit",
            "10",
            "--admission",
            "vouch",
        )
        r = ada("community", "invite", check=False)
        assert r.code == 2
        assert "--for" in r.err
        ada.start()
        invitation = ada("community", "invite", "--for", bruno.member).json["invitation"]
        # Offline, bruno's node has not seen ada's vouch: it says what to do.
        r = bruno("community", "join", invitation, check=False)
        assert r.code == 4
        assert "troc run" in r.err
        assert bruno("community", "list").json["communities"] == []  # nothing half-done
        bruno.start()
        bruno("community", "join", invitation)  # the running node fetches the vouch first
        assert bruno("balance").json["credit_limit"] == 10
        # An invitation for bruno does not admit chiara.
        chiara.start()
        r = chiara("community", "join", invitation, check=False)
        assert r.code == 4
        assert "vouch" in r.err
