"""The store's files: owner-only, locked for one process, opened read-only
where nothing can be written; and the one way to say what is wrong with them.

:func:`open_files` opens the SQLite file (and its lock) for
:meth:`troc.node.store.Store.open`; :func:`damaged`, :func:`store_error` and
:func:`unusable_file` turn what went wrong into one line saying what to do.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import urllib.parse
from pathlib import Path

from troc.errors import CodecError, StoreError
from troc.node._schema import prepare
from troc.node._store_cache import Cache
from troc.protocol.entry import Entry

__all__ = [
    "DAMAGED_ADVICE",
    "damaged",
    "decode_trusted",
    "open_files",
    "store_error",
    "unusable_file",
]


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


#: Stored entries decoded lately, by their bytes, which decide the decoding
#: (an Entry is frozen: one can be handed out twice). A member's node reads
#: the same rows again and again: ``balance`` reads every unanswered payment
#: of its member at each call (a shop's day of them, asked for every few
#: seconds), and decoding them was most of what that cost (bench/finality.py's
#: balance poller: a fifth of a payer's CPU). Entries of up to
#: ``_DECODED_WIRE`` bytes only (payments, accepts), so it stays a few MB.
_DECODED: Cache[bytes, Entry] = Cache(2048)
_DECODED_WIRE = 1024


def decode_trusted(wire: bytes) -> Entry:
    """Rebuild an entry from bytes this store accepted earlier.

    Its signature was verified and its bytes proven canonical when it was
    stored, so neither is checked again (its fields are); small entries
    decoded lately are not decoded again either.
    """
    entry = _DECODED.get(wire)
    if entry is not None:
        return entry
    try:
        entry = Entry.decode(wire, check_signature=False, check_canonical=False)
    except CodecError as exc:  # only if the file was altered behind our back
        raise damaged(f"a stored entry no longer decodes: {exc}") from None
    if len(wire) <= _DECODED_WIRE:
        _DECODED.put(bytes(wire), entry)
    return entry


def open_files(path: Path, *, cache_mib: int, read_only: bool) -> tuple[sqlite3.Connection, int]:
    """Lock and open the store at ``path`` (see :meth:`troc.node.store.Store.open`);
    returns the connection and the lock's file descriptor (closing it
    releases the lock). Raises StoreError as ``Store.open`` says."""
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
            fcntl.flock(lock_fd, (fcntl.LOCK_SH if read_only else fcntl.LOCK_EX) | fcntl.LOCK_NB)
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
        return conn, lock_fd
    except BaseException:
        if conn is not None:
            conn.close()
        os.close(lock_fd)  # closing the descriptor releases the lock
        raise
