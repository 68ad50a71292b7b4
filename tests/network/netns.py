"""Linux network namespaces and child processes for multi-host tests (root only).

:class:`Topology` builds namespaces joined by veth pairs, with addresses in
private ranges it owns, and deletes every namespace and link it created on
exit, whatever happened. :class:`Child` runs a command inside a namespace
(``ip netns exec``, which execs the command: the PID is the command's own),
reads its JSON-line reports with a deadline, and stops it by PID on exit
(SIGTERM, then SIGKILL, each wait bounded).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

#: Bound on every ``ip`` command.
IP_TIMEOUT = 10.0
#: How long a child gets to exit after SIGTERM, then after SIGKILL.
STOP_TIMEOUT = 5.0


class NetnsUnavailable(Exception):
    """This machine cannot create network namespaces (not root, no ``ip``, no permission)."""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=IP_TIMEOUT)


def check_available() -> None:
    """Raise :class:`NetnsUnavailable` with the reason if namespaces cannot be used here."""
    if os.name != "posix" or not Path("/proc/self/ns/net").exists():
        raise NetnsUnavailable("no Linux network namespaces on this system")
    if os.geteuid() != 0:
        raise NetnsUnavailable("network namespaces need root")
    if shutil.which("ip") is None:
        raise NetnsUnavailable("the `ip` command (iproute2) is not installed")
    probe = f"troc-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        stderr = getattr(exc, "stderr", b"") or b""
        raise NetnsUnavailable(f"`ip netns add` failed: {stderr.decode().strip()}") from exc
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=IP_TIMEOUT)


class Topology:
    """Namespaces and veth links, all removed on :meth:`close` (or leaving ``with``).

    Names carry this process's PID, so parallel runs do not collide and a
    leftover from a killed run is recognisable (``troc-<pid>-…``).
    """

    def __init__(self) -> None:
        self._tag = f"troc-{os.getpid()}"
        self._namespaces: list[str] = []
        self._links: list[str] = []  # veth ends still in the root namespace
        self._count = 0

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def namespace(self, name: str) -> str:
        """Create namespace ``troc-<pid>-<name>`` with its loopback up; return its name."""
        ns = f"{self._tag}-{name}"
        _ip("netns", "add", ns)
        self._namespaces.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        # New namespaces start with forwarding off; make it explicit, since a
        # relay namespace that routed would make the test prove nothing.
        self.run(ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
        return ns

    def link(self, ns_a: str, addr_a: str, ns_b: str, addr_b: str) -> None:
        """A veth pair between two namespaces, ``addr_*`` in CIDR form (``10.231.1.1/24``)."""
        self._count += 1
        # Interface names are limited to 15 bytes.
        end_a, end_b = (
            f"tv{os.getpid() % 100000}a{self._count}",
            f"tv{os.getpid() % 100000}b{self._count}",
        )
        _ip("link", "add", end_a, "type", "veth", "peer", "name", end_b)
        self._links.append(end_a)
        for end, ns, addr in ((end_a, ns_a, addr_a), (end_b, ns_b, addr_b)):
            _ip("link", "set", end, "netns", ns)
            _ip("-n", ns, "addr", "add", addr, "dev", end)
            _ip("-n", ns, "link", "set", end, "up")
        self._links.remove(end_a)  # both ends now die with their namespaces

    def run(
        self, ns: str, *cmd: str, timeout: float = IP_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", ns, *cmd],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def close(self) -> None:
        for end in self._links:
            subprocess.run(["ip", "link", "del", end], capture_output=True, timeout=IP_TIMEOUT)
        self._links.clear()
        for ns in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=IP_TIMEOUT)
        self._namespaces.clear()


class Child:
    """A command running inside a namespace, reporting on stdout one JSON object per line."""

    def __init__(self, ns: str, *cmd: str) -> None:
        # stderr goes to a file, not a pipe: a chatty child must never block
        # on a full pipe nobody reads.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *cmd],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.pid = self.proc.pid
        self._buf = b""

    def read_json(self, timeout: float) -> dict[str, Any]:
        """The next JSON line, within ``timeout`` seconds; raises with the child's stderr if not."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise AssertionError(f"no report within {timeout} s; stderr:\n{self.stderr()}")
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    self.proc.wait(timeout=STOP_TIMEOUT)
                    raise AssertionError(
                        f"child exited ({self.proc.returncode}) without a report; "
                        f"stderr:\n{self.stderr()}"
                    )
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        result: dict[str, Any] = json.loads(line)
        return result

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-4000:].decode(errors="replace")

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        """Stop the child by its PID: SIGTERM, then SIGKILL; each wait bounded."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
