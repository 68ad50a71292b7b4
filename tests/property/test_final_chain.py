"""The final chain, on both backends and in any arrival order.

``Ledger.is_final`` answers from each log's final chain, recorded as the
final tip moves (troc/protocol/backend.py), instead of walking back from the
tip. Here a member forks a certified log, entries and certificates arrive in
any order (with rolled-back attempts and a reopened store on the way), and:

* with certificates only on one branch, an entry is final iff it lies on
  that branch at or below the highest certified entry (the oracle), on the
  in-memory backend and on the SQLite store alike;
* with a certificate on the other branch too (more than f witnesses lied:
  which branch wins then depends on arrival order), the two backends still
  agree with each other on every verdict, every final entry and every
  certificate a want would be answered with;
* a store of format 2 (no final chain) is migrated to the same answers.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import World, certify, key, witnessed_world
from troc.errors import StoreError
from troc.node.store import SCHEMA_VERSION, Store
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import Accept, Entry, Offer, Transfer
from troc.protocol.ledger import Ledger
from troc.protocol.sync import certificate_for

A, B = key(1), key(2)


class Forked:
    """``a``'s log: join, then ``length`` offers and transfers to ``b``; a
    second branch of ``branch`` entries from seq ``at``; ``b`` accepts a
    transfer of each branch (only one can ever be final)."""

    def __init__(self, length: int, at: int, branch: int) -> None:
        w: World = witnessed_world(certified=False, credit_limit=1000)
        self.w = w
        self.main: list[Entry] = [w.join(A)]
        b_join = w.join(B)
        for i in range(max(length, 2)):  # at least one transfer
            body: Any = (
                Transfer(to=B.public, amount=1 + i) if i % 2 else Offer(side="offer", title=f"{i}")
            )
            self.main.append(w.add(A, body))
        at = min(at, len(self.main))  # the fork replaces main[at - 1]
        self.other: list[Entry] = []
        prev = self.main[at - 2].id
        for i in range(branch):
            e = w.create(
                A, Transfer(to=B.public, amount=100 + i), seq=at + i, prev=prev
            )  # fmt: skip
            self.other.append(e)
            prev = e.id
        # b accepts a transfer of each branch, the second accept on the first.
        self.b_join = b_join
        self.accepts: list[Entry] = []
        prev = b_join.id
        for t in [self.transfers(self.main)[0], *self.transfers(self.other)[:1]]:
            e = w.create(B, Accept(transfer=t.ref), seq=2 + len(self.accepts), prev=prev)
            self.accepts.append(e)
            prev = e.id

    @staticmethod
    def transfers(entries: list[Entry]) -> list[Entry]:
        return [e for e in entries if isinstance(e.body, Transfer)]

    @property
    def entries(self) -> list[Entry]:
        return [*self.main, self.b_join, *self.other, *self.accepts]


def deliver(ledger: Ledger, item: tuple[str, bytes], now: int) -> Any:
    kind, data = item
    out = ledger.ingest_certificate(data, now) if kind == "cert" else ledger.ingest(data, now)
    return (out.status, out.reason)


class Rollback(Exception):
    pass


@settings(max_examples=40, deadline=None)
@given(
    length=st.integers(2, 10),
    at=st.integers(2, 11),
    branch=st.integers(1, 4),
    lie=st.booleans(),
    cache_entries=st.sampled_from([0, 4096]),
    data=st.data(),
)
def test_final_chain_is_the_same_on_both_backends_in_any_order(
    length: int, at: int, branch: int, lie: bool, cache_entries: int, data: st.DataObject
) -> None:
    f = Forked(length, at, branch)
    w = f.w
    certified = data.draw(
        st.lists(st.sampled_from(f.main), min_size=1, max_size=4, unique_by=lambda e: e.id),
        label="certified",
    )
    certs = [certify(e) for e in certified]
    if lie:  # more than f witnesses lied: a certificate on the other branch too
        certs.append(certify(data.draw(st.sampled_from(f.other), label="lie")))
    items = [("entry", e.wire) for e in f.entries] + [("cert", c) for c in certs]
    order = data.draw(st.permutations(items), label="order")
    now = w.now + 1000
    memory = Ledger(MemoryBackend())
    deliver(memory, ("entry", w.genesis.wire), now)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.sqlite"
        store = Store.open(path, cache_entries=cache_entries)
        try:
            on_disk = Ledger(store)
            with store.transaction():
                deliver(on_disk, ("entry", w.genesis.wire), now)
            for item in order:
                if data.draw(st.integers(0, 5), label="rollback") == 0:
                    try:
                        with store.transaction():
                            deliver(on_disk, item, now)
                            raise Rollback
                    except Rollback:
                        pass
                expected = deliver(memory, item, now)
                with store.transaction():
                    assert deliver(on_disk, item, now) == expected
                if data.draw(st.integers(0, 9), label="reopen") == 0:
                    store.close()
                    store = Store.open(path, cache_entries=cache_entries)
                    on_disk = Ledger(store)
            c = w.community
            everything = [e.ref for e in f.entries]
            final_mem = [memory.is_final(c, r) for r in everything]
            assert [on_disk.is_final(c, r) for r in everything] == final_mem
            assert [certificate_for(on_disk, c, r) for r in everything] == [
                certificate_for(memory, c, r) for r in everything
            ]
            assert list(store.heads(c)) == list(memory.backend.heads(c))
            assert list(on_disk.balances(c)) == list(memory.balances(c))
            if not lie:
                top = max(e.seq for e in certified)
                oracle = {e.ref for e in f.main if e.seq <= top}
                assert {r for r, fin in zip(everything, final_mem, strict=True) if fin} == oracle
                # Each final entry is answered with a certificate that makes it final.
                for r in oracle:
                    cert = certificate_for(memory, c, r)
                    assert cert is not None
                    assert cert in certs
        finally:
            store.close()


def test_a_version_2_store_is_migrated(tmp_path: Path) -> None:
    """A store written before the final chain existed answers as a new one."""
    f = Forked(length=8, at=3, branch=3)
    w = f.w
    path = tmp_path / "s.sqlite"
    store = Store.open(path)
    ledger = Ledger(store)
    with store.transaction():
        ledger.ingest(w.genesis.wire, w.now)
        for e in f.entries:
            ledger.ingest(e.wire, w.now)
        assert ledger.ingest_certificate(certify(f.main[6]), w.now).final
    c = w.community
    refs = [e.ref for e in f.entries]
    before = [ledger.is_final(c, r) for r in refs]
    assert before == [e in f.main[:7] for e in f.entries]
    store.close()
    conn = sqlite3.connect(path)  # what format 2 held: no final chain
    conn.execute("DROP TABLE final_chain")
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    store = Store.open(path)
    try:
        assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
        ledger = Ledger(store)
        assert [ledger.is_final(c, r) for r in refs] == before
        # And the chain goes on growing from there.
        with store.transaction():
            assert ledger.ingest_certificate(certify(f.main[-1]), w.now).final
        assert all(ledger.is_final(c, e.ref) for e in f.main)
        assert not any(ledger.is_final(c, e.ref) for e in f.other)
        assert store.integrity_check() == "ok"
    finally:
        store.close()


def test_a_damaged_version_2_store_is_refused_not_half_migrated(tmp_path: Path) -> None:
    f = Forked(length=4, at=2, branch=1)
    path = tmp_path / "s.sqlite"
    with Store.open(path) as store:
        ledger = Ledger(store)
        with store.transaction():
            ledger.ingest(f.w.genesis.wire, f.w.now)
            for e in f.entries:
                ledger.ingest(e.wire, f.w.now)
            assert ledger.ingest_certificate(certify(f.main[3]), f.w.now).final
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE final_chain")
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.execute("DELETE FROM entries WHERE seq = 3 AND id = ?", (f.main[2].id,))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="damaged"):
        Store.open(path)
    conn = sqlite3.connect(path)  # rolled back: still format 2
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    conn.close()
    assert version == ("2",)
