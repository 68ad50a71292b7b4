"""The network and the processes of bench/chaos.py (Linux, root).

:class:`Lan` puts each node in a network namespace of its own, all joined by
one bridge that lives in a hub namespace (so nothing of the run touches the
root namespace's interfaces): node ``i`` has ``10.240.0.(10 + i)/24`` on its
end of a veth pair whose other end is a port of the bridge. Every namespace
(and so every veth) is deleted when the :class:`Lan` closes, whatever
happened (:class:`tests.network.netns.Topology`).

A partition is a set of DROP rules in the namespaces: each namespace on one
side drops every packet from and to the addresses of the other side, in both
directions, silently (no reset, no ICMP: what a cut cable or a dead NAT
mapping looks like to TCP). The rules are nftables (``nft``) when it is
installed; without it, blackhole routes (``ip route add blackhole``), which
also drop silently but make the kernel refuse new connects at once. Healing
removes every rule. ``tc netem`` is not available on this kernel, so there is
no delay or loss injection, only cuts.

:class:`Proc` is one `troc` process (or any command) in a namespace: started
with ``ip netns exec`` (which execs, so the PID is the command's own),
SIGKILLed and restarted by that PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.network import netns

SUBNET = "10.240.0"
PORT = 4747
#: Bound on every namespace command.
CMD_TIMEOUT = 15.0
#: How long a `troc` process may take to print its info line after a (re)start.
START_TIMEOUT = 90.0


def check_available() -> str | None:
    """Why this run cannot happen here (one line), or None."""
    try:
        netns.check_available()
    except netns.NetnsUnavailable as exc:
        return str(exc)
    return None


class Lan:
    """Namespaces on one bridge, and partitions between them."""

    def __init__(self) -> None:
        self.topo = netns.Topology()
        self.hub = self.topo.namespace("hub")
        self.topo.run(self.hub, "ip", "link", "add", "br0", "type", "bridge")
        self.topo.run(self.hub, "ip", "link", "set", "br0", "up")
        self.ns: dict[str, str] = {}  # node name -> namespace
        self.ip: dict[str, str] = {}  # node name -> address
        self.cut_in: set[str] = set()  # namespaces holding partition rules
        self.nft = shutil.which("nft") is not None
        self._blackholes: list[tuple[str, str]] = []

    def __enter__(self) -> Lan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.topo.close()

    def add(self, name: str) -> str:
        """A namespace for node ``name`` on the bridge; returns its address."""
        index = len(self.ns)
        ns = self.topo.namespace(name)
        ip = f"{SUBNET}.{10 + index}"
        # Interface names are at most 15 bytes; both ends leave the root namespace at once.
        node_end, hub_end = (f"cv{os.getpid() % 100000}{side}{index}" for side in "nh")
        _ip("link", "add", node_end, "type", "veth", "peer", "name", hub_end)
        try:
            _ip("link", "set", node_end, "netns", ns)
            _ip("link", "set", hub_end, "netns", self.hub)
        except subprocess.CalledProcessError:
            subprocess.run(["ip", "link", "del", node_end], capture_output=True, timeout=10)
            raise
        self.topo.run(self.hub, "ip", "link", "set", hub_end, "master", "br0")
        self.topo.run(self.hub, "ip", "link", "set", hub_end, "up")
        self.topo.run(ns, "ip", "addr", "add", f"{ip}/24", "dev", node_end)
        self.topo.run(ns, "ip", "link", "set", node_end, "up")
        self.ns[name], self.ip[name] = ns, ip
        return ip

    def partition(self, side_a: Iterable[str], side_b: Iterable[str]) -> None:
        """Drop every packet between the nodes of ``side_a`` and those of ``side_b``."""
        a, b = list(side_a), list(side_b)
        for mine, theirs in ((a, b), (b, a)):
            ips = [self.ip[n] for n in theirs]
            for name in mine:
                self._drop(self.ns[name], ips)

    def heal(self) -> None:
        """Remove every partition rule."""
        for ns in sorted(self.cut_in):
            if self.nft:
                self.topo.run(ns, "nft", "delete", "table", "inet", "chaos", timeout=CMD_TIMEOUT)
        for ns, ip in self._blackholes:
            self.topo.run(ns, "ip", "route", "del", "blackhole", f"{ip}/32", timeout=CMD_TIMEOUT)
        self._blackholes.clear()
        self.cut_in.clear()

    def _drop(self, ns: str, ips: Sequence[str]) -> None:
        if self.nft:
            addrs = ", ".join(ips)
            rules = (
                "table inet chaos {\n"
                "  chain input { type filter hook input priority 0; policy accept;"
                f" ip saddr {{ {addrs} }} drop; }}\n"
                "  chain output { type filter hook output priority 0; policy accept;"
                f" ip daddr {{ {addrs} }} drop; }}\n"
                "}\n"
            )
            # A second cut in the same namespace adds to the table (nft merges).
            subprocess.run(
                ["ip", "netns", "exec", ns, "nft", "-f", "-"],
                input=rules,
                check=True,
                capture_output=True,
                text=True,
                timeout=CMD_TIMEOUT,
            )
        else:
            for ip in ips:
                self.topo.run(ns, "ip", "route", "add", "blackhole", f"{ip}/32")
                self._blackholes.append((ns, ip))
        self.cut_in.add(ns)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=CMD_TIMEOUT)


class Proc:
    """One long-running command in a namespace, restartable.

    ``argv`` is run as it is; its first stdout line must be a JSON object
    (the `troc run` / `troc relay` info line), kept in :attr:`info`.
    """

    def __init__(self, name: str, ns: str, argv: Sequence[str], log: Path) -> None:
        self.name, self.ns, self.argv, self.log = name, ns, list(argv), log
        self.child: netns.Child | None = None
        self.info: dict[str, Any] = {}
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.child is not None

    def start(self, argv: Sequence[str] | None = None) -> dict[str, Any]:
        assert self.child is None, f"{self.name} runs already"
        if argv is not None:
            self.argv = list(argv)
        self.child = netns.Child(self.ns, *self.argv)
        try:
            info = self.child.read_json(timeout=START_TIMEOUT)
            # With --json a refusal to start (exit 8: a `troc` command holds
            # the store while the node is down) is a JSON document too.
            if "peer_id" not in info:
                raise AssertionError(f"{self.name} did not start: {json.dumps(info)[:300]}")
        except AssertionError:
            self._reap()
            raise
        self.info = info
        self.starts += 1
        return self.info

    def kill(self) -> None:
        """SIGKILL by PID, and reap."""
        assert self.child is not None, f"{self.name} is not running"
        try:
            os.kill(self.child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it died by itself; reaped below
        self._reap()

    def stop(self) -> None:
        """SIGTERM by PID (SIGKILL after a grace period), and reap."""
        if self.child is not None:
            try:
                self.child.proc.send_signal(signal.SIGTERM)
                self.child.proc.wait(timeout=netns.STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass  # reaped below, with SIGKILL
            self._reap()

    def _reap(self) -> None:
        child, self.child = self.child, None
        assert child is not None
        try:
            # All of its stderr (netns.Child.stderr() shows only the end).
            err = child._stderr
            err.seek(0)
            text = err.read().decode(errors="replace")
        finally:
            child.stop()
        with self.log.open("a") as f:
            stamp = time.strftime("%H:%M:%S")
            f.write(f"--- {self.name} run {self.starts}: exit {child.proc.returncode} at {stamp}\n")
            f.write(text)

    def exited(self) -> int | None:
        """The exit code if the process ended by itself, else None."""
        return None if self.child is None else self.child.proc.poll()
