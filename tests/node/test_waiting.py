"""The waiting set's bounds (docs/protocol.md §4.3), on both backends.

Strangers (authors whose join the node does not hold) sign dangling entries
for free; they park in a small pool of their own, so members' entries that
must wait still park and are applied. Each author and each delivering peer
has a bound, a parked entry has a lifetime by the node's clock, and a full
pool drops its oldest entry. Dropping never changes a verdict: the entry is
only waiting again for whoever offers it next.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import T0, World, key
from tests.node.test_store import OPS, TINY_LIMITS, build
from troc.crypto.sign import SigningKey
from troc.node.store import SCHEMA_VERSION, Store
from troc.protocol.backend import MemoryBackend, WaitLimits
from troc.protocol.entry import Entry, EntryId, Join, Offer
from troc.protocol.ledger import Ledger, Outcome, Reason, Status

A, B, C = key(0), key(1), key(2)
HOUR = 60 * 60 * 1000

MakeLedger = Callable[[WaitLimits | None], Ledger]


@pytest.fixture
def w() -> World:
    """A community where A (the founder), B and C joined."""
    world = World(A, credit_limit=100)
    for member in (A, B, C):
        world.join(member)
    return world


@pytest.fixture(params=["memory", "sqlite"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeLedger]:
    """A factory of ledgers on the backend under test (one SQLite file)."""
    stores: list[Store] = []

    def new(limits: WaitLimits | None = None) -> Ledger:
        if request.param == "memory":
            return Ledger(MemoryBackend(limits) if limits else MemoryBackend())
        path = tmp_path / "store.sqlite"
        store = Store.open(path, waiting=limits) if limits else Store.open(path)
        stores.append(store)
        return Ledger(store)

    yield new
    for store in stores:
        store.close()


def outcome(node: Ledger, wire: bytes, now: int = T0, source: str | None = None) -> Outcome:
    """One entry in its own transaction (the SQLite store needs one)."""
    backend = node.backend
    if isinstance(backend, Store):
        with backend.transaction():
            return node.ingest(wire, now, source=source)
    return node.ingest(wire, now, source=source)


def ingest(node: Ledger, wire: bytes, now: int = T0, source: str | None = None) -> Status:
    return outcome(node, wire, now, source).status


def follow(node: Ledger, w: World) -> None:
    """The node holds the genesis and A's, B's and C's joins."""
    for wire in [w.genesis.wire, *(e.wire for e in w.log[:3])]:
        assert ingest(node, wire) is Status.ACCEPTED


def waiting(node: Ledger) -> int:
    return node.backend.waiting_count()  # type: ignore[attr-defined, no-any-return]


def dangling(w: World, signer: SigningKey, n: int, title: str = "junk") -> list[Entry]:
    """``n`` well-signed entries of ``signer`` at seq 2, each on a prev nobody holds."""
    return [
        Entry.create(
            signer,
            community=w.community,
            seq=2,
            prev=EntryId(os.urandom(32)),
            timestamp_ms=T0,
            body=Offer("offer", f"{title} {i}"),
        )
        for i in range(n)
    ]


def strangers(w: World, count: int, per_key: int = 50) -> list[Entry]:
    """``count`` dangling entries from keys that never joined."""
    out: list[Entry] = []
    while len(out) < count:
        out += dangling(w, SigningKey.generate(), min(per_key, count - len(out)))
    return out


def gap(w: World, signer: SigningKey) -> tuple[Entry, Entry]:
    """Two next entries of a member: the second must wait for the first."""
    return w.offer(signer, "first"), w.offer(signer, "second")


# -- (a) strangers cannot crowd members out ----------------------------------------------


@pytest.fixture(scope="module")
def ten_thousand() -> list[Entry]:
    """10,050 strangers' entries for the community of ``w`` (made once: signing costs)."""
    return strangers(World(A, credit_limit=100), 10_050)


def test_ten_thousand_stranger_entries_do_not_crowd_out_a_member(
    w: World, make: MakeLedger, ten_thousand: list[Entry]
) -> None:
    """Before the bounds, 10,000 parked entries of strangers made every later
    entry that had to wait `waiting_full`, for good."""
    node = make(None)
    follow(node, w)
    junk = ten_thousand
    assert junk[0].community == w.community
    backend = node.backend
    if isinstance(backend, Store):
        with backend.transaction():  # one transaction: the test's own speed
            statuses = {node.ingest(e.wire, T0).status for e in junk}
    else:
        statuses = {node.ingest(e.wire, T0).status for e in junk}
    assert statuses == {Status.WAITING}
    assert waiting(node) == WaitLimits().strangers  # the oldest made room
    first, second = gap(w, B)
    assert ingest(node, second.wire) is Status.WAITING
    done = outcome(node, first.wire)
    assert done.status is Status.ACCEPTED
    assert done.released == (second,)


