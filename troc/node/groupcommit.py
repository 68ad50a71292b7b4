"""Group commit of own entries: concurrent requests share one durable transaction.

Theory of operation
-------------------
Each own entry must be durable (fsynced) before its request is answered and
before anything sends it (:mod:`troc.node.local`). Alone, that is one durable
transaction, and one write of the home's ``signed.json``, per entry: two
fsyncs, on the node's one thread. When requests come in faster than that
(several clients of one node: a shop's tills, a web app), :class:`GroupCommit`
runs the store steps of all the requests that are waiting in one
:meth:`LocalNode.appending` block: one durable transaction, one mark, then
every entry is announced and every request answered. A request that arrives
while a batch is being written waits for the next one, as at the witness
(docs/witness.md §6.3).

The batch's commit is not fsynced on the node's thread: it commits, then
awaits an fsync of the store's log on a worker thread
(:mod:`troc.node.walsync`), and only then are its entries marked,
announced and answered; meanwhile the node goes on (gossip, sync, the
next requests' parsing), and nothing sends the batch's entries (sync waits
for them, :func:`~troc.node.walsync.own_durable`). If that fsync fails,
the batch's requests fail with it (their entries stay pending: the next own
entry signed makes them durable first, or fails the same way).

Each step runs as it would alone, in arrival order, on the store as the
earlier ones left it: the second payment of a batch sees the first one's
balance. A step refused before it wrote anything (an overdraft, an unknown
payee: the usual failures) gets its error and the others go on. A step that
failed after it began writing (``AppendBatch.broken``), or a commit that
fails, undoes the whole batch, which is then run again one step at a time,
each in its own transaction: only the broken step fails. A lone request
takes that path directly, with no wait.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import trio

from troc.errors import StoreError
from troc.net.channels import take_ready
from troc.node.local import LocalNode, PendingOwn
from troc.node.walsync import log_sync_of

__all__ = ["GroupCommit"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class _Broken(Exception):
    """Raised out of an appending block to undo it (a step left it half-written)."""


@dataclass(slots=True)
class _Job(Generic[T]):
    """One queued store step, and its outcome once its batch is committed."""

    step: Callable[[], T]
    result: T | None = None
    error: Exception | None = None
    done: trio.Event = field(default_factory=trio.Event)

    def run(self) -> None:
        try:
            self.result = self.step()
            self.error = None
        except Exception as exc:  # the step's own failure: its caller's to see
            self.result, self.error = None, exc


class GroupCommit:
    """Runs store steps that append own entries, many to a durable
    transaction (see the module docstring). :meth:`serve` must be running."""

    #: Steps in one transaction, at most.
    MAX_BATCH = 256
    #: Scheduler passes given to other tasks before a batch is closed: the
    #: requests that arrived while the last one was written are read and
    #: queued meanwhile. The batch closes after this many passes in a row
    #: that queued nothing new, or after GATHER_MAX_PASSES in all: a request
    #: on its way (accepted, read, parsed) takes a few passes to be queued,
    #: and while requests keep coming in, waiting a pass more costs less
    #: than a durable transaction more. A checkpoint costs microseconds, not
    #: a timer.
    GATHER_PASSES = 2
    GATHER_MAX_PASSES = 16

    def __init__(self, local: LocalNode) -> None:
        self.local = local
        self.batches = 0  # transactions written
        self.steps = 0  # steps run in them
        self.log_sync = log_sync_of(local.store)
        self._send, self._queue = trio.open_memory_channel[_Job[object]](10_000)

    async def run(self, step: Callable[[], T]) -> T:
        """Run ``step`` (synchronous: it appends own entries through the
        node's :class:`LocalNode`) in the next batch; its result once the
        batch is durable. Raises what the step raised."""
        job: _Job[T] = _Job(step)
        await self._send.send(job)  # type: ignore[arg-type]
        await job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    async def serve(self) -> None:
        """Write queued steps, a batch per durable transaction, for the node's life."""
        async for first in self._queue:
            batch = [first]
            quiet = 0
            for _ in range(self.GATHER_MAX_PASSES):
                await trio.lowlevel.checkpoint()
                before = len(batch)
                take_ready(self._queue, batch, self.MAX_BATCH)
                quiet = 0 if len(batch) > before else quiet + 1
                if quiet >= self.GATHER_PASSES or len(batch) >= self.MAX_BATCH:
                    break
            await self.commit(batch)
            for job in batch:
                job.done.set()

    async def commit(self, batch: list[_Job[object]]) -> None:
        """Run ``batch``'s steps in one transaction made durable off the
        node's thread (one at a time, each durable, if that fails); each job
        holds its result or error after."""
        self.batches += 1
        self.steps += len(batch)
        if len(batch) > 1:
            appended = None
            try:
                with self.local.appending(durable=False) as appended:
                    for job in batch:
                        job.run()
                        if appended.broken:
                            raise _Broken
            except Exception as exc:
                if appended is not None and appended.committed:
                    # Committed, and each job holds its outcome: only announcing
                    # failed (a listener's bug), as it would for one entry.
                    logger.exception("announcing %d own entries failed", len(appended.entries))
                    return
                # Nothing of the batch was kept: each step again, alone.
                logger.warning("a batch of %d steps failed (%r): one at a time", len(batch), exc)
            else:
                await self._durable(batch, appended.pending)
                return
        for job in batch:
            job.run()

    async def _durable(self, batch: list[_Job[object]], pending: PendingOwn | None) -> None:
        """Wait until the batch's commit is on disk, then finish it (mark,
        announce); if the fsync fails, each of its steps fails with it."""
        if pending is None or pending.finished:
            return
        try:
            await self.log_sync.wait()
        except StoreError as exc:
            if pending.finished:  # made durable meanwhile by another own entry
                return
            logger.error("%d own entries are not known to be on disk: %s", len(batch), exc)
            for job in batch:
                job.result, job.error = None, exc
            return
        try:
            self.local.finish_own(pending)
        except Exception:  # a listener's bug: the entries are durable and marked
            logger.exception("announcing %d own entries failed", len(pending.entries))
