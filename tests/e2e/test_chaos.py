"""The reliability run (bench/chaos.py) on a short seed, as CI runs it.

A handful of SIGKILLs (members, the server, aimed at payments in flight too)
and one partition over ~25 s of payments, accepts, declines, reclaims and
offers through the CLI, with 7 real `troc` processes in network namespaces
(root only: skipped with the reason otherwise). Then every check of the run
must hold: nothing acknowledged lost, no honest member forked, no transfer
credited twice, every node agreeing, and the deliberate forker caught. The
full run and its figures: docs/reliability.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.network import netns

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"


def test_short_chaos_run_loses_nothing(tmp_path: Path) -> None:
    try:
        netns.check_available()
    except netns.NetnsUnavailable as exc:
        pytest.skip(f"network namespaces unavailable: {exc}")
    args = ["--seed", "7", "--duration", "25", "--kills", "4", "--partitions", "1"]
    args += ["--cut-min", "3", "--cut-max", "8", "--final-timeout", "60"]
    # The bench stops every process it started and deletes its namespaces
    # itself; the timeout only bounds a hung run (it is killed by its PID).
    proc = subprocess.run(
        [sys.executable, str(BENCH), *args, "--keep", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no output; stderr:\n{proc.stderr[-3000:]}"
    result = json.loads(lines[-1])
    print("\n".join(lines[:-1]))
    print(json.dumps(result, indent=1, sort_keys=True))
    assert result["kills"] == 4
    assert result["partitions"] == 1
    assert result["acknowledged"] > 0
    assert result["lost"] == 0
    assert result["self_forks"] == 0
    assert result["double_credits"] == 0
    assert result["diverged_nodes"] == 0
    assert result["sum_not_zero"] == []
    assert result["balance_mismatches"] == 0
    assert result["forker_caught"]
    assert result["final_converge_s"] is not None
    assert proc.returncode == 0, result
