"""What a sync session reads of a node's copy of a community (docs/sync.md):
the :class:`SyncView` interface a ledger offers, the heads and frozen points
it sums up (:func:`sync_state`), the digest two peers compare first
(:func:`digest`), and the certificate that travels with a final tip
(:func:`certificate_for`). Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Protocol

from troc.crypto.sign import MemberId
from troc.protocol.entry import CommunityId, Entry, Ref
from troc.protocol.ledger import CertificateOutcome, Ledger, Outcome
from troc.protocol.sync_wire import Finals, Frozen, Heads
from troc.protocol.vote import is_void_certificate
from troc.protocol.witness import can_be_void

__all__ = [
    "SyncView",
    "certificate_for",
    "digest",
    "race_certificate_of",
    "race_certificates_between",
    "sync_state",
    "view_digest",
]


class SyncView(Protocol):
    """What a sync session needs from its node."""

    def heads(self, community: CommunityId) -> Heads:
        """(seq, id) of each author's head as stored (its first-seen branch)."""
        ...

    def forks(self, community: CommunityId) -> list[tuple[MemberId, int, bytes, bytes]]:
        """Every fork proof held: (author, seq, first wire, second wire), where
        ``first`` is the entry that was stored first (so it is valid)."""
        ...

    def entries_after(
        self, community: CommunityId, author: MemberId, after_seq: int, limit: int
    ) -> list[tuple[int, bytes]]:
        """(timestamp_ms, wire) of ``author``'s stored entries with seq >
        after_seq, in seq order (each one checked whole as it was stored)."""
        ...

    def wire_of(self, community: CommunityId, ref: Ref) -> bytes | None:
        """The bytes of ``ref`` if held here: stored, or parked waiting for
        its prev or with its own certificate (:meth:`Ledger.held_wire`)."""
        ...

    def is_stored(self, community: CommunityId, ref: Ref) -> bool:
        """True if ``ref`` is stored here (not only parked). One keyed read."""
        ...

    def ingest_batch(self, wires: list[bytes]) -> list[Outcome]: ...

    def finals(self, community: CommunityId) -> Finals:
        """Per author whose final tip is above 0: (final seq, the certificate
        held for the final tip entry). Empty in an optimistic community."""
        ...

    def certificate_of(self, community: CommunityId, ref: Ref) -> bytes | None:
        """A certificate held that makes the entry ``ref`` final: see
        :func:`certificate_for`."""
        ...

    def ingest_certificates(self, datas: list[bytes]) -> list[CertificateOutcome]:
        """Offer certificates (canonical bytes) to the ledger, in order."""
        ...

    def tips_waiting(self, community: CommunityId) -> list[Ref]:
        """The raceable entries whose own certificate a final tip here
        waits for: :meth:`Ledger.tips_waiting`."""
        ...

    def transfers_wanted(self, community: CommunityId) -> list[Ref]:
        """Transfers parked accepts wait for: :meth:`Ledger.transfers_wanted`."""
        ...

    def race_certificates(
        self, community: CommunityId, author: MemberId, low: int, high: int
    ) -> list[bytes]:
        """The certificates of the raceable and void entries on ``author``'s
        final chain at ``low < seq < high``: see
        :func:`race_certificates_between`."""
        ...

    def race_certificate(self, community: CommunityId, entry: Entry) -> bytes | None:
        """The own certificate of ``entry`` (held, decoded) if it is one that
        :meth:`race_certificates` would send: see :func:`race_certificate_of`."""
        ...


def race_certificates_between(
    ledger: Ledger, community: CommunityId, author: MemberId, low: int, high: int
) -> list[bytes]:
    """The own certificates, normal or void (docs/witness.md §3.6), held
    for the raceable entries (:meth:`Ledger.is_raceable`) and void ones of
    ``author``'s final chain at ``low < seq < high``: a peer whose final seq
    is ``low`` needs them beside the certificate of the tip at ``high``, or
    its tip could not pass those entries (a tip's certificate does not say
    which entries below it are void; §6.1). Few: one per race; one range
    read."""
    out = []
    for seq, eid in ledger.backend.certified_between(community, author, low, high):
        data = _race_certificate(ledger, community, Ref(author, seq, eid))
        if data is not None:
            out.append(data)
    return out


def race_certificate_of(
    ledger: Ledger, community: CommunityId, entry: Entry, *, raceable: bool | None = None
) -> bytes | None:
    """The own certificate, normal or void, of the held ``entry`` if
    :func:`race_certificates_between` would send it (the entry is final
    here, and raceable or void); else None. What a sender streams ahead of
    the entry itself, so that a peer catching up a long log does not need
    the whole range read at the stream's end (docs/sync.md,
    "Certificates"). Reads nothing for an entry of a kind that never races
    (:func:`troc.protocol.witness.can_be_void`): most of a log.
    ``raceable``: whether the entry is raceable (:meth:`Ledger.is_raceable`),
    if the caller knows it without a read; None: asks the ledger."""
    if not can_be_void(entry):
        return None
    return _race_certificate(ledger, community, entry.ref, entry, raceable)


