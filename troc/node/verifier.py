"""Entries decoded and their signatures checked on every core, ahead of the store.

Theory of operation
-------------------
Checking an entry's Ed25519 signature is most of what ingesting it costs
(bench/ingest.py: ~60 µs of ~140 µs on one core), and the node's thread has
the rest to do (decode, rules, SQLite). :class:`Verifier` moves the checks
off it, so a catch-up uses every core while the store writes.

It hands a batch (a sync frame) over and returns at once (:meth:`Verifier.submit`);
the caller collects the batch later (:meth:`Prepared.result`), in order, as
what :meth:`troc.node.local.LocalNode.ingest_many` takes: an
:class:`~troc.protocol.entry.Entry` for each entry that decodes and whose
signature holds, and the wire bytes themselves for any other. The ledger
decodes those again and rejects them for exactly the reason it would have
given anyway, so the verdicts are those of one-by-one ingest by
construction: nothing here decides, it only saves the ledger work it would
do on the node's thread.

Two ways, both measured (bench/ingest.py, 2 cores): ``processes`` (the
default with 2 cores or more) decodes on the calling thread and has the
signatures checked by child processes (:mod:`troc.node.verify_worker`, one
per core but one); ``threads`` decodes and checks in worker threads.
libsodium drops the GIL while it checks, but each check is a call of its own:
handing the GIL back and forth with the node's thread cost ~45 µs of CPU per
entry, and the threads reached ~0.45x one core's verify rate where the
processes reached ~0.7x. Either way the work runs on a
:class:`concurrent.futures.ThreadPoolExecutor`'s threads (waiting on a child
process, or checking), not trio's: it goes on while the node's thread is
inside a commit. A child process that fails is replaced by checks in the
threads.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import IO, Any

import msgpack
import trio

from troc.crypto.sign import Domain, verify
from troc.errors import TrocError
from troc.protocol.entry import Entry

__all__ = ["Prepared", "Verifier", "prepare"]

logger = logging.getLogger(__name__)

#: Below this many entries a batch is prepared on the calling thread: a
#: worker's round trip (~100 µs) costs more than it saves.
MIN_THREADED = 16

_LENGTH = struct.Struct(">I")


def _decode(wires: Sequence[bytes]) -> list[bytes | Entry]:
    """Each wire decoded (signature not checked), or as itself if it does not decode."""
    out: list[bytes | Entry] = []
    for wire in wires:
        try:
            out.append(Entry.decode(wire, check_signature=False))
        except TrocError:
            out.append(wire)
    return out


def _keep(decoded: list[bytes | Entry], verdicts: Sequence[int]) -> list[bytes | Entry]:
    """``decoded`` with each entry whose verdict is 0 back as its wire bytes
    (one verdict per entry, in order)."""
    out: list[bytes | Entry] = []
    k = 0
    for item in decoded:
        if isinstance(item, Entry):
            out.append(item if verdicts[k] else item.wire)
            k += 1
        else:
            out.append(item)
    return out


def _triples(decoded: list[bytes | Entry]) -> list[tuple[bytes, bytes, bytes]]:
    return [(e.author, e.signed, e.signature) for e in decoded if isinstance(e, Entry)]


def _check_here(triples: list[tuple[bytes, bytes, bytes]]) -> bytes:
    return bytes(1 if verify(Domain.ENTRY, a, m, s) else 0 for a, m, s in triples)


def prepare(wires: Sequence[bytes]) -> list[bytes | Entry]:
    """Each wire as a checked :class:`Entry`, or as itself if it does not
    decode or its signature does not hold (the ledger then says why)."""
    decoded = _decode(wires)
    return _keep(decoded, _check_here(_triples(decoded)))


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _Child:
    """One :mod:`troc.node.verify_worker` process, asked from one thread at a time."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "troc.node.verify_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._lock = threading.Lock()

    def check(self, triples: list[tuple[bytes, bytes, bytes]]) -> bytes:
        body = msgpack.packb(triples, use_bin_type=True)
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None
        assert stdout is not None
        with self._lock:
            stdin.write(_LENGTH.pack(len(body)) + body)
            stdin.flush()
            verdicts = _read(stdout, _LENGTH.unpack(_read(stdout, _LENGTH.size))[0])
        if len(verdicts) != len(triples):
            raise OSError("the verify worker answered for another batch")
        return verdicts

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _read(stream: IO[bytes], n: int) -> bytes:
    data = stream.read(n)
    if data is None or len(data) != n:
        raise OSError("the verify worker ended")
    return data


