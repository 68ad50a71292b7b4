"""The SQLite store: same verdicts as the reference backend, durable, atomic.

* ``test_store_equals_memory_backend``: hypothesis drives a ledger on
  :class:`MemoryBackend` and one on :class:`Store` with the same random
  sequence of valid and invalid entries (delivered in random order, with
  duplicates, forks, rollbacks and reopens) and checks every outcome, head,
  balance, fork proof and waiting count is the same.
* reopen, rollback, queries, locking and bad files, one test each.
* ``test_crash_*``: a writer process is killed at random moments; every entry
  it acknowledged must survive, and the store must stay consistent.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from troc.crypto.sign import MemberId, SigningKey
from troc.errors import LocalProtocolError, RefusedError, StoreError
from troc.node import _schema
from troc.node.store import SCHEMA_VERSION, Store, TransferState
from troc.protocol.backend import MemoryBackend, WaitLimits
from troc.protocol.entry import (
    Accept,
    AnyBody,
    CommunityId,
    Decline,
    Entry,
    EntryId,
    Genesis,
    Join,
    Kind,
    Offer,
    OfferClose,
    Reclaim,
    Ref,
    Transfer,
    Vouch,
)
from troc.protocol.ledger import Ledger, Outcome, Status

T0 = 1_700_000_000_000
CREDIT_LIMIT = 100
CEILING = 250


def key(n: int) -> SigningKey:
    return SigningKey(hashlib.sha256(b"troc store test key %d" % n).digest())


KEYS = [key(n) for n in range(5)]  # key 0 founds the community


def genesis(**rules: Any) -> Entry:
    rules.setdefault("name", "Store valley")
    rules.setdefault("unit", "hour")
    rules.setdefault("credit_limit", CREDIT_LIMIT)
    return Entry.create(
        KEYS[0], community=None, seq=0, prev=None, timestamp_ms=T0, body=Genesis(**rules)
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "store.sqlite") as s:
        yield s


# -- building entries ------------------------------------------------------------


class Builder:
    """Makes entries for a test: valid ones through ``Ledger.prepare`` on a
    reference ledger, and when the ledger refuses, the same entry signed
    anyway at the author's next position (so the ledgers under test see
    invalid entries too). Every entry made is ingested by the reference
    ledger, in order, so the next one builds on it."""

    def __init__(self, **rules: Any) -> None:
        self.ledger = Ledger(MemoryBackend())
        self.genesis = genesis(**rules)
        self.community = CommunityId(self.genesis.id)
        self.now = T0
        self.wires: list[bytes] = [self.genesis.wire]
        self.made: dict[str, list[Entry]] = {}
        assert self.ledger.ingest(self.genesis.wire, T0).ok

    def add(self, n: int, body: AnyBody, *, force: bool = True, ts: int | None = None) -> Entry:
        signer = KEYS[n]
        self.now += 1000
        now = self.now if ts is None else ts
        try:
            entry = self.ledger.prepare(signer, self.community, body, now)
        except RefusedError:
            if not force:
                raise
            head = self.ledger.head(self.community, signer.public)
            entry = Entry.create(
                signer,
                community=self.community,
                seq=1 if head is None else head.seq + 1,
                prev=None if head is None else head.id,
                timestamp_ms=now,
                body=body,
            )
        return self._keep(entry)

    def fork(self, n: int) -> Entry | None:
        """A second entry at ``n``'s head seq, beside the one stored."""
        head = self.ledger.head(self.community, KEYS[n].public)
        if head is None:
            return None
        first = self.ledger.backend.entry(self.community, KEYS[n].public, head.seq, head.id)
        assert first is not None
        self.now += 1000
        entry = Entry.create(
            KEYS[n],
            community=self.community,
            seq=head.seq,
            prev=first.entry.prev,
            timestamp_ms=self.now,
            body=Offer(side="want", title=f"fork {self.now}"),
        )
        return self._keep(entry)

    def _keep(self, entry: Entry) -> Entry:
        self.ledger.ingest_entry(entry, self.now)
        self.made.setdefault(entry.kind.value, []).append(entry)
        self.wires.append(entry.wire)
        return entry

    def pick(self, kind: str, k: int) -> Entry | None:
        found = self.made.get(kind, [])
        return found[k % len(found)] if found else None


OPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "join",
                "offer",
                "close",
                "pay",
                "pay",
                "pay",
                "accept",
                "accept",
                "decline",
                "reclaim",
                "vouch",
                "fork",
                "fork",
                "future",
                "garbage",
            ]
        ),
        st.integers(0, len(KEYS) - 1),
        st.integers(0, 50),
        st.integers(1, 160),
    ),
    min_size=8,
    max_size=50,
)


