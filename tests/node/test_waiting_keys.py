"""What the store's waiting set costs while a few entries are parked.

A newcomer's catch-up asks, for every entry it stores and every entry that
becomes final, what waited for it (``take_waiting``), while a few entries
stay parked nearly all along. The store keeps the keys waited for in
memory (troc/node/_store_waiting.py): a key nothing waits for is answered
without a query, and the answers stay those of the rows, across a
rollback and a reopened store.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import T0, World, key
from troc.node.store import Store
from troc.protocol.entry import EntryId
from troc.protocol.ledger import Ledger, Status

A, B = key(1), key(2)


def _parked(tmp_path: Path) -> tuple[World, Store, Ledger, list[bytes]]:
    """A store where B's third entry waits for its second (not delivered)."""
    w = World(A, credit_limit=100)
    w.join(A)
    w.join(B)
    first, second = w.offer(B, "first"), w.offer(B, "second")
    store = Store.open(tmp_path / "s.sqlite")
    ledger = Ledger(store)
    with store.transaction():
        for e in [w.genesis, *w.log]:
            if e is not first:
                assert ledger.ingest(e.wire, T0).status is not Status.REJECTED
    assert store.waiting_count() == 1
    return w, store, ledger, [first.wire, second.wire]


def test_a_key_nothing_waits_for_costs_no_query(tmp_path: Path) -> None:
    w, store, ledger, (first, _second) = _parked(tmp_path)
    try:
        seen: list[str] = []
        store._conn.set_trace_callback(seen.append)
        with store.transaction():
            for seq in range(1, 50):
                assert store.take_waiting((w.community, A.public, seq, EntryId(bytes(32)))) == []
        store._conn.set_trace_callback(None)
        assert [s for s in seen if "waiting_keys" in s] == [
            "SELECT community, author, seq, id FROM waiting_keys"  # once, then in memory
        ]
        with store.transaction():
            assert ledger.ingest(first, T0).released  # the parked one is taken
        assert store.waiting_count() == 0
    finally:
        store.close()


@pytest.mark.parametrize("reopen", [False, True])
def test_a_rolled_back_take_is_taken_again(tmp_path: Path, reopen: bool) -> None:
    _w, store, ledger, (first, second) = _parked(tmp_path)

    def taken_then_rolled_back() -> None:
        with store.transaction():
            assert ledger.ingest(first, T0).released
            assert store.waiting_count() == 0
            raise RuntimeError("roll back")

    try:
        with pytest.raises(RuntimeError, match="roll back"):
            taken_then_rolled_back()
        if reopen:
            store.close()
            store = Store.open(tmp_path / "s.sqlite")
            ledger = Ledger(store)
        assert store.waiting_count() == 1
        with store.transaction():
            outcome = ledger.ingest(first, T0)
        assert outcome.status is Status.ACCEPTED
        assert [e.wire for e in outcome.released] == [second]
        assert store.waiting_count() == 0
    finally:
        store.close()
