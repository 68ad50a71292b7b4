"""The README's commands, run as they stand (homes and ports made private)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def _blocks(heading: str) -> list[str]:
    text = README.read_text()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_readme_starts_with_the_two_commands() -> None:
    text = README.read_text()
    first, second = re.findall(r"```sh\n(.*?)```", text, re.S)[:2]
    assert first.strip().endswith("troc demo")
    assert "pip install -e '.[test]'" in first
    assert second.strip() == ".venv/bin/pytest"
    ci = (README.parent / ".ci" / "run").read_text()
    assert "\n.venv/bin/pytest\n" in ci  # CI runs exactly the README's test command


def test_five_minute_walkthrough(tmp_path: Path) -> None:
    (script,) = _blocks("## Five minutes")
    script = script.replace("/tmp/", f"{tmp_path}/")
    for port in ("4001", "4002"):
        script = script.replace(f"/tcp/{port}", f"/tcp/{_free_port()}")
    # Record the background nodes' PIDs so the test stops them whatever happens.
    pids = tmp_path / "pids"
    script = script.replace("& ADA=$!", f"& ADA=$!; echo $ADA >> {pids}")
    script = script.replace("& BRUNO=$!", f"& BRUNO=$!; echo $BRUNO >> {pids}")
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    env.pop("TROC_HOME", None)
    try:
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
        )
    finally:
        for pid in pids.read_text().split() if pids.exists() else []:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Bicycle repair" in out  # bruno found ada's offer
    assert "fixed my brakes" in out  # ada saw the payment pending
    assert "me: 3 hours" in out  # ada's balance after accepting
    assert "ada: 3 hours" in out  # bruno sees the same


def test_demo_converges(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "troc", "--json", "demo", "--members", "4"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, TMPDIR=str(tmp_path)),
    )
    assert proc.returncode == 0, proc.stderr
    import json

    result = json.loads(proc.stdout)
    assert result["converged"] is True
    assert result["sum"] == 0
    assert len(result["balances"]) == 4
    assert list(tmp_path.iterdir()) == []  # it cleaned up after itself
