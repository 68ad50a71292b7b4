"""A node cut off silently (its packets dropped) is noticed, and the three
nodes agree within seconds of the heal, however long the cut lasted.

Three Linux network namespaces, made by the test (root only; skipped with the
reason otherwise), each pair joined by a veth link:

    A 10.233.1.1 ── 10.233.1.2 B      A 10.233.2.1 ── 10.233.2.2 C
    B 10.233.3.1 ── 10.233.3.2 C

B bootstraps from A, C from A and B. C is then cut off by an nftables rule in
its own namespace that drops every packet but loopback's: no RST, no FIN,
the connections look alive. While the cut lasts, A and B trade and C pays A.
Without a liveness check the connections stay "alive" and the data waits for
the kernel's retransmission timer, which backs off with the cut's length
(~19 s after a 32 s cut). With it, A and B list C as dead within seconds,
everyone redials, and after the heal the three agree within HEAL_BOUND.

Every `troc` process runs in its namespace (``ip netns exec`` execs it: the
PID is troc's own) and is stopped by that PID in a ``finally``; the
namespaces are deleted in a ``finally`` (``netns.Topology``).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import TROC, troc, wait_until
from tests.network import netns

pytestmark = pytest.mark.slow

PORT = 4748
IPS = {
    ("a", "b"): ("10.233.1.1", "10.233.1.2"),
    ("a", "c"): ("10.233.2.1", "10.233.2.2"),
    ("b", "c"): ("10.233.3.1", "10.233.3.2"),
}
#: How long C stays cut off. TCP's retransmissions of data sent at the cut
#: (RTO from 0.2 s, doubling) fall at 12.6, 25.4 and 51 s: after a 32 s cut
#: the kernel alone would hold the data ~19 s past the heal, beyond HEAL_BOUND.
CUT = 32.0
#: After the heal, all three must agree within this (seconds).
HEAL_BOUND = 10.0
CUT_RULES = """table inet troc_cut {
  chain input { type filter hook input priority 0; policy accept; iifname != "lo" drop; }
  chain output { type filter hook output priority 0; policy accept; oifname != "lo" drop; }
}
"""


def _ip(me: str, other: str) -> str:
    """My address on the link between me and other."""
    pair = tuple(sorted((me, other)))
    return IPS[pair][pair.index(me)]  # type: ignore[index]


def _view(home: Path) -> dict[str, Any]:
    """Every member's head (seq) the running node holds."""
    status = troc(home, "status").json
    return {m: s for c in status["communities"] for m, s in c["heads"].items()}


def _states(home: Path) -> dict[str, str]:
    return {p["peer_id"]: p["state"] for p in troc(home, "peers").json["peers"]}


@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nftables (.ci/run installs it)")
def test_a_silent_partition_is_noticed_and_healed_within_seconds(
    topology: netns.Topology, tmp_path: Path
) -> None:
    names = ("a", "b", "c")
    ns = {n: topology.namespace(n) for n in names}
    for (x, y), (ip_x, ip_y) in IPS.items():
        topology.link(ns[x], f"{ip_x}/24", ns[y], f"{ip_y}/24")
    homes = {n: tmp_path / n for n in names}
    member = {}
    for n in names:
        troc(homes[n], "init", "--name", n)
        member[n] = troc(homes[n], "whoami").json["member"]
    troc(homes["a"], "community", "create", "--name", "P", "--unit", "h", "--credit-limit", "99")
    invitation = troc(homes["a"], "community", "invite").json["invitation"]
    for n in ("b", "c"):
        troc(homes[n], "community", "join", invitation)
    cut_file = tmp_path / "cut.nft"
    cut_file.write_text(CUT_RULES)

    children: list[netns.Child] = []
    try:
        peer_id: dict[str, str] = {}
        bootstrap = {"a": (), "b": ("a",), "c": ("a", "b")}
        for n in names:
            args = [*TROC, "--home", str(homes[n]), "--json", "run", "--log-level", "warning"]
            for other in names:
                if other != n:
                    args += ["--listen", f"/ip4/{_ip(n, other)}/tcp/{PORT}"]
            for other in bootstrap[n]:
                args += ["--bootstrap", f"/ip4/{_ip(other, n)}/tcp/{PORT}/p2p/{peer_id[other]}"]
            child = netns.Child(ns[n], *args)
            children.append(child)
            peer_id[n] = child.read_json(timeout=30)["peer_id"]

        def agree() -> bool:
            views = [_view(homes[n]) for n in names]
            return views[0] == views[1] == views[2] and len(views[0]) == 3

        wait_until("the three nodes to connect and agree", agree, timeout=30)
        for n in names:
            assert set(_states(homes[n]).values()) == {"alive"}, n

        topology.run(ns["c"], "nft", "-f", str(cut_file))
        cut_at = time.monotonic()
        troc(homes["a"], "pay", member["b"], "2")
        troc(homes["c"], "pay", member["a"], "3")
        # A and B notice (pings unanswered), close the dead links and say so.
        wait_until(
            "A and B to list C as dead",
            lambda: (
                _states(homes["a"]).get(peer_id["c"]) == "dead"
                and _states(homes["b"]).get(peer_id["c"]) == "dead"
            ),
            timeout=CUT - 10,
        )
        assert _states(homes["a"])[peer_id["b"]] == "alive"
        troc(homes["b"], "pay", member["a"], "1")
        time.sleep(max(0.0, CUT - (time.monotonic() - cut_at)))
        assert not agree()  # C was cut off all along

        topology.run(ns["c"], "nft", "delete", "table", "inet", "troc_cut")
        healed_at = time.monotonic()
        wait_until("the three nodes to agree after the heal", agree, timeout=60, interval=0.5)
        took = time.monotonic() - healed_at
        print(f"cut {CUT:.0f} s -> agreed {took:.1f} s after the heal")
        assert took <= HEAL_BOUND, f"agreed {took:.1f} s after the heal"
        # Every pair is linked directly again. (py-libp2p's own connect
        # dialled the peer's first-listed address, here often one on a link
        # the dialler has no route to, so one pair stayed apart for minutes
        # while the third link carried the data: troc.net.p2p.P2PHost.connect
        # now dials the address it is given.)
        wait_until(
            "every node to list the other two as alive",
            lambda: all(
                sorted(_states(homes[n]).get(peer_id[o]) for o in names if o != n)
                == ["alive", "alive"]
                for n in names
            ),
            timeout=HEAL_BOUND,
        )
    finally:
        for child in children:
            child.stop()
