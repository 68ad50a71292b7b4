"""A member whose store was emptied or deleted next to their key does not
fork their own log: `troc` refuses to sign, says what to do, and signs again
once a peer has given the log back. Real `troc` processes on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import Member, balances, members, wait_until

pytestmark = pytest.mark.slow

EXIT_STORE = 8  # README: "8 store unusable"


def _lose_store(m: Member, how: str) -> None:
    store = m.home / "store.sqlite"
    for f in m.home.glob("store.sqlite-*"):
        f.unlink()
    if how == "truncate":
        store.write_bytes(b"")  # as `truncate -s 0 store.sqlite`
    else:
        store.unlink()


def _refused(m: Member, *args: str) -> None:
    result = m(*args, check=False)
    assert result.code == EXIT_STORE, (args, result.code, result.err)
    error = result.json["error"]
    assert error["kind"] == "store"
    message = error["message"]
    assert "\n" not in message
    assert "signed up to seq" in message, message
    assert "troc run --bootstrap" in message, message


@pytest.mark.parametrize("how", ["truncate", "delete"])
def test_a_lost_store_signs_nothing_until_a_peer_gives_the_log_back(
    tmp_path: Path, how: str
) -> None:
    with members(tmp_path, "ada", "bruno") as (ada, bruno):
        ada("community", "create", "--name", "V", "--unit", "h", "--credit-limit", "50")
        ada.start()
        invitation = ada("community", "invite").json["invitation"]
        bruno("community", "join", invitation)
        bruno.start(ada.addr)
        for amount in ("1", "2"):
            bruno("pay", ada.member, amount)
        wait_until("ada to hold bruno's payments", lambda: balances(ada)[bruno.member] == -3)
        bruno.stop()

        _lose_store(bruno, how)
        # Offline: the hint "create one or join one" would fork the log; refused.
        _refused(bruno, "pay", ada.member, "5")
        _refused(bruno, "community", "join", invitation)
        assert bruno.member not in balances(bruno)  # nothing signed

        # Online, with a peer that has the log: refused until synced, then fine.
        bruno.start(ada.addr)
        wait_until("bruno to get his log back", lambda: bruno.member in balances(bruno))
        wait_until(
            "bruno to sign again",
            lambda: bruno("pay", ada.member, "5", check=False).code == 0,
            timeout=30,
        )
        expect = {ada.member: 0, bruno.member: -8}  # pending until ada accepts
        wait_until("both to agree", lambda: balances(ada) == balances(bruno) == expect, timeout=15)
        seqs = [e["seq"] for e in bruno("history").json["entries"]]
        assert seqs == [4, 3, 2, 1]  # one log, carried on after what it had signed
        for m in (ada, bruno):
            assert m("forks").json["forks"] == [], m.name