def build(ops: list[tuple[str, int, int, int]]) -> Builder:
    b = Builder(ceiling=CEILING)
    for n in range(len(KEYS) - 1):  # the last member joins only if an op says so
        b.add(n, Join(name=f"member {n}"))
    for op, n, k, amount in ops:
        if op == "join":
            b.add(n, Join(name=f"member {n}"))
        elif op == "offer":
            tags = tuple(sorted({("bread", "bike", "eggs")[k % 3], "local"}))
            b.add(n, Offer(side=("offer", "want")[k % 2], title=f"thing {k}", tags=tags))
        elif op == "close":
            mine = [o for o in b.made.get("offer", []) if o.author == KEYS[n].public]
            offer = mine[k % len(mine)] if mine and k % 4 else b.pick("offer", k)
            if offer is not None:
                b.add(n, OfferClose(offer=offer.ref))
        elif op == "pay":
            to = KEYS[(n + 1 + k) % len(KEYS)] if k % 7 else KEYS[n]  # sometimes itself
            b.add(n, Transfer(to=to.public, amount=amount, memo=f"#{k}"))
        elif op in ("accept", "decline"):
            mine = [t for t in b.made.get("transfer", []) if t.body.to == KEYS[n].public]  # type: ignore[union-attr]
            t = mine[k % len(mine)] if mine and k % 4 else b.pick("transfer", k)
            if t is not None:
                body = Accept(transfer=t.ref) if op == "accept" else Decline(transfer=t.ref)
                b.add(n, body)
        elif op == "reclaim":
            mine = [
                d for d in b.made.get("decline", []) if d.body.transfer.author == KEYS[n].public
            ]  # type: ignore[union-attr]
            d = mine[k % len(mine)] if mine and k % 4 else b.pick("decline", k)
            if d is not None:
                b.add(n, Reclaim(decline=d.ref))
        elif op == "vouch":
            b.add(n, Vouch(member=KEYS[(n + 1 + k) % len(KEYS)].public))
        elif op == "fork":
            b.fork(n)
        elif op == "future":
            b.add(n, Offer(side="offer", title="later"), ts=T0 + 10**9)
        elif op == "garbage":
            b.wires.append(hashlib.sha256(b"%d" % k).digest()[: 1 + k % 30])
    return b


def summary(outcome: Outcome) -> tuple[Any, ...]:
    return (
        outcome.status,
        outcome.reason,
        None if outcome.entry is None else outcome.entry.id,
        outcome.missing,
        tuple(e.id for e in outcome.released),
        outcome.fork,
    )


#: Bounds small enough that a short run meets each of them.
TINY_LIMITS = WaitLimits(members=3, strangers=1, per_author=2, per_peer=2, lifetime_ms=60_000)


def waiting_wires(store: Store) -> list[bytes]:
    return [row[0] for row in store._conn.execute("SELECT wire FROM waiting")]


class Rollback(Exception):
    pass


def rolled_back(
    store: Store, ledger: Ledger, wire: bytes, now: int, source: str | None = None
) -> Outcome:
    """Ingest ``wire`` in a transaction that then fails; return the outcome."""
    try:
        with store.transaction():
            outcome = ledger.ingest(wire, now, source=source)
            raise Rollback(outcome)
    except Rollback as exc:
        return exc.args[0]  # type: ignore[no-any-return]


