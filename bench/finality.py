"""Witnessed finality between real `troc run` processes on 127.0.0.1.

Four witnesses (`troc run --witness`, n = 4, f = 1, q = 3) and K payer nodes,
each bootstrapped to every witness; the payee's home is not running (payments
need no answer to become final). Requests go to the control sockets directly
(as bench/sync.py does), so no process start-up is measured.

(a) Sequential: one payer makes N payments, one at a time, each a ``pay``
    request with ``wait`` (the node answers once the certificate is stored);
    the latency of a payment is from sending the request to the answer, i.e.
    signing, storing durably, asking the witnesses (each votes after its own
    durable commit) and storing the certificate. Reports p50 and p99.
(b) Concurrent: K payers each issue N / K payments as fast as the control
    socket takes them, without waiting, from C clients each (``--clients``,
    one connection per request as `troc pay` makes; a node serves many
    clients at once, as a shop's tills or a web app would be);
    ``concurrent_wall_s`` is from the first request until every payment is
    final (every payer's final balance says so), and ``certified_per_s`` =
    N / that. A poller reads the final balances every 50 ms; since a log
    becomes final in order, it also gives the issue→final latencies (to
    within the poll interval; with several clients, the i-th payment issued
    to a payer is paired with the i-th to become final there).
    ``cpu_ms_per_payment``: the CPU time (user + system, /proc) the node
    processes spent in the concurrent phase, over all of them, per payment
    (``_witness`` and ``_payer``: the witnesses' and the payers' shares);
    the bench's own clients and poller are not counted.
    ``payments_per_commit``: payments per durable transaction at the payers
    (their group commits, ``troc status``).

    The loop is closed: a client sends its next payment once the last is
    answered, so a payer has at most C payments on their way, and
    ``certified_per_s`` is at most K * C / (time of one ``pay`` under that
    load). The client count is therefore part of what is measured: more
    clients make bigger group commits and less CPU per payment. On the
    shared 2-core machine, 4,000 payments, side by side: C = 8 gave
    410-470/s when the machine was otherwise quiet (~7 payments a commit,
    3.5-4.1 ms of CPU per payment), C = 32 gave 520-560/s (~18 a commit,
    2.8-3.0 ms); loaded by another bench, 190-196/s against 252-279/s, and
    with 800 payments 8/16/32/64 clients gave 149-178, 179-188, 198-201 and
    301-330/s. A short run (``--payments 400``, a few seconds) counts its
    start and its last round of certificates as much as the rest: 0.4-0.7x
    the rate of 4,000 in the same stretch. (Above 16 clients a payer
    refused connections before the control socket's queue was made longer.)

    The poller's balance reads count in the payers' CPU. A read went over
    every pending transfer (none is ever answered here: up to N / K per
    payer), ~9 ms at 1,000 and ~19 % of a payer's thread late in a run
    (py-spy); it reads the pending table and each transfer's expiry once
    since (``Store.pending_out_expiries``), and the member's log once for
    the kinds it shows (``Store.refs_from_kinds``, was seven walks): ~2.4-3.2
    ms of CPU against 5.1-7.7 at 1,000 (a payer's store from this bench).
    Side by side, 4,000 payments, C = 8, three pairs, on a machine where
    this bench gave 133-217/s (slower than the figures above):
    ``cpu_ms_per_payment`` 8.71 / 7.95 / 9.45 before, 8.26 / 7.69 / 7.27
    after (0.95, 0.97, 0.77; payers' share 0.94, 0.96, 0.76); the rate
    (194 / 217 / 133 against 206 / 196 / 232) moved within its noise.
    A gossiped entry parked on what it builds on waits 0.5 s before its
    node syncs with the forwarder (it synced at once, and those sessions
    carried what gossip was about to bring): three pairs in one stretch,
    certified/s 193 / 228 / 231 before, 211 / 246 / 282 after (1.09, 1.08,
    1.22), ``cpu_ms_per_payment`` 0.89, 1.00, 0.82. docs/witness.md §6.4
    says where the rest of a payment's CPU goes.

Every process started is stopped by its PID at the end. Usage:

    python bench/finality.py [--payments 1000] [--payers 4] [--clients 8]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sync as sync_bench

WITNESSES = 4
FAULTS = 1
CREDIT_LIMIT = 10**9
POLL = 0.05

troc = sync_bench.troc
control = sync_bench.control


class Proc(sync_bench.Proc):
    """bench/sync.py's node process, optionally a witness."""

    def __init__(self, home: Path, *bootstrap: str, witness: bool = False) -> None:
        if not witness:
            super().__init__(home, *bootstrap, sync_interval=2.0)
            return
        # Same as the parent, with --witness (the parent builds its own argv).
        self.home = home
        args = [
            sys.executable, "-m", "troc", "--home", str(home), "--json", "run",
            "--listen", "/ip4/127.0.0.1/tcp/0", "--sync-interval", "2.0",
            "--log-level", "warning", "--witness",
        ]  # fmt: skip
        for b in bootstrap:
            args += ["--bootstrap", b]
        self.log = open(home / "run.log", "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self.log, text=True, env=sync_bench._env()
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"witness in {home} did not start: see {home / 'run.log'}")
        self.info = json.loads(line)
        self.addr = self.info["addrs"][0]


