"""Entries decoded and their signatures checked on every core, ahead of the store.

Theory of operation
-------------------
Checking an entry's Ed25519 signature is most of what ingesting it costs
(docs in /bench/ingest.py; ~60 µs of ~150 µs on one core). libsodium, called
through cffi, releases the GIL for the check, so worker threads can check one
batch on the other cores while the trio thread stores the batch before it
(SQLite releases the GIL too, for its own work).

:func:`prepare` turns wire bytes into what :meth:`troc.node.local.LocalNode.ingest_many`
takes: an :class:`~troc.protocol.entry.Entry` for each entry that decodes
and whose signature holds, and the wire bytes themselves for any other. The
ledger decodes those again and rejects them for exactly the reason it would
have given anyway, so the verdicts are those of one-by-one ingest by
construction: nothing here decides, it only saves the ledger work it would
do on the trio thread. :class:`Verifier` runs :func:`prepare` over chunks of a
batch in worker threads, one per core.

Decoding (Python, under the GIL) runs in the workers too: it interleaves with
the trio thread's store work, which drops the GIL inside SQLite.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
from collections.abc import Sequence
from typing import Any

import trio

from troc.errors import TrocError
from troc.protocol.entry import Entry

__all__ = ["Prepared", "Verifier", "prepare"]

#: Below this many entries a batch is prepared on the trio thread: a worker
#: thread's round trip (~100 µs) costs more than it saves.
MIN_THREADED = 16


def prepare(wires: Sequence[bytes]) -> list[bytes | Entry]:
    """Each wire as a checked :class:`Entry`, or as itself if it does not
    decode or its signature does not hold (the ledger then says why)."""
    out: list[bytes | Entry] = []
    for wire in wires:
        try:
            entry = Entry.decode(wire, check_signature=False)
        except TrocError:
            out.append(wire)
            continue
        out.append(entry if entry.signature_ok() else wire)
    return out


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class Verifier:
    """Prepares batches of entries in worker threads, one per core at most.

    The threads are a :class:`concurrent.futures.ThreadPoolExecutor`'s, not
    trio's: work handed to them goes on while the trio thread is busy
    storing (a batch's commit holds it for a while), so the caller can hand
    over several frames ahead (:meth:`submit`) and collect them in order.
    One per node: every sync session shares its threads, so two catch-ups
    at once do not oversubscribe the cores. :meth:`close` ends the threads.

    Args:
        workers: threads at most (default: the cores this process may use).
        min_threaded: smaller batches are prepared on the calling thread.
    """

    def __init__(self, workers: int | None = None, *, min_threaded: int = MIN_THREADED) -> None:
        self.workers = workers or _cores()
        self.min_threaded = min_threaded
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def submit(self, wires: Sequence[bytes]) -> Prepared:
        """Start preparing ``wires`` (split across the threads); collect the
        result with :meth:`Prepared.result`. Never blocks."""
        n = len(wires)
        if n < self.min_threaded or self.workers == 1:
            return Prepared([], prepare(wires))
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self.workers, thread_name_prefix="troc-verify"
            )
        step = -(-n // self.workers)
        return Prepared(
            [self._pool.submit(prepare, wires[i : i + step]) for i in range(0, n, step)]
        )

    async def prepare(self, wires: Sequence[bytes]) -> list[bytes | Entry]:
        """:func:`prepare` over ``wires`` on the threads; in the order of ``wires``."""
        return await self.submit(wires).result()

    def close(self) -> None:
        """End the threads (after the work handed to them). Idempotent."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class Prepared:
    """A batch being prepared by a :class:`Verifier`'s threads."""

    def __init__(
        self,
        futures: list[concurrent.futures.Future[list[bytes | Entry]]],
        done: list[bytes | Entry] | None = None,
    ) -> None:
        self._futures = futures
        self._done = done

    async def result(self) -> list[bytes | Entry]:
        """The prepared items, in order; waits (without a thread) for the rest."""
        if self._done is None:
            out: list[bytes | Entry] = []
            for future in self._futures:
                if not future.done():
                    await _wait(future)
                out += future.result()
            self._done = out
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
