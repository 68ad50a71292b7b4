"""Fuzz troc's parsers and ledger: every input either works or fails with a TrocError.

    python bench/fuzz.py                       # 1,000,000 inputs per target, both cores
    python bench/fuzz.py --inputs 20000 --seed 7 --target ingest
    python bench/fuzz.py --engine atheris      # coverage-guided (pip install atheris)

Targets (each input goes to one of them):

* ``decode``: arbitrary bytes as an entry's wire form (``Entry.decode``, signature
  checked) and as msgpack under the entry limits (``codec.unpack``);
* ``frames``: arbitrary bytes as a sync frame (``decode_message``), and what
  parses is fed to a live :class:`SyncSession` over a small community (a
  version 2 responder, and a version 3 initiator past its hello), with
  every frame it answers consumed; also as witness requests and answers;
* ``ingest``: structure-aware and differential: signed entries of every kind
  with boundary values, wrong links, forks, strangers, dangling references and
  broken signatures, ingested into the in-memory ledger and into a SQLite
  :class:`~troc.node.store.Store`; the two verdicts must be the same.

The byte-level targets start from a corpus of real wires and frames (a small
community's entries, the frames of real sync sessions, witness messages) and
mutate them: bit flips, byte and block insertions, deletions, splices, msgpack
header swaps and interesting integers. ``--engine atheris`` hands the same
targets to atheris (libFuzzer, coverage-guided) instead, one process each.

A finding is an exception that is not a :class:`~troc.errors.TrocError` (a
crash), a verdict that differs between the two backends, or one input taking
longer than ``--slow`` seconds. Findings are written to ``bench/out/fuzz/``
so they can be replayed (``--replay FILE``). Exit status 1 if there is any.
Last line: one JSON object with ``inputs``, ``crashes``, ``non_troc_errors``,
``divergences``, ``slow`` and per-target counts.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import json
import os
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from troc.crypto.sign import Domain, SigningKey
from troc.errors import TrocError
from troc.protocol import codec, witness
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import MAX_AMOUNT, CommunityId, Entry, Genesis, Transfer
from troc.protocol.ledger import Ledger
from troc.protocol.sim import MemoryView, sync_pair
from troc.protocol.sync import SyncSession
from troc.protocol.sync_wire import decode_message, encode_message

OUT = Path(__file__).resolve().parent / "out" / "fuzz"
T0 = 1_700_000_000_000
TARGETS = ("decode", "frames", "ingest")
INTERESTING_INTS = (
    0, 1, -1, 2, 127, 128, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32, 2**53 - 1,
    2**53, 2**63 - 1, 2**63, 2**64 - 1, -(2**31), -(2**63),
)  # fmt: skip


class Finding(Exception):
    """An input broke a promise: a crash, a divergence or a slow input."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


# -- a small community, signed entries of every kind ---------------------------


@functools.cache
def _key(n: int) -> SigningKey:
    return SigningKey(bytes([n]) * 32)


def _sign(signer: SigningKey, fields: list[Any]) -> bytes:
    signed = codec.pack(fields)
    return codec.pack([signed, signer.sign(Domain.ENTRY, signed)])


def _genesis(**rules: Any) -> Entry:
    rules.setdefault("credit_limit", MAX_AMOUNT)
    body = Genesis(name="Fuzz valley", unit="hour", **rules)
    return Entry.create(_key(0), community=None, seq=0, prev=None, timestamp_ms=T0, body=body)


def _small_community() -> tuple[Ledger, Entry, list[Entry]]:
    """A founder and three members who joined, offered and paid each other."""
    genesis = _genesis()
    ledger = Ledger(MemoryBackend())
    ledger.ingest(genesis.wire, T0)
    c, now = CommunityId(genesis.id), T0
    made: list[Entry] = []
    members = [_key(i) for i in range(4)]
    from troc.protocol.entry import Accept, Decline, Join, Offer, Reclaim

    def add(k: SigningKey, body: Any) -> Entry:
        nonlocal now
        now += 1000
        entry = ledger.prepare(k, c, body, now)
        ledger.ingest_entry(entry, now)
        made.append(entry)
        return entry

    for k in members:
        add(k, Join(name=f"member {k.public[:2].hex()}"))
    add(members[1], Offer(side="offer", title="Bread", tags=("food",), price=3))
    t1 = add(members[1], Transfer(to=members[2].public, amount=5, memo="bread"))
    add(members[2], Accept(transfer=t1.ref))
    t2 = add(members[3], Transfer(to=members[1].public, amount=2))
    d2 = add(members[1], Decline(transfer=t2.ref))
    add(members[3], Reclaim(decline=d2.ref))
    return ledger, genesis, made


