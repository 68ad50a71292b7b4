"""The node's SQLite store: the single source of truth on disk.

Theory of operation
-------------------
:class:`Store` implements :class:`troc.protocol.backend.Backend` on SQLite
(stdlib ``sqlite3``, WAL mode), so a :class:`~troc.protocol.ledger.Ledger`
runs on it exactly as it runs on the in-memory reference backend; the test
suite drives both with the same random operations and compares every verdict.
On top of what the ledger needs, the store keeps derived tables for the node's
API (offers with full-text search, each member's timeline, what is still
pending) and answers the node's queries.

Transactions. Every write happens inside :meth:`Store.transaction`, which the
caller opens around one or more ``Ledger.ingest`` calls: an entry and
everything derived from it (its head, its reference rows, offers, transfer
states) commit together or not at all. Writes outside a transaction raise
:class:`~troc.errors.LocalProtocolError`, so a forgotten transaction is a
loud bug rather than a half-written entry. Transactions do not nest (nesting
raises too): a nested block that failed would otherwise leave its partial
writes inside the outer one.

Durability. The connection runs with ``synchronous=NORMAL``: in WAL mode a
commit is atomic and survives a crash of the process, but the last commits may
be lost on power loss. That is fine for entries from peers (they can be
fetched again), not for the node's own entries: an own entry lost after it was
sent would be signed again, differently, at the same seq, and fork the
member's log for good. ``transaction(durable=True)`` therefore switches to
``synchronous=FULL`` for that one commit, so the write-ahead log is fsynced
before ``COMMIT`` returns (and with it every earlier commit: the fsync covers
the whole file).

Keys and cost. What makes SQLite slow here is the pages each commit dirties,
and they grow with the number of places in each B-tree where rows land
(measured: ~3 pages per place per commit, from leaf splits and rebalancing).
So every big B-tree is keyed to grow at the end of one log, never by a random
hash, and there are as few of them as the queries allow (schema in
:mod:`troc.node._schema`):

* ``logs``: one small integer per (community, author), its *log id*, and the
  head; every other key uses it, so no key repeats two 32-byte ids;
* ``entries``, unique on ``(log, seq, id)``: the wire bytes, the Stored
  balance and limit, and the entry's reference row inline (an entry has at
  most one; others go to ``more_refs``), indexed by target ``(log, seq,
  kind)`` for ``refs_to`` and ``refs_by``. ``refs_from`` (only when freezing a
  fork) walks the author's log. The one exception to the rule above: its
  rows (~330 bytes) are appended in arrival order in a rowid table, and only
  the narrow key index lands in each log's place (store format 7: about half
  the pages written per entry, at the price of a log's entries being spread
  over pages when it is read whole, ~1 -> ~3 us an entry);
* ``timeline`` ``(member log, timestamp, id)``: own entries and incoming
  transfers, for :meth:`Store.history`;
* ``pending``: transfers not settled yet; small, since settled ones leave it;
* ``offers`` (+ tags and a contentless FTS5 index): a few percent of entries;
* ``final_chain`` ``(log, seq)`` (witnessed communities): the id at each seq
  of the chain that ends at the log's final tip, appended as the tip moves,
  so finality is one lookup even in a forked log.

Caches. The hot path of an ingest touches SQLite for its inserts only: log
rows (id, head, highest stored seq) are cached and written back at commit,
once per log per transaction; recent entries are cached as :class:`Stored`
(a prev lookup is usually the entry stored just before); the highest seq
stored per log answers "is this new?", and a set of entries known to have no
reference row yet answers "was this transfer answered?", without a query.
Every cache is bounded; on rollback all of them are dropped, so they never
show what the database does not hold. One process at a time: an
``fcntl.flock`` on ``<store>.lock`` keeps a second node off the same files,
which is also what makes the caches safe.

Not thread-safe: use a store from one thread at a time.

Where the parts are. This module is the Backend the ledger runs on: opening,
transactions, the caches and the log rows, entries, heads and reference
rows; it reads best whole, since the hot ingest path and the caches it keeps
coherent are one thing. Beside it, each on its own tables: the waiting set
(:mod:`troc.node._store_waiting`), witnessed communities' certificates, final
chains and votes (:mod:`troc.node._store_finality`), the queries of the
node's API (:mod:`troc.node._store_queries`), the caches' types
(:mod:`troc.node._store_cache`), the files, locks and error messages
(:mod:`troc.node._store_files`), and store format 8's migration of old
final tips (:mod:`troc.node._store_retip`, on a Store: :meth:`Store.migrating`).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from troc.crypto.sign import MemberId
from troc.errors import LocalProtocolError, StoreError
from troc.node._schema import (
    _CLOSE_OFFER,
    _HEAD_COLUMNS,
    _INSERT_ENTRY,
    _INSERT_MORE_REF,
    _INSERT_REQUEST,
    _SELECT_ENTRY,
    _SELECT_LOG,
    _SELECT_REFS,
    _UPDATE_LOG,
    _VERSION_KEY,
    NO_BOUND,
    SCHEMA_VERSION,
)
from troc.node._store_cache import Cache, LogRow
from troc.node._store_commit import PendingCommit
from troc.node._store_derived import PENDING_MOVES, DerivedRows
from troc.node._store_files import (
    DAMAGED_ADVICE,
    damaged,
    decode_trusted,
    open_files,
    store_error,
    unusable_file,
)
from troc.node._store_finality import StoreFinality
from troc.node._store_queries import RequestState, StoreQueries, TransferState
from troc.node._store_waiting import WaitingRows
from troc.protocol.backend import (
    Head,
    Parking,
    RefRow,
    Stored,
    WaitKey,
    WaitLimits,
)
from troc.protocol.entry import (
    CommunityId,
    Entry,
    EntryId,
    Kind,
    Offer,
    Ref,
    Request,
    Transfer,
    names_no_expiry,
)

#: Each kind's text, as bound in statements.
_KIND_TEXT = {kind: kind.value for kind in Kind}

#: SQLite's page cache, by default (MiB). Ingest writes at the end of every
#: log in several trees (entries, their targets, timeline, pending,
#: certificates, final chains): with 1,000 logs, one last leaf per log and
#: tree, about 8,000 pages of 4 KiB, plus the inner pages, which grow with
#: history. At 32 MiB a newcomer catching up a 1,000,000-entry community
#: reread from the file what it had just written (`pread` was 6 % of its
#: thread halfway, 1.4 % at 200,000 entries: why 1M cost more per entry).
#: A bound, so resident memory stays flat in history.
CACHE_MIB = 64

# The errors and TransferState are part of this module's API (ops and the
# tests import them from here).
__all__ = [
    "CACHE_MIB",
    "DAMAGED_ADVICE",
    "SCHEMA_VERSION",
    "RequestState",
    "Store",
    "TransferState",
    "damaged",
    "store_error",
    "unusable_file",
]


class Store(StoreFinality, StoreQueries):
    """The node's store: a :class:`~troc.protocol.backend.Backend` on SQLite,
    plus the queries of the node's API.

    Open with :meth:`Store.open`; use as a context manager or call
    :meth:`close`. All writes go through :meth:`transaction`.
    """

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        lock_fd: int,
        *,
        cache_entries: int,
        waiting: WaitLimits,
        read_only: bool = False,
    ) -> None:
        # Use Store.open(); this only wires the parts together.
        self.path = path
        # Entries stored per community, once counted (entry_count): kept up
        # by put_entry. Not in a read-only store: another process writes.
        self._entry_counts: dict[CommunityId, int] | None = None if read_only else {}
        # Every community's genesis, once read (communities): as _entry_counts.
        self._communities: list[Entry] | None = None
        self._conn = conn
        self._cur = conn.cursor()
        self._lock_fd: int | None = lock_fd
        self._in_tx = False
        # A transaction's COMMIT left to run (transaction_apart).
        self._pending: PendingCommit | None = None
        cache_logs = max(cache_entries, 1024) if cache_entries > 0 else 0
        self._genesis: Cache[CommunityId, Entry] = Cache(64)
        self._logs: Cache[tuple[CommunityId, MemberId], LogRow] = Cache(cache_logs)
        # Whether log rows keep their certificate seqs (StoreFinality): not
        # where another process writes, nor without a cache of log rows.
        self._certs_cached = not read_only and cache_logs > 0
        # Logs changed in the open transaction, written back at commit.
        self._dirty: dict[tuple[CommunityId, MemberId], LogRow] = {}
        self._stored: Cache[tuple[CommunityId, MemberId, int, EntryId], Stored] = Cache(
            cache_entries
        )
        # Where recently seen entries are, by id: refs_by gets only an id.
        self._where: Cache[tuple[CommunityId, EntryId], tuple[MemberId, int]] = Cache(
            cache_entries * 4
        )
        # Entries known to have no reference row pointing at them (stored
        # recently, not answered since): refs_by on them needs no query.
        self._no_refs: Cache[tuple[CommunityId, EntryId], bool] = Cache(cache_entries * 4)
        # Stored transfers naming no expiry of their own (lasting_transfer),
        # by id, with their log and seq: an accept reads its transfer when
        # checked, and a final tip's move past the accept asks again later,
        # when the entry has left _stored. ~150 bytes each.
        self._lasting: Cache[EntryId, tuple[int, int]] = Cache(cache_entries * 2)
        self._more_refs: bool | None = None  # does more_refs hold any row?
        self._expiries: Cache[tuple[CommunityId, EntryId], tuple[int | None]] = Cache(
            cache_entries * 4
        )
        # Timeline and pending rows of the open transaction, written at commit.
        self._derived = DerivedRows()
        self._waiting = WaitingRows(conn, waiting, self._write)

    # -- opening and closing ----------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        cache_entries: int = 4096,
        waiting: WaitLimits | None = None,
        cache_mib: int = CACHE_MIB,
        read_only: bool = False,
    ) -> Store:
        """Open the store at ``path``, creating it if the file does not exist.

        ``cache_entries`` bounds the cache of recent entries (0 turns the
        store's own caches off, for tests), ``waiting`` the bounds on entries
        parked for a missing dependency (default :class:`WaitLimits`),
        ``cache_mib`` SQLite's page cache.

        The store's files are the owner's only (0600: the store holds memos
        and who paid whom); a store found wider is narrowed.

        ``read_only`` opens an existing store for reading, where nothing can
        be written (a read-only home or file system): no lock is taken
        exclusively and nothing is created; a write then fails as StoreError.

        Raises StoreError if another process has the store open, if the file
        is not a troc store, if its format is newer than this code, or if it
        cannot be opened at all.
        """
        conn, lock_fd = open_files(Path(path), cache_mib=cache_mib, read_only=read_only)
        return cls(
            Path(path),
            conn,
            lock_fd,
            cache_entries=cache_entries,
            waiting=waiting or WaitLimits(),
            read_only=read_only,
        )

    @classmethod
    @contextlib.contextmanager
    def migrating(cls, conn: sqlite3.Connection, path: Path) -> Generator[Store, None, None]:
        """A Store over ``conn`` for a format migration that computes with
        the ledger (:mod:`troc.node._store_retip`): its writes join the
        migration's open transaction and are written out at the end of the
        block; the commit is the migration's, and ``conn`` stays open."""
        store = cls(path, conn, -1, cache_entries=4096, waiting=WaitLimits())
        store._in_tx = True
        try:
            yield store
            store._flush()
        finally:
            store._in_tx = False
            store._lock_fd = None  # not this object's: nothing to release
            store._cur.close()
            store._waiting.close()

    def close(self) -> None:
        """Close the database and release the lock. Idempotent.

        Raises LocalProtocolError inside an open transaction.
        """
        if self._lock_fd is None:
            return
        if self._in_tx:
            raise LocalProtocolError("close() inside a transaction")
        self._settle()
        try:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA optimize")
            # A cursor's unfinished statement keeps the database open, and
            # its locks held, past conn.close() until the cursor is garbage
            # collected (SQLite's close_v2): whoever opened the store next
            # found it locked when a reference cycle kept the Store alive.
            self._cur.close()
            self._waiting.close()
            self._conn.close()
        finally:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- transactions -------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, durable: bool = False) -> Generator[Store, None, None]:
        """Run the block as one transaction: all of it commits, or none.

        ``BEGIN IMMEDIATE`` … ``COMMIT``; any exception rolls back and
        propagates (SQLite errors as StoreError). With ``durable=True`` the
        commit is fsynced before this returns: use it for the node's own
        entries (see the module docstring). Transactions do not nest: opening
        one inside another raises LocalProtocolError.
        """
        self._check_open()
        if self._in_tx:
            raise LocalProtocolError("store transactions do not nest")
        self._settle()
        conn = self._conn
        try:
            if durable:
                conn.execute("PRAGMA synchronous = FULL")
            with self.transaction_apart() as pending:
                yield self
            self.settle(pending)  # the COMMIT, here and now
        except sqlite3.Error as exc:
            raise store_error(exc, "could not commit") from exc
        finally:
            if durable:
                conn.execute("PRAGMA synchronous = NORMAL")

    @contextlib.contextmanager
    def transaction_apart(self) -> Generator[PendingCommit, None, None]:
        """As :meth:`transaction` (not durable), but the block's ``COMMIT``
        is left to run: the :class:`~troc.node._store_commit.PendingCommit`
        yielded, once the block has ended without an exception, holds it,
        for the caller to run on another thread (``run()``). Until it has
        run, the next transaction runs it first (see
        :mod:`troc.node._store_commit`). Then :meth:`settle` says whether it
        committed."""
        self._check_open()
        if self._in_tx:
            raise LocalProtocolError("store transactions do not nest")
        self._settle()
        pending = PendingCommit(self._conn)
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._in_tx = True
            try:
                yield pending
                self._flush()
            except BaseException:
                self._rollback()
                raise
            finally:
                self._in_tx = False
        except sqlite3.Error as exc:
            raise store_error(exc, "could not commit") from exc
        self._pending = pending

    @property
    def pending_commit(self) -> PendingCommit | None:
        """The commit of a :meth:`transaction_apart` not run yet, if any: a
        caller with another thread at hand runs (or awaits) it there rather
        than have its next transaction wait for it on this one."""
        pending = self._pending
        return None if pending is None or pending.done else pending

    def settle(self, pending: PendingCommit) -> None:
        """Once ``pending`` (of :meth:`transaction_apart`) has run (run
        here if not yet): raises StoreError if its ``COMMIT`` failed (then
        rolled back)."""
        pending.run()
        self._settle()
        if pending.error is not None:
            raise store_error(pending.error, "could not commit")

    def _settle(self) -> None:
        """Run the pending ``COMMIT``, if any (or wait for the thread
        running it); forget the caches if it failed."""
        pending = self._pending
        if pending is None:
            return
        pending.run()
        if self._pending is pending:
            self._pending = None
            if pending.error is not None:
                self._forget()

    def sync_log(self) -> None:
        """fsync the write-ahead log: every transaction committed before the
        call is then on disk, as if it had been ``durable`` (in WAL mode a
        commit is written to the log's file when ``COMMIT`` returns; only its
        fsync waits). Touches no connection, so a worker thread may run it
        while the node's thread goes on (:mod:`troc.node.walsync`). Without a
        log file (nothing written since it was checkpointed away), the
        database file itself is fsynced. Raises StoreError."""
        self._check_open()
        for path in (f"{self.path}-wal", str(self.path)):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StoreError(f"cannot sync the store: {exc}") from exc
            try:
                # The data and what reading it back needs (the file's
                # size); its times are not needed.
                os.fdatasync(fd)
            except OSError as exc:
                raise StoreError(f"cannot sync the store: {exc}") from exc
            finally:
                os.close(fd)
            return
        raise StoreError(f"cannot sync the store: {self.path} is gone")

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
        self._forget()

    def _forget(self) -> None:
        """The caches may hold what was just undone: forget them all."""
        self._dirty.clear()
        self._logs.clear()
        self._stored.clear()
        self._where.clear()
        self._no_refs.clear()
        self._lasting.clear()
        self._genesis.clear()
        self._communities = None
        if self._entry_counts:
            self._entry_counts.clear()
        self._more_refs = None
        self._waiting.forget()
        self._derived.forget()

    def _write(self) -> None:
        if not self._in_tx:
            self._check_open()
            raise LocalProtocolError("store writes must happen inside store.transaction()")

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise LocalProtocolError("the store is closed")

    def _flush(self) -> None:
        """Write the cached log rows changed in this transaction, and the
        timeline and pending rows held (a query reading those tables calls
        this first)."""
        self._derived.write(self._cur)
        if not self._dirty:
            return
        rows: list[tuple[Any, ...]] = []
        for log in self._dirty.values():
            h = log.head
            if h is None:
                rows.append((log.top, *(None,) * 11, log.lid))
            else:
                rows.append(
                    (
                        log.top,
                        h.seq,
                        h.id,
                        h.balance,
                        h.limit,
                        h.frozen_at,
                        h.cut_balance,
                        h.frozen_credit,
                        h.final_seq,
                        h.final_id,
                        h.final_balance,
                        h.undone,
                        log.lid,
                    )
                )
        self._cur.executemany(_UPDATE_LOG, rows)
        self._dirty.clear()

    # -- logs ---------------------------------------------------------------

    def _log(self, community: CommunityId, author: MemberId, create: bool = False) -> LogRow | None:
        """The cached row of this log; with ``create``, made if missing."""
        key = (community, author)
        log = self._dirty.get(key) or self._logs.get(key)
        if log is not None:
            return log
        row = self._cur.execute(_SELECT_LOG, key).fetchone()
        if row is not None:
            head = None if row[2] is None else Head(*row[2:])
            log = LogRow(row[0], head, row[1])
        elif create:
            self._write()
            self._cur.execute("INSERT INTO logs (community, author) VALUES (?, ?)", key)
            lid = self._cur.lastrowid
            assert lid is not None
            log = LogRow(lid, None, 0)
        else:
            return None
        self._logs.put(key, log)
        return log

    def _lid(self, community: CommunityId, author: MemberId) -> int:
        log = self._log(community, author, create=True)
        assert log is not None
        return log.lid

    # -- Backend: genesis -----------------------------------------------------

    def genesis(self, community: CommunityId) -> Entry | None:
        g = self._genesis.get(community)
        if g is not None:
            return g
        row = self._cur.execute(
            "SELECT wire FROM genesis WHERE community = ?", (community,)
        ).fetchone()
        if row is None:
            return None
        g = decode_trusted(row[0])
        self._genesis.put(community, g)
        return g

    def put_genesis(self, entry: Entry) -> None:
        self._write()
        self._cur.execute("INSERT OR IGNORE INTO genesis VALUES (?, ?)", (entry.id, entry.wire))
        self._genesis.put(CommunityId(entry.id), entry)
        self._communities = None

    # -- Backend: entries -----------------------------------------------------

    def entry(
        self, community: CommunityId, author: MemberId, seq: int, eid: EntryId
    ) -> Stored | None:
        key = (community, author, seq, eid)
        stored = self._stored.get(key)
        if stored is not None:
            # Cached with its place in _where (four times the room), where
            # it most likely still is: a miss there only costs refs_by a walk.
            return stored
        log = self._log(community, author)
        if log is None or seq > log.top:
            return None  # the usual answer for a new entry, without a query
        row = self._cur.execute(_SELECT_ENTRY, (log.lid, seq, eid)).fetchone()
        if row is None:
            return None
        stored = Stored(decode_trusted(row[2]), row[0], row[1])
        self._stored.put(key, stored)
        self._where.put((community, eid), (author, seq))
        if names_no_expiry(stored.entry):
            self._lasting.put(eid, (log.lid, seq))
        return stored

    def lasting_transfer(self, community: CommunityId, ref: Ref) -> bool:
        log = self._log(community, ref.author)
        if log is None:
            return False
        if self._lasting.get(ref.id) == (log.lid, ref.seq):
            return True
        stored = self.entry(community, ref.author, ref.seq, ref.id)  # keeps a yes
        return stored is not None and names_no_expiry(stored.entry)

    def ids_at(self, community: CommunityId, author: MemberId, seq: int) -> list[EntryId]:
        log = self._log(community, author)
        if log is None or seq > log.top:
            return []
        rows = self._cur.execute(
            "SELECT id FROM entries WHERE lid = ? AND seq = ?", (log.lid, seq)
        ).fetchall()
        return [EntryId(r[0]) for r in rows]

    def put_entry(self, stored: Stored, refs: Iterable[RefRow]) -> None:
        """Store an accepted entry with its reference rows, and update the
        derived tables (timeline, pending, offers) in the same transaction.

        Reference rows must point at stored entries (the ledger checks that
        before it accepts an entry): a new entry has none pointing at it,
        with one exception: in a witnessed community an accept may be
        stored before the transfer it names, held parked with its own
        certificate (docs/witness.md §6.1); the ledger then says so
        (:meth:`named_early`).
        """
        self._write()
        e = stored.entry
        c = e.community
        assert c is not None
        a = e.author
        log = self._log(c, a, create=True)
        assert log is not None
        lid = log.lid
        execute = self._cur.execute
        inline: tuple[Any, ...] = (None, None, None, None)
        for r in refs:
            target = self._lid(c, r.target_author)
            mine = r.by_author == a and r.by_seq == e.seq and r.by_id == e.id and r.kind is e.kind
            if mine and inline[0] is None:
                inline = (target, r.target_seq, r.target_id, r.amount)
            else:
                by = lid if r.by_author == a else self._lid(c, r.by_author)
                execute(
                    _INSERT_MORE_REF,
                    (
                        target,
                        r.target_seq,
                        r.kind.value,
                        by,
                        r.by_seq,
                        r.by_id,
                        r.target_id,
                        r.amount,
                    ),
                )
                self._more_refs = True
            self._no_refs.pop((c, r.target_id))
            if r.kind in PENDING_MOVES:
                self._derived.move(r.kind, (target, r.target_seq, r.target_id), self._cur)
            elif r.kind is Kind.OFFER_CLOSE:
                execute(_CLOSE_OFFER, (c, r.target_author, r.target_seq, r.target_id))
        execute(
            _INSERT_ENTRY,
            (
                lid,
                e.seq,
                e.id,
                _KIND_TEXT[e.kind],  # bound as a str: a StrEnum costs sqlite3 ~0.5 µs to adapt
                e.timestamp_ms,
                stored.balance,
                stored.limit,
                *inline,
                e.wire,
            ),
        )
        if e.seq > log.top:
            log.top = e.seq
        if self._entry_counts and c in self._entry_counts:
            self._entry_counts[c] += 1
        self._dirty[(c, a)] = log
        body = e.body
        timeline = self._derived.timeline
        timeline.append((lid, e.timestamp_ms, e.id, lid, e.seq))
        if isinstance(body, Transfer):
            payee = self._lid(c, body.to)
            timeline.append((payee, e.timestamp_ms, e.id, lid, e.seq))
            self._derived.pending[(lid, e.seq, e.id)] = [payee, body.amount, "open"]
            if names_no_expiry(e):
                self._lasting.put(e.id, (lid, e.seq))
        elif isinstance(body, Request):
            # In the timelines of both, as a transfer is.
            payer = self._lid(c, body.to)
            timeline.append((payer, e.timestamp_ms, e.id, lid, e.seq))
            execute(_INSERT_REQUEST, (payer, lid, e.seq, e.id))
        elif isinstance(body, Offer):
            self._index_offer(e, body)
        self._stored.put((c, a, e.seq, e.id), stored)
        self._where.put((c, e.id), (a, e.seq))
        if e.kind is not Kind.REQUEST:
            # A request is the one kind that may be named before it is held
            # (a transfer carries the request it pays); a certified transfer
            # may be too, and the ledger says so (named_early).
            self._no_refs.put((c, e.id), True)

    def named_early(self, community: CommunityId, transfer: Ref) -> None:
        """As :meth:`troc.protocol.backend.Backend.named_early`: the cache's
        "nothing names it" is dropped, and if an accept of ``transfer`` is
        stored, the transfer leaves ``pending`` as that accept would have
        moved it."""
        self._write()
        self._no_refs.pop((community, transfer.id))
        log = self._log(community, transfer.author)
        assert log is not None  # just stored
        rows = self._refs(
            "r.target_lid = ? AND r.target_seq = ? AND r.kind = ? AND r.target_id = ?",
            (log.lid, transfer.seq, Kind.ACCEPT.value, transfer.id),
        )
        if rows:
            key = (log.lid, transfer.seq, transfer.id)
            self._derived.move(Kind.ACCEPT, key, self._cur)  # held: it was just stored
        else:
            # Only an accept can name a transfer not stored yet (§6.1; any
            # other answer waits for it stored, a take-back for its log):
            # nothing names it after all, and the ledger's look for the
            # payee's accepts, next, needs no query.
            self._no_refs.put((community, transfer.id), True)

    def latest(
        self, community: CommunityId, author: MemberId, kind: Kind, below: int | None
    ) -> Stored | None:
        log = self._log(community, author)
        if log is None:
            return None
        # The primary key (lid, seq, id) read backwards from ``below``.
        row = self._cur.execute(
            "SELECT balance, lim, wire FROM entries WHERE lid = ? AND seq < ? AND kind = ?"
            " ORDER BY seq DESC, id DESC LIMIT 1",
            (log.lid, NO_BOUND if below is None else below, kind.value),
        ).fetchone()
        return None if row is None else Stored(decode_trusted(row[2]), row[0], row[1])

    def _index_offer(self, e: Entry, body: Offer) -> None:
        c = e.community
        cur = self._cur
        cur.execute(
            "INSERT INTO offers (community, author, seq, id, side, ts, expires_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (c, e.author, e.seq, e.id, body.side, e.timestamp_ms, body.expires_ms),
        )
        oid = cur.lastrowid
        cur.execute(
            "INSERT INTO offers_fts (rowid, title, description, tags) VALUES (?, ?, ?, ?)",
            (oid, body.title, body.description, " ".join(body.tags)),
        )
        if body.tags:
            cur.executemany(
                "INSERT OR IGNORE INTO offer_tags VALUES (?, ?, ?)",
                [(c, tag.casefold(), oid) for tag in body.tags],
            )

    # -- Backend: heads -------------------------------------------------------

    def head(self, community: CommunityId, author: MemberId) -> Head | None:
        log = self._log(community, author)
        return None if log is None else log.head

    def put_head(self, community: CommunityId, author: MemberId, head: Head) -> None:
        self._write()
        log = self._log(community, author, create=True)
        assert log is not None
        log.head = head
        self._dirty[(community, author)] = log

    def heads(self, community: CommunityId) -> Iterator[tuple[MemberId, Head]]:
        """Every author's head in ``community``, ordered by member id."""
        self._flush()
        rows = self._cur.execute(
            f"SELECT author, {_HEAD_COLUMNS}"
            " FROM logs WHERE community = ? AND seq IS NOT NULL ORDER BY author",
            (community,),
        ).fetchall()
        return iter([(MemberId(r[0]), Head(*r[1:])) for r in rows])

    # -- Backend: reference rows ----------------------------------------------

    def _refs(self, where: str, params: tuple[Any, ...]) -> list[RefRow]:
        """Reference rows matching ``where`` (on r.*), from entries and more_refs."""
        rows = self._cur.execute(
            _SELECT_REFS.format(table="entries") + " WHERE r.target_lid IS NOT NULL AND " + where,
            params,
        ).fetchall()
        if self._more_refs is None:
            self._more_refs = bool(
                self._cur.execute("SELECT EXISTS (SELECT 1 FROM more_refs)").fetchone()[0]
            )
        if self._more_refs:
            rows += self._cur.execute(
                _SELECT_REFS.format(table="more_refs") + " WHERE " + where, params
            ).fetchall()
        return [RefRow(Kind(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows]

    def refs_by(
        self, community: CommunityId, by_author: MemberId, kind: Kind, target_id: EntryId
    ) -> list[RefRow]:
        if self._no_refs.get((community, target_id)):
            return []  # stored lately and nothing points at it yet: no query
        by = self._log(community, by_author)
        if by is None:
            return []
        where = self._where.get((community, target_id))
        target = None if where is None else self._log(community, where[0])
        if where is not None and target is not None:
            # The ledger has just looked the target up: seek by its position.
            return self._refs(
                "r.target_lid = ? AND r.target_seq = ? AND r.kind = ? AND r.lid = ?"
                " AND r.target_id = ?",
                (target.lid, where[1], kind.value, by.lid, target_id),
            )
        # Not seen lately: walk by_author's log.
        return self._refs(
            "r.lid = ? AND r.kind = ? AND r.target_id = ?", (by.lid, kind.value, target_id)
        )

    def refs_to(
        self,
        community: CommunityId,
        target_author: MemberId,
        kind: Kind,
        min_seq: int,
        max_seq: int | None,
    ) -> list[RefRow]:
        target = self._log(community, target_author)
        if target is None:
            return []
        return self._refs(
            "r.target_lid = ? AND r.target_seq >= ? AND r.target_seq < ? AND r.kind = ?",
            (target.lid, min_seq, NO_BOUND if max_seq is None else max_seq, kind.value),
        )

    def refs_from(
        self,
        community: CommunityId,
        by_author: MemberId,
        kind: Kind,
        max_seq: int | None,
        min_seq: int = 0,
    ) -> list[RefRow]:
        """Walks ``by_author``'s log from ``min_seq`` below ``max_seq`` (the
        ledger asks when it freezes a forked log; a witness, above what it
        knows settled, docs/witness.md §3.6)."""
        by = self._log(community, by_author)
        if by is None:
            return []
        return self._refs(
            "r.lid = ? AND r.seq >= ? AND r.seq < ? AND r.kind = ?",
            (by.lid, min_seq, NO_BOUND if max_seq is None else max_seq, kind.value),
        )

    def refs_from_kinds(
        self, community: CommunityId, by_author: MemberId, kinds: tuple[Kind, ...]
    ) -> dict[Kind, list[RefRow]]:
        """:meth:`refs_from` over the whole log for each of ``kinds``, in one
        walk of it: a balance asks for five kinds (accepts, take-backs,
        withdrawals, closes, pledges), and each walk goes over every entry
        of the log (a payer's log is mostly transfers)."""
        out: dict[Kind, list[RefRow]] = {kind: [] for kind in kinds}
        by = self._log(community, by_author)
        if by is None or not kinds:
            return out
        marks = ", ".join("?" * len(kinds))
        for row in self._refs(
            f"r.lid = ? AND r.kind IN ({marks})", (by.lid, *(k.value for k in kinds))
        ):
            out[row.kind].append(row)
        return out

    # -- Backend: forks and waiting entries -------------------------------------

    def put_fork(
        self, community: CommunityId, author: MemberId, seq: int, first: bytes, second: bytes
    ) -> bool:
        self._write()
        self._cur.execute(
            "INSERT OR IGNORE INTO forks VALUES (?, ?, ?, ?, ?)",
            (community, author, seq, first, second),
        )
        return self._cur.rowcount == 1

    def waiting_count(self) -> int:
        """How many entries wait for a missing dependency."""
        return self._waiting.count()

    def put_waiting(self, keys: Iterable[WaitKey], wire: bytes, parking: Parking) -> bool:
        self._write()
        return self._waiting.put(keys, wire, parking)

    def take_waiting(self, key: WaitKey) -> list[bytes]:
        return self._waiting.take(key)

    def waiting_finals(self, community: CommunityId, author: MemberId) -> list[WaitKey]:
        return self._waiting.finals(community, author)

    def parked(self, community: CommunityId, author: MemberId | None) -> list[bytes]:
        return self._waiting.parked(community, author)

    def parked_on_prev(self, community: CommunityId, ref: Ref) -> bytes | None:
        return self._waiting.parked_on_prev(community, ref)

    # -- node settings -------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """A node setting, or None if unset."""
        row = self._cur.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set a node setting: in the open transaction if there is one, else
        in a transaction of its own."""
        if key == _VERSION_KEY:
            raise LocalProtocolError(f"{key!r} belongs to the store and cannot be set")
        if not self._in_tx:
            with self.transaction():
                self.set_meta(key, value)
            return
        self._cur.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``"ok"``, or what is damaged."""
        rows = self._conn.execute("PRAGMA integrity_check").fetchall()
        return "\n".join(str(r[0]) for r in rows)
