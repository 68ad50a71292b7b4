"""The ledger and void certificates (docs/witness.md §3.6, §6.1): a void
accept or take-back is final as a position of its log (the final tip moves
through it, so later entries become final) but has no effect (a void accept
credits nothing, a void take-back takes nothing back); whatever order the
entries and certificates arrive in, on the in-memory backend and the SQLite
store alike, every node ends with the same final balances, and no transfer
counts both ways. A final tip never passes a raceable entry without that
entry's own certificate, normal or void (§6.1): a node that misses a void
certificate is less final, never wrong."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import certify, key, void_certify, witnessed_world
from troc.node.store import Store
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import Entry
from troc.protocol.ledger import Ledger, Status
from troc.protocol.sync_pair import MemoryView

A, B = key(1), key(2)


class Race:
    """A pays B 10 (expiring); A takes it back and B accepts it; one of the
    two wins (``winner``), the other is void; then each pays the other a
    little, on top of its race entry."""

    def __init__(self, winner: str) -> None:
        self.w = w = witnessed_world()
        self.j1, self.j2 = w.join(A), w.join(B)
        self.t = w.pay(A, B, 10, expires_ms=w.now + 500)
        self.k = w.take_back(A, self.t)
        self.acc = w.accept(B, self.t)
        self.after_b = w.pay(B, A, 3)  # on top of B's accept
        self.after_a = w.pay(A, B, 2)  # on top of A's take-back
        self.void = self.acc if winner == "take_back" else self.k
        self.entries = [self.j1, self.j2, self.t, self.k, self.acc, self.after_b, self.after_a]

    @property
    def won(self) -> Entry:
        return self.k if self.void is self.acc else self.acc

    def items(
        self, own: bool = True, *, void: bool = True, won: bool = True
    ) -> list[tuple[str, bytes]]:
        """The genesis, every entry, and certificates: the void one's void
        certificate (unless not ``void``), the winner's own (unless not
        ``won``), and of the others each one's own (``own``), else only
        the tips' and the transfer's. Honest witnesses lock nothing above
        the two raceable entries without their own certificates (§3.6), so
        every certified chain carries both."""
        out: list[tuple[str, bytes]] = [("genesis", self.w.genesis.wire)]
        for e in self.entries:
            out.append(("entry", e.wire))
            if e is self.void:
                if void:
                    out.append(("cert", void_certify(e)))
            elif e is self.won:
                if won:
                    out.append(("cert", certify(e)))
            elif own or e in (self.after_a, self.after_b, self.t):
                out.append(("cert", certify(e)))
        return out

    def expected(self, void: bool = True) -> dict[bytes, int]:
        # The two later payments are in flight (never accepted).
        if self.void is self.acc:  # the take-back won: the accept credits nothing
            # Without the void certificate B's tip stays on its join.
            return {A.public: -10 + 10 - 2, B.public: 0 - 3 if void else 0}
        # Without it A's tip stays on its transfer.
        return {A.public: -10 + 0 - 2 if void else -10, B.public: 10 - 3}


def deliver(ledger: Ledger, kind: str, data: bytes, now: int) -> Any:
    if kind == "cert":
        return ledger.ingest_certificate(data, now)
    return ledger.ingest(data, now)


def memory_view(race: Race, items: list[tuple[str, bytes]]) -> MemoryView:
    """A sync view over a fresh in-memory ledger given ``items``."""
    ledger = Ledger(MemoryBackend())
    for kind, blob in items:
        deliver(ledger, kind, blob, race.w.now)
    return MemoryView(ledger, race.w.community, lambda: race.w.now)


def final_state(ledger: Ledger, race: Race) -> Any:
    c = race.w.community
    heads = {m: (h.final_seq, h.final_id, h.final_balance) for m, h in ledger.backend.heads(c)}
    return heads, dict(ledger.balances(c))


@contextmanager
def on_both_backends(order: list[tuple[str, bytes]], now: int) -> Iterator[tuple[Ledger, Ledger]]:
    """``order`` delivered to a memory ledger and a SQLite one (a temporary
    file), each verdict the same on both; the two ledgers while open."""
    memory = Ledger(MemoryBackend())
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "s.sqlite")
        try:
            on_disk = Ledger(store)
            for kind, blob in order:
                a = deliver(memory, kind, blob, now)
                with store.transaction():
                    b = deliver(on_disk, kind, blob, now)
                assert (a.status, a.reason) == (b.status, b.reason)
            yield memory, on_disk
        finally:
            store.close()


def check_void_and_on(ledger: Ledger, void: Entry, won: Entry, after: Entry) -> None:
    """``void`` is final as a position and void, ``won`` is not void, and
    ``after`` (on top of ``void``) is final: the loser's log goes on."""
    assert void.community is not None
    c = void.community
    assert ledger.is_final(c, void.ref)  # a position of its log
    assert ledger.is_void(c, void.ref)
    assert not ledger.is_void(c, won.ref)
    assert ledger.is_final(c, after.ref)  # its log goes on


