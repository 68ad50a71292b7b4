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
* ``entries`` ``(log, seq, id)``, WITHOUT ROWID: the wire bytes, the Stored
  balance and limit, and the entry's reference row inline (an entry has at
  most one; others go to ``more_refs``), indexed by target ``(log, seq,
  kind)`` for ``refs_to`` and ``refs_by``. ``refs_from`` (only when freezing a
  fork) walks the author's log;
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
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import sqlite3
import urllib.parse
from collections.abc import Generator, Iterable, Iterator
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

from troc.crypto.sign import MemberId
from troc.errors import CodecError, LocalProtocolError, StoreError
from troc.node._schema import (
    _CLOSE_OFFER,
    _HEAD_COLUMNS,
    _INSERT_ENTRY,
    _INSERT_MORE_REF,
    _INSERT_PENDING,
    _INSERT_REQUEST,
    _INSERT_TIMELINE,
    _INSERT_TIMELINE_2,
    _PENDING_MOVES,
    _SELECT_ENTRY,
    _SELECT_LOG,
    _SELECT_REFS,
    _UPDATE_LOG,
    _VERSION_KEY,
    SCHEMA_VERSION,
    prepare,
)
from troc.protocol.backend import (
    Head,
    Parking,
    RefRow,
    Stored,
    WaitKey,
    WaitLimits,
    parking_time,
    room_to_park,
)
from troc.protocol.entry import CommunityId, Entry, EntryId, Kind, Offer, Ref, Request, Transfer

__all__ = ["SCHEMA_VERSION", "RequestState", "Store", "TransferState"]

# Above any seq or timestamp (both < 2**53): "no upper bound" in range queries.
_NO_BOUND = 2**62

_K = TypeVar("_K")
_V = TypeVar("_V")


class TransferState(StrEnum):
    """Where a transfer stands, from its payee's answers and its payer's reclaim."""

    OPEN = "open"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    RECLAIMED = "reclaimed"


class RequestState(StrEnum):
    """Where a payment request stands, from its payer's log."""

    OPEN = "open"
    PAID = "paid"
    REFUSED = "refused"


class _Cache(Generic[_K, _V]):
    """A bounded mapping: two generations of dicts, at most ``2 * size`` keys.

    New keys go to the young generation; when it is full it becomes the old
    one and the previous old one is dropped. A hit in the old generation moves
    the key back to the young one. Cheaper than an LRU (no reordering on each
    hit) and as good for our pattern: recent entries, recent logs.
    """

    __slots__ = ("_new", "_old", "_size")

    def __init__(self, size: int) -> None:
        self._new: dict[_K, _V] = {}
        self._old: dict[_K, _V] = {}
        self._size = size

    def get(self, key: _K) -> _V | None:
        value = self._new.get(key)
        if value is None:
            value = self._old.get(key)
            if value is not None:
                self.put(key, value)
        return value

    def put(self, key: _K, value: _V) -> None:
        if self._size <= 0:
            return
        new = self._new
        new[key] = value
        if len(new) >= self._size:
            self._old = new
            self._new = {}

    def pop(self, key: _K) -> None:
        self._new.pop(key, None)
        self._old.pop(key, None)

    def clear(self) -> None:
        self._new = {}
        self._old = {}


class _Log:
    """One log's row of ``logs``, as cached: its id, head and highest seq."""

    __slots__ = ("head", "lid", "top")

    def __init__(self, lid: int, head: Head | None, top: int) -> None:
        self.lid = lid
        self.head = head
        self.top = top  # highest seq stored on any branch; 0 if none


_WORD = re.compile(r"\w+")


#: What to do with a damaged store, said the same way wherever damage shows.
DAMAGED_ADVICE = (
    "move store.sqlite aside and start `troc run --bootstrap ADDR` with a peer that"
    " holds your log: the store fills again from it (README: backing up)"
)


def damaged(detail: str) -> StoreError:
    """The one error for a store whose file is damaged."""
    return StoreError(f"the store is damaged ({detail}): {DAMAGED_ADVICE}")


def store_error(exc: sqlite3.Error, doing: str = "cannot be used") -> StoreError:
    """A StoreError for an error SQLite raised while using the store: damage
    (a malformed page, not a database) as :func:`damaged`, else the store
    ``doing`` (locked, read-only, disk full …)."""
    if getattr(exc, "sqlite_errorname", None) in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        return damaged(str(exc))
    return StoreError(f"the store {doing}: {exc}")


def unusable_file(exc: OSError, doing: str = "cannot use") -> str:
    """One line for a file of the home that cannot be used: ``doing`` it,
    with what to do when the home is read-only or not the user's."""
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (
            f"cannot write {exc.filename}: {exc.strerror}: troc needs a home it can write"
            " (make it writable, or use another --home)"
        )
    return f"{doing} {exc.filename}: {exc.strerror}"


