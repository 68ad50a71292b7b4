"""A store transaction whose ``COMMIT`` runs on another thread.

Theory of operation
-------------------
A newcomer catching up stores each run of frames a peer sends in one
transaction (:meth:`troc.node.sync.Syncer._take_run`). Its ``COMMIT`` writes
every page the run changed to the write-ahead log and, every ~40,000 pages,
checkpoints the log into the database file: 15 % of the node's thread at
200,000 entries (py-spy), all of it inside SQLite, where :mod:`sqlite3`
releases the GIL. Run on a worker thread, it overlaps with what the node's
thread does meanwhile that needs no store: reading the next frames,
decoding them, handing them to the verify workers.

:meth:`troc.node.store.Store.transaction_apart` runs a block as a
transaction up to, not including, its ``COMMIT``: the block's writes are
all made and the store's cached rows written out when it ends, so the
``COMMIT`` is the one statement left, held by a :class:`PendingCommit`.
Whoever runs it first (:meth:`PendingCommit.run`, on any thread) commits;
a later call waits for that one. Then:

- No transaction starts before the pending one has committed, or failed
  and been rolled back: every entry point that opens one
  (:meth:`~troc.node.store.Store.transaction`, ``transaction_apart``,
  ``close``) first *settles* it (runs it here if no one has, waits for it
  otherwise, and forgets the store's cached rows if it failed), so the
  ledger's rules read only committed state, in the same order as before.
- Reads outside a transaction made meanwhile run on the same connection,
  which SQLite serialises with the ``COMMIT`` (its own lock; the module is
  built thread-safe, ``sqlite3.threadsafety`` 3): they see what the block
  wrote, as they would right after a ``COMMIT`` on this thread. If the
  ``COMMIT`` fails (a full disk, an I/O error), a read between the failure
  and its ``ROLLBACK`` may see rows that are then undone, as a read inside
  the failed transaction would have; nothing is announced from them
  (announcements wait for the commit, below), and the next transaction
  starts from the rolled-back state.
- A sync session that finds another's commit still running awaits it on a
  worker thread (:attr:`~troc.node.store.Store.pending_commit`) rather than
  stop the node's thread for it; other writers (gossip, own entries) wait
  for it where they are, as they waited for a ``COMMIT`` on this thread.
- No Python callback may be registered on the store's connection (trace,
  SQL functions, authorizer, progress handler): SQLite calls one holding
  the connection's lock, so a ``COMMIT`` on a worker thread would wait for
  the GIL holding that lock while the node's thread, holding the GIL, may
  wait for the lock in a call :mod:`sqlite3` makes without releasing it
  (binding a parameter, reading a column): a deadlock. troc registers none.
- What the block stored is announced only once the ``COMMIT`` has returned
  (:meth:`troc.node.local.LocalNode.ingesting_apart`); durability is the
  same as a non-durable :meth:`~troc.node.store.Store.transaction`'s.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from troc.node.store import Store

__all__ = ["PendingCommit", "committed"]

#: The most pending commits :func:`committed` awaits in one call: each round
#: awaits one, and a busy node may start another meanwhile.
MAX_ROUNDS = 100


class PendingCommit:
    """The ``COMMIT`` of a transaction whose writes are done (see the module's docstring)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._done = False
        #: Why the ``COMMIT`` failed (the transaction then rolled back), once run.
        self.error: sqlite3.Error | None = None

    @property
    def done(self) -> bool:
        return self._done

    def run(self) -> None:
        """``COMMIT``, on the calling thread, unless it was run already (a
        call while another thread runs it waits for it). A failed ``COMMIT``
        is rolled back, and :attr:`error` says why. Raises nothing."""
        with self._lock:
            if self._done:
                return
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self.error = exc
                with contextlib.suppress(sqlite3.Error):
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
            finally:
                self._done = True


async def committed(store: Store) -> None:
    """Once no commit of ``store``'s is left to run: each one pending is run
    (or awaited) on a worker thread. A read on the node's thread while a
    ``COMMIT`` runs waits for SQLite's lock, and with it every task of the
    node (a ``status`` polled during a catch-up took ~3 % of the newcomer's
    thread so, at 1,000,000 entries); awaited here, the other tasks go on.
    Bounded: returns after :data:`MAX_ROUNDS` commits even if another is
    pending (a reader then waits for that one where it reads)."""
    for _ in range(MAX_ROUNDS):
        pending = store.pending_commit
        if pending is None:
            return
        await trio.to_thread.run_sync(pending.run)