@pytest.mark.parametrize("winner", ["take_back", "accept"])
def test_the_void_entry_is_final_and_moves_nothing(winner: str) -> None:
    """A void accept credits nothing; a void take-back takes nothing back.
    Either way its log goes on (the later entry above it is final)."""
    race = Race(winner)
    ledger = Ledger(MemoryBackend())
    for kind, blob in race.items():
        assert deliver(ledger, kind, blob, race.w.now).ok
    c = race.w.community
    after = race.after_b if race.void is race.acc else race.after_a
    check_void_and_on(ledger, race.void, race.won, after)
    assert dict(ledger.balances(c)) == race.expected()


@pytest.mark.parametrize("winner", ["take_back", "accept"])
def test_the_tip_waits_for_the_void_certificate(winner: str) -> None:
    """The later payment's certificate came first, the void certificate
    last: the tip stops below the void entry (on the highest certified
    entry there) and moves through it, and on, when its certificate
    comes. Before that the void entry's effect never counted."""
    race = Race(winner)
    ledger = Ledger(MemoryBackend())
    for kind, blob in race.items(void=False):
        deliver(ledger, kind, blob, race.w.now)
    c = race.w.community
    after = race.after_b if race.void is race.acc else race.after_a
    below = race.j2 if race.void is race.acc else race.t
    assert ledger.certificate_of(c, after.ref) is not None
    assert not ledger.is_final(c, race.void.ref)
    assert not ledger.is_final(c, after.ref)
    head = ledger.head(c, race.void.author)
    assert head is not None
    assert (head.final_seq, head.final_id) == (below.seq, below.id)
    assert dict(ledger.balances(c)) == race.expected(void=False)
    outcome = deliver(ledger, "cert", void_certify(race.void), race.w.now)
    assert outcome.status is Status.ACCEPTED
    assert outcome.final
    assert ledger.is_void(c, race.void.ref)
    assert ledger.is_final(c, after.ref)
    assert dict(ledger.balances(c)) == race.expected()
    assert deliver(ledger, "cert", void_certify(race.void), race.w.now).status is Status.DUPLICATE
    # A (normal) certificate of the same entry now proves more than f liars.
    outcome = ledger.ingest_certificate(certify(race.void), race.w.now)
    assert outcome.status is Status.REJECTED
    assert outcome.conflict


def test_the_tip_waits_for_the_winners_certificate() -> None:
    """A take-back that won is raceable too: without its own (normal)
    certificate A's tip stays on the transfer below it."""
    race = Race("take_back")
    ledger = Ledger(MemoryBackend())
    for kind, blob in race.items(own=False, won=False):
        deliver(ledger, kind, blob, race.w.now)
    c = race.w.community
    assert not ledger.is_final(c, race.k.ref)
    assert ledger.is_final(c, race.t.ref)
    outcome = deliver(ledger, "cert", certify(race.k), race.w.now)
    assert outcome.final
    assert ledger.is_final(c, race.after_a.ref)
    assert dict(ledger.balances(c)) == race.expected()


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_arrival_order_does_not_matter(data: st.DataObject) -> None:
    """Every order, on both backends: the same final state, and the right
    one; with the void certificate never delivered, every node's tip stays
    below the void entry and the balances still agree."""
    race = Race(data.draw(st.sampled_from(["take_back", "accept"]), label="winner"))
    void = data.draw(st.booleans(), label="void certificate delivered")
    items = race.items(own=data.draw(st.booleans(), label="own certificates"), void=void)
    order = [items[0], *data.draw(st.permutations(items[1:]), label="order")]
    order += data.draw(st.lists(st.sampled_from(items), max_size=3), label="again")
    reference = Ledger(MemoryBackend())
    for kind, blob in items:
        deliver(reference, kind, blob, race.w.now)
    expected = final_state(reference, race)
    assert expected[1] == race.expected(void)
    assert reference.is_final(race.w.community, race.void.ref) is void
    with on_both_backends(order, race.w.now) as (memory, on_disk):
        assert final_state(memory, race) == expected
        assert final_state(on_disk, race) == expected