def setup(tmp: Path, payers: int) -> tuple[list[Path], list[Path], str]:
    """Homes: witnesses following a witnessed community, payers in it, and
    the payee (the founder, never started). Returns (witnesses, payers, payee id)."""
    witnesses = [tmp / f"w{i}" for i in range(WITNESSES)]
    payer_homes = [tmp / f"p{i}" for i in range(payers)]
    payee = tmp / "payee"
    for home in [*witnesses, *payer_homes, payee]:
        troc(home, "init", "--no-passphrase")
    args = ["community", "create", "--name", "Bench", "--unit", "h"]
    args += ["--credit-limit", str(CREDIT_LIMIT), "--finality", "witnessed"]
    args += ["--faults", str(FAULTS)]
    for w in witnesses:
        args += ["--witness", troc(w, "whoami")["member"]]
    troc(payee, *args)
    invitation = troc(payee, "community", "invite")["invitation"]
    for w in witnesses:
        troc(w, "community", "follow", invitation)
    for home in payer_homes:
        troc(home, "community", "join", invitation)
    return witnesses, payer_homes, troc(payee, "whoami")["member"]


def connect_all(witnesses: list[Proc], payers: list[Proc]) -> None:
    """Wait until every payer is connected to every witness. A bootstrap dial
    that failed (a loaded machine) is not retried soon: py-libp2p does not
    redial a peer for 60 s after all its addresses failed. The witness then
    dials the payer instead."""
    deadline = time.monotonic() + 60
    while True:
        missing = [
            (w, p)
            for p in payers
            for w in witnesses
            if w.info["peer_id"] not in control(p.home, "status")["peers"]
        ]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{len(missing)} payer-witness pairs not connected after 60 s")
        time.sleep(1.0)
        for w, p in missing:
            try:
                control(w.home, "connect", {"addr": p.addr})
            except SystemExit as exc:  # control() reports a refusal so
                print(f"retrying: {exc}", file=sys.stderr)


#: The payers bootstrap to the witnesses only, so they may not hold the
#: payee's join yet; the bench knows the payee is a member (it founded the
#: community), as `troc pay --to-unknown` lets a member say.
KNOWN = {"to_unknown": True}


def percentile(sorted_ms: list[float], q: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))]


def final_paid(home: Path) -> int:
    """How many payments of 1 of this payer are final (it only pays)."""
    return -int(control(home, "balance")["balance"])


def sequential(home: Path, payee: str, payments: int) -> dict[str, Any]:
    latencies = []
    t_start = time.perf_counter()
    for i in range(payments):
        t0 = time.perf_counter()
        result = control(home, "pay", {"to": payee, "amount": "1", "wait": 30, **KNOWN})
        ms = (time.perf_counter() - t0) * 1000
        if not result["finality"]["final"]:
            raise SystemExit(f"payment {i} not final after 30 s: {result['finality']}")
        latencies.append(ms)
    wall = time.perf_counter() - t_start
    latencies.sort()
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    print(
        f"sequential: {payments} payments, each pay→final: p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms; {payments / wall:.1f} payments/s",
        flush=True,
    )
    return {
        "sequential": payments,
        "finality_p50_ms": round(p50, 1),
        "finality_p99_ms": round(p99, 1),
        "finality_max_ms": round(latencies[-1], 1),
        "sequential_per_s": round(payments / wall, 1),
    }


