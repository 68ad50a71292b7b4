"""Many seeded schedules of the many-node simulator: every one must converge.

    python bench/sim.py --schedules 10000        # the reliability figure (~10 min on 2 cores
                                                 # when shapes stopped at 40 nodes; longer now)
    python bench/sim.py --schedules 200 --seed 5
    python bench/sim.py --replay 5:1234          # one schedule again, with its config

Each schedule draws its own shape from its seed (`troc.protocol.sim`): 3 to 100
nodes (some, or all, speaking only /troc/sync/2), 20 to 200 own entries,
gossip loss, duplication and fan-out, interrupted sync streams, partitions
into 2 or 3 groups, crash-restarts that lose queued gossip, and in about a
third of them a member whose twin (a restored backup) signs a second entry
at one seq. The simulator then heals
every fault, syncs until all nodes hold one digest and checks the invariants
(no acknowledged entry lost, the fork known and frozen everywhere, the same
counted balances everywhere, balances plus in-flight sum to 0).

A schedule that does not converge or breaks an invariant is a divergence; any
other exception a crash. Both are printed with the schedule's id, and
`--replay SEED:I` runs that schedule alone. Exit status 1 if there is any.
Last line: one JSON object with ``schedules``, ``divergences``, ``crashes``,
``acknowledged``, ``forks``, ``partitions``, ``crashes_simulated``,
``heal_rounds_p99`` and ``seconds``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from troc.protocol.sim import Partition, SimConfig, SimulationError, Simulator


def schedule(seed: int, i: int) -> tuple[int, SimConfig]:
    """The simulator seed and shape of schedule ``i`` of run ``seed``."""
    rng = random.Random(f"troc-sim/{seed}/{i}")
    nodes = rng.choice((3, 4, 5, 8, 10, 15, 20, 30, 40, 50, 70, 100))
    ops = rng.randrange(20, 201)
    partitions = []
    for _ in range(rng.choice((0, 0, 1, 1, 2))):
        start = rng.uniform(0.0, 0.8)
        partitions.append(
            Partition(start, min(1.0, start + rng.uniform(0.05, 0.5)), rng.choice((2, 3)))
        )
    crashes = tuple(sorted(rng.uniform(0, 1) for _ in range(rng.choice((0, 0, 1, 2, 4)))))
    config = SimConfig(
        nodes=nodes,
        ops=ops,
        op_gap_ms=rng.choice((20, 100, 300)),
        credit_limit=rng.choice((5, 20, 100)),
        fanout=rng.choice((0, 1, 2, 3, 4)),
        gossip_hops=rng.choice((1, 2, 3)),
        loss=rng.choice((0.0, 0.02, 0.1, 0.3)),
        dup=rng.choice((0.0, 0.05, 0.2)),
        interrupt=rng.choice((0.0, 0.005, 0.02)),
        sync_interval_ms=rng.choice((500, 3_000, 10_000)),
        partitions=tuple(sorted(partitions, key=lambda p: p.start)),
        crashes=crashes,
        crash_down_ms=rng.choice((500, 2_000, 8_000)),
        crash_loses_queue=rng.random() < 0.8,
        fork_at=rng.uniform(0.1, 0.8) if rng.random() < 0.33 else None,
        twin_ops=rng.choice((1, 5, 10)),
        # Most nodes speak /troc/sync/3; some only 2, or all only 2.
        v2_nodes=rng.choice((0, 0, 0, 1, nodes // 3, nodes)),
    )
    return rng.randrange(2**32), config


def run_one(seed: int, i: int) -> dict[str, Any]:
    sim_seed, config = schedule(seed, i)
    start = time.perf_counter()
    sim = Simulator(sim_seed, config)
    out: dict[str, Any] = {"i": i, "nodes": config.nodes}
    try:
        report = sim.run()
        sim.heal_and_converge()
        sim.check()
    except SimulationError as exc:
        out["divergence"] = str(exc)
        report = sim.report
    except Exception as exc:  # anything else is a bug in the code under test
        out["crash"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"
        report = sim.report
    out.update(
        acknowledged=report.acknowledged,
        forked=report.forker is not None and report.fork_seq is not None,
        partitions=report.partitions,
        crashes=report.crashes,
        heal_rounds=report.heal_rounds,
        seconds=time.perf_counter() - start,
    )
    return out


def _chunk(seed: int, lo: int, hi: int) -> list[dict[str, Any]]:
    return [run_one(seed, i) for i in range(lo, hi)]


def _p(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--schedules", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--replay", metavar="SEED:I", help="run one schedule again and show its shape")
    args = p.parse_args(argv)
    if args.replay:
        seed, i = (int(x) for x in args.replay.split(":"))
        print(schedule(seed, i))
        result = run_one(seed, i)
        print(json.dumps(result, indent=1))
        return 1 if "divergence" in result or "crash" in result else 0

    start = time.perf_counter()
    step = 25
    results: list[dict[str, Any]] = []
    print(f"simulating {args.schedules:,} schedules (seed {args.seed}) on {args.jobs} processes",
          file=sys.stderr)  # fmt: skip
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [
            pool.submit(_chunk, args.seed, lo, min(lo + step, args.schedules))
            for lo in range(0, args.schedules, step)
        ]
        next_report = 1000
        for fut in concurrent.futures.as_completed(futures):
            for r in fut.result():
                results.append(r)
                for what in ("divergence", "crash"):
                    if what in r:
                        print(f"{what.upper()} in schedule {args.seed}:{r['i']}: "
                              f"{r[what].splitlines()[0]}", file=sys.stderr)  # fmt: skip
            if len(results) >= next_report:
                print(f"  {len(results):,} schedules, {time.perf_counter() - start:.0f} s",
                      file=sys.stderr)  # fmt: skip
                next_report += 1000
    seconds = [r["seconds"] for r in results]
    heal = [float(r["heal_rounds"]) for r in results if r["heal_rounds"] is not None]
    summary = {
        "schedules": len(results),
        "seed": args.seed,
        "divergences": sum("divergence" in r for r in results),
        "crashes": sum("crash" in r for r in results),
        "acknowledged": sum(r["acknowledged"] for r in results),
        "forks": sum(r["forked"] for r in results),
        "partitions": sum(r["partitions"] for r in results),
        "crashes_simulated": sum(r["crashes"] for r in results),
        "nodes_max": max((r["nodes"] for r in results), default=0),
        "heal_rounds_p99": _p(heal, 0.99),
        "schedule_s_p50": round(_p(seconds, 0.5), 3),
        "schedule_s_max": round(max(seconds, default=0.0), 3),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(
        f"{summary['schedules']:,} schedules: {summary['acknowledged']:,} acknowledged entries, "
        f"{summary['forks']:,} forks, {summary['partitions']:,} partitions, "
        f"{summary['crashes_simulated']:,} crash-restarts; {summary['divergences']} divergences, "
        f"{summary['crashes']} crashes",
        file=sys.stderr,
    )
    print(json.dumps(summary))
    return 1 if summary["divergences"] or summary["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