@pytest.mark.parametrize("winner", ["take_back", "accept"])
@pytest.mark.parametrize("missed", ["nothing", "void", "won"])
def test_sync_brings_the_race_certificates_below_a_tip(winner: str, missed: str) -> None:
    """A node that learns the logs by sync alone (``nothing`` gossiped), or
    that got every gossip message but the void certificate (``void``) or
    the winner's own (``won``), gets the certificates of the raceable
    entries below the final tips with the tips' certificates
    (docs/witness.md §6.2): the two nodes end with the same final tips and
    balances, the void entry's effect counted by neither."""
    from troc.protocol.sync_pair import sync_pair

    race = Race(winner)
    w = race.w
    view = partial(memory_view, race)
    full = view(race.items(own=False))
    if missed == "nothing":
        behind = view(race.items()[:1])
    else:
        behind = view(race.items(own=False, void=missed != "void", won=missed != "won"))
        assert final_state(behind.ledger, race) != final_state(full.ledger, race)
    sync_pair(behind, full)
    assert behind.ledger.is_void(w.community, race.void.ref)
    assert final_state(behind.ledger, race) == final_state(full.ledger, race)
    assert dict(behind.ledger.balances(w.community)) == race.expected()


@pytest.mark.parametrize("winner", ["take_back", "accept"])
def test_a_waiting_tip_asks_for_the_certificate(winner: str) -> None:
    """A node whose tip waits below the void entry (it missed the void
    certificate) asks for that certificate in a sync (``want`` with ``k``)
    and gets it from a peer that holds it without its entry (so it is not
    final there, and the peer's tips would not bring it): one session."""
    from troc.protocol.sync_pair import sync_pair

    race = Race(winner)
    w = race.w
    view = partial(memory_view, race)
    waiting = view(race.items(own=False, void=False))
    assert waiting.ledger.tips_waiting(w.community) == [race.void.ref]
    holder = view([race.items()[0], ("cert", void_certify(race.void))])
    sync_pair(waiting, holder)
    assert waiting.ledger.tips_waiting(w.community) == []
    assert final_state(waiting.ledger, race) == final_state(view(race.items()).ledger, race)
    assert dict(waiting.ledger.balances(w.community)) == race.expected()


@pytest.mark.parametrize("winner", ["take_back", "accept"])
@pytest.mark.parametrize("newcomer_starts", [True, False])
def test_a_newcomer_gets_the_race_certificates_in_the_stream(
    winner: str, newcomer_starts: bool
) -> None:
    """A node that holds nothing but the genesis catches up the race in one
    session, final tips and balances as the sender's, while the sender reads
    no range of certified history at its stream's end: the race
    certificates came ahead of their entries (docs/sync.md, "Certificates").
    Before, the end read every certified entry above the peer's final seq,
    in one step of the sender's event loop: a server serving a newcomer a
    million witnessed entries answered nothing else for most of a minute."""
    from troc.protocol.sync_pair import sync_pair

    race = Race(winner)
    w = race.w
    view = partial(memory_view, race)
    full = view(race.items(own=False))
    behind = view(race.items()[:1])
    read: list[tuple[int, int]] = []
    ranges = full.race_certificates

    def spy(community: Any, author: Any, low: int, high: int) -> list[bytes]:
        read.extend(full.ledger.backend.certified_between(community, author, low, high))
        return ranges(community, author, low, high)

    full.race_certificates = spy  # type: ignore[method-assign]
    if newcomer_starts:
        sync_pair(behind, full)
    else:
        sync_pair(full, behind)
    assert read == []
    assert behind.ledger.is_void(w.community, race.void.ref)
    assert final_state(behind.ledger, race) == final_state(full.ledger, race)
    assert dict(behind.ledger.balances(w.community)) == race.expected()
