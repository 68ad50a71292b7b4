"""Community servers (`troc relay`) with real processes on 127.0.0.1.

A server follows a community (`troc community follow`), stores every log of
it and forwards them: members who are never online together trade through
it, a server killed with SIGKILL loses nothing it acknowledged, and with two
servers the members carry on through the one left while the other is down.
Every process is stopped by its PID (the `members` context manager); every
wait is bounded.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import (
    PASSPHRASE,
    TROC,
    Member,
    _readline,
    balances,
    env,
    members,
    wait_until,
)

pytestmark = pytest.mark.slow


# -- helpers -------------------------------------------------------------------


def start_relay(
    server: Member,
    *bootstrap: str,
    listen: str = "/ip4/127.0.0.1/tcp/0",
    sync_interval: float = 0.5,
) -> dict[str, Any]:
    """Start `troc relay` for ``server`` (a Member whose home has a key): the
    same bookkeeping as Member.start, so `members()` stops it by its PID.
    Returns the info line (with ``metrics``, the bound host:port)."""
    assert server.proc is None, f"{server.name} is running already"
    args = [
        *TROC,
        "--home",
        str(server.home),
        "--json",
        "relay",
        "--listen",
        listen,
        "--metrics-listen",
        "127.0.0.1:0",
        "--log-level",
        "warning",
    ]
    for b in bootstrap:
        args += ["--bootstrap", b]
    e = env()
    e["TROC_SYNC_INTERVAL"] = str(sync_interval)
    log = open(server.home / "relay.log", "a")  # noqa: SIM115 - closed with the process
    server.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True, env=e)
    log.close()
    info: dict[str, Any] = json.loads(_readline(server.proc, timeout=30))
    server.addrs, server.peer_id, server.member = info["addrs"], info["peer_id"], info["member"]
    return info


def status(m: Member) -> dict[str, Any]:
    reply = m.control("status")
    assert reply["ok"], reply
    result: dict[str, Any] = reply["result"]
    return result


def heads(m: Member) -> dict[str, int]:
    """{member id: last seq} of the (only) community, from the running node."""
    communities = status(m)["communities"]
    return dict(communities[0]["heads"]) if communities else {}


def own_seq(m: Member) -> int:
    return heads(m)[m.member]


def wait_holds(server: Member, m: Member, timeout: float = 30) -> None:
    """Wait until ``server`` holds every entry of the running member ``m``."""
    seq = own_seq(m)
    wait_until(
        f"{server.name} to hold {m.name}'s log up to {seq}",
        lambda: heads(server).get(m.member, 0) >= seq,
        timeout=timeout,
    )


def entry_ids(m: Member, *authors: str) -> set[str]:
    """Every entry id the running node ``m`` holds of ``authors``."""
    ids: set[str] = set()
    for author in authors:
        reply = m.control("history", {"member": author, "limit": 1000})
        assert reply["ok"], reply
        ids |= {e["entry"] for e in reply["result"]["entries"]}
    return ids


def peer_ids(m: Member) -> set[str]:
    return set(status(m)["peers"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def peer_id_of(m: Member) -> str:
    """The libp2p peer id the node in ``m.home`` will have (from its key)."""
    from troc.crypto.keystore import load_key
    from troc.net.p2p import peer_id_from_seed

    return peer_id_from_seed(load_key(m.home / "key", PASSPHRASE))


def http_json(address: str, path: str) -> Any:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as reply:
        return json.loads(reply.read())


def found(m: Member) -> str:
    """``m`` founds a community offline and returns an (offline) invitation."""
    m("community", "create", "--name", "Valley LETS", "--unit", "hours", "--credit-limit", "20")
    invitation: str = m("community", "invite").json["invitation"]
    return invitation


# -- a: two members never online together ------------------------------------------


def test_members_never_online_together_trade_through_a_server(tmp_path: Path) -> None:
    with members(tmp_path, "server", "ada", "bruno") as (server, ada, bruno):
        running: list[str] = []

        def start(m: Member) -> None:
            other = bruno if m is ada else ada
            assert other.proc is None, f"{m.name} and {other.name} would run together"
            m.start(server.addr)
            running.append(m.name)
            # The server sees only this member: the other is really gone.
            assert other.peer_id not in peer_ids(server)

        def stop(m: Member) -> None:
            assert m.stop() == 0
            wait_until(
                f"{server.name} to see {m.name} leave",
                lambda: m.peer_id not in peer_ids(server),
                timeout=15,
            )

        invitation = found(ada)  # offline: the founder never runs with the server yet
        info = start_relay(server)
        assert server("community", "follow", invitation).json["addrs"] == []
        health = http_json(info["metrics"], "/health")
        assert (health["status"], health["communities"]) == ("ok", 1)
        # The server's own invitation names it: members reach it from there.
        invite = server("community", "invite").json["invitation"]
        community = bruno("community", "join", invite).json["community"]
        assert community == server("community", "show").json["community"]
        assert [c["community"] for c in status(server)["communities"]] == [community]

        # bruno's join reaches the server.
        start(bruno)
        wait_holds(server, bruno)
        stop(bruno)

        # ada (alone) learns bruno's join from the server, publishes a want, pays
        # bruno for it (a payment names an offer of its payee or a want of its payer).
        start(ada)
        wait_until("ada to learn bruno's join", lambda: bruno.member in heads(ada))
        offer = ada(
            "offer", "add", "--want", "--title", "Bicycle repair", "--tag", "bikes", "--price", "3"
        ).json["offer"]
        transfer = ada("pay", bruno.member, "3", "--memo", "brakes", "--offer", offer).json[
            "transfer"
        ]
        wait_holds(server, ada)
        assert {offer, transfer} <= entry_ids(server, ada.member)
        stop(ada)

        # bruno (alone) finds the offer and the payment on the server, accepts.
        start(bruno)
        wait_until(
            "bruno to see ada's offer and payment",
            lambda: (
                [o["offer"] for o in bruno("offer", "search", "bicycle").json["offers"]] == [offer]
                and [t["transfer"] for t in bruno("pending").json["incoming"]] == [transfer]
            ),
        )
        accept = bruno("accept", transfer).json["accept"]
        wait_holds(server, bruno)
        assert accept in entry_ids(server, bruno.member)
        stop(bruno)

        # ada (alone again) sees the payment accepted.
        start(ada)
        expect = {ada.member: -3, bruno.member: 3}
        wait_until("ada to see the payment accepted", lambda: balances(ada) == expect)
        mine = ada("balance").json
        assert (mine["balance"], mine["pending_out"]) == (-3, 0)
        assert ada("pending").json["outgoing"] == []
        history = ada("history", bruno.member).json["entries"]
        assert accept in {e["entry"] for e in history}
        stop(ada)

        assert running == ["bruno", "ada", "bruno", "ada"]
        assert balances(server) == expect  # the server computes the same ledger
        # It followed without joining: it signed nothing in the community.
        assert server.member not in heads(server)


# -- b: SIGKILL loses nothing ----------------------------------------------------------


def test_server_killed_loses_nothing_and_members_carry_on(tmp_path: Path) -> None:
    with members(tmp_path, "server", "ada", "bruno") as (server, ada, bruno):
        invitation = found(ada)
        bruno("community", "join", invitation)
        start_relay(server)
        server("community", "follow", invitation)
        ada.start(server.addr)
        bruno.start(server.addr)
        transfers = [
            ada("pay", bruno.member, "1", "--memo", f"#{i}").json["transfer"] for i in range(6)
        ]
        wait_until("bruno to see six payments", lambda: len(bruno("pending").json["incoming"]) == 6)
        accepts = [bruno("accept", t).json["accept"] for t in transfers[:3]]
        for m in (ada, bruno):
            wait_holds(server, m)
        acknowledged = entry_ids(server, ada.member, bruno.member)
        assert set(transfers) | set(accepts) <= acknowledged
        held = heads(server)

        listen = server.listen_addr
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
        # Offline, the server's store already holds everything it acknowledged
        # (a payer is debited at once; the payee is credited on accepting).
        assert server("balances").json["balances"] == {ada.member: -6, bruno.member: 3}
        start_relay(server, listen=listen)
        assert server.listen_addr == listen
        assert heads(server) == held
        assert entry_ids(server, ada.member, bruno.member) == acknowledged

        # The members carry on through the restarted server: they reach it
        # again (they redial it by themselves; `troc connect` makes it now,
        # whatever py-libp2p's 60 s cache of failed dials says), pay and accept.
        for m in (ada, bruno):
            m("connect", server.addr)
        extra = ada("pay", bruno.member, "2", "--memo", "after the crash").json["transfer"]
        wait_until(
            "bruno to see the payment made after the crash",
            lambda: extra in {t["transfer"] for t in bruno("pending").json["incoming"]},
        )
        bruno("accept", extra)
        for m in (ada, bruno):
            wait_holds(server, m)
        expect = {ada.member: -8, bruno.member: 5}
        for m in (server, ada, bruno):
            wait_until(f"{m.name} to agree on the balances", lambda m=m: balances(m) == expect)


# -- c: two servers, one down -----------------------------------------------------------


def test_two_servers_one_killed_members_carry_on_and_it_catches_up(tmp_path: Path) -> None:
    with members(tmp_path, "s1", "s2", "ada", "bruno") as (s1, s2, ada, bruno):
        invitation = found(ada)
        bruno("community", "join", invitation)
        for s in (s1, s2):
            s("community", "follow", invitation)  # offline, before the first start
        # Each server bootstraps to the other: their addresses are fixed up front.
        listen = {s.name: f"/ip4/127.0.0.1/tcp/{free_port()}" for s in (s1, s2)}
        full = {s.name: f"{listen[s.name]}/p2p/{peer_id_of(s)}" for s in (s1, s2)}
        start_relay(s1, full["s2"], listen=listen["s1"])
        start_relay(s2, full["s1"], listen=listen["s2"])
        assert [s1.addr, s2.addr] == [full["s1"], full["s2"]]
        wait_until("the servers to connect", lambda: s2.peer_id in peer_ids(s1))
        ada.start(s1.addr, s2.addr)
        bruno.start(s1.addr, s2.addr)
        for m in (ada, bruno):
            for s in (s1, s2):
                wait_holds(s, m)
        t1 = ada("pay", bruno.member, "4", "--memo", "both servers up").json["transfer"]
        wait_until(
            "bruno to see the first payment",
            lambda: [t["transfer"] for t in bruno("pending").json["incoming"]] == [t1],
        )
        bruno("accept", t1)
        for s in (s1, s2):
            wait_holds(s, bruno)
        # The members know only the servers: whatever they exchange goes through one.
        assert peer_ids(ada) == {s1.peer_id, s2.peer_id}
        assert peer_ids(bruno) == {s1.peer_id, s2.peer_id}

        assert s1.stop(signal.SIGKILL) == -signal.SIGKILL
        wait_until(
            "ada and bruno to see s1 gone", lambda: peer_ids(ada) == peer_ids(bruno) == {s2.peer_id}
        )
        t2 = ada("pay", bruno.member, "5", "--memo", "s1 down").json["transfer"]
        wait_until(
            "bruno to see the payment through s2",
            lambda: [t["transfer"] for t in bruno("pending").json["incoming"]] == [t2],
        )
        accept = bruno("accept", t2).json["accept"]
        expect = {ada.member: -9, bruno.member: 9}
        wait_until("ada to see it accepted", lambda: balances(ada) == expect)
        for m in (ada, bruno):
            wait_holds(s2, m)

        # s1 comes back on the same port, bootstrapped to s2, and catches up.
        start_relay(s1, full["s2"], listen=listen["s1"])
        wait_until("s1 to hold what s2 holds", lambda: heads(s1) == heads(s2), timeout=30)
        assert accept in entry_ids(s1, bruno.member)
        assert balances(s1) == balances(s2) == expect
