"""Real `troc` processes on 127.0.0.1, driven only through the `troc` command.

Every process a test starts is stopped by the test, by its own PID (SIGTERM,
then SIGKILL after a grace period). Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TROC = [sys.executable, "-m", "troc"]
PASSPHRASE = "e2e passphrase"


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["TROC_PASSPHRASE"] = PASSPHRASE
    e.pop("TROC_HOME", None)
    if "TROC_WEB" not in e:  # the web app's tests ask for it; the others skip its start-up
        e["TROC_NO_WEB"] = "1"  # troc run
        e["TROC_WEB"] = ""  # troc relay (its config's web option)
    return e


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


def troc(home: Path, *args: str, check: bool = True, timeout: float = 60) -> Result:
    """Run one `troc --json …` command for the node at ``home``."""
    proc = subprocess.run(
        [*TROC, "--home", str(home), "--json", *args],
        capture_output=True,
        text=True,
        env=env(),
        timeout=timeout,
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"troc {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return result


@dataclass
class Member:
    """One member: a home folder, and a `troc run` process while it runs."""

    name: str
    home: Path
    proc: subprocess.Popen[str] | None = None
    addrs: list[str] = field(default_factory=list)
    peer_id: str = ""
    member: str = ""

    def __call__(self, *args: str, check: bool = True) -> Result:
        return troc(self.home, *args, check=check)

    def start(
        self,
        *bootstrap: str,
        sync_interval: float = 0.5,
        listen: str = "/ip4/127.0.0.1/tcp/0",
        witness: bool = False,
    ) -> None:
        """Start `troc run` (``listen``: e.g. the previous run's address, to
        restart on the same port; ``witness``: `troc run --witness`)."""
        assert self.proc is None, f"{self.name} is running already"
        args = [
            *TROC,
            "--home",
            str(self.home),
            "--json",
            "run",
            "--listen",
            listen,
            "--sync-interval",
            str(sync_interval),
            "--log-level",
            "warning",
        ]
        if witness:
            args.append("--witness")
        for b in bootstrap:
            args += ["--bootstrap", b]
        log = open(self.home / "run.log", "a")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True, env=env())
        log.close()
        line = _readline(self.proc, timeout=30)
        info = json.loads(line)
        self.addrs, self.peer_id, self.member = info["addrs"], info["peer_id"], info["member"]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the node by its PID; returns its exit code."""
        proc, self.proc = self.proc, None
        assert proc is not None
        try:
            return self._stop(proc, sig)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()

    def _stop(self, proc: subprocess.Popen[str], sig: int) -> int:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            name = signal.Signals(sig).name
            raise AssertionError(f"{self.name} did not stop on {name}") from None

    @property
    def addr(self) -> str:
        return self.addrs[0]

    @property
    def listen_addr(self) -> str:
        """The address it listens on, without the peer id (to restart on the same port)."""
        return self.addr.split("/p2p/")[0]

    def control(self, op: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request to the running node's control socket (no process start):
        the reply, ``{"ok": …, "result" | "error": …}``."""
        return control(self.home, op, params)


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    deadline = time.monotonic() + timeout
    buf = ""
    while time.monotonic() < deadline:
        chunk = proc.stdout.readline()
        if chunk:
            buf += chunk
            if buf.endswith("\n"):
                return buf
        elif proc.poll() is not None:
            raise AssertionError(f"troc run exited with {proc.returncode} before starting")
        else:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("troc run did not print its address in time")


def control(
    home: Path, op: str, params: dict[str, Any] | None = None, timeout: float = 60
) -> dict[str, Any]:
    """One request to the control socket of the node running in ``home``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(home / "control.sock"))
        s.sendall(json.dumps({"op": op, "params": params or {}}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply


def wait_until(
    what: str, predicate: Callable[[], bool], timeout: float = 30, interval: float = 0.3
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextmanager
def members(tmp: Path, *names: str) -> Iterator[list[Member]]:
    """Members with keys (`troc init`), stopped by PID at the end whatever happens."""
    made = []
    for name in names:
        m = Member(name, tmp / name)
        troc(m.home, "init", "--name", name)
        m.member = troc(m.home, "whoami").json["member"]
        made.append(m)
    try:
        yield made
    finally:
        for m in made:
            if m.proc is not None:
                try:
                    m.stop()
                except AssertionError:
                    pass


def balances(m: Member) -> dict[str, int]:
    return dict(m("balances").json["balances"])


def copy_home(src: Member, name: str, tmp: Path) -> Member:
    """A second home holding the same key and store: the same member twice."""
    dst = Member(name, tmp / name, member=src.member)
    shutil.copytree(src.home, dst.home, ignore=shutil.ignore_patterns("control.sock", "*.log"))
    return dst
