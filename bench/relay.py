"""A community server under load: one `troc relay` process, M members.

The server (`troc relay`, its own process, home on disk) follows one
community of M members (default 100), each connected only to it, so that
everything reaches a member through the server. What is measured is the
server, so most members are cheap:

- ``--full-nodes`` members (default 3) are full `troc run` processes (homes
  under /dev/shm when there is one): they verify and store everything, and
  at the end every one must hold what the server holds and agree with its
  balances (``full_nodes_agree``, ``full_node_entries``);
- the others are *light members* (bench/relay_light.py), run in ``--procs``
  processes (default 2): real libp2p hosts (TCP, Noise, Yamux, the member's
  peer id) that join the server's gossip mesh, publish signed payments
  after their own log's head, and for each message received decode the
  entry, note its id and arrival time, and nothing more.

Light members pay (random payer) random members (light or full) at a steady
total rate R for D seconds. Per step:

- ``entries_per_s``: entries the server stored per second of the step (its
  ``status`` over the control socket, at the start and end of the window);
- ``forwarded_per_s``: messages the light members received per second;
- latency: from the payer's publish to each light member's receipt, over
  every (payment, member) pair, p50 and p99 (``p50_ms``, ``p99_ms``); a copy
  not received ``--drain`` seconds after the step counts as infinitely late
  (``undelivered`` counts them);
- ``server_cpu_ms_per_payment``: the server's CPU (utime + stime from
  /proc/<pid>/stat) from the start of the step to the end of its drain,
  divided by the payments sent: what a payment delivered to M - 1 members
  costs it, its fixed costs (pings, heartbeats, syncs) included;
  ``relay_cpu_ms_per_payment`` is the older figure (the step's window only,
  per entry the server stored), ``relay_cpu_share`` the server's share of
  a core over the window;
- ``member_cpu_ms_per_delivery``, ``members_cpu_share``: the light members'
  CPU; ``others_cpu_share``: what other processes kept busy (/proc/stat).
  Latency depends on what else runs; CPU per payment hardly does.

Then R doubles (10, 20, 40, …) up to ``--max-rate``, stopping at the first
rate whose p99 is above 1 s: ``p99_crosses_1s_at_rate`` (null if none did).
If R itself crosses, R halves instead, down to ``--min-rate``, until p99 is
within 1 s (``p99_within_1s_at_rate``, the highest rate tried whose p99 is
within 1 s). The headline figures (``relay_*``, ``server_cpu_ms_per_payment``)
are those of the first step (rate R); ``relay_idle_cpu_share`` is the
server's CPU share over 5 s before the first step.

What light members leave out: a member's periodic sync with the server
(the server's sync attempts to them fail at protocol negotiation) and its
own validation and storage, which is the members' cost, not the server's.

Every process started is stopped by its PID. Usage:

    python bench/relay.py [--members 100] [--full-nodes 3] [--rate 10] [--duration 30]
        [--max-rate 160] [--procs 2] [--samples DIR] [--logs DIR] [--profile-server FILE]

``--samples DIR`` writes each step's send and arrival times (wall clock, per
payment id) to DIR/rate-R.json; ``--logs DIR`` keeps the server's log;
``--profile-server FILE`` runs the server under cProfile (CPU clock) and
writes its stats to FILE when it stops.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel

from troc.crypto.keystore import load_key
from troc.crypto.sign import SigningKey
from troc.node.local import open_local_node
from troc.node.topics import topic_of
from troc.protocol.entry import CommunityId, Entry

sys.path.insert(0, str(Path(__file__).parent))
from relay_light import LightMember

CLK_TCK = os.sysconf("SC_CLK_TCK")
#: ``python -c _PROFILED FILE args…``: ``python -m troc args…`` under cProfile
#: with a CPU-time clock, stats written to FILE when it stops.
_PROFILED = """
import cProfile, runpy, sys, time
out = sys.argv.pop(1)
sys.argv[0] = "troc"
prof = cProfile.Profile(time.process_time)
try:
    prof.runcall(runpy.run_module, "troc", run_name="__main__")
except SystemExit:
    pass
finally:
    prof.dump_stats(out)
