"""Sync and propagation between real `troc run` processes on 127.0.0.1.

(a) Catch-up: node A holds N entries (bench/ingest.py's community), node B
    only the genesis. B starts with A as bootstrap; we time until B holds all
    N. ``sync_entries_per_s`` = N / that time; ``sync_vs_ingest`` = that rate /
    the single-core ingest rate of bench/ingest.py measured in this run (on
    the first 20,000 of the same entries), so the ratio survives machine drift.
(b) Propagation: 10 node processes, each connected to 2 random earlier ones
    (a sparse random graph). Random members pay each other; for each payment
    we time from the `pay` request until all 10 nodes hold it (polling each
    node's head over its control socket), and report p50 and p99.

Every process started is stopped by its PID at the end. Usage:

    python bench/sync.py [--entries 100000] [--nodes 10] [--appends 100]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest as ingest_bench

from troc.crypto.sign import SigningKey
from troc.node.local import open_local_node
from troc.protocol.entry import Entry

PASSPHRASE = "bench"


def _env() -> dict[str, str]:
    return dict(os.environ, TROC_PASSPHRASE=PASSPHRASE)


def troc(home: Path, *args: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "troc", "--home", str(home), "--json", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    if out.returncode != 0:
        raise SystemExit(f"troc {' '.join(args)} failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


def control(home: Path, op: str, params: dict[str, Any] | None = None) -> Any:
    """One request to a running node's control socket."""
    reply = control_reply(home, op, params)
    if not reply["ok"]:
        raise SystemExit(f"{op} failed: {reply['error']}")
    return reply["result"]


def control_reply(home: Path, op: str, params: dict[str, Any] | None = None) -> Any:
    """One request to a running node's control socket: its whole reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect(str(home / "control.sock"))
        s.sendall(json.dumps({"op": op, "params": params or {}}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


class Proc:
    def __init__(self, home: Path, *bootstrap: str, sync_interval: float = 1.0) -> None:
        self.home = home
        args = [
            sys.executable,
            "-m",
            "troc",
            "--home",
            str(home),
            "--json",
            "run",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--sync-interval",
            str(sync_interval),
            "--log-level",
            "warning",
        ]
        for b in bootstrap:
            args += ["--bootstrap", b]
        self.log = open(home / "run.log", "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self.log, text=True, env=_env()
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"node in {home} did not start: see {home / 'run.log'}")
        self.info = json.loads(line)
        self.addr: str = self.info["addrs"][0]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()


def _init(home: Path) -> None:
    troc(home, "init", "--no-passphrase")


def catch_up(entries: int, tmp: Path) -> dict[str, Any]:
    wires = ingest_bench.load(entries, 1)
    genesis = Entry.decode(wires[0])
    now = genesis.timestamp_ms + 10**9
    # The single-core ingest rate, on the same kind of entries, this run.
    sample = wires[: min(len(wires), 20_000)]
    _v, _d, ingest_rate, store = ingest_bench.measure_one_core(sample, now, profile=False)
    store.close()
    print(f"ingest (one core, {len(sample)} entries): {ingest_rate:,.0f} entries/s")

    a, b = tmp / "a", tmp / "b"
    for home in (a, b):
        _init(home)
    with open_local_node(a, SigningKey.generate()) as node:
        for start in range(0, len(wires), 2000):
            node.ingest_many(wires[start : start + 2000])
        held = node.store.entry_count(genesis.id)  # type: ignore[arg-type]
    with open_local_node(b, SigningKey.generate()) as node:
        node.ingest(wires[0])
    print(f"node A holds {held} entries; node B holds only the genesis")

    pa = Proc(a, sync_interval=60)
    pb = None
    try:
        pb = Proc(b, pa.addr, sync_interval=60)
        # From B's start-up line on: B has connected to A and syncs now
        # (process start-up and the libp2p import are not sync).
        t0 = time.perf_counter()
        deadline = t0 + 600
        count = 0
        while time.perf_counter() < deadline:
            status = control(b, "status")
            count = status["communities"][0]["entries"] if status["communities"] else 0
            if count >= held:
                break
            time.sleep(0.1)
        seconds = time.perf_counter() - t0
    finally:
        for p in (pb, pa):
            if p is not None:
                p.stop()
    if count < held:
        raise SystemExit(f"B held {count} of {held} entries after {seconds:.0f} s")
    rate = held / seconds
    print(
        f"catch-up: {held} entries in {seconds:.2f} s = {rate:,.0f} entries/s "
        f"({rate / ingest_rate:.2f} of one-core ingest)"
    )
    return {
        "sync_entries": held,
        "sync_seconds": round(seconds, 3),
        "sync_entries_per_s": round(rate),
        "ingest_per_s": round(ingest_rate),
        "sync_vs_ingest": round(rate / ingest_rate, 3),
    }


def propagation(
    nodes: int, appends: int, tmp: Path, seed: int, sync_interval: float
) -> dict[str, Any]:
    rng = random.Random(seed)
    homes = [tmp / f"n{i}" for i in range(nodes)]
    for home in homes:
        _init(home)
    troc(
        homes[0],
        "community",
        "create",
        "--name",
        "Bench",
        "--unit",
        "h",
        "--credit-limit",
        "1000000",
    )
    invitation = troc(homes[0], "community", "invite")["invitation"]
    for home in homes[1:]:
        troc(home, "community", "join", invitation)
    members = [troc(h, "whoami")["member"] for h in homes]
    procs: list[Proc] = []
    latencies: list[float] = []
    try:
        for home in homes:
            peers = rng.sample([p.addr for p in procs], min(2, len(procs)))
            procs.append(Proc(home, *peers, sync_interval=sync_interval))
        time.sleep(4)  # let the gossip meshes form (heartbeat 1 s)
        for _ in range(appends):
            i, j = rng.sample(range(nodes), 2)
            t0 = time.perf_counter()
            control(homes[i], "pay", {"to": members[j], "amount": 1})
            seq = None
            pending = set(range(nodes))
            while pending and time.perf_counter() - t0 < 30:
                for k in list(pending):
                    heads = control(homes[k], "status")["communities"][0]["heads"]
                    if seq is None and k == i:
                        seq = heads[members[i]]
                    if seq is not None and heads.get(members[i], 0) >= seq:
                        pending.discard(k)
            if pending:
                raise SystemExit(f"an append did not reach {len(pending)} nodes in 30 s")
            latencies.append((time.perf_counter() - t0) * 1000)
    finally:
        for p in procs:
            p.stop()
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    print(
        f"propagation over {nodes} nodes, {appends} appends: p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms"
    )
    return {
        "nodes": nodes,
        "appends": appends,
        "propagation_p50_ms": round(p50, 1),
        "propagation_p99_ms": round(p99, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--appends", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--sync-interval",
        type=float,
        default=2.0,
        help="the propagation nodes' --sync-interval (troc run's default)",
    )
    parser.add_argument("--skip-catch-up", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="troc-bench-sync-"))
    try:
        result: dict[str, Any] = {}
        if not args.skip_catch_up:
            result |= catch_up(args.entries, tmp / "catch-up")
        result |= propagation(
            args.nodes, args.appends, tmp / "propagation", args.seed, args.sync_interval
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
