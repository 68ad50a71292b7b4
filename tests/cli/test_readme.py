"""The README's commands, run as they stand (homes and ports made private)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def _blocks(heading: str, lang: str = "sh") -> list[str]:
    text = README.read_text()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", section, re.S)


def _newcomer_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a newcomer's shell: nothing of troc's on PATH (the
    venv running these tests is removed from it), no troc variables, and a
    private TMPDIR so ``mktemp -d`` makes the homes under ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TROC_")}
    env.pop("VIRTUAL_ENV", None)
    path = [p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if Path(p) != BIN]
    env["PATH"] = os.pathsep.join(path)
    env["TMPDIR"] = str(tmp_path)
    return env


def _run_as_newcomer(
    script: str, tmp_path: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a README block as it stands, from the README's folder, in a
    process group of its own: whatever the block leaves running when it
    fails is stopped by that group's id (the block's own PID)."""
    if not (README.parent / ".venv" / "bin" / "troc").exists():
        pytest.skip("the README's commands need troc installed in .venv (its first command)")
    proc = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=README.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_newcomer_env(tmp_path),
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the README block did not finish in {timeout} s:\n{err}")
    left = _group_alive(proc.pid)
    if left:
        os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert not left, "the README block left its nodes running"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_readme_starts_with_the_two_commands() -> None:
    text = README.read_text()
    first, second = re.findall(r"```sh\n(.*?)```", text, re.S)[:2]
    assert first.strip().endswith("troc demo")
    assert "pip install -e '.[test]'" in first
    assert second.strip().startswith(".venv/bin/pytest")
    ci = (README.parent / ".ci" / "run").read_text()
    assert f"\n{second.strip()}\n" in ci  # CI runs exactly the README's test command


def test_five_minute_walkthrough(tmp_path: Path) -> None:
    (script,) = _blocks("## Five minutes")
    proc = _run_as_newcomer(script, tmp_path, timeout=180)
    out = proc.stdout
    assert "Bicycle repair" in out  # bruno found ada's offer
    assert "fixed my brakes" in out  # ada saw the payment pending
    assert "me: 3 hours" in out  # ada's balance after accepting
    assert "ada: 3 hours" in out  # bruno sees the same
    homes = [p.name for d in tmp_path.iterdir() for p in d.iterdir()]
    assert sorted(homes) == ["ada", "bruno"]  # both homes in the fresh folder


def test_witnessed_walkthrough(tmp_path: Path) -> None:
    """Four witnesses, a founder and a payee invited by the founder alone: the
    payment and its accept become final with no `troc connect` by hand."""
    (script,) = _blocks("## Witnessed communities")
    proc = _run_as_newcomer(script, tmp_path, timeout=180)
    out = proc.stdout
    # The pay, then the accept (a fourth witness may answer before the certificate is made).
    assert len(re.findall(r"final: certified by [34] witnesses \(3 needed\)", out)) == 2, out
    assert "me: 3 hours final" in out  # bruno's final balance


def test_python_blocks_run(tmp_path: Path) -> None:
    """Every Python block of the README runs as it stands, as a script."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has a Library example"
    env = _newcomer_env(tmp_path)
    out = ""
    for i, code in enumerate(blocks):
        script = tmp_path / f"block{i}.py"
        script.write_text(code)
        proc = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 0, f"README python block {i}:\n{proc.stderr}"
        out += proc.stdout
    # The Library example prints the node's addresses and the founder's balance.
    assert "/ip4/127.0.0.1/tcp/" in out
    assert "balance=0" in out


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
