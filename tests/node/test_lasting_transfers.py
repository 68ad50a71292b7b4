"""Whether a stored transfer names no expiry (``Backend.lasting_transfer``).

A witnessed final tip passes an accept without the accept's own certificate
only if the accept's transfer never expires (docs/witness.md §6.1), which
took a read and a decode of the transfer at every accept a tip passed: a
newcomer's catch-up passes nearly all of them, after each accept's own
check read the same transfer. The SQLite store keeps the answer of a read
(or of storing the transfer) in memory; its answers must stay those of the
rows: the in-memory backend's, across a reopened store and a rollback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import World, key
from troc.node.store import Store
from troc.protocol.entry import Entry, Ref
from troc.protocol.ledger import Ledger, Status

A, B = key(1), key(2)


def _history() -> tuple[World, Entry, Entry, Entry]:
    """A lasting payment, an expiring one, and an accept of the first."""
    w = World(credit_limit=100)
    w.join(A)
    w.join(B)
    lasting = w.pay(A, B, 5)
    expiring = w.pay(A, B, 6, expires_ms=w.now + 3_600_000)
    accept = w.accept(B, lasting)
    return w, lasting, expiring, accept


def _refs(w: World) -> list[Ref]:
    """Every entry's ref, and refs that name no stored entry: a wrong seq,
    a wrong author, a wrong id."""
    out = [e.ref for e in w.log]
    t = w.log[2].ref  # the lasting payment
    out += [Ref(t.author, t.seq + 9, t.id), Ref(B.public, t.seq, t.id)]
    out.append(Ref(t.author, t.seq, t.id[::-1]))
    return out


def _stored(path: Path, w: World) -> Store:
    store = Store.open(path)
    ledger = Ledger(store)
    with store.transaction():
        assert ledger.ingest(w.genesis.wire, w.now).status is Status.ACCEPTED
        for e in w.log:
            assert ledger.ingest(e.wire, w.now).status is Status.ACCEPTED
    return store


def test_the_store_answers_as_the_memory_backend(tmp_path: Path) -> None:
    w, lasting, expiring, accept = _history()
    expected = {r: w.backend.lasting_transfer(w.community, r) for r in _refs(w)}
    assert expected[lasting.ref] is True
    assert expected[expiring.ref] is False
    assert expected[accept.ref] is False
    assert sum(expected.values()) == 1  # joins, bogus refs: no
    store = _stored(tmp_path / "s.db", w)
    try:
        # Known from storing them, then again after every cache is dropped.
        assert {r: store.lasting_transfer(w.community, r) for r in expected} == expected
        store._forget()
        assert {r: store.lasting_transfer(w.community, r) for r in expected} == expected
    finally:
        store.close()
    reopened = Store.open(tmp_path / "s.db")
    try:
        assert {r: reopened.lasting_transfer(w.community, r) for r in expected} == expected
    finally:
        reopened.close()


def test_a_known_answer_needs_no_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the transfer was read (an accept's check) or stored, the answer
    needs no read, even when the entry has left the cache of entries."""
    w, lasting, _expiring, _accept = _history()
    store = _stored(tmp_path / "s.db", w)
    try:
        store._stored.clear()

        def no_read(*_args: object) -> None:
            raise AssertionError("read the transfer again")

        monkeypatch.setattr(store, "entry", no_read)
        assert store.lasting_transfer(w.community, lasting.ref)
    finally:
        monkeypatch.undo()
        store.close()


def test_a_rolled_back_transfer_is_not_lasting(tmp_path: Path) -> None:
    w, lasting, _expiring, _accept = _history()
    store = Store.open(tmp_path / "s.db")
    ledger = Ledger(store)
    try:

        def undone() -> None:
            with store.transaction():
                assert ledger.ingest(w.genesis.wire, w.now).status is Status.ACCEPTED
                for e in w.log[:3]:  # the joins and the lasting payment
                    assert ledger.ingest(e.wire, w.now).status is Status.ACCEPTED
                assert store.lasting_transfer(w.community, lasting.ref)
                raise RuntimeError("undone")

        with pytest.raises(RuntimeError):
            undone()
        assert not store.lasting_transfer(w.community, lasting.ref)
    finally:
        store.close()