def test_a_full_pool_drops_its_oldest(w: World, make: MakeLedger) -> None:
    node = make(WaitLimits(members=2, strangers=1))
    follow(node, w)
    b1, b2 = gap(w, B)
    c1, c2 = gap(w, C)
    a1, a2 = gap(w, A)
    for later in (b2, c2, a2):
        assert ingest(node, later.wire) is Status.WAITING
    assert waiting(node) == 2
    # b2, parked first, was dropped: its prev releases nothing; it waits again when re-sent.
    assert ingest(node, b1.wire) is Status.ACCEPTED
    assert node.head(w.community, B.public).seq == b1.seq  # type: ignore[union-attr]
    for first, second in ((c1, c2), (a1, a2)):
        assert ingest(node, first.wire) is Status.ACCEPTED
        assert node.head(w.community, first.author).seq == second.seq  # type: ignore[union-attr]
    assert ingest(node, b2.wire) is Status.ACCEPTED  # re-delivered: applied as ever
    # A stranger takes the strangers' pool only.
    [junk] = strangers(w, 1)
    assert ingest(node, junk.wire) is Status.WAITING
    assert waiting(node) == 1


def test_bounds_per_author_and_per_peer(w: World, make: MakeLedger) -> None:
    node = make(WaitLimits(per_author=2, per_peer=3))
    follow(node, w)
    from_b = dangling(w, B, 3)
    assert [ingest(node, e.wire) for e in from_b[:2]] == [Status.WAITING] * 2
    full = outcome(node, from_b[2].wire)
    assert (full.status, full.reason) == (Status.REJECTED, Reason.WAITING_FULL)
    # Per peer: p may park 3 in all, whoever signed them; q still may.
    from_c = dangling(w, C, 2) + dangling(w, A, 2)
    assert [ingest(node, e.wire, source="p") for e in from_c[:3]] == [Status.WAITING] * 3
    assert ingest(node, from_c[3].wire, source="p") is Status.REJECTED
    assert ingest(node, from_c[3].wire, source="q") is Status.WAITING
    # Re-offering a parked entry is "waiting" again, whatever the bounds say.
    assert ingest(node, from_b[0].wire) is Status.WAITING


def test_a_parked_entry_lives_a_bounded_time(w: World, make: MakeLedger) -> None:
    """By the node's clock when it parked it; the next parking drops it."""
    node = make(WaitLimits(lifetime_ms=HOUR))
    follow(node, w)
    b1, b2 = gap(w, B)
    assert ingest(node, b2.wire, T0) is Status.WAITING
    [junk] = dangling(w, C, 1)
    assert ingest(node, junk.wire, T0 + HOUR) is Status.WAITING  # b2 is an hour old: kept
    assert waiting(node) == 2
    [more] = dangling(w, C, 1)
    assert ingest(node, more.wire, T0 + HOUR + 1) is Status.WAITING  # b2 is past it: dropped
    assert waiting(node) == 2
    assert ingest(node, b1.wire, T0 + HOUR + 2) is Status.ACCEPTED
    assert node.head(w.community, B.public).seq == b1.seq  # type: ignore[union-attr]
    assert ingest(node, b2.wire, T0 + HOUR + 3) is Status.ACCEPTED  # fetched again: applied


# -- (b) across a restart ----------------------------------------------------------------


