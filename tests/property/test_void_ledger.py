"""The ledger and void certificates (docs/witness.md §3.6, §6.1): a void
accept or take-back is final as a position of its log (the final tip moves
through it, so later entries become final) but has no effect (a void accept
credits nothing, a void take-back takes nothing back); whatever order the
entries and certificates arrive in, on the in-memory backend and the SQLite
store alike, every node ends with the same final balances, and no transfer
counts both ways."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import WITNESS_KEYS, certify, key, witnessed_world
from troc.node.store import Store
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import Entry
from troc.protocol.ledger import Ledger, Status
from troc.protocol.witness import VoidCertificate, VoidVote

A, B = key(1), key(2)


def void_certify(entry: Entry) -> bytes:
    assert entry.community is not None
    return VoidCertificate.from_votes(
        VoidVote.sign(k, entry.community, entry.ref) for k in WITNESS_KEYS[:3]
    ).encode()


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

    def items(self, own: bool = True) -> list[tuple[str, bytes]]:
        """The genesis, every entry, and certificates: each entry's own
        (``own``), the void one's void certificate, else only the tips'."""
        out: list[tuple[str, bytes]] = [("genesis", self.w.genesis.wire)]
        for e in self.entries:
            out.append(("entry", e.wire))
            if e is self.void:
                out.append(("cert", void_certify(e)))
            elif own or e in (self.after_a, self.after_b, self.t):
                out.append(("cert", certify(e)))
        return out

    def expected(self) -> dict[bytes, int]:
        # The two later payments are in flight (never accepted).
        if self.void is self.acc:  # the take-back won: the accept credits nothing
            return {A.public: -10 + 10 - 2, B.public: 0 - 3}
        return {A.public: -10 + 0 - 2, B.public: 10 - 3}


def deliver(ledger: Ledger, kind: str, data: bytes, now: int) -> Any:
    if kind == "cert":
        return ledger.ingest_certificate(data, now)
    return ledger.ingest(data, now)


def final_state(ledger: Ledger, race: Race) -> Any:
    c = race.w.community
    heads = {m: (h.final_seq, h.final_id, h.final_balance) for m, h in ledger.backend.heads(c)}
    return heads, dict(ledger.balances(c))


@pytest.mark.parametrize("winner", ["take_back", "accept"])
def test_the_void_entry_is_final_and_moves_nothing(winner: str) -> None:
    """A void accept credits nothing; a void take-back takes nothing back.
    Either way its log goes on (the later entry above it is final)."""
    race = Race(winner)
    ledger = Ledger(MemoryBackend())
    for kind, blob in race.items():
        assert deliver(ledger, kind, blob, race.w.now).ok
    c = race.w.community
    won = race.k if race.void is race.acc else race.acc
    after = race.after_b if race.void is race.acc else race.after_a
    assert ledger.is_final(c, race.void.ref)  # a position of its log
    assert ledger.is_void(c, race.void.ref)
    assert not ledger.is_void(c, won.ref)
    assert ledger.is_final(c, after.ref)  # its log goes on
    assert dict(ledger.balances(c)) == race.expected()


def test_a_late_void_certificate_takes_the_credit_out() -> None:
    """The tip moved through the void accept by the later payment's
    certificate first: its credit counted until the void certificate came."""
    race = Race("take_back")
    ledger = Ledger(MemoryBackend())
    items = race.items(own=False)
    void = next(i for i in items if i[1] == void_certify(race.acc))
    for kind, blob in [i for i in items if i is not void]:
        deliver(ledger, kind, blob, race.w.now)
    c = race.w.community
    assert ledger.is_final(c, race.acc.ref)
    assert not ledger.is_void(c, race.acc.ref)
    outcome = deliver(ledger, *void, race.w.now)
    assert outcome.status is Status.ACCEPTED
    assert ledger.is_void(c, race.acc.ref)
    assert dict(ledger.balances(c))[B.public] == race.expected()[B.public]
    assert deliver(ledger, *void, race.w.now).status is Status.DUPLICATE
    # A (normal) certificate of the same entry now proves more than f liars.
    outcome = ledger.ingest_certificate(certify(race.acc), race.w.now)
    assert outcome.status is Status.REJECTED
    assert outcome.conflict


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_arrival_order_does_not_matter(data: st.DataObject) -> None:
    race = Race(data.draw(st.sampled_from(["take_back", "accept"]), label="winner"))
    items = race.items(own=data.draw(st.booleans(), label="own certificates"))
    order = [items[0], *data.draw(st.permutations(items[1:]), label="order")]
    order += data.draw(st.lists(st.sampled_from(items), max_size=3), label="again")
    memory = Ledger(MemoryBackend())
    reference = Ledger(MemoryBackend())
    for kind, blob in items:
        deliver(reference, kind, blob, race.w.now)
    expected = final_state(reference, race)
    assert expected[1] == race.expected()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "s.sqlite")
        try:
            on_disk = Ledger(store)
            for kind, blob in order:
                a = deliver(memory, kind, blob, race.w.now)
                with store.transaction():
                    b = deliver(on_disk, kind, blob, race.w.now)
                assert (a.status, a.reason) == (b.status, b.reason)
            assert final_state(memory, race) == expected
            assert final_state(on_disk, race) == expected
        finally:
            store.close()


def test_sync_brings_the_void_certificates_below_a_tip() -> None:
    """A node that learns B's log by sync alone gets the void certificate of
    the accept below B's final tip with the tip's certificate (docs/witness.md
    §6.2), so it never counts the void accept's credit."""
    from troc.protocol.sync_pair import MemoryView, sync_pair

    race = Race("take_back")
    w = race.w

    def view(items: list[tuple[str, bytes]]) -> MemoryView:
        ledger = Ledger(MemoryBackend())
        for kind, blob in items:
            deliver(ledger, kind, blob, w.now)
        return MemoryView(ledger, w.community, lambda: w.now)

    full = view(race.items(own=False))
    empty = view(race.items()[:1])
    sync_pair(empty, full)
    assert empty.ledger.is_void(w.community, race.acc.ref)
    assert final_state(empty.ledger, race) == final_state(full.ledger, race)
    assert dict(empty.ledger.balances(w.community)) == race.expected()
