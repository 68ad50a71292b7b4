"""The ledger in a witnessed community (docs/witness.md §6.1).

* An accept waits for its transfer's certificate, a reclaim for its
  decline's; a certificate releases them; an honest node refuses to sign
  either before (``not_final``).
* Counted balances are final balances: credit from an uncertified entry
  never counts, and a forker's second branch changes nothing.
* Whatever order entries and certificates arrive in, every node ends in the
  same state, on the in-memory backend and on the SQLite store alike.
* Certificates that do not verify are refused; two for one position are
  kept as a witness fault.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import WITNESS_KEYS, World, certify, key, witnessed_world
from troc.errors import RefusedError
from troc.node.store import SCHEMA_VERSION, Store
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import Accept, Transfer
from troc.protocol.ledger import Ledger, Reason, Status
from troc.protocol.witness import WitnessRules

WKEYS = WITNESS_KEYS


def world(credit_limit: int = 100) -> World:
    return witnessed_world(certified=False, credit_limit=credit_limit)


class History:
    """A payment and its acceptance, made by a node that certifies all it makes."""

    def __init__(self) -> None:
        self.w = world()
        self.w.certifier = certify
        self.a, self.b = key(1), key(2)
        self.j1, self.j2 = self.w.join(self.a), self.w.join(self.b)
        self.t = self.w.pay(self.a, self.b, 30)
        self.acc = self.w.accept(self.b, self.t)
        self.t2 = self.w.pay(self.b, self.a, 5)
        self.d = self.w.decline(self.a, self.t2)
        self.r = self.w.reclaim(self.b, self.d)
        self.entries = [self.j1, self.j2, self.t, self.acc, self.t2, self.d, self.r]

    def items(self) -> list[tuple[str, bytes]]:
        """Every entry and every entry's certificate, as things to deliver."""
        out: list[tuple[str, bytes]] = [("genesis", self.w.genesis.wire)]
        for e in self.entries:
            out += [("entry", e.wire), ("cert", certify(e))]
        return out


def deliver(ledger: Ledger, kind: str, data: bytes, now: int) -> Any:
    if kind == "cert":
        return ledger.ingest_certificate(data, now)
    return ledger.ingest(data, now)


def state(ledger: Ledger, h: History) -> Any:
    c = h.w.community
    return list(ledger.backend.heads(c)), list(ledger.balances(c))


# -- the rules, one case each ------------------------------------------------------


def test_an_accept_waits_for_its_transfers_certificate() -> None:
    h = History()
    node = Ledger(MemoryBackend())
    now = h.w.now
    for e in [h.w.genesis, h.j1, h.j2, h.t]:
        assert node.ingest(e.wire, now).ok
    out = node.ingest(h.acc.wire, now)
    assert out.status is Status.WAITING
    assert out.missing == ()
    assert out.missing_final == (h.t.ref,)
    c = h.w.community
    assert node.balance(c, h.b.public) == 0
    got = node.ingest_certificate(certify(h.t), now)
    assert got.status is Status.ACCEPTED
    assert got.final
    assert got.released == (h.acc,)
    # The payer's debit is final; the payee's credit is not, until its accept is.
    assert node.balance(c, h.a.public) == -30
    assert node.balance(c, h.b.public) == 0
    assert node.head(c, h.b.public).balance == 30  # nominal: the accept is stored
    assert node.ingest_certificate(certify(h.acc), now).final
    assert node.balance(c, h.b.public) == 30


def test_a_reclaim_waits_for_its_declines_certificate() -> None:
    h = History()
    node = Ledger(MemoryBackend())
    for e in [h.w.genesis, *h.entries[:-1]]:
        node.ingest(e.wire, h.w.now)
    for e in h.entries[:4]:
        node.ingest_certificate(certify(e), h.w.now)
    out = node.ingest(h.r.wire, h.w.now)
    assert out.status is Status.WAITING
    assert out.missing_final == (h.d.ref,)
    assert node.ingest_certificate(certify(h.d), h.w.now).released == (h.r,)


def test_a_certificate_of_a_later_entry_makes_the_chain_below_final() -> None:
    h = History()
    node = Ledger(MemoryBackend())
    for e in [h.w.genesis, *h.entries]:
        node.ingest(e.wire, h.w.now)
    # Only the payer's transfer t2's certificate... of b's log: t2 is above acc.
    out = node.ingest_certificate(certify(h.t), h.w.now)
    assert out.final
    c = h.w.community
    assert node.is_final(c, h.j1.ref)
    assert node.is_final(c, h.t.ref)
    assert not node.is_final(c, h.acc.ref)


def test_an_honest_node_does_not_sign_an_accept_before_the_certificate() -> None:
    h = History()
    node = Ledger(MemoryBackend())
    for e in [h.w.genesis, h.j1, h.j2, h.t]:
        node.ingest(e.wire, h.w.now)
    with pytest.raises(RefusedError) as info:
        node.prepare(h.b, h.w.community, Accept(transfer=h.t.ref), h.w.now)
    assert info.value.reason == "not_final"
    node.ingest_certificate(certify(h.t), h.w.now)
    assert node.prepare(h.b, h.w.community, Accept(transfer=h.t.ref), h.w.now)