@given(
    ops=OPS,
    data=st.data(),
    cache_entries=st.sampled_from([0, 1, 4096]),
    limits=st.sampled_from([TINY_LIMITS, WaitLimits()]),
)
def test_store_equals_memory_backend(
    ops: list[tuple[str, int, int, int]],
    data: st.DataObject,
    cache_entries: int,
    limits: WaitLimits,
) -> None:
    b = build(ops)
    n = len(b.wires)
    order = list(range(n))
    how = data.draw(st.sampled_from(["in order", "some late", "any order"]), label="delivery")
    if how == "some late":  # entries that arrive after some that depend on them
        for i in data.draw(st.lists(st.integers(0, n - 1), max_size=8), label="late"):
            order.remove(i)
            order.insert(data.draw(st.integers(order.index(i - 1) + 1 if i else 0, len(order))), i)
    elif how == "any order":  # but the genesis first: else most are simply unknown
        order = [0, *data.draw(st.permutations(order[1:]), label="order")]
    order += data.draw(st.lists(st.integers(0, n - 1), max_size=5), label="again")
    now = b.now + 1000
    memory = Ledger(MemoryBackend(limits))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.sqlite"
        store = Store.open(path, cache_entries=cache_entries, waiting=limits)
        try:
            ledger = Ledger(store)
            for i in order:
                wire = b.wires[i]
                # Sometimes the clock moves past a parked entry's lifetime,
                # and each entry comes from one of a few peers (or none).
                now += data.draw(st.sampled_from([0, 0, 0, limits.lifetime_ms]), label="later")
                source = data.draw(st.sampled_from([None, "p", "q"]), label="source")
                outcome = memory.ingest(wire, now, source=source)
                expected = summary(outcome)
                event(f"{outcome.status.value} {outcome.reason or ''}".strip())
                if outcome.released:
                    event("released waiting entries")
                if outcome.fork:
                    event("fork")
                if data.draw(st.integers(0, 9), label="rollback") == 0:
                    assert summary(rolled_back(store, ledger, wire, now, source)) == expected
                with store.transaction():
                    assert summary(ledger.ingest(wire, now, source=source)) == expected
                if data.draw(st.integers(0, 19), label="reopen") == 0:
                    store.close()
                    store = Store.open(path, cache_entries=cache_entries, waiting=limits)
                    ledger = Ledger(store)
            c = b.community
            assert list(store.heads(c)) == list(memory.backend.heads(c))
            assert list(ledger.balances(c)) == list(memory.balances(c))
            backend = memory.backend
            assert isinstance(backend, MemoryBackend)
            assert store.forks(c) == sorted(
                (a, seq, first, second) for (_, a, seq), (first, second) in backend.forks.items()
            )
            assert store.waiting_count() == backend.waiting_count()
            assert sorted(waiting_wires(store)) == sorted(backend.waiting_wires())
            assert store.integrity_check() == "ok"
        finally:
            store.close()


# -- a small community, for the query tests ---------------------------------------


def community(store: Store, **rules: Any) -> Builder:
    """A builder whose every entry is also stored in ``store``."""
    b = Builder(**rules)
    ledger = Ledger(store)
    with store.transaction():
        assert ledger.ingest(b.genesis.wire, b.now).ok
    original = b._keep

    def keep(entry: Entry) -> Entry:
        original(entry)
        with store.transaction():
            ledger.ingest_entry(entry, b.now)
        return entry

    b._keep = keep  # type: ignore[method-assign]
    return b


def everything(store: Store, c: CommunityId) -> dict[str, Any]:
    """What the store answers about ``c``, for before/after comparisons."""
    members = [m for m, _ in store.heads(c)]
    return {
        "heads": list(store.heads(c)),
        "count": store.entry_count(c),
        "forks": store.forks(c),
        "communities": [g.id for g in store.communities()],
        "logs": {m: [(s.entry.id, s.balance, s.limit) for s in store.log(c, m)] for m in members},
        "since": {m: store.entries_since(c, m, 0) for m in members},
        "history": {m: [e.id for e in store.history(c, m, limit=1000)] for m in members},
        "pending_in": {m: [e.id for e in store.pending_in(c, m)] for m in members},
        "pending_out": {m: [(e.id, s) for e, s in store.pending_out_states(c, m)] for m in members},
        "offers": [(e.id, closed) for e, closed in store.offers(c, include_closed=True)],
        "waiting": store.waiting_count(),
    }


def busy_community(store: Store) -> tuple[Builder, list[Ref]]:
    """Joins, an offer closed, transfers accepted, declined and reclaimed or
    left open, a fork and a parked entry; returns the builder and the transfers."""
    b = community(store)
    for n in range(4):
        b.add(n, Join())
    offer = b.add(1, Offer(side="offer", title="Sourdough bread", tags=("bread",)))
    t1 = b.add(0, Transfer(to=KEYS[1].public, amount=30, memo="bread", offer=offer.ref))
    t2 = b.add(2, Transfer(to=KEYS[1].public, amount=5))
    b.add(1, Accept(transfer=t1.ref))
    d = b.add(1, Decline(transfer=t2.ref))
    b.add(2, Reclaim(decline=d.ref))
    t3 = b.add(3, Transfer(to=KEYS[0].public, amount=7))
    b.add(1, OfferClose(offer=offer.ref))
    b.fork(3)
    # An entry whose prev is unknown waits, and the wait survives a reopen.
    stray = Entry.create(
        KEYS[2],
        community=b.community,
        seq=9,
        prev=b"\x01" * 32,
        timestamp_ms=b.now,
        body=Join(),
    )
    with store.transaction():
        assert Ledger(store).ingest(stray.wire, b.now).status is Status.WAITING
    return b, [t1.ref, t2.ref, t3.ref]


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    with Store.open(path) as store:
        b, _ = busy_community(store)
        store.set_meta("default_community", b.community.hex())
        before = everything(store, b.community)
    with Store.open(path) as store:
        assert everything(store, b.community) == before
        assert store.get_meta("default_community") == b.community.hex()
        assert before["waiting"] == 1
        assert before["forks"]
        ledger = Ledger(store)
        assert ledger.balance(b.community, KEYS[1].public) == 30
        assert ledger.balance(b.community, KEYS[0].public) == -30


