"""Accepts of a transfer that can never become final (docs/witness.md §6.1).

In a witnessed community an accept waits for its transfer's certificate.
When the node knows for certain that the transfer will never have one (its
log's certified chain goes another way: another entry is certified at its
position, or the final tip does not lie on its chain), the accept is
rejected ``not_final``: at once if that is known when it arrives, else when
the certificate that shows it arrives (the verdict is in the outcome's
``dropped``). Either way it does not stay parked for good, and the verdict
does not depend on arrival order, on either backend.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import certify, key, witnessed_world
from tests.property.test_witnessed_ledger import deliver
from troc.errors import RefusedError
from troc.node.store import Store
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import Accept, Entry, EntryId, Offer, Transfer
from troc.protocol.ledger import Ledger, Reason, Status


class Forked:
    """A forks at seq 2. Branch 1: t1 (to B) then u1 (to C, seq 3); branch 2:
    x2 (an offer) then t3 (to D, seq 3). The witnesses certify branch 2.
    B accepts t1 (a branch beside the certified one at its own seq), C
    accepts u1 (above the certified tip once x2 is, on a chain that left it
    below), D accepts t3 (certified: valid)."""

    def __init__(self) -> None:
        self.w = w = witnessed_world(certified=False, credit_limit=100)
        self.a, self.b, self.c, self.d = key(1), key(2), key(3), key(4)
        self.joins = [w.join(k) for k in (self.a, self.b, self.c, self.d)]
        ja = self.joins[0]
        self.t1 = w.pay(self.a, self.b, 10)
        self.u1 = w.pay(self.a, self.c, 20)
        self.x2 = w.create(self.a, Offer("offer", "the other branch"), seq=2, prev=ja.id)
        self.t3 = w.create(self.a, Transfer(to=self.d.public, amount=30), seq=3, prev=self.x2.id)
        self.acc_t1 = w.create(self.b, Accept(transfer=self.t1.ref))
        self.acc_u1 = w.create(self.c, Accept(transfer=self.u1.ref))
        self.acc_t3 = w.create(self.d, Accept(transfer=self.t3.ref))
        self.doomed = {self.acc_t1.id, self.acc_u1.id}
        self.entries = [*self.joins, self.t1, self.u1, self.x2, self.t3]
        self.entries += [self.acc_t1, self.acc_u1, self.acc_t3]
        self.certified = [*self.joins, self.x2, self.t3, self.acc_t3]

    @property
    def community(self) -> Any:
        return self.w.community

    def items(self) -> list[tuple[str, bytes]]:
        out = [("genesis", self.w.genesis.wire)]
        out += [("entry", e.wire) for e in self.entries]
        out += [("cert", certify(e)) for e in self.certified]
        return out


def verdicts(outcome: Any, into: dict[EntryId, tuple[Status, Reason | None]]) -> None:
    """Keep the latest verdict on each entry: this one's, and those it dropped."""
    entry = getattr(outcome, "entry", None)
    if isinstance(entry, Entry):
        into[entry.id] = (outcome.status, outcome.reason)
    for d in outcome.dropped:
        assert d.entry is not None
        into[d.entry.id] = (d.status, d.reason)


def state(ledger: Ledger, f: Forked) -> Any:
    c = f.community
    heads = {a: (h.frozen_at, h.final_seq, h.final_id) for a, h in ledger.backend.heads(c)}
    held = sorted(e.id for e in f.entries if ledger.backend.entry(c, e.author, e.seq, e.id))
    return heads, dict(ledger.balances(c)), held


def in_order(f: Forked) -> Ledger:
    node = Ledger(MemoryBackend())
    for kind, blob in f.items():
        deliver(node, kind, blob, f.w.now)
    return node


