"""Timeline and pending rows held until commit (:mod:`troc.node._store_derived`)
change nothing the store answers.

* ``test_batches_answer_as_one_entry_transactions``: hypothesis stores the
  same random entries in one store an entry per transaction and in another
  in random batches (some rolled back first, then stored), and compares
  every query answer, also asked inside an open batch: history, pending in
  and out, their sums, each transfer's state.
* ``test_a_move_held_is_the_move_in_sql``: each answer kind on a pending
  transfer in each state, applied to a row held and to a row in the table,
  leaves the same table.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.node.test_store import KEYS, OPS, Builder, Rollback, build, everything, summary
from troc.crypto.sign import MemberId
from troc.node import _schema
from troc.node._store_derived import PENDING_MOVES, DerivedRows
from troc.node.store import Store
from troc.protocol.entry import Kind
from troc.protocol.ledger import Ledger


def _queries(b: Builder) -> dict[str, Callable[[Store], Any]]:
    """Each query whose answer the held rows could change, by name."""
    c = b.community
    transfers = b.made.get("transfer", [])

    def each(store: Store, ask: Callable[[MemberId], Any]) -> list[Any]:
        return [ask(MemberId(k.public)) for k in KEYS]

    return {
        "history": lambda s: each(s, lambda m: [e.id for e in s.history(c, m, limit=1000)]),
        "pending_in": lambda s: each(s, lambda m: [e.id for e in s.pending_in(c, m)]),
        "pending_out": lambda s: each(s, lambda m: s.pending_out_states(c, m)),
        "sums": lambda s: each(s, lambda m: s.pending_sums(c, m)),
        "states": lambda s: [s.transfer_state(c, t.author, t.seq, t.id) for t in transfers],
        "everything": lambda s: everything(s, c),
    }


def _rolled_back(store: Store, ledger: Ledger, batch: list[bytes], now: int) -> None:
    """Ingest ``batch`` in a transaction that then fails."""
    with store.transaction():
        for wire in batch:
            ledger.ingest(wire, now)
        raise Rollback


@settings(max_examples=30)  # two stores and every query each: ~5 s
@given(ops=OPS, data=st.data(), cache_entries=st.sampled_from([0, 4096]))
def test_batches_answer_as_one_entry_transactions(
    ops: list[tuple[str, int, int, int]], data: st.DataObject, cache_entries: int
) -> None:
    b = build(ops)
    queries = _queries(b)
    now = b.now + 1000
    with tempfile.TemporaryDirectory() as tmp:
        one = Store.open(Path(tmp) / "one.sqlite", cache_entries=cache_entries)
        many = Store.open(Path(tmp) / "many.sqlite", cache_entries=cache_entries)
        try:
            single, batched = Ledger(one), Ledger(many)
            start = 0
            while start < len(b.wires):
                batch = b.wires[start : start + data.draw(st.integers(1, 15), label="batch")]
                start += len(batch)
                if data.draw(st.integers(0, 7), label="rollback") == 0:
                    with pytest.raises(Rollback):
                        _rolled_back(many, batched, batch, now)
                with many.transaction():
                    for wire in batch:
                        with one.transaction():
                            expected = summary(single.ingest(wire, now))
                        assert summary(batched.ingest(wire, now)) == expected
                        if data.draw(st.integers(0, 4), label="query") == 0:
                            # One query inside the open batch: the first to
                            # read what it holds.
                            name = data.draw(st.sampled_from(sorted(queries)), label="which")
                            assert queries[name](many) == queries[name](one), name
            for name, query in queries.items():
                assert query(many) == query(one), name
            assert many.integrity_check() == "ok"
        finally:
            one.close()
            many.close()


def _pending_table() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    (table,) = [s for s in _schema._statements(_schema._SCHEMA) if "CREATE TABLE pending " in s]
    conn.execute(table)
    return conn


@pytest.mark.parametrize("kind", sorted(PENDING_MOVES, key=str))
@pytest.mark.parametrize("state", ["open", "declined"])
def test_a_move_held_is_the_move_in_sql(kind: Kind, state: str) -> None:
    key = (7, 3, b"\x01" * 32)
    tables = []
    for held in (True, False):
        conn = _pending_table()
        cur = conn.cursor()
        rows = DerivedRows()
        rows.pending[key] = [9, 25, state]
        if not held:
            rows.write(cur)  # in the table: the move is SQL's
        rows.move(kind, key, cur)
        rows.write(cur)
        tables.append(cur.execute("SELECT * FROM pending").fetchall())
        conn.close()
    assert tables[0] == tables[1]