def test_bad_certificates_are_refused() -> None:
    h = History()
    node = Ledger(MemoryBackend())
    node.ingest(h.w.genesis.wire, h.w.now)
    too_few = node.ingest_certificate(certify(h.t, WKEYS[:2]), h.w.now)
    assert too_few.reason is Reason.BAD_CERTIFICATE
    outsider = node.ingest_certificate(certify(h.t, [*WKEYS[:2], key(9)]), h.w.now)
    assert outsider.reason is Reason.BAD_CERTIFICATE
    assert node.ingest_certificate(b"\x93garbage", h.w.now).reason is Reason.BAD_CERTIFICATE
    optimistic = World()
    other = Ledger(MemoryBackend())
    other.ingest(optimistic.genesis.wire, optimistic.now)
    j = optimistic.join(key(1))
    assert other.ingest_certificate(certify(j), h.w.now).reason is Reason.NOT_WITNESSED
    assert node.ingest_certificate(certify(j), h.w.now).reason is Reason.UNKNOWN_COMMUNITY


def test_two_certificates_at_one_position_are_a_witness_fault() -> None:
    w = world()
    a = key(1)
    j = w.join(a)
    t1 = w.pay(a, key(2), 10)
    # The same key signs another entry at seq 2 (a fork), and all four
    # witnesses lie: both get certificates.
    t2 = w.create(
        a, Transfer(to=key(3).public, amount=10), seq=2, prev=j.id
    )  # a fork: another entry at seq 2
    node = Ledger(MemoryBackend())
    for e in [w.genesis, j, t1, t2]:
        node.ingest(e.wire, w.now)
    assert node.ingest_certificate(certify(t1), w.now).final
    out = node.ingest_certificate(certify(t2, WKEYS[1:]), w.now)
    assert out.fault
    assert not out.ok
    backend = node.backend
    assert isinstance(backend, MemoryBackend)
    assert list(backend.witness_faults) == [(w.community, a.public, 2)]
    assert node.balance(w.community, a.public) == -10


def test_a_forkers_second_branch_never_counts() -> None:
    w = world()
    a, b, c = key(1), key(2), key(3)
    j = w.join(a)
    for k in (b, c):
        w.join(k)
    t1 = w.pay(a, b, 60)
    t2 = w.create(a, Transfer(to=c.public, amount=60), seq=2, prev=j.id)  # the fork
    node = Ledger(MemoryBackend())
    for e in [w.genesis, *w.log, t2]:
        node.ingest(e.wire, w.now)
    for e in w.log:
        node.ingest_certificate(certify(e), w.now)
    com = w.community
    assert node.head(com, a.public).frozen_at == 2
    assert node.balance(com, a.public) == -60  # t1 is certified; the fork changes nothing
    # c's node cannot accept t2 (never certified); b's can accept t1.
    assert node.prepare(b, com, Accept(transfer=t1.ref), w.now)
    with pytest.raises(RefusedError):
        node.prepare(c, com, Accept(transfer=t2.ref), w.now)


# -- any arrival order, either backend -----------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_arrival_order_does_not_matter(data: st.DataObject) -> None:
    h = History()
    items = h.items()
    order = [items[0], *data.draw(st.permutations(items[1:]), label="order")]
    order += data.draw(st.lists(st.sampled_from(items), max_size=4), label="again")
    reference = Ledger(MemoryBackend())
    for kind, blob in [items[0], *items[1:]]:  # in order: entry, its certificate
        deliver(reference, kind, blob, h.w.now)
    expected = state(reference, h)
    assert dict(expected[1]) == {h.a.public: -30 + 5 - 5 + 0, h.b.public: 30}
    memory = Ledger(MemoryBackend())
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "s.sqlite")
        try:
            on_disk = Ledger(store)
            for kind, blob in order:
                a = deliver(memory, kind, blob, h.w.now)
                with store.transaction():
                    b = deliver(on_disk, kind, blob, h.w.now)
                assert (a.status, a.reason) == (b.status, b.reason)
            assert state(memory, h) == expected
            assert state(on_disk, h) == expected
            assert store.waiting_count() == 0
        finally:
            store.close()


# -- the store's format ------------------------------------------------------------


def test_a_version_1_store_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    h = History()
    store = Store.open(path)
    ledger = Ledger(store)
    with store.transaction():
        for e in [h.w.genesis, h.j1, h.j2, h.t]:
            ledger.ingest(e.wire, h.w.now)
    store.close()
    # Make it what troc 0.1 wrote: no final columns, no witness tables.
    conn = sqlite3.connect(path)
    for table in ("certificates", "witness_faults", "votes", "final_chain"):
        conn.execute(f"DROP TABLE {table}")
    for column in ("final_seq", "final_id", "final_balance"):
        conn.execute(f"ALTER TABLE logs DROP COLUMN {column}")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    store = Store.open(path)
    try:
        ledger = Ledger(store)
        with store.transaction():
            assert ledger.ingest_certificate(certify(h.t), h.w.now).final
        assert ledger.balance(h.w.community, h.a.public) == -30
        assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
    finally:
        store.close()


def test_witness_rules_follow_the_genesis() -> None:
    h = History()
    node = Ledger(MemoryBackend())
    node.ingest(h.w.genesis.wire, h.w.now)
    rules = node.witness_rules(h.w.community)
    assert rules == WitnessRules.from_genesis(h.w.genesis)
    assert rules is not None
    assert rules.quorum == 3
