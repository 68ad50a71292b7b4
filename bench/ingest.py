"""Ingest benchmark: how close does storing come to verifying signatures?

Builds (deterministically, from a seed) a community of 100 members and N valid
signed entries: joins, offers, offer closes, transfers, accepts, and a few
declines and reclaims. Entries are signed directly, with balances tracked
here, so generation needs no ledger; they are cached under bench/out/ so
reruns start at once.

Then, on one core (the process pins itself to one CPU), it measures:

- ``verify_per_s``: raw ``troc.crypto.sign.verify`` over the same entries;
- ``ingest_per_s``: entries decoded, checked by ``Ledger`` and committed to a
  fresh on-disk ``Store``, 1000 entries per (non-durable) transaction;
- ``ratio``: ingest_per_s / verify_per_s, both from this run (absolute rates
  drift between runs on shared machines, ratios much less);
- ``balance_query_us``: median time of one ``Ledger.balance`` on the full
  store just reopened (cold: it reads SQLite), and ``balance_cached_us``;
- ``ingest_per_s_all_cores``: the node's own sync path on every core: batches
  of 512 entries (a sync frame) decoded, their signatures checked in child
  processes, one per core, by ``troc.node.verifier.Verifier`` (its default), while
  ``LocalNode.ingest_many`` stores the batch before, under trio;
  ``ingest_per_s_all_cores_threads``: the same with the Verifier's
  ``threads`` mode (PyNaCl releases the GIL for each check);
  ``all_cores_vs_verify`` is that rate / ``verify_per_s``; as the wall clock
  on a shared machine measures the CPU others leave, also
  ``store_thread_cpu_us_per_entry`` (CPU of the thread that stores: the
  serial part), ``cpu_us_per_entry_all_cores`` (all threads and the verify
  worker processes) and
  ``all_cores_bound_vs_verify``: the most those allow with the cores free,
  1 / max(store thread, all / cores), over one core's verify rate in CPU
  time (``verify_cpu_us_per_entry``); and where the pipeline stalls (Linux
  schedstat: time neither running nor waiting for a core, so what others
  run does not count), ``store_thread_asleep_share`` (of the wall time, the
  store's thread waiting for the checks) and ``verify_workers_asleep_share``
  (each worker process waiting for requests, on average);
- ``ingest_per_s_all_cores_processes``: the bench's own variant, signatures
  verified in a process pool while the main process decodes and stores;
- ``rss_mb``: peak resident memory of the whole run.

Every measure runs with the garbage collector set as `troc run` sets it
(:func:`troc.node.gctune.tune_collector`); ``--default-gc`` keeps Python's
defaults, to see what that setting is worth.

The last line of output is one JSON object with those keys.

    python bench/ingest.py                 # 100,000 entries
    python bench/ingest.py --entries 10000 # a quick run
    python bench/ingest.py --profile       # cProfile of the one-core ingest
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import cProfile
import hashlib
import json
import os
import pstats
import random
import resource
import statistics
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgpack
import trio

from troc.crypto.sign import Domain, MemberId, SigningKey, verify_once
from troc.node.gctune import tune_collector
from troc.node.local import LocalNode, open_local_node
from troc.node.store import Store
from troc.node.sync import AHEAD_FRAMES, COMBINE_ENTRIES
from troc.node.verifier import Prepared, Verifier
from troc.protocol import codec
from troc.protocol.entry import (
    VERSION,
    Accept,
    AnyBody,
    CommunityId,
    Decline,
    Entry,
    EntryId,
    Genesis,
    Join,
    Offer,
    OfferClose,
    Reclaim,
    Ref,
    Transfer,
)
from troc.protocol.ledger import Ledger, Status
from troc.protocol.sync_wire import MAX_BATCH
from troc.protocol.vote import Certificate, Vote

OUT = Path(__file__).resolve().parent / "out"
MEMBERS = 100
CREDIT_LIMIT = 1_000
BASE_MS = 1_700_000_000_000
BATCH = 1000
WORDS = [
    "bike",
    "repair",
    "bread",
    "garden",
    "lessons",
    "guitar",
    "french",
    "cooking",
    "childcare",
    "sewing",
    "carpentry",
    "plumbing",
    "tutoring",
    "massage",
    "haircut",
    "eggs",
    "honey",
    "jam",
    "firewood",
    "transport",
    "moving",
    "computer",
    "help",
    "translation",
    "painting",
    "yoga",
]


# -- generation -------------------------------------------------------------


class _Member:
    __slots__ = ("balance", "declined", "key", "offers", "pending_in", "prev", "seq")

    def __init__(self, key: SigningKey) -> None:
        self.key = key
        self.seq = 0
        self.prev: bytes | None = None
        self.balance = 0
        self.pending_in: deque[tuple[Ref, int, int]] = deque()  # (transfer, amount, payer)
        self.declined: list[tuple[Ref, int]] = []  # (decline ref, amount)
        self.offers: list[Ref] = []


def _sign(
    key: SigningKey, community: bytes | None, seq: int, prev: bytes | None, ts: int, body: AnyBody
) -> tuple[bytes, EntryId]:
    signed = codec.pack(
        [VERSION, community, key.public, seq, prev, ts, body.KIND.value, body.to_wire()]
    )
    signature = key.sign(Domain.ENTRY, signed)
    return codec.pack([signed, signature]), EntryId(hashlib.sha256(signed).digest())


def member_key(seed: int, i: int) -> SigningKey:
    """The key of member ``i`` (0: the founder) of the community made from ``seed``."""
    return SigningKey(hashlib.sha256(b"troc-bench-%d-%d" % (seed, i)).digest())


def generate(n: int, seed: int, members_n: int = MEMBERS, witnessed: bool = False) -> list[bytes]:
    """``n`` entries (genesis included), every one valid in order, by
    ``members_n`` members. ``witnessed``: the community is witnessed, with
    the founder (member 0) its one witness (n = 1, f = 0, q = 1); its
    certificates are :func:`certificates`."""
    rng = random.Random(seed)
    members = [_Member(member_key(seed, i)) for i in range(members_n)]
    out: list[bytes] = []
    witness = {"finality": "witnessed", "witnesses": (members[0].key.public,), "quorum": 1}
    rules = Genesis(
        name="Bench LETS", unit="hour", credit_limit=CREDIT_LIMIT, **(witness if witnessed else {})
    )
    genesis, cid = _sign(members[0].key, None, 0, None, BASE_MS, rules)
    out.append(genesis)
    community = CommunityId(cid)

    def append(m: _Member, body: AnyBody) -> Ref:
        m.seq += 1
        wire, eid = _sign(m.key, community, m.seq, m.prev, BASE_MS + len(out), body)
        m.prev = eid
        out.append(wire)
        return Ref(m.key.public, m.seq, eid)

    for i, m in enumerate(members):
        if len(out) >= n:
            return out
        append(m, Join(name=f"member {i}"))
    while len(out) < n:
        i = rng.randrange(members_n)
        m = members[i]
        r = rng.random()
        if m.pending_in and r < 0.9:
            t, amount, payer = m.pending_in.popleft()
            if rng.random() < 0.05:
                d = append(m, Decline(transfer=t, reason="not now"))
                members[payer].declined.append((d, amount))
            else:
                append(m, Accept(transfer=t))
                m.balance += amount
        elif m.declined:
            d, amount = m.declined.pop()
            append(m, Reclaim(decline=d))
            m.balance += amount
        elif r < 0.06 or (r < 0.08 and not m.offers):
            tags = tuple(sorted(set(rng.sample(WORDS, 2))))
            title = " ".join(rng.sample(WORDS, 3))
            side = "offer" if rng.random() < 0.7 else "want"
            ref = append(
                m, Offer(side=side, title=title, description=f"{title}, ask me", tags=tags)
            )
            m.offers.append(ref)
        elif r < 0.08:
            append(m, OfferClose(offer=m.offers.pop(rng.randrange(len(m.offers)))))
        else:
            j = rng.randrange(members_n - 1)
            j += j >= i
            amount = rng.randint(1, 60)
            if m.balance - amount < -CREDIT_LIMIT:
                continue  # would overdraw: pick another move
            payee = members[j]
            t = append(m, Transfer(to=payee.key.public, amount=amount, memo=f"#{len(out)}"))
            m.balance -= amount
            payee.pending_in.append((t, amount, i))
    return out


def certificates(wires: Sequence[bytes], witness: SigningKey) -> Iterator[tuple[Ref, bytes]]:
    """What a witnessed community of ``wires`` (:func:`generate`, ``witnessed``)
    holds once every entry is final: each entry after the genesis with its
    own certificate, the one vote of ``witness`` (docs/witness.md §6.1: an
    author's node asks for a certificate of every entry it signs, and in
    this history no two entries of one author are signed close together).
    Yields (the entry, its certificate's bytes), in the order of ``wires``."""
    community: CommunityId | None = None
    for wire in wires:
        entry = Entry.decode(wire, check_signature=False)
        if entry.community is None:  # the genesis: certified by no one
            community = CommunityId(entry.id)
            continue
        if entry.community != community:
            raise ValueError("certificates() needs the genesis first, and one community")
        ref = Ref(entry.author, entry.seq, entry.id)
        vote = Vote.sign(witness, community, ref)
        yield ref, Certificate.from_votes([vote]).encode()


def load(
    n: int, seed: int, members: int = MEMBERS, out: Path = OUT, witnessed: bool = False
) -> list[bytes]:
    """The cached entries for (n, seed, members), generated on first use
    and kept under ``out`` (a witnessed community's apart)."""
    name = f"entries-{n}-seed{seed}" + ("" if members == MEMBERS else f"-m{members}")
    name += "-witnessed" if witnessed else ""
    path = out / f"{name}.bin"
    if path.exists():
        data = path.read_bytes()
        wires, pos = [], 0
        while pos < len(data):
            (size,) = struct.unpack_from(">I", data, pos)
            wires.append(data[pos + 4 : pos + 4 + size])
            pos += 4 + size
        return wires
    t0 = time.perf_counter()
    wires = generate(n, seed, members, witnessed)
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"".join(struct.pack(">I", len(w)) + w for w in wires))
    tmp.replace(path)
    print(f"generated {n} entries in {time.perf_counter() - t0:.1f} s -> {path}", file=sys.stderr)
    return wires


