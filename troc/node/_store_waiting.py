"""The waiting set in SQLite: entries parked for a missing dependency.

``waiting`` holds each parked entry once (its wire bytes, author, pool and
source), ``waiting_keys`` the (community, author, seq, id) it waits for. What
may be parked, and what makes room, is decided by the same pure functions as
in the in-memory backend (:func:`troc.protocol.backend.parking_time` and
:func:`~troc.protocol.backend.room_to_park`); this module only counts rows
and moves them. Counts are cached until the transaction rolls back
(:meth:`WaitingRows.forget`), and so is the set of keys waited for: a
newcomer's catch-up asks, for each entry it stores and each entry that
becomes final, what waited for it, while a few entries are parked nearly
all along; a key no parked entry waits for is answered without a query.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterable

from troc.crypto.sign import MemberId
from troc.protocol.backend import Parking, WaitKey, WaitLimits, parking_time, room_to_park
from troc.protocol.entry import CommunityId, Entry, EntryId, Ref

__all__ = ["WaitingRows"]


class WaitingRows:
    """The store's waiting set (see the module's docstring).

    Args:
        conn: the store's connection (writes happen in its transaction).
        limits: the bounds on the waiting set.
        check_write: raises unless a write may happen now (in a transaction).
    """

    def __init__(
        self, conn: sqlite3.Connection, limits: WaitLimits, check_write: Callable[[], None]
    ) -> None:
        self._conn = conn
        self._cur = conn.cursor()
        self.limits = limits
        self._check_write = check_write
        self._waiting_count: int | None = None
        # Entries parked per pool (member: 1, stranger: 0), read when needed.
        self._pool_counts: dict[int, int] = {}
        # Every key some parked entry waits for, and maybe keys none waits
        # for any more (a superset: put adds, take drops; loaded when first
        # needed, dropped with the counts). A key not in it has no row.
        self._keys: set[WaitKey] | None = None

    def close(self) -> None:
        """Close the cursor (before the store's connection: see ``Store.close``)."""
        self._cur.close()

    def forget(self) -> None:
        """Drop the cached counts (the transaction rolled back)."""
        self._waiting_count = None
        self._pool_counts.clear()
        self._keys = None

    def count(self) -> int:
        """How many entries wait for a missing dependency."""
        if self._waiting_count is None:
            self._waiting_count = self._cur.execute("SELECT count(*) FROM waiting").fetchone()[0]
        return self._waiting_count

    def put(self, keys: Iterable[WaitKey], wire: bytes, parking: Parking) -> bool:
        """As :meth:`troc.protocol.backend.Backend.put_waiting` (in a transaction)."""
        keys = list(keys)
        digest = hashlib.sha256(wire).digest()
        cur = self._cur
        if cur.execute("SELECT 1 FROM waiting WHERE digest = ?", (digest,)).fetchone():
            return True
        # parked_at never decreases along wid: the newest is the last row,
        # and what outlived its lifetime is a run of rows from the first.
        newest = cur.execute("SELECT parked_at FROM waiting ORDER BY wid DESC LIMIT 1").fetchone()
        at, cutoff = parking_time(
            self.limits, parking.now_ms, None if newest is None else newest[0]
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
            self.limits,
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
        count, total = self._pool_count(pool), self.count()
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
        if self._keys is not None:
            self._keys.update(keys)
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
            if self._waiting_count == 0:
                self._keys = set()  # sheds the keys no row has any more
        for _wid, member in rows:
            if member in self._pool_counts:
                self._pool_counts[member] -= 1

    def take(self, key: WaitKey) -> list[bytes]:
        """As :meth:`troc.protocol.backend.Backend.take_waiting`."""
        if self.count() == 0:
            return []  # the usual case: no query
        known = self._known_keys()
        if key not in known:
            return []  # the usual case while a few entries are parked: no query
        known.discard(key)  # every row with it goes now (or went before)
        rows = self._cur.execute(
            "SELECT w.wid, w.member, w.wire FROM waiting_keys k JOIN waiting w ON w.wid = k.wid"
            " WHERE k.community = ? AND k.author = ? AND k.seq = ? AND k.id = ?"
            " ORDER BY w.wid",
            key,
        ).fetchall()
        if rows:
            self._check_write()
            self._unpark([(wid, member) for wid, member, _wire in rows])
        return [r[2] for r in rows]

    def _known_keys(self) -> set[WaitKey]:
        if self._keys is None:
            rows = self._cur.execute("SELECT community, author, seq, id FROM waiting_keys")
            self._keys = {
                (CommunityId(c), MemberId(a), s, EntryId(i)) for c, a, s, i in rows.fetchall()
            }
        return self._keys

    def parked(self, community: CommunityId, author: MemberId | None) -> list[bytes]:
        """As :meth:`troc.protocol.backend.Backend.parked`."""
        if self.count() == 0:
            return []
        if author is None:
            rows = self._cur.execute(
                "SELECT wire FROM waiting WHERE community = ? ORDER BY wid", (community,)
            )
        else:
            rows = self._cur.execute(
                "SELECT wire FROM waiting WHERE community = ? AND author = ? ORDER BY wid",
                (community, author),
            )
        return [r[0] for r in rows.fetchall()]

    def parked_on_prev(self, community: CommunityId, ref: Ref) -> bytes | None:
        """As :meth:`troc.protocol.backend.Backend.parked_on_prev`."""
        if ref.seq <= 1 or self.count() == 0:
            return None
        rows = self._cur.execute(
            "SELECT w.wire FROM waiting_keys k JOIN waiting w ON w.wid = k.wid"
            " WHERE k.community = ? AND k.author = ? AND k.seq = ?",
            (community, ref.author, ref.seq - 1),
        ).fetchall()
        for (wire,) in rows:
            # Parked entries passed their signature check before parking.
            entry = Entry.decode(wire, check_signature=False)
            if entry.seq == ref.seq and entry.id == ref.id:
                return bytes(wire)
        return None

    def finals(self, community: CommunityId, author: MemberId) -> list[WaitKey]:
        """As :meth:`troc.protocol.backend.Backend.waiting_finals`."""
        if self.count() == 0:
            return []
        rows = self._cur.execute(
            "SELECT DISTINCT community, author, seq, id FROM waiting_keys"
            " WHERE community = ? AND author = ? AND seq < 0 ORDER BY seq, id",
            (community, author),
        ).fetchall()
        return [(CommunityId(c), MemberId(a), s, EntryId(i)) for c, a, s, i in rows]
