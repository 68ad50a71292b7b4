"""A store transaction whose COMMIT runs on another thread
(troc.node._store_commit, Store.transaction_apart, LocalNode.ingesting_apart):

* what the block stored is announced only once the commit has run, and the
  verdicts are those of ``ingesting``;
* a transaction opened while a commit is pending runs it first, so the
  next block reads committed state;
* a COMMIT that fails is rolled back, the store's cached rows forgotten,
  StoreError raised, and the node goes on.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import trio

from tests.helpers import witnessed_world
from tests.node.test_ingesting import _history, _node  # joins, a payment, its accept
from troc.errors import StoreError
from troc.node._store_commit import PendingCommit, committed
from troc.node.store import Store
from troc.protocol.ledger import Status


def _committed(store: Store) -> int:
    """Entries committed, as another connection reads them."""
    with sqlite3.connect(f"file:{store.path}?mode=ro", uri=True) as other:
        return int(other.execute("SELECT count(*) FROM entries").fetchone()[0])


def _fail_next_commit(store: Store) -> None:
    """The open transaction's COMMIT will fail: a deferred foreign key
    left unmet (a temporary table: the store's own are untouched)."""
    conn = store._conn
    conn.execute("INSERT INTO temp.child VALUES (1)")  # no parent 1


def _failable(store: Store) -> None:
    conn = store._conn
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("CREATE TEMP TABLE parent (id INTEGER PRIMARY KEY)")
    conn.execute(
        "CREATE TEMP TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
    )


def test_a_block_commits_on_another_thread_and_is_announced_after() -> None:
    _genesis, entries, certs = _history()
    with _node() as (node, told, _events):
        before = _committed(node.store)
        with node.ingesting_apart() as job:
            taken = node.ingest_certificates(certs)
            outcomes = node.ingest_many([e.wire for e in entries])
        assert told == []
        assert _committed(node.store) == before  # not committed yet
        worker = threading.Thread(target=job.commit)
        worker.start()
        worker.join(10)
        assert _committed(node.store) == before + len(entries)
        assert told == []  # announced by finish, on the node's thread
        job.finish()
        assert [e.id for e in told] == [e.id for e in entries]
    # The same ingests through ingesting: the same verdicts.
    with _node() as (node, _told, _events), node.ingesting():
        alone = node.ingest_certificates(certs)
        each = node.ingest_many([e.wire for e in entries])
    assert [(o.status, o.reason) for o in alone + each] == [
        (o.status, o.reason) for o in taken + outcomes
    ]
    assert [o.status for o in outcomes] == [Status.ACCEPTED] * len(entries)


def test_the_next_transaction_runs_a_pending_commit_first() -> None:
    _genesis, entries, _certs = _history()
    with _node() as (node, told, _events):
        before = _committed(node.store)
        with node.ingesting_apart() as job:
            node.ingest_many([e.wire for e in entries[:2]])
        # Another ingest before anyone ran the commit: it runs it first.
        outcomes = node.ingest_many([entries[2].wire])
        assert outcomes[0].status is Status.ACCEPTED
        assert job.pending is not None
        assert job.pending.done
        assert _committed(node.store) == before + 3
        job.commit()  # nothing left to do
        job.finish()
        assert [e.id for e in told] == [entries[2].id, entries[0].id, entries[1].id]


def test_a_failed_commit_is_rolled_back_forgotten_and_the_node_goes_on() -> None:
    genesis, entries, _certs = _history()
    with _node() as (node, told, _events):
        _failable(node.store)
        before = _committed(node.store)
        with node.ingesting_apart() as job:
            outcomes = node.ingest_many([e.wire for e in entries[:2]])
            _fail_next_commit(node.store)
        assert [o.status for o in outcomes] == [Status.ACCEPTED] * 2
        worker = threading.Thread(target=job.commit)
        worker.start()
        worker.join(10)
        with pytest.raises(StoreError, match="could not commit"):
            job.finish()
        assert told == []
        assert _committed(node.store) == before
        # Nothing of the failed block is believed held (cached rows forgotten):
        assert dict(node.store.heads(genesis.id)) == {}  # type: ignore[arg-type]
        again = node.ingest_many([e.wire for e in entries[:2]])
        assert [o.status for o in again] == [Status.ACCEPTED] * 2
        assert _committed(node.store) == before + 2


def test_a_failed_pending_commit_found_by_the_next_transaction_is_forgotten(
    tmp_path: Path,
) -> None:
    with Store.open(tmp_path / "store.sqlite") as store:
        _failable(store)
        with store.transaction_apart() as pending:
            store.set_meta("colour", "red")
            _fail_next_commit(store)
        with store.transaction():  # runs the pending commit, which fails
            store.set_meta("size", "big")
        assert pending.done
        assert pending.error is not None
        assert store.get_meta("colour") is None
        assert store.get_meta("size") == "big"
        with pytest.raises(StoreError):
            store.settle(pending)


def test_committed_runs_a_pending_commit_on_a_worker_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a control request awaits before it reads (Node.run_op): the
    commit runs off the node's thread, and the request then reads it."""
    _genesis, entries, _certs = _history()
    ran_on: list[int] = []
    run = PendingCommit.run

    def recorded(self: PendingCommit) -> None:
        ran_on.append(threading.get_ident())
        run(self)

    monkeypatch.setattr(PendingCommit, "run", recorded)
    with _node() as (node, _told, _events):
        before = _committed(node.store)
        with node.ingesting_apart() as job:
            node.ingest_many([e.wire for e in entries[:2]])
        assert node.store.pending_commit is not None
        ran_on.clear()
        trio.run(committed, node.store)
        assert node.store.pending_commit is None
        assert ran_on
        assert threading.get_ident() not in ran_on
        assert _committed(node.store) == before + 2
        job.commit()  # nothing left to do
        job.finish()
        trio.run(committed, node.store)  # none pending: returns at once


def test_communities_are_kept_once_read_and_forgotten_on_rollback(tmp_path: Path) -> None:
    """status lists the communities at every call: read once, kept while
    nothing changes them, a join's genesis seen at once, a rolled-back one
    forgotten."""
    genesis, _entries, _certs = _history()
    other = witnessed_world(credit_limit=7).genesis  # another community
    assert other.id != genesis.id
    store = Store.open(tmp_path / "s.db")
    try:
        assert store.communities() == []
        with store.transaction():
            store.put_genesis(genesis)
        assert [g.id for g in store.communities()] == [genesis.id]

        def undone() -> None:
            with store.transaction():
                store.put_genesis(other)
                assert len(store.communities()) == 2  # seen inside the transaction
                raise RuntimeError("undone")

        with pytest.raises(RuntimeError):
            undone()
        assert [g.id for g in store.communities()] == [genesis.id]
        with store.transaction():
            store.put_genesis(other)
        assert sorted(g.id for g in store.communities()) == sorted([genesis.id, other.id])
    finally:
        store.close()
    reader = Store.open(tmp_path / "s.db", read_only=True)
    try:
        assert sorted(g.id for g in reader.communities()) == sorted([genesis.id, other.id])
    finally:
        reader.close()