"""


# -- the server process --------------------------------------------------------------


def troc(home: Path, *args: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "troc", "--home", str(home), "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        raise SystemExit(f"troc {' '.join(args)} failed: {out.stderr.strip()}")
    return json.loads(out.stdout)


class Server:
    """`troc relay` in its own process, stopped by its PID."""

    def __init__(self, home: Path, sync_interval: float, profile: Path | None = None) -> None:
        self.home = home
        # Under cProfile (``--profile-server FILE``), written when it stops;
        # CPU time, not wall time: on a shared machine wall time counts the
        # other processes' turns as ours.
        prof = [] if profile is None else ["-c", _PROFILED, str(profile)]
        args = [
            sys.executable,
            *(prof or ["-m", "troc"]),
            "--home",
            str(home),
            "--json",
            "relay",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--metrics-listen",
            "",
            "--log-level",
            "warning",
        ]
        env = dict(os.environ, TROC_SYNC_INTERVAL=str(sync_interval))
        env.pop("TROC_HOME", None)
        self.log = open(home / "relay.log", "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the info line, once it listens
        if not line:
            self.stop()
            raise SystemExit(f"the server did not start: see {home / 'relay.log'}")
        self.addr: str = json.loads(line)["addrs"][0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    async def call(self, op: str) -> dict[str, Any]:
        """The node's answer to ``op`` (no parameters), over its control socket."""
        async with await trio.open_unix_socket(str(self.home / "control.sock")) as s:
            await s.send_all(json.dumps({"op": op, "params": {}}).encode() + b"\n")
            data = b""
            with trio.fail_after(60):
                while not data.endswith(b"\n"):
                    chunk = await s.receive_some(1 << 20)
                    if not chunk:
                        break
                    data += chunk
        reply = json.loads(data)
        if not reply["ok"]:
            raise SystemExit(f"{op} failed: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result

    async def status(self) -> dict[str, Any]:
        return await self.call("status")

    async def entries(self) -> int:
        count: int = (await self.status())["communities"][0]["entries"]
        return count


def machine_busy_seconds() -> float:
    """CPU time every process on the machine spent busy (/proc/stat), in seconds."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def cpu_seconds(pid: int | str) -> float:
    """utime + stime of a process, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# -- set-up: a community, M members, the server following it ---------------------------


def make_community(
    server_home: Path, member_homes: list[Path], keys: list[SigningKey]
) -> tuple[CommunityId, dict[bytes, tuple[int, bytes]]]:
    """The founder (member 0) creates the community, every member joins; every
    store (the members' and the server's) then holds the genesis and every join,
    so the bench starts from a settled community. Returns it and each member's
    head (seq, entry id): where a light member's own log goes on."""
    with open_local_node(member_homes[0], keys[0]) as founder:
        community = founder.create_community("Bench", "h", 10**9)
        genesis = founder.store.genesis(community)
        assert genesis is not None
    wires = [genesis.wire]
    for home, key in zip(member_homes, keys, strict=True):
        with open_local_node(home, key) as node:
            node.join(genesis.wire)
            wires += [w for _ts, w in node.store.timed_entries_since(community, node.member, 0, 10)]
    server_key = SigningKey(load_key(server_home / "key", None))
    for home, key in [(server_home, server_key), *zip(member_homes, keys, strict=True)]:
        with open_local_node(home, key) as node:
            node.ingest_many(wires)
    heads: dict[bytes, tuple[int, bytes]] = {}
    for wire in wires:
        entry = Entry.decode(wire)
        if entry.seq > heads.get(entry.author, (-1, b""))[0]:
            heads[entry.author] = (entry.seq, entry.id)
    return community, heads


class FullNode(Server):
    """A member's `troc run` in its own process: it verifies and stores
    everything, as members do; stopped by its PID."""

    def __init__(self, home: Path, server_addr: str, sync_interval: float) -> None:
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
            "--bootstrap",
            server_addr,
            "--sync-interval",
            str(sync_interval),
            "--no-web",
            "--log-level",
            "warning",
        ]
        env = dict(os.environ)
        env.pop("TROC_HOME", None)
        self.log = open(home / "node.log", "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env
        )
        assert self.proc.stdout is not None
        if not self.proc.stdout.readline():
            self.stop()
            raise SystemExit(f"a full node did not start: see {home / 'node.log'}")


# -- a worker: a share of the light members in one process -------------------------


