"""``Store.entry_count`` (``troc status``, the metrics) costs no query once
counted: a node polled while it takes a long history does not pay more per
call as the history grows. The count stays right across rollbacks, forks,
duplicates and reopening."""

from __future__ import annotations

from pathlib import Path

from tests.node.test_store import KEYS, Rollback, community
from troc.node.store import Store
from troc.protocol.entry import Join, Offer
from troc.protocol.ledger import Ledger


def _counted(store: Store) -> int:
    """Every row, counted."""
    row = store._conn.execute("SELECT count(*) FROM entries").fetchone()
    return int(row[0])


def test_entry_count_is_kept_not_recounted(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    with Store.open(path) as store:
        b = community(store)
        b.add(0, Join(name="n0"))
        b.add(1, Join(name="n1"))
        for i in range(30):
            b.add(i % 2, Offer(side="offer", title=f"offer {i}"))
        b.fork(0)  # a second entry at one seq is stored, and counted
        assert store.entry_count(b.community) == _counted(store) == 33
        steps = 0

        def step() -> int:
            nonlocal steps
            steps += 1
            return 0

        for i in range(30):
            b.add(1, Offer(side="want", title=f"more {i}"))
        store._conn.set_progress_handler(step, 1)
        assert store.entry_count(b.community) == 63
        store._conn.set_progress_handler(None, 1)
        assert steps == 0  # no statement ran: the count was kept
        # A duplicate is not stored again; a rolled back entry is not counted.
        ledger = Ledger(store)
        entry = b.ledger.prepare(
            KEYS[1],
            b.community,
            Offer(side="offer", title="rolled back"),
            b.now + 1000,
        )
        try:
            with store.transaction():
                assert ledger.ingest_entry(entry, b.now + 1000).ok
                assert store.entry_count(b.community) == 64
                raise Rollback
        except Rollback:
            pass
        assert store.entry_count(b.community) == _counted(store) == 63
        with store.transaction():
            assert ledger.ingest_entry(entry, b.now + 1000).ok
            ledger.ingest_entry(entry, b.now + 1000)  # a duplicate
        assert store.entry_count(b.community) == _counted(store) == 64
    with Store.open(path) as store:
        assert store.entry_count(b.community) == 64