def table_counts(store: Store) -> dict[str, int]:
    conn = store._conn
    tables = [
        r[0]
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not r[0].startswith(("offers_fts_", "sqlite_"))
    ]
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


def test_rollback_leaves_nothing_half_written(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = community(store)
    b.add(0, Join())
    b.add(1, Join())
    before, counts = everything(store, b.community), table_counts(store)
    ledger = Ledger(store)
    t = Entry.create(
        KEYS[0],
        community=b.community,
        seq=2,
        prev=store.head(b.community, KEYS[0].public).id,  # type: ignore[union-attr]
        timestamp_ms=b.now,
        body=Transfer(to=KEYS[1].public, amount=10),
    )
    # An exception in the caller's block after the ledger wrote.
    assert rolled_back(store, ledger, t.wire, b.now).status is Status.ACCEPTED
    assert everything(store, b.community) == before
    assert table_counts(store) == counts
    # A failure in the middle of the store's own writes (the offer index).
    offer = Entry.create(
        KEYS[0],
        community=b.community,
        seq=2,
        prev=t.prev,
        timestamp_ms=b.now,
        body=Offer(side="offer", title="Eggs"),
    )

    def broken(*args: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "_index_offer", broken)
    with pytest.raises(StoreError, match="disk I/O error"), store.transaction():
        ledger.ingest_entry(offer, b.now)
    monkeypatch.undo()
    assert everything(store, b.community) == before
    assert table_counts(store) == counts
    # And the store goes on as if nothing happened.
    with store.transaction():
        assert ledger.ingest_entry(t, b.now).status is Status.ACCEPTED
    assert ledger.balance(b.community, KEYS[0].public) == -10


def test_transactions_are_required_and_do_not_nest(store: Store) -> None:
    g = genesis()
    with pytest.raises(LocalProtocolError, match=r"inside store\.transaction"):
        store.put_genesis(g)
    with pytest.raises(LocalProtocolError, match=r"inside store\.transaction"):
        Ledger(store).ingest(g.wire, T0)
    with store.transaction(), pytest.raises(LocalProtocolError, match="nest"), store.transaction():
        pass
    with store.transaction(durable=True):
        store.put_genesis(g)
    assert [e.id for e in store.communities()] == [g.id]
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL again


def test_offers_search(store: Store) -> None:
    b = community(store)
    for n in range(3):
        b.add(n, Join())
    bike = b.add(
        1,
        Offer(
            side="offer",
            title="Réparation de vélos",
            description="I fix bikes and tune gears",
            tags=("Bike", "repair"),
        ),
    )
    bread = b.add(2, Offer(side="offer", title="Sourdough bread", tags=("bread", "food")))
    want = b.add(0, Offer(side="want", title="Someone to fix my bike", tags=("bike",)))
    c = b.community

    def ids(**kw: Any) -> list[EntryId]:
        return [e.id for e, _ in store.offers(c, **kw)]

    assert ids() == [want.id, bread.id, bike.id]  # newest first
    assert ids(text="velo") == [bike.id]  # accents ignored
    assert ids(text="BIKE") == [bike.id, want.id] or ids(text="BIKE") == [want.id, bike.id]
    assert ids(text="bik fix") == ids(text="bike fix")  # words are prefixes
    assert set(ids(text="bike fix")) == {bike.id, want.id}
    assert ids(text="gears") == [bike.id]
    assert ids(text='"; DROP TABLE offers; --') == []  # no FTS or SQL syntax gets through
    assert ids(text="!!!") == []
    assert ids(tag="bike") == [want.id, bike.id]  # exact tag, case ignored
    assert ids(tag="bik") == []
    assert ids(side="want") == [want.id]
    assert ids(author=KEYS[2].public) == [bread.id]
    assert ids(tag="bike", side="offer") == [bike.id]
    assert ids(limit=1) == [want.id]
    b.add(1, OfferClose(offer=bike.ref))
    assert ids(text="bike") == [want.id]
    found = dict(store.offers(c, text="bike", include_closed=True))
    assert {e.id: closed for e, closed in found.items()} == {bike.id: True, want.id: False}
    soon = b.add(2, Offer(side="offer", title="Strawberries", expires_ms=T0 + 10**6))
    assert soon.id in ids()
    assert soon.id not in ids(now_ms=T0 + 10**6)


def test_pending_and_transfer_states(store: Store) -> None:
    b = community(store)
    for n in range(3):
        b.add(n, Join())
    c, p0, p1 = b.community, KEYS[0].public, KEYS[1].public
    t1 = b.add(0, Transfer(to=p1, amount=10))
    t2 = b.add(0, Transfer(to=p1, amount=20))
    t3 = b.add(0, Transfer(to=KEYS[2].public, amount=30))
    assert [e.id for e in store.pending_in(c, p1)] == [t1.id, t2.id]
    assert [e.id for e in store.pending_out(c, p0)] == [t1.id, t2.id, t3.id]
    assert store.pending_in(c, p0) == []
    assert store.pending_out(c, p1) == []
    b.add(1, Accept(transfer=t1.ref))
    d = b.add(1, Decline(transfer=t2.ref, reason="no thanks"))
    assert store.pending_in(c, p1) == []
    assert [(e.id, s) for e, s in store.pending_out_states(c, p0)] == [
        (t2.id, TransferState.DECLINED),
        (t3.id, TransferState.OPEN),
    ]
    assert store.decline_of(c, t2.ref) == d.ref
    assert store.decline_of(c, t1.ref) is None
    assert store.transfer_state(c, p0, t1.seq, t1.id) is TransferState.ACCEPTED
    assert store.transfer_state(c, p0, t2.seq, t2.id) is TransferState.DECLINED
    b.add(0, Reclaim(decline=d.ref))
    assert [e.id for e in store.pending_out(c, p0)] == [t3.id]
    assert store.transfer_state(c, p0, t2.seq, t2.id) is TransferState.RECLAIMED
    assert store.transfer_state(c, p0, t3.seq, t3.id) is TransferState.OPEN
    assert store.transfer_state(c, p0, 1, t3.id) is None
    assert Ledger(store).balance(c, p0) == -40
    assert Ledger(store).balance(c, p1) == 10


@pytest.mark.parametrize("cache_entries", [0, 4096])
def test_second_answers_are_refused(tmp_path: Path, cache_entries: int) -> None:
    """What the store's caches shortcut (no reference row yet) stays exact."""
    with Store.open(tmp_path / "store.sqlite", cache_entries=cache_entries) as store:
        b = community(store)
        b.add(0, Join())
        b.add(1, Join())
        ledger = Ledger(store)
        t1 = b.add(0, Transfer(to=KEYS[1].public, amount=10))
        t2 = b.add(0, Transfer(to=KEYS[1].public, amount=20))
        offer = b.add(0, Offer(side="offer", title="Soup"))
        b.add(1, Accept(transfer=t1.ref))
        d = b.add(1, Decline(transfer=t2.ref))
        b.add(0, Reclaim(decline=d.ref))
        b.add(0, OfferClose(offer=offer.ref))
        for n, body, reason in [
            (1, Accept(transfer=t1.ref), "already_answered"),
            (1, Decline(transfer=t1.ref), "already_answered"),
            (1, Accept(transfer=t2.ref), "already_answered"),
            (0, Reclaim(decline=d.ref), "already_reclaimed"),
            (0, OfferClose(offer=offer.ref), "already_closed"),
        ]:
            head = store.head(b.community, KEYS[n].public)
            assert head is not None
            entry = Entry.create(
                KEYS[n],
                community=b.community,
                seq=head.seq + 1,
                prev=head.id,
                timestamp_ms=b.now,
                body=body,
            )
            with store.transaction():
                outcome = ledger.ingest_entry(entry, b.now)
            assert outcome.status is Status.REJECTED
            assert outcome.reason == reason


def test_history_pages(store: Store) -> None:
    b = community(store)
    for n in range(3):
        b.add(n, Join())
    c, p1 = b.community, KEYS[1].public
    # Entries of member 1 and transfers to it, several stamped the same ms.
    b.now = T0 + 10**6 + 20_000
    for i in range(12):
        ts = T0 + 10**6 + (i // 3) * 1000
        if i % 2:
            b.add(1, Offer(side="offer", title=f"offer {i}"), ts=ts)
        else:
            b.add(i % 4 // 2 * 2, Transfer(to=p1, amount=1, memo=f"{i}"), ts=ts)
    b.add(2, Transfer(to=KEYS[0].public, amount=1))  # not member 1's business
    everything_ = store.history(c, p1, limit=100)
    keys = [(e.timestamp_ms, e.id) for e in everything_]
    assert keys == sorted(keys, reverse=True)
    expected = [
        e
        for e in (Entry.decode(w) for w in b.wires[1:])
        if e.author == p1 or (isinstance(e.body, Transfer) and e.body.to == p1)
    ]
    assert {e.id for e in everything_} == {e.id for e in expected}
    # Page by (timestamp, id): every entry exactly once.
    pages: list[EntryId] = []
    cursor: tuple[int, EntryId] | None = None
    while True:
        page = (
            store.history(c, p1, limit=5)
            if cursor is None
            else store.history(c, p1, before_ts=cursor[0], before_id=cursor[1], limit=5)
        )
        if not page:
            break
        assert len(page) <= 5
        pages += [e.id for e in page]
        cursor = (page[-1].timestamp_ms, page[-1].id)
    assert pages == [e.id for e in everything_]
    # A timestamp alone: strictly older.
    older = store.history(c, p1, before_ts=T0 + 10**6 + 2000, limit=100)
    assert [e.id for e in older] == [
        e.id for e in everything_ if e.timestamp_ms < T0 + 10**6 + 2000
    ]
    assert store.history(c, KEYS[4].public) == []


def test_log_follows_first_branch_and_forks(store: Store) -> None:
    b = community(store)
    b.add(0, Join())
    b.add(1, Join())
    first = [b.add(1, Offer(side="offer", title=f"o{i}")) for i in range(3)]
    other = b.fork(1)
    assert other is not None
    after = b.add(1, Offer(side="offer", title="after the fork"))  # extends the first branch
    c, p1 = b.community, KEYS[1].public
    log = store.log(c, p1)
    assert [s.entry.seq for s in log] == [1, 2, 3, 4, 5]
    assert log[3].entry.id == first[2].id
    assert log[4].entry.id == after.id
    assert [s.entry.id for s in store.log(c, p1, after_seq=3)] == [first[2].id, after.id]
    assert [s.entry.id for s in store.log(c, p1, limit=2)] == [log[0].entry.id, log[1].entry.id]
    assert len(store.entries_since(c, p1, 0)) == 6  # both branches
    assert store.entries_since(c, p1, 4) == [after.wire]
    assert [(a, s) for a, s, _, _ in store.forks(c)] == [(p1, 4)]
    head = store.head(c, p1)
    assert head is not None
    assert head.frozen_at == 4
    assert store.entry_count(c) == 7
    assert store.log(c, KEYS[3].public) == []


def test_meta(store: Store) -> None:
    assert store.get_meta("x") is None
    store.set_meta("x", "1")
    with store.transaction():
        store.set_meta("x", "2")
        store.set_meta("y", "3")
    assert (store.get_meta("x"), store.get_meta("y")) == ("2", "3")
    with pytest.raises(LocalProtocolError):
        store.set_meta("schema_version", "99")


# -- opening ---------------------------------------------------------------------


def test_second_open_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    with Store.open(path):
        with pytest.raises(StoreError, match="in use by another troc process"):
            Store.open(path)
        # Another process too (flock is per open file, so this is the same check).
        code = (
            "import sys; from pathlib import Path; from troc.node.store import Store\n"
            "from troc.errors import StoreError\n"
            "try:\n    Store.open(Path(sys.argv[1]))\n"
            "except StoreError as e:\n    print(e); sys.exit(3)\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 3, proc.stderr
        assert "in use" in proc.stdout
    with Store.open(path) as store:  # free again once closed
        assert store.communities() == []


def test_refuses_files_that_are_not_troc_stores(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"this is not a database, just some bytes" * 100)
    with pytest.raises(StoreError, match="not a troc store"):
        Store.open(junk)
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a troc store"):
        Store.open(other)
    with pytest.raises(StoreError, match="cannot open"):
        Store.open(tmp_path / "missing-dir" / "store.sqlite")


def test_refuses_a_newer_format(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this troc"):
        Store.open(path)


def _answers(store: Store, b: Builder, transfers: list[Ref]) -> dict[str, Any]:
    c = b.community
    return {
        **everything(store, c),
        "states": [store.transfer_state(c, t.author, t.seq, t.id) for t in transfers],
        "declines": [store.decline_of(c, t) for t in transfers],
        "refs_to": [
            store.refs_to(c, t.author, kind, 0, None)
            for t in transfers
            for kind in (Kind.ACCEPT, Kind.DECLINE)
        ],
    }


def test_a_format_6_store_is_migrated_to_rowid_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Format 7 keeps entries in a rowid table; a format 6 store (entries
    WITHOUT ROWID) is rebuilt on open and answers every query the same."""
    path = tmp_path / "store.sqlite"
    with Store.open(path) as store:
        b, transfers = busy_community(store)
        before = _answers(store, b, transfers)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute(
        "CREATE TABLE entries_6 (lid INTEGER NOT NULL, seq INTEGER NOT NULL, id BLOB NOT NULL,"
        " kind TEXT NOT NULL, ts INTEGER NOT NULL, balance INTEGER NOT NULL,"
        " lim INTEGER NOT NULL, target_lid INTEGER, target_seq INTEGER, target_id BLOB,"
        " amount INTEGER, wire BLOB NOT NULL, PRIMARY KEY (lid, seq, id)) WITHOUT ROWID"
    )
    conn.execute("INSERT INTO entries_6 SELECT * FROM entries")
    conn.execute("DROP TABLE entries")
    conn.execute("ALTER TABLE entries_6 RENAME TO entries")
    conn.execute(
        "CREATE INDEX entries_by_target ON entries (target_lid, target_seq, kind)"
        " WHERE target_lid IS NOT NULL"
    )
    conn.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")
    conn.execute("COMMIT")
    conn.close()
    sorted_in: list[int] = []  # where the rebuild's sort and VACUUM's copy go
    real_rebuild = _schema._rebuild_entries

    def rebuild(conn: sqlite3.Connection) -> None:
        sorted_in.append(conn.execute("PRAGMA temp_store").fetchone()[0])
        real_rebuild(conn)

    monkeypatch.setattr(_schema, "_rebuild_entries", rebuild)
    with Store.open(path) as store:
        # On disk (1), not in memory (2): in memory a 1,000,000-entry store's
        # migration took ~660 MB of RAM. Memory again once migrated.
        assert sorted_in == [1]
        assert store._conn.execute("PRAGMA temp_store").fetchone() == (2,)
        assert store.get_meta("schema_version") == str(SCHEMA_VERSION) == "8"
        (sql,) = store._conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'entries'"
        ).fetchone()
        assert "WITHOUT ROWID" not in sql.upper()
        # The old table's pages went back (VACUUM), not kept as free pages.
        assert store._conn.execute("PRAGMA freelist_count").fetchone() == (0,)
        assert _answers(store, b, transfers) == before
        assert store.integrity_check() == "ok"
        # The ledger goes on over the rebuilt table: t3 is answered once.
        ledger = Ledger(store)
        t3 = transfers[2]
        accept = b.ledger.prepare(KEYS[0], b.community, Accept(transfer=t3), b.now + 1000)
        assert store.transfer_state(b.community, t3.author, t3.seq, t3.id) is TransferState.OPEN
        with store.transaction():
            assert ledger.ingest(accept.wire, b.now + 1000).ok
        state = store.transfer_state(b.community, t3.author, t3.seq, t3.id)
        assert state is TransferState.ACCEPTED


# -- crashes ---------------------------------------------------------------------


def crash_entries(n: int) -> list[Entry]:
    """``n`` valid entries (genesis first) of a small busy community."""
    rng = random.Random(7)
    ledger = Ledger(MemoryBackend())
    g = genesis()
    c = CommunityId(g.id)
    assert ledger.ingest(g.wire, T0).ok
    out = [g]
    pending: dict[int, list[Ref]] = {i: [] for i in range(len(KEYS))}
    index = {k.public: i for i, k in enumerate(KEYS)}
    now = T0
    for i in range(len(KEYS)):
        out.append(ledger.prepare(KEYS[i], c, Join(), now))
        ledger.ingest_entry(out[-1], now)
    while len(out) < n:
        now += 1000
        i = rng.randrange(len(KEYS))
        body: AnyBody
        if pending[i]:
            body = Accept(transfer=pending[i].pop(0))
        elif rng.random() < 0.1:
            body = Offer(side="offer", title=f"offer {len(out)}", tags=("crash",))
        else:
            j = (i + rng.randrange(1, len(KEYS))) % len(KEYS)
            body = Transfer(to=KEYS[j].public, amount=rng.randint(1, 20))
        try:
            entry = ledger.prepare(KEYS[i], c, body, now)
        except RefusedError:
            continue  # over the limit: another move
        ledger.ingest_entry(entry, now)
        if isinstance(body, Transfer):
            pending[index[body.to]].append(entry.ref)
        out.append(entry)
    return out


class Writer:
    """The crash writer process, its acknowledged ids collected by a thread."""

    def __init__(self, store: Path, entries: Path, now: int) -> None:
        helper = Path(__file__).with_name("crash_writer.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(helper), str(store), str(entries), str(now)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.endswith(b"\n"):  # a cut last line was not acknowledged
                self.lines.append(line.rstrip(b"\n"))

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.finish()

    def finish(self) -> None:
        self.proc.wait(timeout=60)
        self._reader.join(timeout=60)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        self.proc.stderr.close()
        self.proc.stdout.close()  # type: ignore[union-attr]
        if self.proc.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(f"writer failed ({self.proc.returncode}): {err.decode()}")


@pytest.mark.slow
def test_crash_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    entries = crash_entries(6000)
    c = CommunityId(entries[0].id)
    by_id = {e.id: e for e in entries}
    entries_file = tmp_path / "entries.bin"
    entries_file.write_bytes(b"".join(struct.pack(">I", len(e.wire)) + e.wire for e in entries))
    path = tmp_path / "store.sqlite"
    now = T0 + 10**9
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    acknowledged: set[bytes] = set()
    replay = Ledger(MemoryBackend())
    assert replay.ingest_entry(entries[0], now).ok
    replayed = 0
    kills, done = 0, False
    deadline = time.monotonic() + 30
    while kills < 20 and not done and time.monotonic() < deadline:
        writer = Writer(path, entries_file, now)
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0.05, 0.45))  # sometimes still starting, mostly writing
        else:  # after some acknowledgements, a fraction of a transaction later
            target = rng.randint(1, 300)
            while len(writer.lines) < target and writer.proc.poll() is None:
                time.sleep(0.0005)
            time.sleep(rng.uniform(0, 0.003))
        writer.kill()
        kills += 1
        done = b"done" in writer.lines
        acknowledged.update(bytes.fromhex(x.decode()) for x in writer.lines if x != b"done")
        with Store.open(path) as store:
            assert store.integrity_check() == "ok"
            if not store.communities():
                assert not acknowledged  # killed before the genesis committed
                continue
            for eid in acknowledged:
                e = by_id[eid]
                if e.community is not None:
                    assert store.entry(c, e.author, e.seq, eid) is not None, "acknowledged, lost"
            # What is stored is exactly a prefix of what the writer was given
            # (it ingests in order): no gap, no half-written entry.
            count = store.entry_count(c)
            assert len(acknowledged) <= count + 1
            for e in entries[replayed + 1 : count + 1]:
                assert store.entry(c, e.author, e.seq, e.id) is not None
                assert replay.ingest_entry(e, now).status is Status.ACCEPTED
            replayed = max(replayed, count)
            if count + 1 < len(entries):
                nxt = entries[count + 1]
                assert store.entry(c, nxt.author, nxt.seq, nxt.id) is None
            ledger = Ledger(store)
            assert list(store.heads(c)) == list(replay.backend.heads(c))
            assert list(ledger.balances(c)) == list(replay.balances(c))
            assert (
                sum(b for _, b in ledger.balances(c))
                + sum(e.body.amount for e in _open_transfers(store, c))
                == 0
            )
            assert store.waiting_count() == 0
            assert store.forks(c) == []
    assert kills >= 10, f"only {kills} kills in the time allowed"
    assert len(acknowledged) > 100, "the writer barely wrote: the test proved little"


def _open_transfers(store: Store, c: CommunityId) -> list[Any]:
    out = []
    for m, _ in store.heads(c):
        out += store.pending_out(c, MemberId(m))
    return out


def test_timed_entries_since_carries_each_entrys_timestamp(tmp_path: Path) -> None:
    """Sync streams (timestamp, wire) pairs straight from the store."""
    from troc.node.local import open_local_node

    with open_local_node(tmp_path, SigningKey.generate()) as node:
        community = node.create_community("T", "h", 5)
        node.offer(community, "one")
        node.offer(community, "two")
        pairs = node.store.timed_entries_since(community, node.member, 1)
        assert [w for _t, w in pairs] == node.store.entries_since(community, node.member, 1)
        assert [t for t, _w in pairs] == [Entry.decode(w).timestamp_ms for _t, w in pairs]
        assert len(pairs) == 2
