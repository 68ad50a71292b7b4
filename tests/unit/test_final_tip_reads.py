"""What the final tip's move costs when an entry arrives after its certificate.

A newcomer's witnessed catch-up gets the certificates a run of entries needs
ahead of the run (docs/sync.md, "Certificates"), so most certified entries
are stored after their certificate, each moving its author's final tip
onto itself. The tip's move (``Ledger._passable``) need not test that top
entry for raceability: its own certificate is held. For an accept of an
expiring transfer the test reads and decodes the transfer, which the
accept's own check has read already.
"""

from __future__ import annotations

from tests.helpers import T0, certify, key, witnessed_world
from troc.protocol.backend import MemoryBackend, Stored
from troc.protocol.entry import CommunityId, Entry, EntryId, MemberId, Transfer
from troc.protocol.ledger import Ledger, Status

A, B = key(1), key(2)


class CountingBackend(MemoryBackend):
    """A memory backend that counts reads of each entry."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: dict[EntryId, int] = {}

    def entry(
        self, community: CommunityId, author: MemberId, seq: int, eid: EntryId
    ) -> Stored | None:
        self.reads[eid] = self.reads.get(eid, 0) + 1
        return super().entry(community, author, seq, eid)


def _history(payments: int) -> tuple[Entry, list[Entry], list[Entry], list[Entry]]:
    """A witnessed community whose transfers expire (so an accept may race):
    ``a`` pays ``b`` ``payments`` times, ``b`` accepts each. Returns the
    genesis, the joins, the transfers and the accepts."""
    w = witnessed_world(credit_limit=1000, transfer_expiry_ms=3_600_000)
    joins = [w.join(A), w.join(B)]
    transfers = [w.pay(A, B, 1 + i) for i in range(payments)]
    accepts = [w.accept(B, t) for t in transfers]
    return w.genesis, joins, transfers, accepts


def test_a_certified_accept_reads_its_transfer_once() -> None:
    genesis, joins, transfers, accepts = _history(1)
    backend = CountingBackend()
    ledger = Ledger(backend)
    c = CommunityId(genesis.id)
    assert ledger.ingest(genesis.wire, T0).status is Status.ACCEPTED
    for e in [*joins, *transfers]:
        assert ledger.ingest_entry(e, T0).status is Status.ACCEPTED
        assert ledger.ingest_certificate(certify(e), T0).ok
    (transfer,), (accept,) = transfers, accepts
    assert ledger.is_raceable(c, transfer.ref) is False
    # The accept's certificate first, as a sync sends it ahead of its run.
    assert ledger.ingest_certificate(certify(accept), T0).ok
    backend.reads.clear()
    outcome = ledger.ingest_entry(accept, T0)
    # Once by the accept's check; not again as the tip moves onto it.
    assert backend.reads.get(transfer.id, 0) == 1
    assert outcome.status is Status.ACCEPTED
    assert ledger.is_final(c, accept.ref)
    assert ledger.is_raceable(c, accept.ref, accept)  # what made the test cost a read


def test_the_tip_passes_accepts_without_reading_their_transfers() -> None:
    """``b`` accepted a payment, then paid ``a`` back; the certificates come
    after the entries, the payment's first: the tip stops below the accept
    (raceable: its transfers expire) until the accept's own certificate
    comes, then moves on to the payment. Neither move reads the transfer:
    the community's rules alone make every accept raceable."""
    genesis, joins, transfers, accepts = _history(1)
    (transfer,), (accept,) = transfers, accepts
    backend = CountingBackend()
    ledger = Ledger(backend)
    c = CommunityId(genesis.id)
    assert ledger.ingest(genesis.wire, T0).status is Status.ACCEPTED
    for e in [*joins, transfer]:
        assert ledger.ingest_entry(e, T0).status is Status.ACCEPTED
        assert ledger.ingest_certificate(certify(e), T0).ok
    payment = Entry.create(
        B,
        community=c,
        seq=accept.seq + 1,
        prev=accept.id,
        timestamp_ms=accept.timestamp_ms,
        body=Transfer(to=A.public, amount=1),
    )
    for e in (accept, payment):
        assert ledger.ingest_entry(e, T0).status is Status.ACCEPTED
    backend.reads.clear()
    assert ledger.ingest_certificate(certify(payment), T0).ok
    head = ledger.head(c, B.public)
    assert head is not None
    assert head.final_seq == accept.seq - 1
    assert ledger.tip_waits_for(c, B.public) == accept.ref
    assert ledger.ingest_certificate(certify(accept), T0).ok
    head = ledger.head(c, B.public)
    assert head is not None
    assert (head.final_seq, head.final_id) == (payment.seq, payment.id)
    assert backend.reads.get(transfer.id, 0) == 0


def test_the_tip_passes_an_accept_of_a_lasting_transfer_reading_it_once() -> None:
    """In a community whose transfers never expire, the tip passes an
    accept only once it knows the accept's transfer does not expire either
    (held, with no ``expires_ms``): one read of the transfer, not one to
    learn when it expires and another to learn that it is held."""
    w = witnessed_world(credit_limit=1000)
    joins = [w.join(A), w.join(B)]
    transfer = w.pay(A, B, 5)
    accept = w.accept(B, transfer)
    payment = w.pay(B, A, 1)
    backend = CountingBackend()
    ledger = Ledger(backend)
    c = CommunityId(w.genesis.id)
    assert ledger.ingest(w.genesis.wire, T0).status is Status.ACCEPTED
    for e in [*joins, transfer]:
        assert ledger.ingest_entry(e, T0).status is Status.ACCEPTED
        assert ledger.ingest_certificate(certify(e), T0).ok
    for e in (accept, payment):
        assert ledger.ingest_entry(e, T0).status is Status.ACCEPTED
    assert not ledger.is_raceable(c, accept.ref)
    backend.reads.clear()
    # The payment's certificate moves B's tip through the accept.
    assert ledger.ingest_certificate(certify(payment), T0).ok
    head = ledger.head(c, B.public)
    assert head is not None
    assert (head.final_seq, head.final_id) == (payment.seq, payment.id)
    assert backend.reads.get(transfer.id, 0) == 1
