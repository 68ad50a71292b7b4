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
batch in worker threads, at most one per core at a time.

Decoding (Python, under the GIL) runs in the workers too: it interleaves with
the trio thread's store work, which drops the GIL inside SQLite.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import trio

from troc.errors import TrocError
from troc.protocol.entry import Entry

__all__ = ["Verifier", "prepare"]

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

    One per node: every sync session shares its threads, so two catch-ups at
    once do not oversubscribe the cores.

    Args:
        workers: threads at most (default: the cores this process may use).
        min_threaded: smaller batches are prepared on the calling thread.
    """

    def __init__(self, workers: int | None = None, *, min_threaded: int = MIN_THREADED) -> None:
        self.workers = workers or _cores()
        self.min_threaded = min_threaded
        self._limiter = trio.CapacityLimiter(self.workers)

    async def prepare(self, wires: Sequence[bytes]) -> list[bytes | Entry]:
        """:func:`prepare` over ``wires``, split across the worker threads;
        the result is in the order of ``wires``."""
        n = len(wires)
        if n < self.min_threaded or self.workers == 1:
            return prepare(wires)
        step = -(-n // self.workers)
        chunks = [wires[i : i + step] for i in range(0, n, step)]
        results: list[list[bytes | Entry]] = [[] for _ in chunks]

        async def run(k: int) -> None:
            results[k] = await trio.to_thread.run_sync(
                prepare, chunks[k], limiter=self._limiter, abandon_on_cancel=False
            )

        async with trio.open_nursery() as nursery:
            for k in range(len(chunks)):
                nursery.start_soon(run, k)
        return [item for chunk in results for item in chunk]