def _race_certificate(
    ledger: Ledger,
    community: CommunityId,
    ref: Ref,
    entry: Entry | None = None,
    raceable: bool | None = None,
) -> bytes | None:
    """The own certificate held for ``ref`` if the entry is final here and
    its certificate is void or the entry raceable; else None. One
    certificate read (``entry``: the entry, if the caller holds it;
    ``raceable``: whether it is, if the caller knows)."""
    data = ledger.certificate_of(community, ref)
    if data is None or not ledger.is_final(community, ref):
        return None
    if is_void_certificate(data):
        return data
    if raceable is None:
        raceable = ledger.is_raceable(community, ref, entry)
    return data if raceable else None


#: How far above a wanted entry :func:`certificate_for` looks for a certificate.
CERTIFICATE_REACH = 64


def certificate_for(ledger: Ledger, community: CommunityId, ref: Ref) -> bytes | None:
    """The certificate that makes the entry ``ref`` final with the fewest
    entries above it: its own, else that of the lowest certified entry above
    it on its log's certified chain (within CERTIFICATE_REACH seqs), else
    that of the final tip; None if ``ref`` is not final here.

    A bounded number of lookups, whatever the log's length or forks (a
    peer's want names up to MAX_WANTS refs, any it likes): finality is one
    lookup (:meth:`Ledger.is_final`), the certificates above ``ref`` one
    range read.
    """
    exact = ledger.certificate_of(community, ref)
    if exact is not None:
        return exact
    if not ledger.is_final(community, ref):
        return None
    head = ledger.head(community, ref.author)
    assert head is not None  # final: a final tip is held
    assert head.final_seq
    assert head.final_id is not None
    backend = ledger.backend
    above = backend.certified_between(
        community, ref.author, ref.seq, min(head.final_seq, ref.seq + CERTIFICATE_REACH)
    )
    for seq, eid in above:
        # A certificate of an entry off the final chain (more than f
        # witnesses lied) does not make ``ref`` final.
        if backend.final_at(community, ref.author, seq) == eid:
            return ledger.certificate_of(community, Ref(ref.author, seq, eid))
    return ledger.certificate_of(community, Ref(ref.author, head.final_seq, head.final_id))


def sync_state(view: SyncView, community: CommunityId) -> tuple[Heads, Frozen]:
    """The heads a node reports to sync, and the proofs of its frozen points.

    A frozen author's reported head is its last counted entry (seq
    ``frozen_at - 1``, the prefix every node that knows the fork agrees on);
    an author frozen at seq 1 is left out.
    """
    frozen: Frozen = {}
    for author, seq, first, second in view.forks(community):
        if author not in frozen or seq < frozen[author][0]:
            frozen[author] = (seq, first, second)
    heads = dict(view.heads(community))
    for author, (seq, first, _second) in frozen.items():
        if seq == 1:
            heads.pop(author, None)
            continue
        # ``first`` was stored, so it is valid: its prev is the entry at
        # seq - 1, the only one there (a lower fork would be the frozen point).
        prev = Entry.decode(first, check_signature=False).prev
        assert prev is not None
        heads[author] = (seq - 1, prev)
    return heads, frozen


def digest(
    heads: Heads,
    frozen: Iterable[tuple[MemberId, int]] = (),
    finals: Iterable[tuple[MemberId, int]] = (),
) -> bytes:
    """A fingerprint of a node's reported heads, frozen points (author, seq)
    and final tips (author, final seq) in one community."""
    points = sorted(frozen)
    tips = sorted(finals)
    h = hashlib.sha256(b"troc/heads/v3")
    h.update(len(heads).to_bytes(4, "big"))
    for author in sorted(heads):
        seq, eid = heads[author]
        h.update(author + seq.to_bytes(8, "big") + eid)
    h.update(len(points).to_bytes(4, "big"))
    for author, seq in points:
        h.update(author + seq.to_bytes(8, "big"))
    h.update(len(tips).to_bytes(4, "big"))
    for author, seq in tips:
        h.update(author + seq.to_bytes(8, "big"))
    return h.digest()


def view_digest(view: SyncView, community: CommunityId) -> bytes:
    """The digest a session started on ``view`` announces."""
    heads, frozen = sync_state(view, community)
    return digest(heads, _points(frozen), _tips(view.finals(community)))


def _points(frozen: Frozen) -> list[tuple[MemberId, int]]:
    return [(a, seq) for a, (seq, _f, _s) in frozen.items()]


def _tips(finals: Finals) -> list[tuple[MemberId, int]]:
    return [(a, seq) for a, (seq, _c) in finals.items()]