def test_an_accept_parked_on_the_losing_branch_is_dropped_when_the_other_is_certified() -> None:
    f = Forked()
    node = Ledger(MemoryBackend())
    for e in [f.w.genesis, *f.entries]:
        node.ingest(e.wire, f.w.now)
    for j in f.joins:
        node.ingest_certificate(certify(j), f.w.now)
    assert node.backend.waiting_count() == 3  # type: ignore[attr-defined]
    out = node.ingest_certificate(certify(f.x2), f.w.now)
    # Both doomed accepts leave, with their reason; D's still waits for t3's certificate.
    assert {(d.entry.id, d.status, d.reason) for d in out.dropped if d.entry} == {
        (f.acc_t1.id, Status.REJECTED, Reason.NOT_FINAL),
        (f.acc_u1.id, Status.REJECTED, Reason.NOT_FINAL),
    }
    assert node.backend.waiting_count() == 1  # type: ignore[attr-defined]
    assert node.ingest_certificate(certify(f.t3), f.w.now).released == (f.acc_t3,)
    # Offered again, they are rejected at once; an honest node refuses to sign them.
    for acc in (f.acc_t1, f.acc_u1):
        again = node.ingest(acc.wire, f.w.now)
        assert (again.status, again.reason) == (Status.REJECTED, Reason.NOT_FINAL)
    with pytest.raises(RefusedError) as info:
        node.prepare(f.b, f.community, Accept(transfer=f.t1.ref), f.w.now)
    assert info.value.reason == "not_final"


def test_a_certificate_for_another_entry_not_held_yet_is_enough() -> None:
    """The certificate of x2 names A's seq 2: neither t1 (at seq 2) nor u1
    (above it, on t1) can ever be final, even before x2 itself arrives."""
    f = Forked()
    node = Ledger(MemoryBackend())
    for e in [f.w.genesis, *f.joins, f.t1, f.u1]:
        node.ingest(e.wire, f.w.now)
    for acc in (f.acc_t1, f.acc_u1):
        assert node.ingest(acc.wire, f.w.now).status is Status.WAITING
    out = node.ingest_certificate(certify(f.x2), f.w.now)
    assert {(d.entry, d.reason) for d in out.dropped} == {
        (f.acc_t1, Reason.NOT_FINAL),
        (f.acc_u1, Reason.NOT_FINAL),
    }


def test_an_unrelated_certificate_drops_nothing() -> None:
    """A certificate below the transfer, on its chain, leaves the accept waiting."""
    f = Forked()
    node = Ledger(MemoryBackend())
    ja = f.joins[0]
    for e in [f.w.genesis, *f.joins, f.x2, f.t3, f.acc_t3]:
        node.ingest(e.wire, f.w.now)
    out = node.ingest_certificate(certify(ja), f.w.now)
    assert out.dropped == ()
    out = node.ingest_certificate(certify(f.x2), f.w.now)
    assert out.dropped == ()
    assert node.backend.waiting_count() == 1  # type: ignore[attr-defined]
    assert node.ingest_certificate(certify(f.t3), f.w.now).released == (f.acc_t3,)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_arrival_order_does_not_matter(data: st.DataObject) -> None:
    f = Forked()
    items = f.items()
    order = [items[0], *data.draw(st.permutations(items[1:]), label="order")]
    order += data.draw(st.lists(st.sampled_from(items), max_size=4), label="again")
    expected = state(in_order(f), f)
    memory = Ledger(MemoryBackend())
    seen: dict[EntryId, tuple[Status, Reason | None]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "s.sqlite")
        try:
            on_disk = Ledger(store)
            for kind, blob in order:
                a = deliver(memory, kind, blob, f.w.now)
                with store.transaction():
                    b = deliver(on_disk, kind, blob, f.w.now)
                assert (a.status, a.reason) == (b.status, b.reason)
                assert [(d.entry, d.reason) for d in a.dropped] == [
                    (d.entry, d.reason) for d in b.dropped
                ]
                verdicts(a, seen)
            assert state(memory, f) == expected
            assert state(on_disk, f) == expected
            # The doomed accepts did not stay parked: each ended rejected not_final.
            assert store.waiting_count() == 0
            assert memory.backend.waiting_count() == 0  # type: ignore[attr-defined]
            for doomed in f.doomed:
                assert seen[doomed] == (Status.REJECTED, Reason.NOT_FINAL)
        finally:
            store.close()
