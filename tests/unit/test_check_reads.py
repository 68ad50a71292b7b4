"""What checking an entry reads: an entry that extends its author's head
takes its balance and limit from the head, not from a read of the entry
below (a witnessed newcomer's catch-up streams each log's entries ~1,000
apart, merged by time: that read went to SQLite and decoded the entry)."""

from __future__ import annotations

from tests.helpers import T0, World, key
from tests.unit.test_final_tip_reads import CountingBackend
from troc.protocol.entry import Entry, Offer, Transfer
from troc.protocol.ledger import Ledger, Reason, Status

A, B = key(1), key(2)


def test_an_entry_extending_the_head_reads_no_prev() -> None:
    w = World(credit_limit=100)
    w.join(A)
    w.join(B)
    paid = w.pay(A, B, 30)
    offer = w.add(A, Offer(side="offer", title="bread"))
    backend = CountingBackend()
    ledger = Ledger(backend)
    assert ledger.ingest(w.genesis.wire, T0).status is Status.ACCEPTED
    for e in w.log:
        backend.reads.clear()
        assert ledger.ingest_entry(e, T0).status is Status.ACCEPTED
        if e.prev is not None:
            assert e.prev not in backend.reads
    # The balance the check used is the one after the head: A's overdraft
    # rule still sees the payment.
    assert ledger.balance(w.community, A.public) == -30
    assert offer.prev == paid.id


def test_an_entry_beside_the_head_reads_its_prev() -> None:
    """A branch beside the head (a fork) still reads its own prev, and is
    checked against that entry's balance."""
    w = World(credit_limit=100)
    w.join(A)
    w.join(B)
    first = w.pay(A, B, 60)
    backend = CountingBackend()
    ledger = Ledger(backend)
    assert ledger.ingest(w.genesis.wire, T0).status is Status.ACCEPTED
    for e in w.log:
        assert ledger.ingest_entry(e, T0).status is Status.ACCEPTED
    backend.reads.clear()
    # A second entry at the payment's seq, on the same prev: the head is
    # the payment, so its prev (A's join) is read, with balance 0.
    beside = Entry.create(
        A,
        community=w.community,
        seq=first.seq,
        prev=first.prev,
        timestamp_ms=first.timestamp_ms + 1,
        body=Transfer(to=B.public, amount=100),
    )
    outcome = ledger.ingest_entry(beside, T0)
    assert outcome.status is Status.ACCEPTED
    assert outcome.fork
    assert first.prev in backend.reads
    # Past the fork, on the first-seen branch (the head): its balance, -60.
    over = Entry.create(
        A,
        community=w.community,
        seq=first.seq + 1,
        prev=first.id,
        timestamp_ms=first.timestamp_ms + 2,
        body=Transfer(to=B.public, amount=41),
    )
    rejected = ledger.ingest_entry(over, T0)
    assert rejected.status is Status.REJECTED
    assert rejected.reason is Reason.OVERDRAFT
