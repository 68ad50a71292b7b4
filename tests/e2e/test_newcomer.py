"""A newcomer's first hour, with real `troc` processes on 127.0.0.1 (issue 11).

* A payee invited by the founder alone, in a witnessed community, reaches
  the witnesses through the invitation: a payment to them becomes final and
  their accept becomes final, with no `troc connect` by hand. A member whose
  invitation named no witness is told which witnesses it cannot reach
  (`accept`, `status`, the log).
* An invitation made before the inviter's node ever ran holds no address:
  the inviter is warned, and the joiner's `status` and `troc run` say it has
  no way to reach anyone.

Every process is stopped by its PID at the end of its test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import Member, members, wait_until
from troc.crypto.ids import decode_id
from troc.node.ops import decode_invitation
from troc.node.witness import member_peer_id

pytestmark = pytest.mark.slow


def _peers(m: Member) -> set[str]:
    return set(m("status").json["peers"])


def _incoming_final(m: Member) -> bool:
    incoming = m("pending").json["incoming"]
    return bool(incoming) and all(t["final"] for t in incoming)


def test_witnessed_payee_invited_by_the_founder_alone_becomes_final(tmp_path: Path) -> None:
    names = ("ada", "w0", "w1", "w2", "w3", "bruno", "chiara")
    with members(tmp_path, *names) as (ada, *rest):
        witnesses, (bruno, chiara) = rest[:4], rest[4:]
        args = ["community", "create", "--name", "W", "--unit", "h", "--credit-limit", "50"]
        args += ["--finality", "witnessed", "--faults", "1"]
        for w in witnesses:
            args += ["--witness", w.member]
        ada(*args)
        ada.start()
        first = ada("community", "invite").json["invitation"]  # no witness runs yet
        for w in witnesses:
            w("community", "follow", first)
            w.start(witness=True)  # dials ada, remembered from the invitation
        wait_until(
            "the witnesses to reach ada",
            lambda: {w.peer_id for w in witnesses} <= _peers(ada),
            timeout=30,
        )
        # Invited by the founder only, once the witnesses are about.
        invitation = ada("community", "invite").json["invitation"]
        _genesis, addrs, _vouch = decode_invitation(invitation)
        assert addrs[0] == ada.addr
        assert {a.rsplit("/p2p/", 1)[1] for a in addrs[1:]} == {w.peer_id for w in witnesses}

        bruno("community", "join", invitation)
        bruno.start()  # no --bootstrap: only what the invitation held
        chiara("community", "join", first)  # an invitation that named no witness
        chiara.start()

        paid = ada("pay", bruno.member, "3", "--memo", "bread", "--wait", "20").json
        assert paid["finality"]["final"] is True, paid
        ada("pay", chiara.member, "2", "--wait", "20")
        wait_until("bruno to see the payment final", lambda: _incoming_final(bruno), timeout=30)
        accepted = bruno("accept", paid["transfer"], "--wait", "30").json
        assert accepted["finality"]["final"] is True, accepted
        assert bruno("status").json["warnings"] == []
        assert bruno("balance").json["balance"] == 3

        # chiara cannot reach any witness, and is told so, not left guessing.
        wait_until("chiara to see the payment final", lambda: _incoming_final(chiara), timeout=30)
        transfer = chiara("pending").json["incoming"][0]["transfer"]
        waited = chiara("accept", transfer, "--wait", "3")
        fin = waited.json["finality"]
        assert fin["final"] is False
        assert set(fin["unreachable"]) == {w.member for w in witnesses}
        assert all("no address" in why for why in fin["unreachable"].values())
        warnings = chiara("status").json["warnings"]
        assert any(f"cannot reach witness {witnesses[0].member[:14]}" in w for w in warnings)
        log = (chiara.home / "run.log").read_text()
        assert "cannot reach witness" in log
        assert member_peer_id(decode_id("m", witnesses[0].member)) in log


def test_an_invitation_made_before_the_node_ran_warns_and_the_joiner_says_so(
    tmp_path: Path,
) -> None:
    with members(tmp_path, "ada", "bruno") as (ada, bruno):
        ada("community", "create", "--name", "V", "--unit", "h", "--credit-limit", "5")
        made = ada("community", "invite")  # ada's node has never run
        assert "holds no address" in made.json["warning"]
        assert "troc: warning: this invitation holds no address" in made.err
        _genesis, addrs, _vouch = decode_invitation(made.json["invitation"])
        assert addrs == []

        bruno("community", "join", made.json["invitation"])
        bruno.start()
        warnings = bruno("status").json["warnings"]
        assert len(warnings) == 1
        assert warnings[0].startswith("no way to reach anyone")
        assert "no way to reach anyone" in (bruno.home / "run.log").read_text()

        # Once ada's node runs, her invitation holds her address, and no warning.
        ada.start()
        again = ada("community", "invite")
        assert "warning" not in again.json
        assert again.err == ""
        assert decode_invitation(again.json["invitation"])[1] == ada.addrs