def test_the_bounds_hold_across_a_restart(w: World, tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    limits = WaitLimits(members=5, strangers=3, lifetime_ms=HOUR)
    b1, b2 = gap(w, B)
    junk = strangers(w, 3)
    with Store.open(path, waiting=limits) as store:
        node = Ledger(store)
        follow(node, w)
        with store.transaction():
            assert {node.ingest(e.wire, T0).status for e in junk} == {Status.WAITING}
            assert node.ingest(b2.wire, T0).status is Status.WAITING
    with Store.open(path, waiting=limits) as store:
        node = Ledger(store)
        assert store.waiting_count() == 4
        # The strangers' pool is still full: a new stranger drops the oldest one.
        with store.transaction():
            assert node.ingest(strangers(w, 1)[0].wire, T0 + 1).status is Status.WAITING
        assert store.waiting_count() == 4
        # The members' entry parked before the restart is applied after it.
        with store.transaction():
            outcome = node.ingest(b1.wire, T0 + 2)
        assert outcome.released == (b2,)
        assert store.waiting_count() == 3
    with Store.open(path, waiting=limits) as store:
        node = Ledger(store)
        # The lifetime counts from parking, not from opening: an hour later all go.
        with store.transaction():
            assert node.ingest(strangers(w, 1)[0].wire, T0 + HOUR + 2).status is Status.WAITING
        assert store.waiting_count() == 1


def test_a_format_3_store_is_migrated_with_its_waiting_entries(w: World, tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    b1, b2 = gap(w, B)
    [junk] = strangers(w, 1)
    with Store.open(path) as store:
        node = Ledger(store)
        follow(node, w)
    # Format 3's waiting table, with an entry of a member and one of a stranger.
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE waiting")
    conn.execute(
        "CREATE TABLE waiting (wid INTEGER PRIMARY KEY, digest BLOB NOT NULL UNIQUE,"
        " wire BLOB NOT NULL)"
    )
    for wid, (entry, prev) in enumerate([(b2, b1.id), (junk, junk.prev)], start=1):
        conn.execute("INSERT INTO waiting VALUES (?, ?, ?)", (wid, os.urandom(32), entry.wire))
        conn.execute(
            "INSERT INTO waiting_keys VALUES (?, ?, ?, ?, ?)",
            (w.community, entry.author, entry.seq - 1, prev, wid),
        )
    conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with Store.open(path, waiting=WaitLimits(strangers=1)) as store:
        assert store.get_meta("schema_version") == str(SCHEMA_VERSION) == "8"
        rows = store._conn.execute(
            "SELECT author, member, parked_at > 0 FROM waiting ORDER BY wid"
        ).fetchall()
        assert rows == [(B.public, 1, 1), (junk.author, 0, 1)]
        node = Ledger(store)
        with store.transaction():  # the stranger's pool (1) is full: junk goes
            assert node.ingest(strangers(w, 1)[0].wire, T0).status is Status.WAITING
            assert node.ingest(b1.wire, T0).released == (b2,)
        assert store.waiting_count() == 1
        assert store.integrity_check() == "ok"


def test_a_stranger_join_waiting_for_its_vouch_parks_as_a_stranger(make: MakeLedger) -> None:
    """A join at seq 1 that waits (its vouch is not held) is a stranger's:
    the members' pool is not where it goes."""
    w = World(A, credit_limit=100, admission="vouch")
    w.join(A)
    d = key(3)
    vouch = w.vouch(A, d)
    join = w.add(d, Join(vouch=vouch.ref))
    node = make(WaitLimits(members=1, strangers=1))
    for wire in (w.genesis.wire, w.log[0].wire):
        assert ingest(node, wire) is Status.ACCEPTED
    assert ingest(node, join.wire) is Status.WAITING
    [junk] = strangers(w, 1)
    assert ingest(node, junk.wire) is Status.WAITING  # the join made room: same pool
    assert ingest(node, vouch.wire) is Status.ACCEPTED
    assert node.head(w.community, d.public) is None  # dropped, so not released
    assert ingest(node, join.wire) is Status.ACCEPTED


# -- (d) dropping never changes a verdict --------------------------------------------------


@given(ops=OPS, data=st.data(), sqlite=st.booleans())
def test_verdicts_after_eviction_and_redelivery_equal_those_without(
    ops: list[tuple[str, int, int, int]], data: st.DataObject, sqlite: bool
) -> None:
    """Entries arrive in any order at a node with tiny bounds (pools overflow,
    authors and peers hit theirs, parked entries outlive their lifetime),
    then again in some order, as sync would offer them. Every verdict then
    equals that of a node that never dropped anything, and so do balances,
    fork proofs and where logs are frozen."""
    b = build(ops)
    n = len(b.wires)
    now = b.now + 1000
    reference = Ledger(MemoryBackend())
    first = [0, *data.draw(st.permutations(range(1, n)), label="first delivery")]
    for i in first:
        reference.ingest(b.wires[i], now)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "s.sqlite", waiting=TINY_LIMITS) if sqlite else None
        node = Ledger(store if store is not None else MemoryBackend(TINY_LIMITS))
        try:
            again = data.draw(st.permutations(range(n)), label="redelivery")
            for i in [*first, *again, *range(n)]:  # lastly in the order they were made
                now += data.draw(st.sampled_from([0, 0, TINY_LIMITS.lifetime_ms]), label="later")
                outcome(node, b.wires[i], now, data.draw(st.sampled_from([None, "p"])))
            c = b.community
            for wire in b.wires:
                want, got = reference.ingest(wire, now), outcome(node, wire, now)
                if want.status is Status.WAITING:
                    assert got.status is Status.WAITING or got.reason is Reason.WAITING_FULL
                else:
                    assert (got.status, got.reason) == (want.status, want.reason)
            # A head follows its first-seen branch, which arrival order picks:
            # what counts is where a log is frozen and the counted balances.
            frozen = {a: h.frozen_at for a, h in reference.backend.heads(c)}
            assert {a: h.frozen_at for a, h in node.backend.heads(c)} == frozen
            assert list(node.balances(c)) == list(reference.balances(c))
            # Which pair proves a fork depends on arrival order; where, not.
            points = {(a, s) for _c, a, s in reference.backend.forks}  # type: ignore[attr-defined]
            if store is not None:
                assert {(a, s) for a, s, _f, _g in store.forks(c)} == points
            else:
                assert {(a, s) for _c, a, s in node.backend.forks} == points  # type: ignore[attr-defined]
        finally:
            if store is not None:
                store.close()
