"""The open transaction's timeline and pending rows, written at commit.

Private to :mod:`troc.node.store` (see there, "Derived rows"). Every
transfer adds two ``timeline`` rows and a ``pending`` row, every other entry
one ``timeline`` row, and most answers (accept, decline, reclaim, take-back)
move a ``pending`` row: three of the five statements an entry costs, ~12 µs
of the store thread's ~45 µs per entry (bench/ingest.py). Yet the ledger never
reads those tables: only the node's queries do. So :class:`DerivedRows` holds
them until the transaction commits (or a query needs them) and writes them
with one ``executemany`` per table, and a transfer answered in the very
transaction that stores it (the usual case in a sync, where a payee's accept
follows its transfer in the same batch) never reaches ``pending`` at all: its
row is inserted, moved and deleted here, in Python, as SQL would have done.
"""

from __future__ import annotations

import sqlite3

from troc.protocol.entry import Kind

__all__ = ["PENDING_MOVES", "DerivedRows"]

#: What an answer does to the pending transfer it names: the state the
#: transfer must be in (None: any) and the state it moves to (None: it leaves
#: the table). Accepted and reclaimed transfers leave, declined ones wait for
#: their reclaim; an expired transfer taken back leaves, answered or not
#: (docs/protocol.md §4.11).
PENDING_MOVES: dict[Kind, tuple[str | None, str | None]] = {
    Kind.ACCEPT: ("open", None),
    Kind.DECLINE: ("open", "declined"),
    Kind.RECLAIM: ("declined", None),
    Kind.TAKE_BACK: (None, None),
}


def _move_sql(need: str | None, to: str | None) -> str:
    action = "DELETE FROM pending" if to is None else f"UPDATE pending SET state = '{to}'"
    where = " WHERE payer_lid = ? AND seq = ? AND id = ?"
    return action + where + ("" if need is None else f" AND state = '{need}'")


_MOVE_SQL = {kind: _move_sql(*move) for kind, move in PENDING_MOVES.items()}
_INSERT_TIMELINE = "INSERT INTO timeline VALUES (?, ?, ?, ?, ?)"
_INSERT_PENDING = "INSERT OR IGNORE INTO pending VALUES (?, ?, ?, ?, ?, ?)"

#: A pending row's key: (payer_lid, seq, id).
PendingKey = tuple[int, int, bytes]


class DerivedRows:
    """``timeline`` and ``pending`` rows not written yet.

    ``timeline`` holds rows to insert, ``pending`` the transfers stored in
    this transaction that are still pending, by key: ``[payee_lid, amount,
    state]``. A key held here is in no table row (a transfer is stored
    once), so :meth:`move` on it is exact, as is SQL on any other key.
    """

    __slots__ = ("pending", "timeline")

    def __init__(self) -> None:
        self.timeline: list[tuple[int, int, bytes, int, int]] = []
        self.pending: dict[PendingKey, list[int | str]] = {}

    def move(self, kind: Kind, key: PendingKey, cur: sqlite3.Cursor) -> None:
        """Apply an answer of ``kind`` (a key of :data:`PENDING_MOVES`) to the
        pending transfer ``key``: here if it is held here, else in the table."""
        row = self.pending.get(key)
        if row is None:
            cur.execute(_MOVE_SQL[kind], key)
            return
        need, to = PENDING_MOVES[kind]
        if need is None or row[2] == need:
            if to is None:
                del self.pending[key]
            else:
                row[2] = to

    def write(self, cur: sqlite3.Cursor) -> None:
        """Insert the rows held, and hold none."""
        if self.timeline:
            cur.executemany(_INSERT_TIMELINE, self.timeline)
            self.timeline = []
        if self.pending:
            cur.executemany(_INSERT_PENDING, [(*k, *v) for k, v in self.pending.items()])
            self.pending = {}

    def forget(self) -> None:
        """Drop the rows held (the transaction rolled back)."""
        self.timeline = []
        self.pending = {}