# -- byte-level mutation ----------------------------------------------------------


def _mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
        op = rng.randrange(9)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # set a byte to an interesting value
            buf[rng.randrange(len(buf))] = rng.choice((0, 0xFF, 0x7F, 0x80, 0xC0, 0xC1, 0xD9, 0xDD))
        elif op == 2:  # insert random bytes
            buf[pos:pos] = rng.randbytes(rng.choice((1, 2, 4, 8, 32)))
        elif op == 3 and buf:  # delete a block
            del buf[pos : pos + rng.choice((1, 2, 4, 16, 64))]
        elif op == 4 and corpus:  # splice another input
            other = rng.choice(corpus)
            j = rng.randrange(len(other) + 1)
            buf[pos:] = other[j:]
        elif op == 5:  # a msgpack integer of an interesting value
            buf[pos:pos] = _int_bytes(rng)
        elif op == 6:  # a container header claiming many items
            buf[pos:pos] = rng.choice(
                (b"\xdc\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xde\xff\xff", b"\xdf\x7f\xff\xff\xff")
            )
        elif op == 7 and buf:  # duplicate a block
            block = buf[pos : pos + rng.choice((2, 8, 32))]
            buf[pos:pos] = block
        elif op == 8:  # a long string or binary header
            buf[pos:pos] = rng.choice(
                (b"\xda\xff\xff", b"\xdb\x00\x10\x00\x01", b"\xc6\x00\x01\x00\x00")
            )
    return bytes(buf[: 1 << 20])


def _int_bytes(rng: random.Random) -> bytes:
    import msgpack

    return bytes(msgpack.packb(rng.choice(INTERESTING_INTS)))


# -- the byte-level targets --------------------------------------------------------


def _expect_troc(call: Callable[[], Any]) -> None:
    try:
        call()
    except TrocError:
        pass


class ByteTargets:
    """The decode and frames targets, with their seed corpus."""

    def __init__(self) -> None:
        self.ledger, self.genesis, self.entries = _small_community()
        self.community = CommunityId(self.genesis.id)
        wires = [self.genesis.wire] + [e.wire for e in self.entries]
        self.corpus = {"decode": wires, "frames": self._frames()}

    def _view(self) -> MemoryView:
        return MemoryView(self.ledger, self.community, lambda: T0 + 10**7)

    def _frames(self) -> list[bytes]:
        """Real sync frames (a fresh node catching up, and the reverse), witness messages."""
        fresh = Ledger(MemoryBackend())
        fresh.ingest(self.genesis.wire, T0)
        empty = MemoryView(fresh, self.community, lambda: T0 + 10**7)
        frames = [f for _, f in sync_pair(empty, self._view()).frames]
        fresh2 = Ledger(MemoryBackend())
        fresh2.ingest(self.genesis.wire, T0)
        other = MemoryView(fresh2, self.community, lambda: T0 + 10**7)
        frames += [f for _, f in sync_pair(self._view(), other).frames]
        frames += [f for _, f in sync_pair(empty, self._view(), version=3).frames]
        e = self.entries[-1]
        request = witness.VoteRequest(e.wire, (self.entries[-2].wire,))
        frames.append(witness.encode_request(request))
        return frames

    def decode(self, data: bytes) -> None:
        _expect_troc(lambda: Entry.decode(data))
        _expect_troc(lambda: codec.unpack(data))

    def frames(self, data: bytes) -> None:
        def session(initiator: bool, version: int) -> None:
            msg = decode_message(data)
            # A fresh session each time: the input is the first frame a
            # responder gets, or (version 3) the first after the hello.
            s = SyncSession(self._view(), self.community, initiator=initiator, version=version)
            if initiator:
                s.start()
            for out in s.receive(msg):
                encode_message(out)

        _expect_troc(lambda: session(False, 2))
        _expect_troc(lambda: session(True, 3))
        _expect_troc(lambda: witness.decode_request(data))
        _expect_troc(lambda: witness.decode_answer(data))

    def inputs(self, target: str, rng: random.Random) -> Iterator[bytes]:
        corpus = self.corpus[target]
        while True:
            r = rng.random()
            if r < 0.85:
                yield _mutate(rng, rng.choice(corpus), corpus)
            elif r < 0.95:
                yield rng.randbytes(rng.randrange(64))
            else:
                yield _random_msgpack(rng)