class Verifier:
    """Prepares batches of entries off the calling thread (see the module's docstring).

    One per node: every sync session shares it, so two catch-ups at once do
    not oversubscribe the cores. :meth:`close` ends its threads and child
    processes; a Verifier is usable again after (they start anew on demand).

    Args:
        workers: cores to use (default: the cores this process may use).
        min_threaded: smaller batches are prepared on the calling thread.
        mode: ``"processes"`` or ``"threads"`` (default: processes when
            there are 2 cores or more).
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        min_threaded: int = MIN_THREADED,
        mode: str | None = None,
    ) -> None:
        self.workers = workers or _cores()
        self.min_threaded = min_threaded
        self.mode = mode or ("processes" if self.workers > 1 else "threads")
        if self.mode not in ("processes", "threads"):
            raise ValueError(f"unknown mode {self.mode!r}")
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        # The child processes not in use now (each used by one thread at a time).
        self._children: list[_Child] = []
        self._all_children: list[_Child] = []
        self._children_lock = threading.Lock()
        self._broken = False  # a child failed: check in the threads from now on

    def _executor(self, threads: int) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                threads, thread_name_prefix="troc-verify"
            )
        return self._pool

    def submit(self, wires: Sequence[bytes]) -> Prepared:
        """Start preparing ``wires``; collect the result with
        :meth:`Prepared.result`. Never blocks (in ``processes`` mode it
        decodes ``wires`` first, on the calling thread: ~9 µs an entry)."""
        n = len(wires)
        if n < self.min_threaded or self.workers == 1:
            return Prepared(lambda: prepare(wires))
        if self.mode == "processes" and not self._broken:
            decoded = _decode(wires)
            triples = _triples(decoded)
            pool = self._executor(max(1, self.workers - 1))
            # (max 1: a batch where nothing decodes has nothing to check.)
            step = max(1, -(-len(triples) // max(1, self.workers - 1)))
            futures = [
                pool.submit(self._check_in_child, triples[i : i + step])
                for i in range(0, len(triples), step)
            ]
            return Prepared(lambda: _keep(decoded, b"".join(f.result() for f in futures)), futures)
        pool = self._executor(self.workers)
        step = -(-n // self.workers)
        parts = [pool.submit(prepare, wires[i : i + step]) for i in range(0, n, step)]
        return Prepared(lambda: [item for f in parts for item in f.result()], parts)

    def _check_in_child(self, triples: list[tuple[bytes, bytes, bytes]]) -> bytes:
        """Runs on a pool thread: a child checks ``triples`` (here, if none works)."""
        if self._broken:
            return _check_here(triples)
        with self._children_lock:
            child = self._children.pop() if self._children else None
        try:
            if child is None:
                child = _Child()
                with self._children_lock:
                    self._all_children.append(child)
            verdicts = child.check(triples)
        except OSError as exc:
            logger.warning("signature checks leave their worker process: %s", exc)
            self._broken = True
            return _check_here(triples)
        with self._children_lock:
            self._children.append(child)
        return verdicts

    async def prepare(self, wires: Sequence[bytes]) -> list[bytes | Entry]:
        """:func:`prepare` over ``wires``, off this thread; in the order of ``wires``."""
        return await self.submit(wires).result()

    def close(self) -> None:
        """End the threads and child processes (after the work handed to
        them). Idempotent."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        with self._children_lock:
            children, self._all_children, self._children = self._all_children, [], []
        for child in children:
            child.close()


class Prepared:
    """A batch being prepared by a :class:`Verifier`."""

    def __init__(
        self,
        finish: Callable[[], list[bytes | Entry]],
        futures: Sequence[concurrent.futures.Future[Any]] = (),
    ) -> None:
        self._finish = finish
        self._futures = futures
        self._done: list[bytes | Entry] | None = None

    async def result(self) -> list[bytes | Entry]:
        """The prepared items, in order; waits (without a thread) for the rest."""
        if self._done is None:
            for future in self._futures:
                if not future.done():
                    await _wait(future)
            self._done = self._finish()
        return self._done


async def _wait(future: concurrent.futures.Future[Any]) -> None:
    """Wait in trio for a future of another thread to be done."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    def wake(_: object) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(done.set)

    future.add_done_callback(wake)
    await done.wait()
