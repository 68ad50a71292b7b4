"""Making committed transactions durable off the node's thread, many at once.

Theory of operation
-------------------
A durable transaction (``Store.transaction(durable=True)``) fsyncs the
store's write-ahead log inside ``COMMIT``, on the node's one thread: ~4 ms
on the project's machine when idle, 20-150 ms under bench/finality.py's
load, during which the node reads no socket, ingests no gossip and answers
no one (a tenth of a witness's and of a payer's thread's time there). A
caller that only needs the commit to be on disk *before it tells anyone*
can commit normally instead (written to the log's file, visible to this
process, lost only if the machine loses power or crashes) and then await
:meth:`LogSync.wait`: it returns once an fsync that *started after the
call* has completed, so every transaction committed before the call is on
disk, exactly as if it had been durable (an fsync covers the whole file,
earlier commits included). The fsync runs on a worker thread
(:meth:`troc.node.store.Store.sync_log` touches no SQLite connection) while
the node's thread goes on; callers that wait at the same time share one
fsync: a caller that finds one running waits for it, and then for one more
only if the running one started before its call.

Only writes that no one outside the node learns of before the wait returns
may be made durable this way. The witness's vote records: its answers are
written after the wait (docs/witness.md §6.3). Own entries of a group
commit (:mod:`troc.node.groupcommit`): they are marked, announced and
answered after the wait (:meth:`troc.node.local.LocalNode.finish_own`),
and sync, which may read the store at any moment, first waits for them
(:func:`own_durable`); any other own entry signed meanwhile finishes them
first, on the node's thread.

One :class:`LogSync` per store (:func:`log_sync_of`), so the waits of the
witness and of the group commit share fsyncs.
"""

from __future__ import annotations

import weakref
from functools import partial

import trio

from troc.node.local import LocalNode
from troc.node.store import Store

__all__ = ["LogSync", "log_sync_of", "own_durable"]

_BY_STORE: weakref.WeakKeyDictionary[Store, LogSync] = weakref.WeakKeyDictionary()


def log_sync_of(store: Store) -> LogSync:
    """The store's one :class:`LogSync`."""
    found = _BY_STORE.get(store)
    if found is None:
        found = _BY_STORE[store] = LogSync(store)
    return found


async def own_durable(local: LocalNode) -> None:
    """Return once no own entry is committed but not yet on disk, *without
    a checkpoint* when none is: the caller's synchronous code right after
    reads no own entry that is not durable (sync, before it reads the store
    for a peer). Returns at once when nothing is pending."""
    for _ in range(1_000_000):  # bounded; each round waits for one batch's fsync
        pending = local.pending_own
        if pending is None:
            return
        woken = trio.Event()
        # (run_sync_soon: whichever thread finishes it, this one is woken)
        pending.waiters.append(partial(trio.lowlevel.current_trio_token().run_sync_soon, woken.set))
        # Finished on another thread (an append there) since it was read:
        # its waiters may have been called before ours was added.
        if pending.finished:
            continue
        await woken.wait()


class LogSync:
    """Group fsync of one store's write-ahead log (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        #: fsyncs run so far.
        self.syncs = 0
        self._asked = 0  # waits begun
        self._covered = 0  # waits whose commits are known to be on disk
        self._running: trio.Event | None = None  # set when the running fsync ends

    async def wait(self) -> None:
        """Return once every transaction committed before this call is on
        disk. Raises StoreError if the fsync fails (then nothing committed
        since the last fsync that succeeded is known to be on disk)."""
        self._asked += 1
        mine = self._asked
        while self._covered < mine:
            if self._running is not None:  # started before our call, maybe: wait, look again
                await self._running.wait()
                continue
            covers = self._asked  # every wait begun so far committed before it
            done = self._running = trio.Event()
            try:
                # Not abandoned on cancel: the fsync ends before we do.
                await trio.to_thread.run_sync(self.store.sync_log)
                self._covered = max(self._covered, covers)
                self.syncs += 1
            finally:
                self._running = None
                done.set()