def _random_msgpack(rng: random.Random, depth: int = 0) -> bytes:
    import msgpack

    def value(d: int) -> Any:
        r = rng.randrange(8 if d < 4 else 5)
        if r == 0:
            return rng.choice(INTERESTING_INTS)
        if r == 1:
            return rng.randbytes(rng.choice((0, 1, 31, 32, 33, 64)))
        if r == 2:
            return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(10)))
        if r == 3:
            return rng.choice((None, True, False, 1.5))
        if r == 4:
            return rng.choice(("t", "hello", "heads", "entries", "want", "certs", "fin", "end"))
        if r in (5, 6):
            return [value(d + 1) for _ in range(rng.randrange(6))]
        return {value(d + 1) if rng.random() < 0.2 else rng.choice("tnhdefpkw"): value(d + 1)
                for _ in range(rng.randrange(5))}  # fmt: skip

    try:
        return bytes(msgpack.packb(value(depth), strict_types=False))
    except (TypeError, ValueError):  # unhashable keys
        return b"\x80"


# -- the structure-aware, differential ingest target -------------------------------


KINDS = ("join", "offer", "offer_close", "transfer", "accept", "decline", "reclaim", "vouch")


class IngestTarget:
    """One community on two backends, fed generated signed entries; episodes
    of ``episode`` entries each start from a fresh community."""

    def __init__(self, workdir: Path, episode: int = 300) -> None:
        from troc.node.store import Store

        self._Store = Store
        self.workdir = workdir
        self.episode = episode
        self.n = 0
        self.verdicts: dict[str, int] = {}  # how deep the inputs got: status/reason
        self.store: Any = None
        self._new_episode(0)

    def _new_episode(self, i: int) -> None:
        if self.store is not None:
            self._tx_scope.close()  # commits the episode's transaction
            self.store.close()
        for suffix in ("", "-wal", "-shm", ".lock"):
            with contextlib.suppress(FileNotFoundError):
                (self.workdir / f"store.sqlite{suffix}").unlink()
        self.store = self._Store.open(self.workdir / "store.sqlite")
        # One transaction per episode, as the node batches gossip: a commit per
        # input would make this a benchmark of fsync.
        self._tx_scope = contextlib.ExitStack()
        self._tx_scope.enter_context(self.store.transaction())
        witnessed = i % 3 == 2
        rules: dict[str, Any] = {}
        if witnessed:
            witnesses = tuple(sorted(_key(100 + j).public for j in range(4)))
            rules = {"finality": "witnessed", "witnesses": witnesses, "faults": 1, "quorum": 3}
        if i % 4 == 1:
            rules["admission"] = "vouch"
        self.genesis = _genesis(**rules)
        self.community = CommunityId(self.genesis.id)
        self.memory = Ledger(MemoryBackend())
        self.sqlite = Ledger(self.store)
        self.now = T0
        self.made: list[Entry] = []
        self.heads: dict[bytes, tuple[int, bytes | None]] = {}
        for ledger in (self.memory, self.sqlite):
            ledger.ingest(self.genesis.wire, self.now)

    def _ref(self, rng: random.Random, fits: Callable[[Entry], bool] | None = None) -> list[Any]:
        """A reference: usually to an entry that fits the rule (a transfer to
        the signer for an accept …), sometimes to any entry, or to nothing."""
        fitting = [e for e in self.made[-200:] if fits(e)] if fits is not None else []
        if fitting and rng.random() < 0.7:
            e = rng.choice(fitting)
            return [e.author, e.seq, e.id]
        if self.made and rng.random() < 0.85:
            e = rng.choice(self.made)
            ref = [e.author, e.seq, e.id]
            if rng.random() < 0.1:
                ref[rng.randrange(3)] = rng.choice(
                    (rng.randbytes(32), rng.choice(INTERESTING_INTS))
                )
            return ref
        return [rng.randbytes(32), rng.randrange(1, 50), rng.randbytes(32)]

    def _amount(self, rng: random.Random) -> Any:
        if rng.random() < 0.8:
            return rng.choice((1, 2, 5, 100, MAX_AMOUNT // 4, MAX_AMOUNT))
        return rng.choice((MAX_AMOUNT + 1, 0, -1, 2**63, None, "3"))

    def _body(
        self, kind: str, rng: random.Random, members: list[SigningKey], me: bytes
    ) -> dict[str, Any]:
        who = rng.choice(members).public

        def named(k: str, *, to_me: bool = False, mine: bool = False) -> Callable[[Entry], bool]:
            def fits(e: Entry) -> bool:
                if e.kind.value != k:
                    return False
                if to_me:
                    return getattr(e.body, "to", None) == me
                return e.author == me if mine else True

            return fits

        body: dict[str, Any]
        if kind == "join":
            body = {"name": "x"} if rng.random() < 0.5 else {}
            if rng.random() < 0.4:
                body["vouch"] = self._ref(rng, lambda e: getattr(e.body, "member", None) == me)
        elif kind == "offer":
            body = {
                "side": rng.choice(("offer", "want", "gift")),
                "title": "t" * rng.choice((1, 200, 201)),
                "description": "é" * rng.choice((0, 10, 4000, 4001)),
                "tags": ["a"] * rng.choice((0, 3, 300)),
            }
            if rng.random() < 0.5:
                body["price"] = self._amount(rng)
        elif kind == "offer_close":
            body = {"offer": self._ref(rng, named("offer", mine=True))}
        elif kind == "transfer":
            body = {"to": who, "amount": self._amount(rng), "memo": "m" * rng.choice((0, 5, 201))}
            if rng.random() < 0.3:
                body["offer"] = self._ref(rng, named("offer"))
        elif kind in ("accept", "decline"):
            body = {"transfer": self._ref(rng, named("transfer", to_me=True))}
            if kind == "decline":
                body["reason"] = ""
        elif kind == "reclaim":
            body = {
                "decline": self._ref(
                    rng, lambda e: e.kind.value == "decline" and e.body.transfer.author == me
                )
            }  # type: ignore[union-attr]
        else:
            body = {"member": who}
            if rng.random() < 0.5:
                body["limit"] = self._amount(rng)
        if rng.random() < 0.05:  # an unknown, missing or mistyped field
            k = rng.choice([*body, "extra"]) if body else "extra"
            body[k] = rng.choice((None, 7, "x", b"\x00", [], {}))
        return body

    def generate(self, rng: random.Random) -> bytes:
        """The wire bytes of the next entry to offer (usually well signed)."""
        members = [_key(i) for i in range(1, 7)]
        signer = rng.choice(members) if rng.random() < 0.9 else _key(200 + rng.randrange(3))
        seq, prev = self.heads.get(signer.public, (0, None))
        seq += 1
        kind = "join" if seq == 1 and rng.random() < 0.8 else rng.choice(KINDS)
        fields: list[Any] = [1, self.community, signer.public, seq, prev, self.now + 1000,
                             kind, self._body(kind, rng, members, signer.public)]  # fmt: skip
        r = rng.random()
        if r < 0.04 and seq > 1:
            fields[3] = rng.randrange(1, seq)  # an earlier seq: a fork or a stale copy
        elif r < 0.07:
            fields[4] = rng.randbytes(32)  # a wrong or dangling prev
        elif r < 0.09:
            fields[3] = rng.choice(INTERESTING_INTS)
        elif r < 0.10:
            fields[5] = rng.choice((0, self.now + 10**9, 2**63 - 1, -1))
        elif r < 0.11:
            fields[rng.randrange(8)] = rng.choice((None, b"", 2**64 - 1, "x", []))
        wire = _sign(signer, fields)
        if rng.random() < 0.03:  # a broken signature or a truncated wire
            wire = _mutate(rng, wire, [])
        return wire

    def run(self, wire: bytes) -> None:
        self.now += 1000
        verdicts = []
        for ledger in (self.memory, self.sqlite):
            try:
                outcome = ledger.ingest(wire, self.now + 500)
            except TrocError as exc:
                verdicts.append(("error", type(exc).__name__))
                continue
            verdicts.append((outcome.status.value, outcome.reason and outcome.reason.value,
                             [e.id for e in outcome.released]))  # fmt: skip
            stored = [outcome.entry] if outcome.status.value == "accepted" else []
            for e in (*stored, *outcome.released):
                if e is not None and ledger is self.memory:
                    self.made.append(e)
                    head = self.heads.get(e.author, (0, None))
                    if e.seq > head[0]:
                        self.heads[e.author] = (e.seq, e.id)
        v = "/".join(str(x) for x in verdicts[0][:2] if x)
        self.verdicts[v] = self.verdicts.get(v, 0) + 1
        if verdicts[0] != verdicts[1]:
            raise Finding("divergence", f"memory {verdicts[0]} != sqlite {verdicts[1]}")
        if self.made:
            c = self.community
            for m in {e.author for e in self.made[-3:]}:
                a, b = self.memory.balance(c, m), self.sqlite.balance(c, m)
                if a != b:
                    raise Finding("divergence", f"balance of {m.hex()[:8]}: memory {a}, sqlite {b}")
        self.n += 1
        if self.n % self.episode == 0:
            self._new_episode(self.n // self.episode)

    def close(self) -> None:
        self._tx_scope.close()
        self.store.close()


# -- driving ------------------------------------------------------------------------


def _check(call: Callable[[], None], data: bytes, slow: float) -> Finding | None:
    start = time.perf_counter()
    try:
        call()
    except Finding as exc:
        return exc
    except Exception as exc:  # the point: anything but a TrocError is a crash
        tb = traceback.format_exc(limit=6)
        return Finding("non_troc_error", f"{type(exc).__name__}: {exc}\n{tb}")
    took = time.perf_counter() - start
    if took > slow:
        return Finding("slow", f"{took:.3f} s for {len(data)} bytes")
    return None


def fuzz(target: str, inputs: int, seed: int, slow: float = 1.0) -> dict[str, Any]:
    """Run ``inputs`` generated inputs against ``target``; return counts and findings."""
    rng = random.Random(f"{target}/{seed}")
    findings: list[dict[str, Any]] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="troc-fuzz-") as tmp:
        if target == "ingest":
            t = IngestTarget(Path(tmp))
            gen: Iterator[bytes] = iter(lambda: t.generate(rng), None)
            call: Callable[[bytes], None] = t.run
        else:
            bt = ByteTargets()
            gen = bt.inputs(target, rng)
            call = getattr(bt, target)
        for i in range(inputs):
            data = next(gen)
            finding = _check(lambda d=data: call(d), data, slow)
            if finding is not None:
                findings.append({"kind": finding.kind, "detail": finding.detail[:2000],
                                 "input": data.hex(), "index": i})  # fmt: skip
                if len(findings) >= 50:
                    break
        verdicts = {}
        if target == "ingest":
            t.close()
            verdicts = t.verdicts
    return {
        "target": target,
        "seed": seed,
        "inputs": i + 1 if inputs else 0,
        "seconds": time.perf_counter() - start,
        "findings": findings,
        "verdicts": verdicts,
    }


def _shards(targets: list[str], inputs: int, jobs: int, seed: int) -> list[tuple[str, int, int]]:
    """Each target in ``jobs`` shards of its own seed, so every process has work."""
    per = max(1, jobs)
    shards = []
    for t in targets:
        for k in range(per):
            shards.append((t, inputs // per + (1 if k < inputs % per else 0), seed * 1000 + k))
    return shards


def _run_atheris(target: str, inputs: int, seed: int) -> int:
    """Coverage-guided: libFuzzer drives ``target`` in a child process."""
    code = (
        "import sys, atheris\n"
        "with atheris.instrument_imports():\n"
        "    import troc.protocol.codec, troc.protocol.entry, troc.protocol.sync, "
        "troc.protocol.ledger, troc.protocol.witness\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import fuzz\n"
        f"bt = fuzz.ByteTargets(); call = getattr(bt, {target!r})\n"
        "def one(data):\n"
        "    call(data)\n"
        "atheris.Setup(sys.argv, one)\n"
        "atheris.Fuzz()\n"
    )
    corpus = OUT / f"corpus-{target}"
    corpus.mkdir(parents=True, exist_ok=True)
    for n, data in enumerate(ByteTargets().corpus[target]):
        (corpus / f"seed-{n}").write_bytes(data)
    argv = [sys.executable, "-c", code, f"-runs={inputs}", f"-seed={seed}", "-max_len=65536",
            f"-artifact_prefix={OUT}/", str(corpus)]  # fmt: skip
    import subprocess

    return subprocess.run(argv, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--inputs", type=int, default=1_000_000, help="inputs per target")
    p.add_argument("--target", choices=(*TARGETS, "all"), default="all")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--slow", type=float, default=1.0, help="seconds one input may take")
    p.add_argument("--engine", choices=("mutate", "atheris"), default="mutate")
    p.add_argument("--replay", type=Path, help="a findings JSON file to run again")
    args = p.parse_args(argv)
    targets = list(TARGETS) if args.target == "all" else [args.target]
    if args.replay:
        return _replay(args.replay)
    if args.engine == "atheris":
        rcs = [_run_atheris(t, args.inputs, args.seed) for t in targets if t != "ingest"]
        summary = {"engine": "atheris", "inputs": args.inputs, "targets": targets,
                   "crashes": sum(1 for rc in rcs if rc != 0)}  # fmt: skip
        print(json.dumps(summary))
        return 1 if summary["crashes"] else 0
    shards = _shards(targets, args.inputs, args.jobs, args.seed)
    print(f"fuzzing {', '.join(targets)}: {args.inputs:,} inputs each, {len(shards)} shards "
          f"on {args.jobs} processes, seed {args.seed}", file=sys.stderr)  # fmt: skip
    results = []
    start = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(fuzz, t, n, s, args.slow) for t, n, s in shards]
        for fut in concurrent.futures.as_completed(futures):
            r = fut.result()
            results.append(r)
            print(f"  {r['target']:<7} seed {r['seed']:>6}: {r['inputs']:>9,} inputs in "
                  f"{r['seconds']:6.1f} s ({r['inputs'] / max(r['seconds'], 1e-9):8,.0f}/s), "
                  f"{len(r['findings'])} findings", file=sys.stderr)  # fmt: skip
    findings = [
        f | {"target": r["target"], "seed": r["seed"]} for r in results for f in r["findings"]
    ]
    if findings:
        OUT.mkdir(parents=True, exist_ok=True)
        path = OUT / f"findings-{args.seed}.json"
        path.write_text(json.dumps(findings, indent=1))
        for f in findings[:5]:
            print(
                f"FINDING {f['target']} {f['kind']}: {f['detail'].splitlines()[0]}", file=sys.stderr
            )
        print(f"{len(findings)} findings written to {path}", file=sys.stderr)
    by_target = {t: sum(r["inputs"] for r in results if r["target"] == t) for t in targets}
    kinds = [f["kind"] for f in findings]
    verdicts: dict[str, int] = {}
    for r in results:
        for v, n in r["verdicts"].items():
            verdicts[v] = verdicts.get(v, 0) + n
    if verdicts:
        print("  ingest verdicts: " + ", ".join(f"{v} {n:,}" for v, n in sorted(
            verdicts.items(), key=lambda kv: -kv[1])), file=sys.stderr)  # fmt: skip
    summary = {
        "engine": "mutate",
        "seed": args.seed,
        "inputs": sum(by_target.values()),
        "inputs_by_target": by_target,
        "crashes": kinds.count("non_troc_error"),
        "non_troc_errors": kinds.count("non_troc_error"),
        "divergences": kinds.count("divergence"),
        "slow": kinds.count("slow"),
        "ingest_accepted": verdicts.get("accepted", 0),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(summary))
    return 1 if findings else 0


def _replay(path: Path) -> int:
    """Run the inputs of a findings file again (the byte targets; ingest inputs
    depend on the episode they came in, so they replay by seed instead)."""
    bad = 0
    for f in json.loads(path.read_text()):
        if f["target"] == "ingest":
            print(f"ingest finding at input {f['index']}: rerun with --target ingest --seed "
                  f"{f['seed'] // 1000} (shard {f['seed'] % 1000})")  # fmt: skip
            continue
        bt = ByteTargets()
        data = bytes.fromhex(f["input"])
        call = getattr(bt, f["target"])
        finding = _check(lambda d=data, c=call: c(d), data, 1.0)
        print(f"{f['target']} {f['kind']}: {'still fails' if finding else 'fixed'}")
        bad += finding is not None
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
