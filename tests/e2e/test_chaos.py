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
    args = ["--seed", "7", "--duration", "16", "--kills", "4", "--partitions", "1"]
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


def test_the_recount_catches_a_double_credit_and_follows_forks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The end-of-run checks can fail: two accepts of one transfer are
    caught, and a member frozen at its fork counts only its entries below it."""
    monkeypatch.syspath_prepend(str(BENCH.parent))
    from chaos_check import StoreView, recount

    from troc.crypto.sign import SigningKey
    from troc.protocol.entry import Accept, CommunityId, Entry, Transfer

    community = CommunityId(bytes(32))
    payer, payee = SigningKey.generate(), SigningKey.generate()

    def log(key: SigningKey, *bodies: object) -> list[Entry]:
        out: list[Entry] = []
        for seq, body in enumerate(bodies, start=1):
            prev = out[-1].id if out else None
            out.append(
                Entry.create(
                    key, community=community, seq=seq, prev=prev, timestamp_ms=1, body=body
                )
            )
        return out

    [paid] = log(payer, Transfer(to=payee.public, amount=5))
    twice = log(payee, Accept(transfer=paid.ref), Accept(transfer=paid.ref))
    entries = {e.id: e for e in [paid, *twice]}
    tips = {payer.public: paid.id, payee.public: twice[-1].id}
    logs = {payer.public: (1, 1), payee.public: (2, 2)}

    counted = recount(StoreView(entries, {}, logs, tips), witnessed=False)
    assert counted.credited_twice == {paid.id}
    assert counted.balances == {payer.public: -5, payee.public: 10}
    assert counted.in_flight == 0
    # The payee frozen at seq 2: its second accept does not count.
    frozen = recount(StoreView(entries, {payee.public: 2}, logs, tips), witnessed=False)
    assert frozen.credited_twice == set()
    assert frozen.balances == {payer.public: -5, payee.public: 5}
    # Witnessed: only the chain up to each final tip counts.
    tips[payee.public] = twice[0].id
    final = recount(StoreView(entries, {}, logs, tips), witnessed=True)
    assert final.credited_twice == set()
    assert final.balances == {payer.public: -5, payee.public: 5}