def _owner_only(path: Path) -> None:
    """Create the store file 0600 if new (SQLite gives its -wal and -shm
    files the database file's mode), and narrow an older, wider store."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            with contextlib.suppress(OSError):  # gone, or not ours: SQLite will say
                if p.stat().st_mode & 0o077:
                    p.chmod(0o600)
    except OSError as exc:
        raise StoreError(f"cannot create the store {path}: {exc.strerror}") from None
    else:
        os.close(fd)


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection. Reading a WAL store needs its -shm file; where
    it cannot be created (a read-only directory, the store closed cleanly)
    the file is read as immutable: nothing can write it there either."""
    uri = "file:" + urllib.parse.quote(str(path.resolve()))
    for params in ("?mode=ro", "?mode=ro&immutable=1"):
        conn = sqlite3.connect(
            uri + params, uri=True, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            conn.close()
            if params.endswith("immutable=1"):
                raise
            continue
        return conn
    raise AssertionError("unreachable")  # pragma: no cover


def _decode_trusted(wire: bytes) -> Entry:
    """Rebuild an entry from bytes this store accepted earlier.

    Its signature was verified when it was stored, so it is not checked again.
    """
    try:
        return Entry.decode(wire, check_signature=False)
    except CodecError as exc:  # only if the file was altered behind our back
        raise damaged(f"a stored entry no longer decodes: {exc}") from None


class Store:
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
    ) -> None:
        # Use Store.open(); this only wires the parts together.
        self.path = path
        self._conn = conn
        self._cur = conn.cursor()
        self._lock_fd: int | None = lock_fd
        self._limits = waiting
        self._in_tx = False
        cache_logs = max(cache_entries, 1024) if cache_entries > 0 else 0
        self._genesis: _Cache[CommunityId, Entry] = _Cache(64)
        self._logs: _Cache[tuple[CommunityId, MemberId], _Log] = _Cache(cache_logs)
        # Logs changed in the open transaction, written back at commit.
        self._dirty: dict[tuple[CommunityId, MemberId], _Log] = {}
        self._stored: _Cache[tuple[CommunityId, MemberId, int, EntryId], Stored] = _Cache(
            cache_entries
        )
        # Where recently seen entries are, by id: refs_by gets only an id.
        self._where: _Cache[tuple[CommunityId, EntryId], tuple[MemberId, int]] = _Cache(
            cache_entries * 4
        )
        # Entries known to have no reference row pointing at them (stored
        # recently, not answered since): refs_by on them needs no query.
        self._no_refs: _Cache[tuple[CommunityId, EntryId], bool] = _Cache(cache_entries * 4)
        self._more_refs: bool | None = None  # does more_refs hold any row?
        self._waiting_count: int | None = None
        # Entries parked per pool (member: 1, stranger: 0), read when needed.
        self._pool_counts: dict[int, int] = {}

    # -- opening and closing ----------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        cache_entries: int = 4096,
        waiting: WaitLimits | None = None,
        cache_mib: int = 32,
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
        path = Path(path)
        lock_path = path.with_name(path.name + ".lock")
        try:
            if read_only:
                lock_fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
            else:
                lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(unusable_file(exc, "cannot open the store's lock file")) from None
        conn: sqlite3.Connection | None = None
        try:
            try:
                # Readers share the lock; a writer (or a running node) holds it alone.
                fcntl.flock(
                    lock_fd, (fcntl.LOCK_SH if read_only else fcntl.LOCK_EX) | fcntl.LOCK_NB
                )
            except BlockingIOError:
                raise StoreError(
                    f"the store {path} is in use by another troc process (it holds {lock_path})"
                ) from None
            try:
                if read_only:
                    conn = _connect_read_only(path)
                else:
                    _owner_only(path)
                    conn = sqlite3.connect(
                        str(path),
                        isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                        check_same_thread=False,  # one thread at a time, not always the same one
                        cached_statements=256,
                    )
                prepare(conn, path, cache_mib, read_only=read_only)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the store {path}: {exc}") from None
            return cls(
                path, conn, lock_fd, cache_entries=cache_entries, waiting=waiting or WaitLimits()
            )
        except BaseException:
            if conn is not None:
                conn.close()
            os.close(lock_fd)  # closing the descriptor releases the lock
            raise

    def close(self) -> None:
        """Close the database and release the lock. Idempotent.

        Raises LocalProtocolError inside an open transaction.
        """
        if self._lock_fd is None:
            return
        if self._in_tx:
            raise LocalProtocolError("close() inside a transaction")
        try:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA optimize")
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
        conn = self._conn
        try:
            if durable:
                conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE")
            self._in_tx = True
            try:
                yield self
                self._flush()
                conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            finally:
                self._in_tx = False
        except sqlite3.Error as exc:
            raise store_error(exc, "could not commit") from exc
        finally:
            if durable:
                conn.execute("PRAGMA synchronous = NORMAL")

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
        # The caches may hold what was just undone: forget them all.
        self._dirty.clear()
        self._logs.clear()
        self._stored.clear()
        self._where.clear()
        self._no_refs.clear()
        self._genesis.clear()
        self._more_refs = None
        self._waiting_count = None
        self._pool_counts.clear()

    def _write(self) -> None:
        if not self._in_tx:
            self._check_open()
            raise LocalProtocolError("store writes must happen inside store.transaction()")

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise LocalProtocolError("the store is closed")

    def _flush(self) -> None:
        """Write the cached log rows changed in this transaction."""
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

    def _log(self, community: CommunityId, author: MemberId, create: bool = False) -> _Log | None:
        """The cached row of this log; with ``create``, made if missing."""
        key = (community, author)
        log = self._dirty.get(key) or self._logs.get(key)
        if log is not None:
            return log
        row = self._cur.execute(_SELECT_LOG, key).fetchone()
        if row is not None:
            head = None if row[2] is None else Head(*row[2:])
            log = _Log(row[0], head, row[1])
        elif create:
            self._write()
            self._cur.execute("INSERT INTO logs (community, author) VALUES (?, ?)", key)
            lid = self._cur.lastrowid
            assert lid is not None
            log = _Log(lid, None, 0)
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
        g = _decode_trusted(row[0])
        self._genesis.put(community, g)
        return g

    def put_genesis(self, entry: Entry) -> None:
        self._write()
        self._cur.execute("INSERT OR IGNORE INTO genesis VALUES (?, ?)", (entry.id, entry.wire))
        self._genesis.put(CommunityId(entry.id), entry)

    # -- Backend: entries -----------------------------------------------------

    def entry(
        self, community: CommunityId, author: MemberId, seq: int, eid: EntryId
    ) -> Stored | None:
        key = (community, author, seq, eid)
        stored = self._stored.get(key)
        if stored is None:
            log = self._log(community, author)
            if log is None or seq > log.top:
                return None  # the usual answer for a new entry, without a query
            row = self._cur.execute(_SELECT_ENTRY, (log.lid, seq, eid)).fetchone()
            if row is None:
                return None
            stored = Stored(_decode_trusted(row[2]), row[0], row[1])
            self._stored.put(key, stored)
        self._where.put((community, eid), (author, seq))
        return stored

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
        before it accepts an entry): a new entry has none pointing at it.
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
            move = _PENDING_MOVES.get(r.kind)
            if move is not None:
                execute(move, (target, r.target_seq, r.target_id))
            elif r.kind is Kind.OFFER_CLOSE:
                execute(_CLOSE_OFFER, (c, r.target_author, r.target_seq, r.target_id))
        execute(
            _INSERT_ENTRY,
            (
                lid,
                e.seq,
                e.id,
                e.kind,  # a StrEnum: binds as its text
                e.timestamp_ms,
                stored.balance,
                stored.limit,
                *inline,
                e.wire,
            ),
        )
        if e.seq > log.top:
            log.top = e.seq
        self._dirty[(c, a)] = log
        body = e.body
        if isinstance(body, Transfer):
            payee = self._lid(c, body.to)
            execute(
                _INSERT_TIMELINE_2,
                (lid, e.timestamp_ms, e.id, lid, e.seq, payee, e.timestamp_ms, e.id, lid, e.seq),
            )
            execute(_INSERT_PENDING, (lid, e.seq, e.id, payee, body.amount))
        elif isinstance(body, Request):
            # In the timelines of both, as a transfer is.
            payer = self._lid(c, body.to)
            execute(
                _INSERT_TIMELINE_2,
                (lid, e.timestamp_ms, e.id, lid, e.seq, payer, e.timestamp_ms, e.id, lid, e.seq),
            )
            execute(_INSERT_REQUEST, (payer, lid, e.seq, e.id))
        else:
            execute(_INSERT_TIMELINE, (lid, e.timestamp_ms, e.id, lid, e.seq))
            if isinstance(body, Offer):
                self._index_offer(e, body)
        self._stored.put((c, a, e.seq, e.id), stored)
        self._where.put((c, e.id), (a, e.seq))
        if e.kind is not Kind.REQUEST:
            # A request is the one kind that may be named before it is held:
            # a transfer carries the request it pays.
            self._no_refs.put((c, e.id), True)

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
            (log.lid, _NO_BOUND if below is None else below, kind.value),
        ).fetchone()
        return None if row is None else Stored(_decode_trusted(row[2]), row[0], row[1])

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
            (target.lid, min_seq, _NO_BOUND if max_seq is None else max_seq, kind.value),
        )

    def refs_from(
        self, community: CommunityId, by_author: MemberId, kind: Kind, max_seq: int | None
    ) -> list[RefRow]:
        """Walks ``by_author``'s log below ``max_seq`` (the ledger asks only
        when it freezes a forked log)."""
        by = self._log(community, by_author)
        if by is None:
            return []
        return self._refs(
            "r.lid = ? AND r.seq < ? AND r.kind = ?",
            (by.lid, _NO_BOUND if max_seq is None else max_seq, kind.value),
        )

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
        if self._waiting_count is None:
            self._waiting_count = self._cur.execute("SELECT count(*) FROM waiting").fetchone()[0]
        return self._waiting_count

    def put_waiting(self, keys: Iterable[WaitKey], wire: bytes, parking: Parking) -> bool:
        self._write()
        digest = hashlib.sha256(wire).digest()
        cur = self._cur
        if cur.execute("SELECT 1 FROM waiting WHERE digest = ?", (digest,)).fetchone():
            return True
        # parked_at never decreases along wid: the newest is the last row,
        # and what outlived its lifetime is a run of rows from the first.
        newest = cur.execute("SELECT parked_at FROM waiting ORDER BY wid DESC LIMIT 1").fetchone()
        at, cutoff = parking_time(
            self._limits, parking.now_ms, None if newest is None else newest[0]
        )
        self._expire(cutoff)
        (by_author,) = cur.execute(
            "SELECT count(*) FROM waiting WHERE community = ? AND author = ?",
            (parking.community, parking.author),
        ).fetchone()
        by_peer = 0
        if parking.source is not None:
            (by_peer,) = cur.execute(
                "SELECT count(*) FROM waiting WHERE source = ?", (parking.source,)
            ).fetchone()
        pool = int(parking.member)
        evict = room_to_park(
            self._limits,
            parking,
            by_author=by_author,
            by_peer=by_peer,
            in_pool=self._pool_count(pool),
        )
        if evict is None:
            return False
        if evict:  # full: the oldest of this pool make room
            self._unpark(
                cur.execute(
                    "SELECT wid, member FROM waiting WHERE member = ? ORDER BY wid LIMIT ?",
                    (pool, evict),
                ).fetchall()
            )
        count, total = self._pool_count(pool), self.waiting_count()
        cur.execute(
            "INSERT INTO waiting (digest, wire, community, author, member, source, parked_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (digest, wire, parking.community, parking.author, pool, parking.source, at),
        )
        wid = cur.lastrowid
        cur.executemany(
            "INSERT OR IGNORE INTO waiting_keys VALUES (?, ?, ?, ?, ?)",
            [(c, a, s, i, wid) for c, a, s, i in keys],
        )
        self._waiting_count = total + 1
        self._pool_counts[pool] = count + 1
        return True

    def _expire(self, cutoff: int) -> None:
        """Drop the entries parked before ``cutoff`` (ms)."""
        oldest = self._cur.execute("SELECT parked_at FROM waiting ORDER BY wid LIMIT 1").fetchone()
        if oldest is None or oldest[0] >= cutoff:
            return  # the usual case: one look at the first row
        rows = self._conn.execute(
            "SELECT wid, member, parked_at FROM waiting ORDER BY wid"
        )  # its own cursor: _unpark below uses self._cur
        expired: list[tuple[int, int]] = []
        for wid, member, parked_at in rows:
            if parked_at >= cutoff:
                break
            expired.append((wid, member))
        rows.close()
        self._unpark(expired)

    def _pool_count(self, pool: int) -> int:
        if pool not in self._pool_counts:
            self._pool_counts[pool] = self._cur.execute(
                "SELECT count(*) FROM waiting WHERE member = ?", (pool,)
            ).fetchone()[0]
        return self._pool_counts[pool]

    def _unpark(self, rows: list[tuple[int, int]]) -> None:
        """Remove these parked entries, given as (wid, member) rows."""
        if not rows:
            return
        wids = [(wid,) for wid, _member in rows]
        cur = self._cur
        cur.executemany("DELETE FROM waiting_keys WHERE wid = ?", wids)
        cur.executemany("DELETE FROM waiting WHERE wid = ?", wids)
        if self._waiting_count is not None:
            self._waiting_count -= len(rows)
        for _wid, member in rows:
            if member in self._pool_counts:
                self._pool_counts[member] -= 1

    def take_waiting(self, key: WaitKey) -> list[bytes]:
        if self.waiting_count() == 0:
            return []  # the usual case: no query
        rows = self._cur.execute(
            "SELECT w.wid, w.member, w.wire FROM waiting_keys k JOIN waiting w ON w.wid = k.wid"
            " WHERE k.community = ? AND k.author = ? AND k.seq = ? AND k.id = ?"
            " ORDER BY w.wid",
            key,
        ).fetchall()
        if rows:
            self._write()
            self._unpark([(wid, member) for wid, member, _wire in rows])
        return [r[2] for r in rows]

    def waiting_finals(self, community: CommunityId, author: MemberId) -> list[WaitKey]:
        if self.waiting_count() == 0:
            return []
        rows = self._cur.execute(
            "SELECT DISTINCT community, author, seq, id FROM waiting_keys"
            " WHERE community = ? AND author = ? AND seq < 0 ORDER BY seq, id",
            (community, author),
        ).fetchall()
        return [(CommunityId(c), MemberId(a), s, EntryId(i)) for c, a, s, i in rows]

    # -- Backend: certificates (witnessed communities) ----------------------------

    def certificate(
        self, community: CommunityId, author: MemberId, seq: int
    ) -> tuple[EntryId, bytes] | None:
        row = self._cur.execute(
            "SELECT id, data FROM certificates WHERE community = ? AND author = ? AND seq = ?",
            (community, author, seq),
        ).fetchone()
        return None if row is None else (EntryId(row[0]), row[1])

    def put_certificate(
        self, community: CommunityId, author: MemberId, seq: int, eid: EntryId, data: bytes
    ) -> None:
        self._write()
        self._cur.execute(
            "INSERT OR IGNORE INTO certificates VALUES (?, ?, ?, ?, ?)",
            (community, author, seq, eid, data),
        )

    def put_witness_fault(
        self, community: CommunityId, author: MemberId, seq: int, first: bytes, second: bytes
    ) -> bool:
        self._write()
        self._cur.execute(
            "INSERT OR IGNORE INTO witness_faults VALUES (?, ?, ?, ?, ?)",
            (community, author, seq, first, second),
        )
        return self._cur.rowcount == 1

    def certified_between(
        self, community: CommunityId, author: MemberId, low: int, high: int
    ) -> list[tuple[int, EntryId]]:
        rows = self._cur.execute(
            "SELECT seq, id FROM certificates"
            " WHERE community = ? AND author = ? AND seq > ? AND seq < ? ORDER BY seq",
            (community, author, low, high),
        ).fetchall()
        return [(r[0], EntryId(r[1])) for r in rows]

    def final_at(self, community: CommunityId, author: MemberId, seq: int) -> EntryId | None:
        log = self._log(community, author)
        if log is None or log.head is None or not log.head.final_seq or seq > log.head.final_seq:
            return None  # no query: above the final tip, nothing is final
        row = self._cur.execute(
            "SELECT id FROM final_chain WHERE lid = ? AND seq = ?", (log.lid, seq)
        ).fetchone()
        return None if row is None else EntryId(row[0])

    def put_final(
        self, community: CommunityId, author: MemberId, chain: Iterable[tuple[int, EntryId]]
    ) -> None:
        self._write()
        lid = self._lid(community, author)
        self._cur.executemany(
            "INSERT INTO final_chain VALUES (?, ?, ?)", [(lid, seq, eid) for seq, eid in chain]
        )

    def finals(self, community: CommunityId) -> list[tuple[MemberId, int, bytes]]:
        """(author, final seq, certificate of the final tip entry) of every
        author of ``community`` whose final tip is above 0, by author."""
        self._flush()
        rows = self._cur.execute(
            "SELECT l.author, l.final_seq, c.data FROM logs l JOIN certificates c"
            " ON c.community = l.community AND c.author = l.author AND c.seq = l.final_seq"
            " WHERE l.community = ? AND l.final_seq > 0 AND c.id = l.final_id"
            " ORDER BY l.author",
            (community,),
        ).fetchall()
        return [(MemberId(r[0]), r[1], r[2]) for r in rows]

    def witness_faults(self, community: CommunityId) -> list[tuple[MemberId, int, bytes, bytes]]:
        rows = self._cur.execute(
            "SELECT author, seq, first, second FROM witness_faults WHERE community = ?"
            " ORDER BY author, seq",
            (community,),
        ).fetchall()
        return [(MemberId(r[0]), r[1], r[2], r[3]) for r in rows]

    # -- the vote log of a witness (see troc.node.witness.StoreVoteLog) -----------

    def voted(self, community: CommunityId, author: MemberId, seq: int) -> EntryId | None:
        """The id this node, as a witness, recorded at (author, seq)."""
        row = self._cur.execute(
            "SELECT id FROM votes WHERE community = ? AND author = ? AND seq = ?",
            (community, author, seq),
        ).fetchone()
        return None if row is None else EntryId(row[0])

    def votes_last(self, community: CommunityId, author: MemberId) -> int:
        row = self._cur.execute(
            "SELECT max(seq) FROM votes WHERE community = ? AND author = ?", (community, author)
        ).fetchone()
        return int(row[0] or 0)

    def put_votes(
        self, community: CommunityId, author: MemberId, records: Iterable[tuple[int, EntryId]]
    ) -> None:
        """Record vote ids at seqs last+1, last+2, … (a record already held
        with the same id is skipped). Durable once the enclosing transaction
        commits; raises LocalProtocolError, recording nothing of this call,
        for a gap or a seq recorded with another id."""
        self._write()
        last = self.votes_last(community, author)
        rows = []
        for seq, eid in records:
            if seq <= last:
                if self.voted(community, author, seq) != eid:
                    raise LocalProtocolError(f"vote log: seq {seq} is recorded with another id")
                continue
            if seq != last + 1:
                raise LocalProtocolError(f"vote log: seq {seq} would leave a gap after {last}")
            rows.append((community, author, seq, eid))
            last = seq
        self._cur.executemany("INSERT INTO votes VALUES (?, ?, ?, ?)", rows)

    # -- queries for the node's API ---------------------------------------------

    def communities(self) -> list[Entry]:
        """The genesis entries of every community this store holds."""
        rows = self._cur.execute("SELECT wire FROM genesis ORDER BY community").fetchall()
        return [_decode_trusted(r[0]) for r in rows]

    def log(
        self, community: CommunityId, author: MemberId, after_seq: int = 0, limit: int = 1000
    ) -> list[Stored]:
        """``author``'s log along its first-seen branch, seq > ``after_seq``,
        in seq order, at most ``limit`` entries.

        Below a known fork a log has one entry per seq; from the fork on, the
        branch that ends at the author's head is followed (the other branches
        are in :meth:`entries_since` and :meth:`forks`).
        """
        log = self._log(community, author)
        if log is None or log.head is None or limit <= 0:
            return []
        head = log.head
        cut = head.seq + 1 if head.frozen_at is None else head.frozen_at
        rows = self._cur.execute(
            "SELECT balance, lim, wire FROM entries WHERE lid = ? AND seq > ? AND seq < ?"
            " ORDER BY seq LIMIT ?",
            (log.lid, after_seq, cut, limit),
        ).fetchall()
        out = [Stored(_decode_trusted(r[2]), r[0], r[1]) for r in rows]
        if len(out) < limit and head.seq >= cut:
            # Past the fork: walk back from the head (at most MAX_BEYOND_FORK steps).
            branch: list[Stored] = []
            seq, eid = head.seq, head.id
            while seq >= cut and seq > after_seq:
                s = self.entry(community, author, seq, eid)
                if s is None:  # pragma: no cover - the head's chain is stored
                    break
                branch.append(s)
                assert s.entry.prev is not None
                seq, eid = seq - 1, s.entry.prev
            out.extend(reversed(branch))
        return out[:limit]

    def entries_since(
        self, community: CommunityId, author: MemberId, after_seq: int, limit: int = 1000
    ) -> list[bytes]:
        """Wire bytes of ``author``'s entries with seq > ``after_seq``, in seq
        order (every branch of a forked log, ties by id), at most ``limit``."""
        return [wire for _ts, wire in self.timed_entries_since(community, author, after_seq, limit)]

    def timed_entries_since(
        self, community: CommunityId, author: MemberId, after_seq: int, limit: int = 1000
    ) -> list[tuple[int, bytes]]:
        """(timestamp_ms, wire) pairs, as :meth:`entries_since` (what sync streams)."""
        log = self._log(community, author)
        if log is None:
            return []
        rows = self._cur.execute(
            "SELECT ts, wire FROM entries WHERE lid = ? AND seq > ? ORDER BY seq, id LIMIT ?",
            (log.lid, after_seq, limit),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def history(
        self,
        community: CommunityId,
        member: MemberId,
        before_ts: int | None = None,
        limit: int = 50,
        *,
        before_id: EntryId | None = None,
    ) -> list[Entry]:
        """``member``'s own entries and the transfers addressed to it, newest
        first (by timestamp, then id), at most ``limit``.

        Paging: pass the last entry's ``timestamp_ms`` as ``before_ts`` and its
        ``id`` as ``before_id`` to get the next page exactly. ``before_ts``
        alone returns entries stamped strictly earlier (entries stamped the
        same millisecond as the cursor are skipped).
        """
        log = self._log(community, member)
        if log is None or limit <= 0:
            return []
        rows = self._cur.execute(
            "SELECT e.wire FROM timeline h"
            " JOIN entries e ON e.lid = h.src_lid AND e.seq = h.src_seq AND e.id = h.id"
            " WHERE h.lid = ? AND (h.ts, h.id) < (?, ?) ORDER BY h.ts DESC, h.id DESC LIMIT ?",
            (
                log.lid,
                _NO_BOUND if before_ts is None else before_ts,
                b"" if before_id is None else before_id,
                limit,
            ),
        ).fetchall()
        return [_decode_trusted(r[0]) for r in rows]

    def pending_in(self, community: CommunityId, member: MemberId) -> list[Entry]:
        """Transfers to ``member`` it has neither accepted nor declined, oldest first."""
        log = self._log(community, member)
        if log is None:
            return []
        rows = self._cur.execute(
            "SELECT e.wire FROM pending p"
            " JOIN entries e ON e.lid = p.payer_lid AND e.seq = p.seq AND e.id = p.id"
            " WHERE p.payee_lid = ? AND p.state = 'open' ORDER BY e.ts, p.payer_lid, p.seq",
            (log.lid,),
        ).fetchall()
        return [_decode_trusted(r[0]) for r in rows]

    def pending_sums(self, community: CommunityId, member: MemberId) -> tuple[int, int]:
        """(incoming, outgoing): the amounts :meth:`pending_in` and
        :meth:`pending_out` would list, summed in SQL (no entry decoded)."""
        log = self._log(community, member)
        if log is None:
            return 0, 0
        # Incoming transfers come from any number of payers: their total can
        # pass 2**63 - 1, where SQLite's sum() raises "integer overflow". So
        # the high and low 32 bits of the amounts (1 … 2**53 - 1) are summed
        # apart, which cannot overflow, and joined in Python, exactly.
        row = self._cur.execute(
            "SELECT (SELECT coalesce(sum(amount >> 32), 0) FROM pending"
            "        WHERE payee_lid = ? AND state = 'open'),"
            " (SELECT coalesce(sum(amount & 4294967295), 0) FROM pending"
            "        WHERE payee_lid = ? AND state = 'open'),"
            " (SELECT coalesce(sum(amount), 0) FROM pending WHERE payer_lid = ?)",
            (log.lid, log.lid, log.lid),
        ).fetchone()
        return (int(row[0]) << 32) + int(row[1]), int(row[2])

    def pending_out(self, community: CommunityId, member: MemberId) -> list[Entry]:
        """``member``'s transfers not settled yet, in log order: still open
        (unanswered), or declined and not reclaimed yet (see
        :meth:`pending_out_states` for which)."""
        return [e for e, _ in self.pending_out_states(community, member)]

    def pending_out_states(
        self, community: CommunityId, member: MemberId
    ) -> list[tuple[Entry, TransferState]]:
        """:meth:`pending_out` with each transfer's state (open or declined)."""
        log = self._log(community, member)
        if log is None:
            return []
        rows = self._cur.execute(
            "SELECT e.wire, p.state FROM pending p"
            " JOIN entries e ON e.lid = p.payer_lid AND e.seq = p.seq AND e.id = p.id"
            " WHERE p.payer_lid = ? ORDER BY p.seq, p.id",
            (log.lid,),
        ).fetchall()
        return [(_decode_trusted(r[0]), TransferState(r[1])) for r in rows]

    def requests(
        self, community: CommunityId, member: MemberId, *, to_member: bool
    ) -> list[tuple[Entry, RequestState, Ref | None]]:
        """Payment requests naming ``member`` as payer (``to_member``), or
        signed by it, oldest first, each with its state and the payer's
        transfer or refusal that settled it (the first on the payer's log)."""
        log = self._log(community, member)
        if log is None:
            return []
        column = "q.payer_lid" if to_member else "q.lid"
        rows = self._cur.execute(
            "SELECT e.wire, q.payer_lid, q.lid, q.seq, q.id FROM requests q"
            " JOIN entries e ON e.lid = q.lid AND e.seq = q.seq AND e.id = q.id"
            f" WHERE {column} = ? ORDER BY e.ts, q.lid, q.seq",
            (log.lid,),
        ).fetchall()
        out: list[tuple[Entry, RequestState, Ref | None]] = []
        for wire, payer_lid, lid, seq, eid in rows:
            answers = self._refs(
                "r.target_lid = ? AND r.target_seq = ? AND r.kind IN (?, ?) AND r.target_id = ?"
                " AND r.lid = ?",
                (lid, seq, Kind.TRANSFER.value, Kind.REFUSAL.value, eid, payer_lid),
            )
            entry = _decode_trusted(wire)
            if not answers:
                out.append((entry, RequestState.OPEN, None))
                continue
            first = min(answers, key=lambda r: (r.by_seq, r.by_id))
            state = RequestState.PAID if first.kind is Kind.TRANSFER else RequestState.REFUSED
            out.append((entry, state, Ref(first.by_author, first.by_seq, first.by_id)))
        return out

    def decline_of(self, community: CommunityId, transfer: Ref) -> Ref | None:
        """The decline that answered ``transfer`` (for the payer's reclaim), or None."""
        target = self._log(community, transfer.author)
        if target is None:
            return None
        rows = self._refs(
            "r.target_lid = ? AND r.target_seq = ? AND r.kind = ? AND r.target_id = ?",
            (target.lid, transfer.seq, Kind.DECLINE.value, transfer.id),
        )
        return None if not rows else Ref(rows[0].by_author, rows[0].by_seq, rows[0].by_id)

    def transfer_state(
        self, community: CommunityId, payer: MemberId, seq: int, eid: EntryId
    ) -> TransferState | None:
        """Where one transfer stands; None if this store holds no such transfer."""
        log = self._log(community, payer)
        if log is None:
            return None
        cur = self._cur
        row = cur.execute(
            "SELECT state FROM pending WHERE payer_lid = ? AND seq = ? AND id = ?",
            (log.lid, seq, eid),
        ).fetchone()
        if row is not None:
            return TransferState(row[0])
        row = cur.execute(
            "SELECT kind FROM entries WHERE lid = ? AND seq = ? AND id = ?", (log.lid, seq, eid)
        ).fetchone()
        if row is None or row[0] != Kind.TRANSFER.value:
            return None
        reclaims = self._refs(
            "r.target_lid = ? AND r.target_seq = ? AND r.kind = ? AND r.target_id = ?",
            (log.lid, seq, Kind.RECLAIM.value, eid),
        )
        if reclaims:
            return TransferState.RECLAIMED
        return TransferState.ACCEPTED  # left the pending table unreclaimed: accepted

    def offers(
        self,
        community: CommunityId,
        *,
        text: str | None = None,
        tag: str | None = None,
        side: str | None = None,
        author: MemberId | None = None,
        include_closed: bool = False,
        now_ms: int | None = None,
        limit: int = 50,
    ) -> list[tuple[Entry, bool]]:
        """Offers and wants of ``community`` as ``(entry, closed)``.

        ``text``: every word must match the title, description or tags as a
        word prefix, case and accents ignored; results are then ranked by
        relevance, else newest first. ``tag``: an exact tag (case ignored).
        ``side``: ``"offer"`` or ``"want"``. ``now_ms``: if given, offers
        expired by then are left out. Closed offers are left out unless
        ``include_closed``.
        """
        if limit <= 0:
            return []
        where = ["o.community = ?"]
        params: list[Any] = [community]
        if not include_closed:
            where.append("o.closed = 0")
        if side is not None:
            where.append("o.side = ?")
            params.append(side)
        if author is not None:
            where.append("o.author = ?")
            params.append(author)
        if tag is not None:
            where.append("o.oid IN (SELECT oid FROM offer_tags WHERE community = ? AND tag = ?)")
            params += [community, tag.casefold()]
        if now_ms is not None:
            where.append("(o.expires_ms IS NULL OR o.expires_ms > ?)")
            params.append(now_ms)
        # The wire is read through the log id, one lookup per result row.
        select = (
            "SELECT e.wire, o.closed FROM {src}"
            " JOIN logs l ON l.community = o.community AND l.author = o.author"
            " JOIN entries e ON e.lid = l.lid AND e.seq = o.seq AND e.id = o.id"
            " WHERE {where} ORDER BY {order} LIMIT ?"
        )
        words = _WORD.findall(text) if text else []
        if words:
            # Each word quoted, so no FTS syntax gets through, and matched as a prefix.
            query = " ".join('"' + w.replace('"', '""') + '"*' for w in words)
            sql = select.format(
                src="offers_fts f JOIN offers o ON o.oid = f.rowid",
                where="offers_fts MATCH ? AND " + " AND ".join(where),
                order="f.rank, o.ts DESC, o.oid DESC",
            )
            params.insert(0, query)
        elif text is not None and text.strip():
            return []  # punctuation only: nothing can match
        else:
            sql = select.format(
                src="offers o", where=" AND ".join(where), order="o.ts DESC, o.oid DESC"
            )
        params.append(limit)
        rows = self._cur.execute(sql, params).fetchall()
        return [(_decode_trusted(r[0]), bool(r[1])) for r in rows]

    def of_kind(self, community: CommunityId, kind: Kind) -> list[Entry]:
        """Every stored entry of ``kind`` in ``community``, every branch, by
        author and seq. A scan of the community's entries (no index on kind):
        for directory views, not for the ingest path."""
        rows = self._cur.execute(
            "SELECT e.wire FROM logs l JOIN entries e ON e.lid = l.lid"
            " WHERE l.community = ? AND e.kind = ? ORDER BY l.author, e.seq, e.id",
            (community, kind.value),
        ).fetchall()
        return [_decode_trusted(r[0]) for r in rows]

    def forks(self, community: CommunityId) -> list[tuple[MemberId, int, bytes, bytes]]:
        """Fork proofs known in ``community``: (author, seq, first wire, second wire)."""
        rows = self._cur.execute(
            "SELECT author, seq, first, second FROM forks WHERE community = ? ORDER BY author, seq",
            (community,),
        ).fetchall()
        return [(MemberId(r[0]), r[1], r[2], r[3]) for r in rows]

    def entry_count(self, community: CommunityId) -> int:
        """How many entries of ``community`` are stored (genesis not counted).

        Counts rows: O(entries), a few milliseconds at 100k.
        """
        row = self._cur.execute(
            "SELECT count(*) FROM entries WHERE lid IN (SELECT lid FROM logs WHERE community = ?)",
            (community,),
        ).fetchone()
        return int(row[0])

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