class Worker:
    """``bench/relay.py --worker``: runs light members ``lo``..``hi - 1``
    (bench/relay_light.py), each connected only to the server; takes steps
    from the coordinator on stdin (one JSON line each) and answers on stdout
    (one JSON line). Wall-clock times (``time.time()``) so the coordinator
    can match a payer in one process with receivers in another.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.community = CommunityId(bytes.fromhex(spec["community"]))
        self.members = [bytes.fromhex(m) for m in spec["members"]]
        self.lo, self.hi = spec["lo"], spec["hi"]
        self.light: list[LightMember] = []

    async def run(self) -> None:
        spec = self.spec
        async with trio.open_nursery() as nursery:
            for i in range(self.lo, self.hi):
                key = SigningKey(bytes.fromhex(spec["seeds"][i]))
                seq, head = spec["heads"][i]
                member = LightMember(key, self.community, spec["topic"], (seq, bytes.fromhex(head)))
                with trio.fail_after(60):
                    await nursery.start(member.run, spec["server"])
                self.light.append(member)
            _say({"ready": True})
            rng = random.Random(spec["seed"] * 1000 + self.lo)
            while True:
                line = await trio.to_thread.run_sync(sys.stdin.readline)
                if not line:
                    break
                cmd = json.loads(line)
                if cmd["cmd"] == "step":
                    _say(await self.step(cmd, rng))
                elif cmd["cmd"] == "settle":
                    _say(await self.settle(cmd["max"]))
                else:
                    break
            nursery.cancel_scope.cancel()

    def received(self) -> int:
        return sum(m.received for m in self.light)

    async def settle(self, limit: float) -> dict[str, Any]:
        """Wait (at most ``limit`` s) until no message has arrived for 2 s: the
        backlog of a step must not slow the next one down."""
        with trio.move_on_after(limit):
            while True:
                before = self.received()
                await trio.sleep(2)
                if self.received() == before:
                    return {"settled": True}
        return {"settled": False}

    async def step(self, cmd: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        """Pay at ``rate`` (this worker's share) from ``start`` (wall clock) for
        ``duration`` s, from random light members of this worker to random
        members anywhere; then wait ``drain`` s. Returns what was sent and,
        per entry, when it reached each of this worker's members."""
        for m in self.light:
            m.arrivals = {}
        sent: dict[bytes, float] = {}
        rate, duration = cmd["rate"], cmd["duration"]
        count = round(rate * duration)
        t0 = trio.current_time() + max(0.0, cmd["start"] - time.time())
        await trio.sleep_until(t0)
        cpu0, received0 = cpu_seconds("self"), self.received()
        late = 0.0

        async def pay(payer: LightMember, payee: bytes) -> None:
            started = time.time()
            entry = await payer.pay(payee)
            if entry is not None:
                sent[entry.id] = started

        # Each payment in a task of its own: a member that must rejoin the
        # server (up to 10 s) holds up its own payments only, not the schedule.
        async with trio.open_nursery() as nursery:
            for k in range(count):
                at = t0 + k / rate
                now = trio.current_time()
                if now < at:
                    await trio.sleep_until(at)
                else:
                    late = max(late, now - at)
                payer = rng.choice(self.light)
                payee = payer.key.public
                while payee == payer.key.public:
                    payee = rng.choice(self.members)
                nursery.start_soon(pay, payer, payee)
        await trio.sleep_until(t0 + duration)
        await trio.sleep(cmd["drain"])
        cpu1, received1 = cpu_seconds("self"), self.received()
        arrivals: dict[str, list[float]] = {}
        for m in self.light:
            for entry_id, t in m.arrivals.items():
                arrivals.setdefault(entry_id.hex(), []).append(round(t, 4))
        return {
            "sent": {i.hex(): t for i, t in sent.items()},
            "arrivals": arrivals,
            "received": received1 - received0,
            "rejoined": sum(m.rejoined for m in self.light),
            "failed": sum(m.failed for m in self.light),
            "cpu": cpu1 - cpu0,
            "late": late,
        }


def _say(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


class WorkerProc:
    """A worker process, stopped by its PID."""

    def __init__(self, spec_path: Path, lo: int, hi: int) -> None:
        args = [
            sys.executable,
            __file__,
            "--worker",
            str(spec_path),
            "--lo",
            str(lo),
            "--hi",
            str(hi),
        ]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, data: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        if data is not None:
            self.proc.stdin.write(json.dumps(data) + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"worker {self.proc.pid} exited with {self.proc.wait()}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def stop(self) -> None:
        """End of input stops a worker cleanly; SIGTERM, then SIGKILL, if it does not."""
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


# -- the coordinator ---------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _ms(value: float) -> float | None:
    return None if value == float("inf") else round(value, 1)


def step(
    server: Server, workers: list[WorkerProc], rate: float, args: argparse.Namespace
) -> dict[str, Any]:
    """One rate step over every worker; the server measured over the window
    and the drain after it (what the step's payments cost it). Before it, the
    members settle (bounded): the last step's backlog is not this step's."""
    t = time.perf_counter()
    settled = all(w.ask({"cmd": "settle", "max": args.settle_max})["settled"] for w in workers)
    if not settled:
        print(f"(the members were still receiving after {args.settle_max:g} s)", flush=True)
    elif time.perf_counter() - t > 3:
        print(f"(settled in {time.perf_counter() - t:.0f} s)", flush=True)
    start = time.time() + 1.0
    share = rate / len(workers)
    for w in workers:
        assert w.proc.stdin is not None
        w.proc.stdin.write(
            json.dumps(
                {
                    "cmd": "step",
                    "rate": share,
                    "duration": args.duration,
                    "drain": args.drain,
                    "start": start,
                }
            )
            + "\n"
        )
        w.proc.stdin.flush()
    time.sleep(max(0.0, start - time.time()))
    entries0, cpu0, busy0 = trio.run(server.entries), server.cpu_seconds(), machine_busy_seconds()
    wall0 = time.monotonic()
    time.sleep(max(0.0, start + args.duration - time.time()))
    entries1, cpu1 = trio.run(server.entries), server.cpu_seconds()
    replies = [w.ask() for w in workers]
    cpu2, busy2 = server.cpu_seconds(), machine_busy_seconds()
    elapsed = time.monotonic() - wall0  # the step, its drain, and the replies
    sent: dict[str, float] = {}
    arrivals: dict[str, list[float]] = {}
    for r in replies:
        sent |= r["sent"]
        for entry_id, times in r["arrivals"].items():
            arrivals.setdefault(entry_id, []).extend(times)
    # Every payment should reach every light member but its payer.
    receivers = args.members - args.full_nodes - 1
    latencies: list[float] = []
    lost = 0
    for entry_id, t_sent in sent.items():
        times = arrivals.get(entry_id, [])
        latencies += [(x - t_sent) * 1000 for x in times]
        lost += max(0, receivers - len(times))
    latencies += [float("inf")] * lost
    latencies.sort()
    if not latencies:
        latencies = [float("inf")]
    if args.samples is not None:  # every payment: sent and its arrivals (wall clock, s)
        path = args.samples / f"rate-{rate:g}.json"
        path.write_text(json.dumps({"sent": sent, "arrivals": arrivals}))
    window = args.duration
    members_cpu = sum(r["cpu"] for r in replies)
    received = sum(r["received"] for r in replies)
    payments = max(1, len(sent))
    result = {
        "rate": rate,
        "payments": len(sent),
        "schedule_late_ms": round(max(r["late"] for r in replies) * 1000, 1),
        "entries_per_s": round((entries1 - entries0) / window, 1),
        "forwarded_per_s": round(received / window, 1),
        "p50_ms": _ms(statistics.median(latencies)),
        "p99_ms": _ms(percentile(latencies, 0.99)),
        "max_ms": _ms(latencies[-1]),
        "undelivered": lost,
        # Light members the server had dropped (its pings went unanswered) and
        # that joined again, since the start.
        "light_rejoins": sum(r["rejoined"] for r in replies),
        "light_publish_failed": sum(r["failed"] for r in replies),
        "settled_before": settled,
        "relay_cpu_share": round((cpu1 - cpu0) / window, 3),
        "members_cpu_share": round(members_cpu / (window + args.drain), 3),
        # What one payment costs the server (CPU ms over the step and its
        # drain, all deliveries included), and one delivery a light member:
        # unlike latency, these hardly depend on what else the machine runs.
        "server_cpu_ms_per_payment": round((cpu2 - cpu0) * 1000 / payments, 2),
        "relay_cpu_ms_per_payment": round((cpu1 - cpu0) * 1000 / max(1, entries1 - entries0), 2),
        "member_cpu_ms_per_delivery": round(members_cpu * 1000 / max(1, received), 3),
        "others_cpu_share": round(
            max(0.0, busy2 - busy0 - (cpu2 - cpu0) - members_cpu) / elapsed, 3
        ),
        "relay_rss_mb": round(server.peak_rss_mb(), 1),
    }
    print(
        f"rate {rate:g}/s: server stored {result['entries_per_s']}/s, light members got "
        f"{result['forwarded_per_s']}/s from it; delivery p50 {result['p50_ms']} ms, p99 "
        f"{result['p99_ms']} ms, max {result['max_ms']} ms, {lost} deliveries missing; server "
        f"{result['server_cpu_ms_per_payment']} CPU ms per payment "
        f"(CPU {result['relay_cpu_share']:.0%}), light members "
        f"{result['member_cpu_ms_per_delivery']} CPU ms per delivery "
        f"({result['members_cpu_share']:.0%}), other processes {result['others_cpu_share']:.0%}; "
        f"server peak RSS {result['relay_rss_mb']} MB",
        flush=True,
    )
    return result


async def _balances(node: Server) -> tuple[int, dict[str, int]]:
    """A node's entry count and balances, over its control socket."""
    balances: dict[str, int] = (await node.call("balances"))["balances"]
    return await node.entries(), balances


def check_full_nodes(server: Server, full: list[FullNode], limit: float) -> dict[str, Any]:
    """Wait (at most ``limit`` s) until every full node holds what the server
    holds; then their balances must agree with the server's."""
    deadline = time.monotonic() + limit
    while True:
        want, balances = trio.run(_balances, server)
        got = [trio.run(_balances, f) for f in full]
        if all(n == want for n, _ in got) or time.monotonic() > deadline:
            break
        time.sleep(1)
    return {
        "server_entries": want,
        "full_node_entries": [n for n, _ in got],
        "full_nodes_agree": all(n == want and b == balances for n, b in got),
    }


def run(
    args: argparse.Namespace, server: Server, spec_path: Path, full_homes: list[Path]
) -> dict[str, Any]:
    workers: list[WorkerProc] = []
    full: list[FullNode] = []
    try:
        t = time.perf_counter()
        for home in full_homes:
            full.append(FullNode(home, server.addr, args.member_sync_interval))
        light = args.members - args.full_nodes
        bounds = [args.full_nodes + round(k * light / args.procs) for k in range(args.procs + 1)]
        workers = [WorkerProc(spec_path, lo, hi) for lo, hi in itertools.pairwise(bounds)]
        for w in workers:
            if not w.ask().get("ready"):
                raise SystemExit("a worker did not start")
        deadline = time.monotonic() + 120
        while len(trio.run(server.status)["peers"]) < args.members:
            if time.monotonic() > deadline:
                raise SystemExit("the members did not all connect to the server in 120 s")
            time.sleep(0.5)
        print(
            f"{args.members} members ({args.full_nodes} full nodes, {light} light in "
            f"{args.procs} processes) up and connected to the server in "
            f"{time.perf_counter() - t:.1f} s",
            flush=True,
        )
        time.sleep(args.settle)  # gossip meshes form (heartbeat 1 s)
        cpu0 = server.cpu_seconds()
        time.sleep(5)
        idle = (server.cpu_seconds() - cpu0) / 5
        steps: list[dict[str, Any]] = []
        crossed: float | None = None  # the lowest rate tried whose p99 is over 1 s
        below: float | None = None  # the highest rate tried whose p99 is within 1 s
        rate = args.rate
        while rate <= args.max_rate:  # up, doubling, until p99 crosses 1 s
            result = step(server, workers, rate, args)
            steps.append(result)
            if result["p99_ms"] is None or result["p99_ms"] > 1000:
                crossed = rate
                break
            below = rate
            rate *= 2
        rate = args.rate / 2
        while below is None and rate >= args.min_rate:  # the first rate crossed: down
            result = step(server, workers, rate, args)
            steps.append(result)
            if result["p99_ms"] is None or result["p99_ms"] > 1000:
                crossed = rate
            else:
                below = rate
            rate /= 2
        check = check_full_nodes(server, full, args.settle_max)
        print(f"full nodes: {check}", flush=True)
    finally:
        for w in workers:
            w.stop()
        for f in full:
            f.stop()
    first = steps[0]
    return {
        "members": args.members,
        "full_nodes": args.full_nodes,
        "member_processes": args.procs,
        "duration_s": args.duration,
        "relay_entries_per_s": first["entries_per_s"],
        "relay_forwarded_per_s": first["forwarded_per_s"],
        "relay_p50_ms": first["p50_ms"],
        "relay_p99_ms": first["p99_ms"],
        "relay_cpu_share": first["relay_cpu_share"],
        "relay_idle_cpu_share": round(idle, 3),
        "relay_cpu_ms_per_payment": first["relay_cpu_ms_per_payment"],
        "server_cpu_ms_per_payment": first["server_cpu_ms_per_payment"],
        "member_cpu_ms_per_delivery": first["member_cpu_ms_per_delivery"],
        "others_cpu_share": first["others_cpu_share"],
        "relay_rss_mb": round(server.peak_rss_mb(), 1),
        "p99_crosses_1s_at_rate": crossed,
        "p99_within_1s_at_rate": below,
        "rates_tried": [x["rate"] for x in steps],
        **check,
        "steps": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--full-nodes", type=int, default=3, help="members run as `troc run`")
    parser.add_argument("--procs", type=int, default=2, help="processes the light members run in")
    parser.add_argument("--rate", type=float, default=10.0, help="first total payments/s")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per rate step")
    parser.add_argument("--max-rate", type=float, default=160.0, help="last rate step, at most")
    parser.add_argument(
        "--min-rate", type=float, default=1.0, help="lowest rate tried if the first crosses 1 s"
    )
    parser.add_argument("--drain", type=float, default=5.0, help="seconds to wait after a step")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before the first step")
    parser.add_argument(
        "--settle-max", type=float, default=120.0, help="longest wait for a backlog to clear"
    )
    parser.add_argument("--member-sync-interval", type=float, default=30.0)
    parser.add_argument("--relay-sync-interval", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--samples", type=Path, help="write each step's send and arrival times to DIR/rate-R.json"
    )
    parser.add_argument("--logs", type=Path, help="keep the server's log in DIR")
    parser.add_argument(
        "--profile-server", type=Path, help="run the server under cProfile, stats to FILE"
    )
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--lo", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--hi", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging_off()
    if args.worker is not None:
        spec = json.loads(args.worker.read_text()) | {"lo": args.lo, "hi": args.hi}
        trio.run(Worker(spec).run)
        return
    if not (
        0 <= args.full_nodes <= args.members - 2
        and 2 <= args.members <= 10_000
        and 1 <= args.procs <= args.members - args.full_nodes
        and 0 < args.min_rate <= args.rate <= args.max_rate <= 10_000
        and 0 < args.duration <= 3600
        and 0 <= args.drain <= 600
    ):
        parser.error(
            "need 2 <= --members, 0 <= --full-nodes <= --members - 2, 1 <= --procs <= light"
            " members, 0 < --min-rate <= --rate <= --max-rate, 0 < --duration <= 3600,"
            " 0 <= --drain <= 600"
        )
    tmp = Path(tempfile.mkdtemp(prefix="troc-bench-relay-"))
    shm = Path("/dev/shm")
    member_tmp = Path(
        tempfile.mkdtemp(prefix="troc-bench-relay-", dir=shm if shm.is_dir() else None)
    )
    server: Server | None = None
    try:
        server_home = tmp / "server"
        troc(server_home, "init", "--no-passphrase", "--name", "server")
        homes = [member_tmp / f"m{i}" for i in range(args.members)]
        full_homes = homes[: args.full_nodes]
        for i, home in enumerate(full_homes):
            troc(home, "init", "--no-passphrase", "--name", f"full{i}")
        keys = [SigningKey(load_key(h / "key", None)) for h in full_homes]
        keys += [SigningKey.generate() for _ in homes[args.full_nodes :]]
        t = time.perf_counter()
        community, heads = make_community(server_home, homes, keys)
        print(f"community of {args.members} members set up in {time.perf_counter() - t:.1f} s")
        server = Server(server_home, args.relay_sync_interval, args.profile_server)
        spec_path = member_tmp / "spec.json"
        spec_path.write_text(
            json.dumps(
                {
                    "community": community.hex(),
                    "topic": topic_of(community),
                    "server": server.addr,
                    "seeds": [k.seed.hex() for k in keys],
                    "members": [k.public.hex() for k in keys],
                    "heads": [[heads[k.public][0], heads[k.public][1].hex()] for k in keys],
                    "seed": args.seed,
                }
            )
        )
        result = run(args, server, spec_path, full_homes)
    finally:
        if server is not None:
            server.stop()
        if args.logs is not None:  # the server's log, before its home goes
            args.logs.mkdir(parents=True, exist_ok=True)
            if (tmp / "server" / "relay.log").exists():
                shutil.copy(tmp / "server" / "relay.log", args.logs / "relay.log")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(member_tmp, ignore_errors=True)
    print(json.dumps(result, sort_keys=True))


def logging_off() -> None:
    """Members log nothing below warning (py-libp2p is chatty at info)."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("libp2p").setLevel(logging.ERROR)


if __name__ == "__main__":
    main()