# -- measurements -----------------------------------------------------------


def _fresh_store(name: str) -> Store:
    path = OUT / name
    for suffix in ("", "-wal", "-shm", ".lock"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
    return Store.open(path)


def _chunks(seq: Sequence[bytes], size: int) -> Iterator[Sequence[bytes]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def measure_one_core(
    wires: Sequence[bytes], now_ms: int, profile: bool
) -> tuple[float, float, float, Store]:
    """Entries per second of raw verify, of decode (no signature check) and of
    ingest, batch by batch, interleaved: each batch is verified, decoded, then
    ingested, so load from other processes on a shared machine hits all three
    alike and the ratio stays meaningful."""
    parts = []
    for w in wires:
        signed, signature = msgpack.unpackb(w)
        author = msgpack.unpackb(signed)[2]
        parts.append((author, signed, signature))
    store = _fresh_store("ingest.db")
    ledger = Ledger(store)
    profiler = cProfile.Profile() if profile else None
    t_verify = t_decode = t_ingest = 0.0
    bad = 0
    for start in range(0, len(wires), BATCH):
        t0 = time.perf_counter()
        for author, signed, signature in parts[start : start + BATCH]:
            if not verify_once(Domain.ENTRY, author, signed, signature):
                raise SystemExit("bench entry with a bad signature")
        t1 = time.perf_counter()
        for w in wires[start : start + BATCH]:
            Entry.decode(w, check_signature=False)
        t2 = time.perf_counter()
        if profiler:
            profiler.enable()
        with store.transaction():
            for w in wires[start : start + BATCH]:
                if ledger.ingest(w, now_ms).status is not Status.ACCEPTED:
                    bad += 1
        if profiler:
            profiler.disable()
        t3 = time.perf_counter()
        t_verify += t1 - t0
        t_decode += t2 - t1
        t_ingest += t3 - t2
    if bad:
        raise SystemExit(f"{bad} bench entries were not accepted")
    if profiler:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(30)
    n = len(wires)
    return n / t_verify, n / t_decode, n / t_ingest, store


def _verify_all(items: list[tuple[bytes, bytes, bytes]]) -> bool:
    """Verify (author, signed, signature) triples (top level: process pools pickle it)."""
    return all(verify_once(Domain.ENTRY, a, m, s) for a, m, s in items)


def measure_ingest_parallel(
    wires: Sequence[bytes], now_ms: int, workers: int, pool_kind: str
) -> float:
    """Decode in the main thread, verify in a pool, store in the main thread.

    Batch k+1 is decoded and handed to the pool before batch k is stored, so
    verification overlaps storing. ``pool_kind`` is ``thread`` (PyNaCl
    releases the GIL during the check itself) or ``process``.
    """
    store = _fresh_store("ingest-mt.db")
    ledger = Ledger(store)
    pool: concurrent.futures.Executor = (
        concurrent.futures.ThreadPoolExecutor(workers)
        if pool_kind == "thread"
        else concurrent.futures.ProcessPoolExecutor(workers)
    )
    t0 = time.perf_counter()
    with pool:

        def submit(batch: Sequence[bytes]) -> tuple[list[Entry], list[Any]]:
            entries = [Entry.decode(w, check_signature=False) for w in batch]
            items = [(e.author, e.signed, e.signature) for e in entries]
            step = -(-len(items) // workers)
            futures = [
                pool.submit(_verify_all, items[i : i + step]) for i in range(0, len(items), step)
            ]
            return entries, futures

        chunks = list(_chunks(wires, BATCH))
        pending = submit(chunks[0]) if chunks else None
        for k in range(len(chunks)):
            assert pending is not None
            entries, futures = pending
            pending = submit(chunks[k + 1]) if k + 1 < len(chunks) else None
            if not all(f.result() for f in futures):
                raise SystemExit("bench entry with a bad signature")
            with store.transaction():
                for e in entries:
                    if ledger.ingest_entry(e, now_ms).status is not Status.ACCEPTED:
                        raise SystemExit("bench entry not accepted")
    rate = len(wires) / (time.perf_counter() - t0)
    store.close()
    return rate


def _schedstat(path: str) -> tuple[float, float] | None:
    """Seconds a thread or process ran, and waited runnable for a core
    (Linux's /proc schedstat), or None where there is none."""
    try:
        with open(path) as f:
            run, wait, _slices = f.read().split()
    except (OSError, ValueError):
        return None
    return int(run) / 1e9, int(wait) / 1e9


def _ready(prepared: Prepared) -> bool:
    """``prepared.done()`` (computed here for a troc from before it, run for a comparison)."""
    done = getattr(prepared, "done", None)
    if done is not None:
        return bool(done())
    return all(f.done() for f in prepared._futures)


def ingest_pipelined(
    node: LocalNode,
    wires: Sequence[bytes],
    community: CommunityId,
    workers: int,
    mode: str | None = None,
    workers_sched: list[tuple[float, float]] | None = None,
) -> None:
    """Store ``wires`` (all valid) as sync does (:mod:`troc.node.sync`): frames
    of 512 entries handed to the Verifier (``mode``: its default, or
    ``threads``) up to AHEAD_FRAMES ahead, and the frames at hand stored in
    runs of up to COMBINE_ENTRIES by ``LocalNode.ingest_many``; frames are
    handed over only while the store is not storing, as the node's sync
    session reads them on the thread that stores.
    ``workers_sched`` gets each verify worker process's :func:`_schedstat`
    at the end."""
    chunks = iter(list(_chunks(wires, MAX_BATCH)))
    verifier = Verifier(workers, mode=mode)
    ahead: deque[tuple[int, Prepared]] = deque()

    def fill() -> None:
        while len(ahead) < AHEAD_FRAMES:
            chunk = next(chunks, None)
            if chunk is None:
                return
            ahead.append((len(chunk), verifier.submit(chunk)))

    async def run() -> None:
        while True:
            # As in the node: frames are read ahead while its thread is free,
            # so the frames at hand are taken with the verifier's read-ahead
            # full, and what the store takes leaves it until the store is done;
            # while it waits for a frame's checks, more are read.
            fill()
            if not ahead:
                return
            batch: list[Prepared] = []
            count = 0
            while ahead and count < COMBINE_ENTRIES:
                n, prepared = ahead.popleft()
                batch.append(prepared)
                count += n
            items = []
            for p in batch:
                if not _ready(p):
                    fill()
                items += await p.result()
            for outcome in node.ingest_many(items, community=community):
                if outcome.status is not Status.ACCEPTED:
                    raise SystemExit(f"bench entry not accepted: {outcome}")

    try:
        trio.run(run)
        # (A Verifier from before worker_pids, run for a comparison, says none.)
        pids: list[int] = getattr(verifier, "worker_pids", list)()
        if workers_sched is not None:
            for pid in pids:
                sched = _schedstat(f"/proc/{pid}/schedstat")
                if sched is not None:
                    workers_sched.append(sched)
    finally:
        verifier.close()


def verify_cpu_us(wires: Sequence[bytes]) -> float:
    """CPU µs of this thread per signature check, over ``wires``."""
    entries = [Entry.decode(w, check_signature=False) for w in wires]
    t0 = time.thread_time()
    for e in entries:
        verify_once(Domain.ENTRY, e.author, e.signed, e.signature)
    return (time.thread_time() - t0) / len(entries) * 1e6


def _cpu_with_children() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def measure_node_path(
    wires: Sequence[bytes],
    now_ms: int,
    workers: int,
    mode: str | None = None,
    asleep: dict[str, float] | None = None,
) -> tuple[float, float, float]:
    """Entries per second through the node's sync path (see the module docstring):
    the Verifier prepares frame k + 1 in worker threads while the store takes
    frame k, as :meth:`troc.node.sync.Syncer._run_session` does. Also returns
    the CPU µs per entry of the calling thread (the store's: the serial part)
    and of the whole process.

    ``asleep`` gets where the pipeline stalls, whatever else the machine
    runs: the share of the wall time the store's thread slept (neither ran
    nor waited for a core: it waited for the checks), ``store``, and the
    mean share the verify worker processes slept (waiting for requests; from
    the first request on, their start-up included), ``workers``."""
    home = OUT / "ingest-node"
    if home.exists():
        for f in home.iterdir():
            f.unlink()
    genesis = Entry.decode(wires[0])
    with open_local_node(home, None, lambda: now_ms, member=genesis.author) as node:
        node.ingest_many([wires[0]])
        n = len(wires) - 1
        me = f"/proc/self/task/{threading.get_native_id()}/schedstat"
        sched0 = _schedstat(me)
        workers_sched: list[tuple[float, float]] = []
        t0, main0, cpu0 = time.perf_counter(), time.thread_time(), _cpu_with_children()
        ingest_pipelined(node, wires[1:], CommunityId(genesis.id), workers, mode, workers_sched)
        wall = time.perf_counter() - t0
        rate = n / wall
        sched1 = _schedstat(me)
        if asleep is not None and sched0 is not None and sched1 is not None:
            asleep["store"] = 1 - (sum(sched1) - sum(sched0)) / wall
        if asleep is not None and workers_sched:
            asleep["workers"] = sum(1 - sum(s) / wall for s in workers_sched) / len(workers_sched)
        main_us = (time.thread_time() - main0) / n * 1e6
        # The verify worker processes are waited for by then: their CPU counts.
        cpu_us = (_cpu_with_children() - cpu0) / n * 1e6
    for f in home.iterdir():
        f.unlink()
    home.rmdir()
    return rate, main_us, cpu_us


def measure_balance(
    store: Store, members: list[MemberId], community: CommunityId
) -> tuple[float, float]:
    """Median µs of one balance query: cold (store just reopened), then cached."""
    path = store.path
    store.close()
    store = Store.open(path)
    ledger = Ledger(store)
    cold, hot = [], []
    for m in members:
        t0 = time.perf_counter()
        ledger.balance(community, m)
        cold.append(time.perf_counter() - t0)
    for m in members:
        t0 = time.perf_counter()
        ledger.balance(community, m)
        hot.append(time.perf_counter() - t0)
    store.close()
    return statistics.median(cold) * 1e6, statistics.median(hot) * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000, help="entries (default 100000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="cProfile the one-core ingest")
    parser.add_argument("--no-threads", action="store_true", help="skip the all-cores ingest")
    parser.add_argument(
        "--default-gc", action="store_true", help="Python's collector defaults, not troc run's"
    )
    args = parser.parse_args(argv)

    wires = load(args.entries, args.seed)
    now_ms = BASE_MS + len(wires) + 1
    genesis = Entry.decode(wires[0])
    community = CommunityId(genesis.id)

    if not args.default_gc:
        tune_collector()
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})  # one core for the one-core measures
    verify_rate, decode_rate, ingest_rate, store = measure_one_core(wires, now_ms, args.profile)
    print(f"verify:  {verify_rate:,.0f} entries/s", file=sys.stderr)
    print(f"decode:  {decode_rate:,.0f} entries/s (no signature check)", file=sys.stderr)
    print(f"ingest:  {ingest_rate:,.0f} entries/s", file=sys.stderr)
    members = [MemberId(m) for m, _ in store.heads(community)]
    count = store.entry_count(community)
    assert count == len(wires) - 1, count
    db_mb = sum(f.stat().st_size for f in OUT.iterdir() if f.name.startswith("ingest.db")) / 2**20
    cold_us, hot_us = measure_balance(store, members, community)
    print(f"balance: {cold_us:.1f} µs cold, {hot_us:.2f} µs cached", file=sys.stderr)
    os.sched_setaffinity(0, set(cpus))

    result: dict[str, Any] = {
        "entries": len(wires),
        "verify_per_s": round(verify_rate),
        "ingest_per_s": round(ingest_rate),
        "ratio": round(ingest_rate / verify_rate, 3),
        "decode_per_s": round(decode_rate),
        "balance_query_us": round(cold_us, 1),
        "balance_cached_us": round(hot_us, 2),
        "store_mb": round(db_mb, 1),
    }
    if not args.no_threads:
        asleep: dict[str, float] = {}
        threads, main_us, cpu_us = measure_node_path(wires, now_ms, len(cpus), asleep=asleep)
        print(
            f"ingest, {len(cpus)} cores (node sync path): {threads:,.0f} entries/s"
            f" = {threads / verify_rate:.2f} x one core's verify",
            file=sys.stderr,
        )
        only_threads, _m, _c = measure_node_path(wires, now_ms, len(cpus), "threads")
        print(
            f"ingest, {len(cpus)} cores (node sync path, threads only): {only_threads:,.0f}"
            f" entries/s = {only_threads / verify_rate:.2f} x one core's verify",
            file=sys.stderr,
        )
        result["ingest_per_s_all_cores_threads"] = round(only_threads)
        procs = measure_ingest_parallel(wires, now_ms, max(1, len(cpus) - 1), "process")
        print(f"ingest, {len(cpus)} cores (processes): {procs:,.0f} entries/s", file=sys.stderr)
        result["ingest_per_s_all_cores"] = round(threads)
        result["all_cores_vs_verify"] = round(threads / verify_rate, 3)
        # On a shared machine the wall clock says how much CPU others left us;
        # CPU times say what the pipeline needs. With the cores to itself it
        # runs at the pace of its busiest part: the store's thread, or the
        # whole work spread over the cores.
        # Against one core's verify rate in CPU time too (the wall-clock
        # verify_per_s counts what others took of the core).
        verify_us = verify_cpu_us(wires[: min(len(wires), 5000)])
        bound = max(main_us, cpu_us / len(cpus))
        result["store_thread_cpu_us_per_entry"] = round(main_us, 1)
        result["cpu_us_per_entry_all_cores"] = round(cpu_us, 1)
        result["verify_cpu_us_per_entry"] = round(verify_us, 1)
        result["all_cores_bound_vs_verify"] = round(verify_us / bound, 3)
        print(
            f"  CPU per entry: {main_us:.0f} µs on the store's thread, {cpu_us:.0f} µs in all,"
            f" {verify_us:.0f} µs to verify: with {len(cpus)} free cores,"
            f" {verify_us / bound:.2f} x one core's verify rate",
            file=sys.stderr,
        )
        for part, share in asleep.items():
            result[f"{'store_thread' if part == 'store' else 'verify_workers'}_asleep_share"] = (
                round(share, 3)
            )
        result["ingest_per_s_all_cores_processes"] = round(procs)
        result["cores"] = len(cpus)
    result["gc"] = "python" if args.default_gc else "troc"
    result["rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    for name in ("ingest.db", "ingest-mt.db"):
        for suffix in ("", "-wal", "-shm", ".lock"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(OUT / f"{name}{suffix}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
