"""A member that can reach only the server pays and is paid through the circuit relay.

Three Linux network namespaces, made by the test (root only; skipped with the
reason otherwise), with private addresses it owns:

    A (member) 10.232.1.1 ──veth── 10.232.1.2  S (server)  10.232.2.2 ──veth── 10.232.2.1 B (member)

A and B each have one link, to S, and a default route through S; S has IP
forwarding off, so no packet of A's ever reaches B (and the reverse): the
test shows a TCP connect from A to B's listening port failing. S runs
`troc relay`; A and B run `troc run --relay <S> --bootstrap <S>` and hold a
reservation there; B dials A's /p2p-circuit address with `troc connect`
(through its control socket). Then A pays B, B accepts, B pays A, A accepts,
and both report the same balances.

Two cases: S does not follow the community (its store never holds an entry
of it, so the entries can only have travelled over the circuit), and S
follows it too (then it also serves the logs, and must agree).

Every `troc` process runs in its namespace (``ip netns exec``, which execs:
the PID is troc's own) and is stopped by that PID in a ``finally``; the
namespaces are deleted in a ``finally`` (``netns.Topology``). The control
sockets are files in each home, so the `troc` commands run from the test's
own namespace. Every wait is bounded.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import TROC, troc, wait_until
from tests.network import netns

pytestmark = pytest.mark.slow

A_IP, S_A_IP = "10.232.1.1", "10.232.1.2"
B_IP, S_B_IP = "10.232.2.1", "10.232.2.2"
PORT = 4747
#: How long a payment may take to reach the other member through the relay
#: (sync_interval is 0.5 s; gossip over the circuit usually takes well under 1 s).
DELIVERY = 20.0


def _can_connect(topo: netns.Topology, ns: str, ip: str, port: int) -> bool:
    """Whether a TCP connect from namespace ``ns`` to ``ip:port`` succeeds (2 s bound)."""
    probe = (
        "import socket, sys\n"
        "try:\n"
        f"    socket.create_connection(({ip!r}, {port}), timeout=2).close()\n"
        "except OSError as exc:\n"
        "    print(exc); sys.exit(1)\n"
    )
    result = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=15,
    )
    return result.returncode == 0


def _status(home: Path) -> dict[str, Any]:
    result: dict[str, Any] = troc(home, "status").json
    return result


def _peer_ids(home: Path) -> set[str]:
    return {p["peer_id"] for p in troc(home, "peers").json["peers"]}


def _heads(home: Path) -> set[str]:
    """Members whose logs the running node at ``home`` holds (all communities)."""
    return {m for c in _status(home)["communities"] for m in c["heads"]}


def _balances(home: Path) -> dict[str, int]:
    return dict(troc(home, "balances").json["balances"])


def _incoming(home: Path) -> set[str]:
    return {t["transfer"] for t in troc(home, "pending").json["incoming"]}


@pytest.mark.parametrize("server_follows", [False, True], ids=["server-blind", "server-follows"])
def test_member_behind_nat_pays_and_is_paid_through_the_relay(
    topology: netns.Topology, tmp_path: Path, server_follows: bool
) -> None:
    ns_s, ns_a, ns_b = (topology.namespace(n) for n in ("s", "a", "b"))
    topology.link(ns_a, f"{A_IP}/24", ns_s, f"{S_A_IP}/24")
    topology.link(ns_b, f"{B_IP}/24", ns_s, f"{S_B_IP}/24")
    # "Behind NAT": everything goes to the server's side, which does not route.
    topology.run(ns_a, "ip", "route", "add", "default", "via", S_A_IP)
    topology.run(ns_b, "ip", "route", "add", "default", "via", S_B_IP)
    assert topology.run(ns_s, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "0"

    homes = {n: tmp_path / n for n in ("s", "a", "b")}
    troc(homes["s"], "init", "--name", "server", "--no-passphrase")
    member = {}
    for n in ("a", "b"):
        troc(homes[n], "init", "--name", n)
        member[n] = troc(homes[n], "whoami").json["member"]
    # Everything is set up offline, so the invitation names no address: the
    # only way A and B learn of each other is the circuit address B dials.
    created = troc(
        homes["a"], "community", "create", "--name", "NAT LETS", "--unit", "h",
        "--credit-limit", "50",
    ).json  # fmt: skip
    community = created["community"]
    invitation = troc(homes["a"], "community", "invite").json["invitation"]
    assert troc(homes["b"], "community", "join", invitation).json["addrs"] == []
    if server_follows:
        troc(homes["s"], "community", "follow", invitation)
    config = tmp_path / "relay.toml"
    config.write_text(
        f'home = "{homes["s"]}"\n'
        f'listen = ["/ip4/{S_A_IP}/tcp/{PORT}", "/ip4/{S_B_IP}/tcp/{PORT}"]\n'
        'metrics_listen = ""\n'
        "sync_interval = 0.5\n"
        'log_level = "warning"\n'
    )

    children: list[netns.Child] = []
    try:
        server = netns.Child(ns_s, *TROC, "--json", "relay", "--config", str(config))
        children.append(server)
        s_info = server.read_json(timeout=30)
        s_id = s_info["peer_id"]
        s_addr = {ns_a: f"/ip4/{S_A_IP}/tcp/{PORT}/p2p/{s_id}"}
        s_addr[ns_b] = f"/ip4/{S_B_IP}/tcp/{PORT}/p2p/{s_id}"
        assert sorted(s_info["addrs"]) == sorted(s_addr.values())

        for n, ns, ip in (("a", ns_a, A_IP), ("b", ns_b, B_IP)):
            child = netns.Child(
                ns, *TROC, "--home", str(homes[n]), "--json", "run",
                "--listen", f"/ip4/{ip}/tcp/{PORT}", "--sync-interval", "0.5",
                "--log-level", "warning", "--relay", s_addr[ns], "--bootstrap", s_addr[ns],
            )  # fmt: skip
            children.append(child)
            info = child.read_json(timeout=30)
            assert info["member"] == member[n]
        a_id = _status(homes["a"])["peer_id"]
        b_id = _status(homes["b"])["peer_id"]

        # The network as a NATed member sees it: the server, and nobody else.
        assert _can_connect(topology, ns_a, S_A_IP, PORT)
        assert _can_connect(topology, ns_b, S_B_IP, PORT)
        assert not _can_connect(topology, ns_a, B_IP, PORT)
        assert not _can_connect(topology, ns_b, A_IP, PORT)

        # A holds a reservation; its circuit address on B's side of S.
        def a_circuit() -> str | None:
            for addr in _status(homes["a"])["relayed_addrs"]:
                if addr.startswith(f"{s_addr[ns_b]}/p2p-circuit/"):
                    return str(addr)
            return None

        wait_until("A to hold a reservation on S", lambda: a_circuit() is not None, timeout=30)
        target = a_circuit()
        assert target == f"{s_addr[ns_b]}/p2p-circuit/p2p/{a_id}"
        wait_until(
            "B to hold a reservation on S",
            lambda: bool(_status(homes["b"])["relayed_addrs"]),
            timeout=30,
        )
        assert troc(homes["b"], "connect", target).json["peer_id"] == a_id
        wait_until(
            "A and B to list each other as peers",
            lambda: b_id in _peer_ids(homes["a"]) and a_id in _peer_ids(homes["b"]),
            timeout=DELIVERY,
        )
        assert _status(homes["s"])["relay"]["circuits"] >= 1
        # Each learns the other's join (over the circuit: S may not even hold them).
        wait_until(
            "A and B to hold each other's log",
            lambda: {member["a"], member["b"]} <= _heads(homes["a"]) & _heads(homes["b"]),
            timeout=DELIVERY,
        )

        start = time.monotonic()
        paid = troc(homes["a"], "pay", member["b"], "5", "--memo", "through the relay").json
        wait_until(
            "A's payment to reach B",
            lambda: paid["transfer"] in _incoming(homes["b"]),
            timeout=DELIVERY,
        )
        a_to_b = time.monotonic() - start
        assert not _can_connect(topology, ns_a, B_IP, PORT)  # still no route, A to B
        troc(homes["b"], "accept", paid["transfer"])

        start = time.monotonic()
        back = troc(homes["b"], "pay", member["a"], "2", "--memo", "and back").json
        wait_until(
            "B's payment to reach A",
            lambda: back["transfer"] in _incoming(homes["a"]),
            timeout=DELIVERY,
        )
        b_to_a = time.monotonic() - start
        assert not _can_connect(topology, ns_b, A_IP, PORT)
        troc(homes["a"], "accept", back["transfer"])

        expect = {member["a"]: -3, member["b"]: 3}

        def agree() -> bool:
            views = [_balances(homes["a"]), _balances(homes["b"])]
            return views[0] == views[1] and {m: views[0].get(m) for m in expect} == expect

        wait_until("A and B to report the same balances", agree, timeout=DELIVERY)
        assert all(v == 0 for m, v in _balances(homes["a"]).items() if m not in expect)
        assert b_id in _peer_ids(homes["a"])
        assert a_id in _peer_ids(homes["b"])

        s_status = _status(homes["s"])
        s_communities = [c["community"] for c in s_status["communities"]]
        if server_follows:
            assert s_communities == [community]
            wait_until(
                "S to hold both members' logs",
                lambda: {member["a"], member["b"]} <= _heads(homes["s"]),
                timeout=DELIVERY,
            )
        else:
            # S never stored an entry of the community: they all went over the circuit.
            assert s_communities == []
        print(f"A->B delivered in {a_to_b:.2f} s, B->A in {b_to_a:.2f} s")
    finally:
        for child in reversed(children):
            child.stop()
