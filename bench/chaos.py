"""A Jepsen-style reliability run: real `troc` processes, killed and cut off on a seeded schedule.

    python bench/chaos.py [--seed 1] [--duration 600] [--kills 120] [--partitions 12]
        [--witnessed] [--keep DIR]

Root only (network namespaces); without root or ``ip netns`` it exits 2 with
one line saying why. What it runs (docs/reliability.md has the figures):

* 5 members (`troc run`) and 1 server (`troc relay`, following the
  community), each in its own network namespace on one bridge
  (:mod:`chaos_net`); member m4 forks on purpose: its home (key and store)
  is copied to a sixth node, m4b, and both pay. ``--witnessed``: the
  community needs witness certificates (n = 4, f = 1, q = 3); three honest
  witnesses (`troc run --witness`) and one byzantine (bench/chaos_witness.py:
  equivocates, answers lying conflicts, stays silent, sends garbage).
* A client driver (``--clients`` threads) issues pay, accept, decline,
  reclaim and offer commands all along, through the CLI (`troc --json …`
  on each member's home: through the control socket while the node runs,
  on the store directly while it is down), and records every command that
  was acknowledged (exit 0 and the entry id returned).
* Faults, from ``--seed``: ``--kills`` SIGKILLs (then a restart on the
  same home and port) of members, the server and witnesses, spread over
  ``--duration`` seconds, some aimed at a payment in flight (the pay starts,
  the payer's node is killed 0-0.6 s later) or, witnessed, at the witnesses
  while they vote; ``--partitions`` cuts (DROP rules in the namespaces) of
  a random group of nodes from the rest, each held 3-30 s, then healed.
* After each heal the driver pauses, and the run measures how long all
  nodes take to agree again (heads and balances, over the control sockets:
  the same ``status``/``balances`` the CLI shows); the p99 of those times
  (and the final heal's) is ``converge_after_heal_p99_s``.
* After the final heal (everything running, no cut): convergence, then the
  checks: every acknowledged entry present on every node (``lost``: entries
  missing somewhere; the forker's own entries are not counted, a forked log
  is cut at the fork), identical balances and heads everywhere
  (``diverged_nodes``), balances plus in-flight summing to 0
  (``sum_nonzero_nodes``), no member but the forker caught forking
  (``self_forks``), no transfer credited twice (``double_credits``: two
  accepts of one transfer, or an accept and a reclaim), each honest member's
  balance equal to what its own entries add up to on every node
  (``balance_mismatches``) and, witnessed, every entry of an honest member
  final on every node (``not_final``).

It prints progress lines as it goes and, as the last line,
one JSON object; it exits 1 if a check failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chaos_check import read_store, recount
from chaos_net import PORT, START_TIMEOUT, Lan, Proc, check_available

from tests.e2e.harness import control
from troc.crypto.ids import decode_id, encode_id
from troc.crypto.sign import SigningKey

TROC = [sys.executable, "-m", "troc"]
BYZANTINE = str(Path(__file__).resolve().parent / "chaos_witness.py")
MEMBERS = 5
FORKER = "m4"
TWIN = "m4b"
CREDIT_LIMIT = 1_000_000
#: Bound on one CLI command.
CLI_TIMEOUT = 45.0
#: Tries to start a node whose start failed (e.g. the store held by a command).
START_ATTEMPTS = 5
#: Bound on one control-socket request while polling for agreement.
POLL_TIMEOUT = 10.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Node:
    name: str
    role: str  # member, twin, server, witness, byzantine
    home: Path
    member: str = ""  # its member id (text)
    proc: Proc | None = None

    @property
    def honest_store(self) -> bool:
        """Whether it runs troc (a store and a control socket to ask)."""
        return self.role != "byzantine"


@dataclass
class Acked:
    """A command the CLI acknowledged: exit 0 and the entry id it printed."""

    op: str
    home: str
    entry: str
    transfer: str | None = None
    at: float = 0.0


@dataclass
class Tally:
    acked: list[Acked] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # a message per unexpected failure
    lock: threading.Lock = field(default_factory=threading.Lock)


def cli(home: Path, *args: str, timeout: float = CLI_TIMEOUT) -> tuple[int, Any, str]:
    """`troc --home HOME --json ARGS`: (exit code, parsed stdout or None, stderr's last line)."""
    try:
        proc = subprocess.run(
            [*TROC, "--home", str(home), "--json", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return -1, None, "timeout"
    try:
        out = json.loads(proc.stdout) if proc.stdout.strip() else None
    except json.JSONDecodeError:
        out = None
    lines = proc.stderr.strip().splitlines()
    return proc.returncode, out, lines[-1] if lines else ""


def must(home: Path, *args: str) -> Any:
    code, out, err = cli(home, *args, timeout=120)
    if code != 0:
        raise SystemExit(f"setup: troc {' '.join(args[:2])} on {home.name} exited {code}: {err}")
    return out


def p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


class Chaos:
    def __init__(self, args: argparse.Namespace, root: Path, lan: Lan) -> None:
        self.args, self.root, self.lan = args, root, lan
        self.rng = random.Random(args.seed)
        self.nodes: dict[str, Node] = {}
        self.community = ""
        self.tally = Tally()
        self.running = threading.Event()  # the driver issues commands while set
        self.stop_driver = threading.Event()
        self.busy = 0  # driver commands in flight
        self.busy_lock = threading.Condition()
        self.declined: dict[str, int] = {}  # declined transfer -> reclaim attempts
        self.payer_of: dict[str, str] = {}  # transfer -> payer home name
        self.figures: dict[str, Any] = Counter()
        self.heal_times: list[float] = []
        self.heal_timeouts = 0
        self.restart_times: list[float] = []  # from exec to the info line
        self.restarting: dict[str, threading.Thread] = {}
        self.notes: list[str] = []

    # -- setting up --------------------------------------------------------------

    def setup(self) -> None:
        names = [f"m{i}" for i in range(MEMBERS)]
        self.nodes["server"] = Node("server", "server", self.root / "server")
        for n in names:
            self.nodes[n] = Node(n, "member", self.root / n)
        if self.args.witnessed:
            for i in range(3):
                self.nodes[f"w{i}"] = Node(f"w{i}", "witness", self.root / f"w{i}")
        with ThreadPoolExecutor(3) as pool:
            made = pool.map(
                lambda n: must(n.home, "init", "--name", n.name, "--no-passphrase"),
                list(self.nodes.values()),
            )
            for node, out in zip(list(self.nodes.values()), made, strict=True):
                node.member = out["member"]
        create = ["community", "create", "--name", "Chaos", "--unit", "h"]
        create += ["--credit-limit", str(CREDIT_LIMIT)]
        if self.args.witnessed:
            self.byz_key = SigningKey.generate()
            byz = Node("byz", "byzantine", self.root / "byz", encode_id("m", self.byz_key.public))
            self.nodes["byz"] = byz
            create += ["--finality", "witnessed", "--faults", "1"]
            for w in self.nodes.values():
                if w.role in ("witness", "byzantine"):
                    create += ["--witness", w.member]
        m0 = self.nodes["m0"]
        self.community = must(m0.home, *create)["community"]
        invitation = must(m0.home, "community", "invite")["invitation"]
        joining = [(self.nodes[n], "join") for n in names[1:]]
        joining += [(n, "follow") for n in self.nodes.values() if n.role in ("server", "witness")]
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda nv: must(nv[0].home, "community", nv[1], invitation), joining))
        forker = self.nodes[FORKER]
        twin = Node(TWIN, "twin", self.root / TWIN, forker.member)
        shutil.copytree(forker.home, twin.home, ignore=shutil.ignore_patterns("control.sock"))
        self.nodes[TWIN] = twin
        for node in self.nodes.values():
            self.lan.add(node.name)
        log(f"{len(self.nodes)} nodes set up; community {self.community}")

    def payers(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.role in ("member", "twin")]

    def troc_nodes(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.honest_store]

    def addr(self, node: Node) -> str:
        from troc.node.witness import member_peer_id

        peer = member_peer_id(decode_id("m", node.member))
        return f"/ip4/{self.lan.ip[node.name]}/tcp/{PORT}/p2p/{peer}"

    def argv(self, node: Node) -> list[str]:
        listen = f"/ip4/{self.lan.ip[node.name]}/tcp/{PORT}"
        if node.role == "byzantine":
            argv = [sys.executable, BYZANTINE, "--seed", self.byz_key.seed.hex()]
            argv += ["--listen", listen, "--rng", str(self.args.seed)]
            for n in self.troc_nodes():
                argv += ["--peer", self.addr(n)]
            return argv
        # As members are set up in a community: they know its server (and the
        # witnesses), and meet each other through them; the nodes remember
        # peers they met (peers.json) and redial them. The byzantine witness
        # dials everyone itself.
        boot = [
            self.addr(n)
            for n in self.nodes.values()
            if n is not node and n.role in ("server", "witness")
        ]
        if node.role == "server":
            config = node.home.parent / "server.toml"
            config.write_text(
                f'home = "{node.home}"\nlisten = ["{listen}"]\nmetrics_listen = ""\n'
                f'sync_interval = {self.args.sync_interval}\nlog_level = "warning"\n'
                f'dht = "off"\n'
            )
            argv = [*TROC, "--json", "relay", "--config", str(config)]
        else:
            argv = [*TROC, "--home", str(node.home), "--json", "run", "--listen", listen]
            argv += ["--sync-interval", str(self.args.sync_interval), "--log-level", "warning"]
            argv += ["--dht", "off"]
            if node.role == "witness":
                argv.append("--witness")
        for a in boot:
            argv += ["--bootstrap", a]
        return argv

    def start(self, node: Node) -> None:
        """Start (or restart) ``node``; a start refused because a `troc`
        command holds the store offline is tried again a few times."""
        for attempt in range(START_ATTEMPTS):
            try:
                self._start(node)
                return
            except AssertionError as exc:
                if attempt == START_ATTEMPTS - 1:
                    raise
                self.figures["start_retries"] += 1
                self.notes.append(f"{time.strftime('%H:%M:%S')} {str(exc)[:160]}")
                time.sleep(1)

    def _start(self, node: Node) -> None:
        if node.proc is None:
            node.proc = Proc(
                node.name, self.lan.ns[node.name], [], node.home.parent / f"{node.name}.log"
            )
        node.proc.start(self.argv(node))

    def start_all(self) -> None:
        order = [n for n in self.nodes.values() if n.role in ("server", "witness", "byzantine")]
        order += self.payers()
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(self.start, order))
        log(f"{len(order)} processes started")

    # -- the client driver -----------------------------------------------------

    def record(self, op: str, node: Node, code: int, out: Any, err: str, key: str) -> Acked | None:
        with self.tally.lock:
            self.tally.attempts[op] += 1
            if code != 0 or not isinstance(out, dict) or not out.get(key):
                reason = (out or {}).get("error", {}) if isinstance(out, dict) else {}
                why = reason.get("reason") or reason.get("kind") or err[:60]
                kind = f"{op} exit {code}: {why}"
                self.tally.failures[kind] += 1
                if code in (1, -1, 2) and kind not in self.tally.examples:
                    message = reason.get("message") if reason else err
                    self.tally.examples[kind] = f"{node.name}: {str(message)[:300]}"
                return None
            acked = Acked(op, node.name, out[key], out.get("transfer"), time.monotonic())
            self.tally.acked.append(acked)
            return acked

    def act(self, rng: random.Random) -> None:
        """One client command on a random member's home."""
        node = rng.choice(self.payers())
        wait = ("--wait", "0")
        roll = rng.random()
        if roll < 0.45:
            payee = rng.choice([n for n in self.payers() if n.member != node.member])
            self.pay(node, payee, rng.randint(1, 20))
        elif roll < 0.75:
            code, out, err = cli(node.home, "pending")
            if code != 0 or not isinstance(out, dict):
                self.record("pending", node, code, out, err, "incoming")
                return
            incoming = [t for t in out["incoming"] if t.get("final", True)]
            if not incoming:
                return
            transfer = rng.choice(incoming)["transfer"]
            verb = "accept" if rng.random() < 0.75 else "decline"
            code, out, err = cli(node.home, verb, transfer, *wait)
            acked = self.record(verb, node, code, out, err, verb)
            if acked is not None and verb == "decline":
                with self.tally.lock:
                    self.declined[transfer] = 0
        elif roll < 0.85:
            with self.tally.lock:
                choices = [t for t in self.declined if t in self.payer_of]
                if not choices:
                    return
                transfer = rng.choice(choices)
                payer = self.nodes[self.payer_of[transfer]]
                self.declined[transfer] += 1
                if self.declined[transfer] >= 6:  # its payer's node never heard of the decline
                    del self.declined[transfer]
            code, out, err = cli(payer.home, "reclaim", transfer, *wait)
            if self.record("reclaim", payer, code, out, err, "reclaim") is not None or code == 4:
                with self.tally.lock:
                    self.declined.pop(transfer, None)
        else:
            title = f"chaos offer {rng.randrange(1 << 20)}"
            code, out, err = cli(node.home, "offer", "add", "--title", title, "--price", "2")
            self.record("offer", node, code, out, err, "offer")

    def drive(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop_driver.is_set():
            if not self.running.wait(timeout=0.5):
                continue
            with self.busy_lock:
                if not self.running.is_set():
                    continue
                self.busy += 1
            try:
                self.act(rng)
            finally:
                with self.busy_lock:
                    self.busy -= 1
                    self.busy_lock.notify_all()
            time.sleep(rng.uniform(0, self.args.pause))

    def pause_driver(self) -> None:
        """Stop issuing commands and wait for those in flight to finish."""
        self.running.clear()
        with self.busy_lock:
            self.busy_lock.wait_for(lambda: self.busy == 0, timeout=CLI_TIMEOUT * 3)

    # -- faults ------------------------------------------------------------------

    def kill_one(self) -> None:
        """SIGKILL a random running node; it restarts in the background after
        0-``--down-max`` s, so the next faults need not wait for it."""
        rng = self.rng
        targets = [n for n in self.nodes.values() if n.proc is not None and n.proc.running]
        targets = [n for n in targets if n.role != "byzantine" and n.name not in self.restarting]
        if not targets or len(self.restarting) >= self.args.max_down:
            return
        weights = [{"member": 3, "twin": 1, "server": 2, "witness": 2}[n.role] for n in targets]
        node = rng.choices(targets, weights)[0]
        assert node.proc is not None
        how = "idle"
        if node.role in ("member", "twin") and rng.random() < 0.5:
            # A payment in flight on this node when it dies: acknowledged or not,
            # what the CLI said is what counts.
            how = "append"
            payee = rng.choice([n for n in self.payers() if n.member != node.member])
            self.in_background(lambda: self.pay(node, payee, 1))
            time.sleep(rng.uniform(0.05, 0.6))
        elif node.role == "witness" and self.running.is_set():
            how = "vote"  # the driver is paying: the witnesses are voting
        exited = node.proc.exited()
        node.proc.kill()
        if exited is not None:  # restarted below, but not counted as a kill
            stamp = time.strftime("%H:%M:%S")
            self.notes.append(f"{node.name} had exited by itself with {exited} ({stamp})")
        else:
            self.figures["kills"] += 1
            self.figures[f"kills_{node.role}"] += 1
            self.figures[f"kills_during_{how}"] += 1
        down = rng.uniform(0, self.args.down_max)

        def restart() -> None:
            try:
                time.sleep(down)
                t0 = time.monotonic()
                self.start(node)
                self.restart_times.append(time.monotonic() - t0)
            except AssertionError as exc:  # did not start in time: finish() tries again
                self.notes.append(f"{node.name} did not restart: {str(exc)[:200]}")
            finally:
                self.restarting.pop(node.name, None)

        thread = threading.Thread(target=restart, daemon=True)
        self.restarting[node.name] = thread
        thread.start()

    def wait_restarts(self) -> None:
        for thread in list(self.restarting.values()):
            thread.join(timeout=START_TIMEOUT + 30)

    def pay(self, node: Node, payee: Node, amount: int) -> None:
        code, out, err = cli(node.home, "pay", payee.member, str(amount), "--wait", "0")
        acked = self.record("pay", node, code, out, err, "transfer")
        if acked is not None:
            with self.tally.lock:
                self.payer_of[acked.entry] = node.name

    def in_background(self, fn: Callable[[], None]) -> None:
        """Run a client command in a thread, counted as in flight (see pause_driver)."""
        with self.busy_lock:
            self.busy += 1

        def run() -> None:
            try:
                fn()
            finally:
                with self.busy_lock:
                    self.busy -= 1
                    self.busy_lock.notify_all()

        threading.Thread(target=run, daemon=True).start()

    def fork_now(self) -> None:
        """The forker's two homes pay at the same moment: two entries at one seq."""
        one, two = self.nodes[FORKER], self.nodes[TWIN]
        others = [n for n in self.payers() if n.member != one.member]
        for node in (one, two):
            payee = self.rng.choice(others)
            self.in_background(lambda node=node, payee=payee: self.pay(node, payee, 3))

    def partition(self) -> float:
        """Cut a random group from the rest; returns how long to hold the cut."""
        names = [n.name for n in self.nodes.values()]
        size = self.rng.randint(1, len(names) // 2)
        side_a = sorted(self.rng.sample(names, size))
        side_b = [n for n in names if n not in side_a]
        hold = self.rng.uniform(self.args.cut_min, self.args.cut_max)
        self.lan.partition(side_a, side_b)
        self.figures["partitions"] += 1
        log(f"partition {self.figures['partitions']}: {side_a} | rest, for {hold:.0f} s")
        return hold

    def heal_and_measure(self) -> float | None:
        """Heal, with the driver paused and every node up; the seconds until
        all nodes agree (None: timed out)."""
        self.pause_driver()
        self.wait_restarts()
        self.lan.heal()
        took = self.converge(self.args.converge_timeout)
        if took is None:
            self.heal_timeouts += 1
            log(f"heal: no agreement within {self.args.converge_timeout:.0f} s")
        else:
            self.heal_times.append(took)
            log(f"heal: all nodes agree after {took:.1f} s")
        return took

    def chaos(self) -> None:
        args, rng = self.args, self.rng
        start = time.monotonic()
        end = start + args.duration
        # Kills spread evenly (with jitter) over the duration; partitions too,
        # each starting at a random moment of its slot.
        span = 0.9 * args.duration
        kill_at = sorted(start + span * (i + rng.random()) / args.kills for i in range(args.kills))
        cut_at = sorted(
            start + span * (i + rng.uniform(0.0, 0.5)) / max(1, args.partitions)
            for i in range(args.partitions)
        )
        heal_at: float | None = None
        fork_at = [start + 2.0, start + args.duration / 2]
        self.running.set()
        # Restarts and the pauses after heals take time: faults that fell
        # behind schedule are still made, within a second duration at most.
        while time.monotonic() < end + args.duration and (
            time.monotonic() < end or kill_at or cut_at or heal_at is not None
        ):
            now = time.monotonic()
            if fork_at and now >= fork_at[0]:
                fork_at.pop(0)
                self.fork_now()
            elif heal_at is not None and now >= heal_at:
                self.heal_and_measure()
                heal_at = None
                self.running.set()
            elif heal_at is None and cut_at and now >= cut_at[0]:
                cut_at.pop(0)
                heal_at = now + self.partition()
            elif kill_at and now >= kill_at[0] and len(self.restarting) < args.max_down:
                kill_at.pop(0)
                self.kill_one()
                if self.figures["kills"] % 10 == 0:
                    self.progress(start)
            else:
                time.sleep(0.1)
        if heal_at is not None:
            self.heal_and_measure()
        self.progress(start)

    def progress(self, start: float) -> None:
        with self.tally.lock:
            acked = len(self.tally.acked)
        log(
            f"t={time.monotonic() - start:.0f}s kills={self.figures['kills']}"
            f" partitions={self.figures['partitions']} acknowledged={acked}"
        )

    # -- agreement ---------------------------------------------------------------

    def view(self, node: Node) -> tuple[Any, ...] | None:
        """What a node says the ledger is: heads (the forker's aside: its two
        branches may be held in either order) and balances. None if it does not answer."""
        try:
            status = control(node.home, "status", timeout=POLL_TIMEOUT)
            bals = control(
                node.home, "balances", {"community": self.community}, timeout=POLL_TIMEOUT
            )
        except (OSError, ValueError):
            return None
        if not (status.get("ok") and bals.get("ok")):
            return None
        forker = self.nodes[FORKER].member
        heads: dict[str, int] = {}
        for c in status["result"]["communities"]:
            if c["community"] == self.community:
                heads = {m: s for m, s in c["heads"].items() if m != forker}
        return (tuple(sorted(heads.items())), tuple(sorted(bals["result"]["balances"].items())))

    def views(self) -> dict[str, tuple[Any, ...] | None]:
        nodes = self.troc_nodes()
        with ThreadPoolExecutor(4) as pool:
            return dict(zip([n.name for n in nodes], pool.map(self.view, nodes), strict=True))

    def converge(self, timeout: float) -> float | None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            seen = self.views()
            if None not in seen.values() and len(set(seen.values())) == 1:
                return time.monotonic() - t0
            time.sleep(0.2)
        return None

    # -- the end -----------------------------------------------------------------

    def finish(self) -> dict[str, Any]:
        self.stop_driver.set()
        self.pause_driver()
        self.wait_restarts()
        for node in self.nodes.values():
            if node.proc is not None and not node.proc.running:
                self.start(node)
        self.lan.heal()
        log("final heal: everything runs, no cut; waiting for agreement")
        took = self.converge(self.args.final_timeout)
        if took is None:
            self.heal_timeouts += 1
        else:
            self.heal_times.append(took)
        log(f"final agreement: {'none' if took is None else f'{took:.1f} s'}")
        if self.args.witnessed:
            # Agreement on final balances is not finality of every entry: give
            # the certificates of the last payments time to be made and travel.
            self.wait_final(self.args.final_timeout)
        seen = self.views()
        for node in self.nodes.values():
            if node.proc is not None:
                node.proc.stop()
        return self.check(seen, took)

    def wait_final(self, timeout: float) -> None:
        """Until every honest member's entries are final on every node (bounded)."""
        honest = [n.member for n in self.payers() if n.role == "member" and n.name != FORKER]
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            waiting = 0
            for node in self.troc_nodes():
                for m in honest:
                    p = {"community": self.community, "member": m}
                    try:
                        r = control(node.home, "balance", p, timeout=POLL_TIMEOUT)
                    except (OSError, ValueError):
                        r = {}
                    waiting += not r.get("ok") or r["result"].get("unconfirmed", 0) != 0
            if not waiting:
                log(f"every honest entry final after {time.monotonic() - t0:.1f} s")
                return
            time.sleep(1)

    def check(self, seen: dict[str, Any], took: float | None) -> dict[str, Any]:
        cid = decode_id("c", self.community)
        forker = decode_id("m", self.nodes[FORKER].member)
        honest = {decode_id("m", n.member) for n in self.payers()} - {forker}
        with self.tally.lock:
            acked = list(self.tally.acked)
            attempts, failures = dict(self.tally.attempts), dict(self.tally.failures)
            examples = dict(self.tally.examples)
        # The forker's own entries may be cut off with its log: not counted.
        wanted = {decode_id("e", a.entry) for a in acked if self.nodes[a.home].role == "member"}
        wanted -= {decode_id("e", a.entry) for a in acked if a.home == FORKER}
        lost: set[bytes] = set()
        self_forks: set[bytes] = set()
        double: set[bytes] = set()
        bad_sum: list[str] = []
        mismatches: list[str] = []
        not_final: list[str] = []
        forker_caught = True
        for node in self.troc_nodes():
            view = read_store(node.home, cid)
            missing = wanted - set(view.entries)
            if missing:
                log(f"{node.name} lacks {len(missing)} acknowledged entries")
            lost |= missing
            self_forks |= set(view.frozen) & honest
            forker_caught = forker_caught and forker in view.frozen
            again = recount(view, self.args.witnessed)
            double |= again.credited_twice
            shown = seen.get(node.name)
            reported = {decode_id("m", m): b for m, b in shown[1]} if shown else {}
            if sum(reported.values()) + again.in_flight != 0:
                bad_sum.append(f"{node.name}: {sum(reported.values())} + {again.in_flight}")
            for m in set(reported) | set(again.balances):
                mid = encode_id("m", m)[:12]
                seq, final = view.logs.get(m, (0, None))
                if self.args.witnessed and seq and (final or 0) < seq:
                    if m in honest:
                        not_final.append(f"{node.name}:{mid} final {final} < {seq}")
                elif reported.get(m, 0) != again.balances.get(m, 0):
                    mismatches.append(
                        f"{node.name}:{mid} {reported.get(m, 0)} != {again.balances.get(m, 0)}"
                    )
        views = [v for v in seen.values() if v is not None]
        common = Counter(views).most_common(1)[0][0] if views else None
        diverged = sorted(n for n, v in seen.items() if v != common)
        converge_p99 = p99(self.heal_times)
        result: dict[str, Any] = {
            "seed": self.args.seed,
            "witnessed": self.args.witnessed,
            "duration_s": self.args.duration,
            "kills": self.figures["kills"],
            "kills_by_role": {
                r: self.figures[f"kills_{r}"] for r in ("member", "twin", "server", "witness")
            },
            "kills_during": {
                h: self.figures[f"kills_during_{h}"] for h in ("append", "vote", "idle")
            },
            "partitions": self.figures["partitions"],
            "acknowledged": len(acked),
            "acknowledged_by_op": dict(Counter(a.op for a in acked)),
            "attempts": attempts,
            "not_acknowledged": failures,
            "unexpected_failures": examples,
            "lost": len(lost),
            "self_forks": len(self_forks),
            "forker_caught": forker_caught,
            "double_credits": len(double),
            "diverged_nodes": len(diverged),
            "diverged": diverged,
            "sum_not_zero": bad_sum,
            "balance_mismatches": len(mismatches),
            "balance_mismatch_examples": mismatches[:6],
            "not_final": len(not_final),
            "not_final_examples": not_final[:6],
            "heals": len(self.heal_times) + self.heal_timeouts,
            "heal_timeouts": self.heal_timeouts,
            "converge_after_heal_s": [round(t, 2) for t in self.heal_times],
            "converge_after_heal_p99_s": None if converge_p99 is None else round(converge_p99, 2),
            "final_converge_s": None if took is None else round(took, 2),
            "restart_s_p50_max": [
                round(statistics.median(self.restart_times), 1) if self.restart_times else None,
                round(max(self.restart_times), 1) if self.restart_times else None,
            ],
            "start_retries": self.figures["start_retries"],
            "notes": self.notes[-10:],
        }
        result["ok"] = not (
            lost or self_forks or double or diverged or bad_sum or mismatches or not_final
            or took is None or not forker_caught
        )  # fmt: skip
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=600, help="seconds of faults")
    parser.add_argument("--kills", type=int, default=120, help="SIGKILLs over the duration")
    parser.add_argument("--partitions", type=int, default=12, help="cuts over the duration")
    parser.add_argument("--witnessed", action="store_true", help="4 witnesses, 1 byzantine")
    parser.add_argument("--clients", type=int, default=2, help="driver threads")
    parser.add_argument("--pause", type=float, default=0.3, help="max pause between commands")
    parser.add_argument("--cut-min", type=float, default=3.0, help="shortest cut, s")
    parser.add_argument("--cut-max", type=float, default=30.0, help="longest cut, s")
    parser.add_argument("--down-max", type=float, default=2.0, help="longest downtime, s")
    parser.add_argument("--max-down", type=int, default=2, help="nodes down at once, at most")
    parser.add_argument("--sync-interval", type=float, default=1.0)
    parser.add_argument("--converge-timeout", type=float, default=60.0)
    parser.add_argument("--final-timeout", type=float, default=120.0)
    parser.add_argument("--keep", type=Path, help="keep homes and logs in this folder")
    args = parser.parse_args()
    reason = check_available()
    if reason is not None:
        print(f"chaos: cannot run here: {reason}", file=sys.stderr)
        return 2
    for var in ("TROC_HOME", "TROC_CONFIG", "TROC_PASSPHRASE"):
        os.environ.pop(var, None)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=False)
        root = args.keep
    else:
        root = Path(tempfile.mkdtemp(prefix="troc-chaos-"))
    log(f"seed {args.seed}, {args.duration:.0f} s, {args.kills} kills, {args.partitions} cuts;"
        f" homes in {root}")  # fmt: skip
    drivers: list[threading.Thread] = []
    with Lan() as lan:
        run = Chaos(args, root, lan)
        try:
            run.setup()
            run.start_all()
            for i in range(args.clients):
                t = threading.Thread(target=run.drive, args=(args.seed * 1000 + i,), daemon=True)
                t.start()
                drivers.append(t)
            run.chaos()
            result = run.finish()
        finally:
            run.stop_driver.set()
            run.running.clear()
            for t in drivers:
                t.join(timeout=CLI_TIMEOUT * 2)
            for node in run.nodes.values():
                if node.proc is not None:
                    node.proc.stop()
            if args.keep is None:
                shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, sort_keys=True))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