def group_commits(homes: list[Path]) -> tuple[int, int]:
    """Durable transactions of own entries the payers wrote so far, and the
    payments (steps) in them (``troc status``: group_commit)."""
    counts = [control(h, "status")["group_commit"] for h in homes]
    return sum(c["batches"] for c in counts), sum(c["steps"] for c in counts)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` near-equal shares."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def concurrent(
    homes: list[Path],
    payee: str,
    payments: int,
    clients: int = 1,
    pids: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    """The concurrent phase; ``pids`` (role -> node PIDs) to count their CPU."""
    each = split(payments, len(homes))
    base = [final_paid(h) for h in homes]
    commits0 = group_commits(homes)
    pids = pids or {}
    cpu0 = {role: sum(cpu_s(p) for p in ps) for role, ps in pids.items()}
    issued: list[list[float]] = [[] for _ in homes]  # issue times per payer
    done: list[list[float]] = [[] for _ in homes]  # time each became final, in order
    errors: list[str] = []

    def issue(k: int, count: int) -> None:
        try:
            for _ in range(count):
                issued[k].append(time.perf_counter())  # list.append is atomic
                control(homes[k], "pay", {"to": payee, "amount": "1", **KNOWN})
        except BaseException as exc:  # reported by the main thread
            errors.append(f"payer {k}: {exc!r}")

    t0 = time.perf_counter()
    threads = [
        threading.Thread(target=issue, args=(k, count))
        for k in range(len(homes))
        for count in split(each[k], clients)
    ]
    for t in threads:
        t.start()
    deadline = t0 + max(120.0, payments * 0.5)
    while time.perf_counter() < deadline and not errors:
        for k, home in enumerate(homes):
            final = final_paid(home) - base[k]
            now = time.perf_counter()
            while len(done[k]) < min(final, each[k]):
                done[k].append(now)
        if all(len(done[k]) == each[k] for k in range(len(homes))):
            break
        time.sleep(POLL)
    wall = time.perf_counter() - t0
    cpu = {role: sum(cpu_s(p) for p in ps) - cpu0[role] for role, ps in pids.items()}
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise SystemExit("; ".join(errors))
    missing = sum(each) - sum(len(d) for d in done)
    if missing:
        raise SystemExit(f"{missing} of {payments} payments not final after {wall:.0f} s")
    issue_wall = max(max(i) for i in issued if i) - t0
    latencies = sorted(
        (d - i) * 1000
        for k in range(len(homes))
        for i, d in zip(sorted(issued[k]), done[k], strict=True)
    )
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    rate = payments / wall
    print(
        f"concurrent: {payments} payments from {len(homes)} payers ({clients} clients each),"
        f" issued in {issue_wall:.2f} s,"
        f" all final after {wall:.2f} s = {rate:.1f} certified payments/s;"
        f" issue→final p50 {p50:.0f} ms, p99 {p99:.0f} ms",
        flush=True,
    )
    batches, steps = (a - b for a, b in zip(group_commits(homes), commits0, strict=True))
    print(f"group commits: {batches}, {steps / max(batches, 1):.1f} payments each", flush=True)
    cpu_keys = {f"cpu_ms_per_payment_{role}": cpu[role] * 1000 / payments for role in cpu}
    if cpu:
        cpu_keys["cpu_ms_per_payment"] = sum(cpu.values()) * 1000 / payments
        print(", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu_keys.items())), flush=True)
    return {
        **{k: round(v, 2) for k, v in cpu_keys.items()},
        "concurrent": payments,
        "payers": len(homes),
        "clients": clients,
        "concurrent_issue_s": round(issue_wall, 3),
        "concurrent_wall_s": round(wall, 3),
        "certified_per_s": round(rate, 1),
        "concurrent_p50_ms": round(p50, 1),
        "concurrent_p99_ms": round(p99, 1),
        "payments_per_commit": round(steps / max(batches, 1), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=1000, help="per phase")
    parser.add_argument("--payers", type=int, default=4, help="payer nodes (concurrent phase)")
    parser.add_argument(
        "--clients", type=int, default=8, help="concurrent clients per payer (concurrent phase)"
    )
    parser.add_argument("--skip-sequential", action="store_true")
    parser.add_argument("--skip-concurrent", action="store_true")
    parser.add_argument(
        "--keep", action="store_true", help="keep the homes and the nodes' logs (run.log)"
    )
    args = parser.parse_args()
    if args.payments < 1 or args.payers < 1 or args.clients < 1:
        parser.error("--payments, --payers and --clients must be positive")
    tmp = Path(tempfile.mkdtemp(prefix="troc-bench-finality-"))
    procs: list[Proc] = []
    try:
        witnesses, payers, payee = setup(tmp, args.payers)
        for home in witnesses:
            procs.append(Proc(home, witness=True))
        boot = [p.addr for p in procs]
        for home in payers:
            procs.append(Proc(home, *boot))
        connect_all(procs[:WITNESSES], procs[WITNESSES:])
        print(f"{WITNESSES} witnesses (f = {FAULTS}, q = 3), {len(payers)} payers", flush=True)
        result: dict[str, Any] = {"witnesses": WITNESSES}
        if not args.skip_sequential:
            result |= sequential(payers[0], payee, args.payments)
        if not args.skip_concurrent:
            pids = {
                "witness": [p.proc.pid for p in procs[:WITNESSES]],
                "payer": [p.proc.pid for p in procs[WITNESSES:]],
            }
            result |= concurrent(payers, payee, args.payments, args.clients, pids)
        answered = [control(h, "status")["witness"]["answered"] for h in witnesses]
        print(f"witness answers: {answered}")
        result["witness_answers"] = sum(answered)
    finally:
        for p in procs:
            if p.proc.poll() is not None:  # it exited before being asked to
                print(f"node {p.home.name} had exited: code {p.proc.returncode}", file=sys.stderr)
            p.proc.send_signal(signal.SIGTERM)
        for p in procs:
            p.stop()
        if args.keep:
            print(f"homes and logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
