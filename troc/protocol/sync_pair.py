"""One node's store as a sync session sees it (:class:`MemoryView`, a
:class:`~troc.protocol.ledger.Ledger` over a
:class:`~troc.protocol.backend.MemoryBackend`), and one whole session
between two of them in memory (:func:`sync_pair`, h11's ConnectionPair
shape), every frame encoded and decoded with the real codec. The
simulator (:mod:`troc.protocol.sim`), the sync property tests and the
benchmarks build on these. Pure: no I/O.
"""

import hashlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from troc.crypto.sign import MemberId
from troc.errors import CodecError
from troc.protocol.backend import MemoryBackend, Stored
from troc.protocol.entry import (
    Accept,
    CommunityId,
    Decline,
    Entry,
    EntryId,
    Reclaim,
    Ref,
    Transfer,
)
from troc.protocol.ledger import CertificateOutcome, Ledger, Outcome, Reason, Status
from troc.protocol.sync import (
    SyncSession,
    certificate_for,
    race_certificate_of,
    race_certificates_between,
    view_digest,
)
from troc.protocol.sync_wire import (
    MAX_BATCH,
    MAX_FRAME,
    Finals,
    Heads,
    decode_message,
    encode_message,
)

__all__ = ["MemoryView", "PairResult", "SimulationError", "sync_pair"]


class SimulationError(AssertionError):
    """A simulated run broke an invariant. The message names the seed."""


# -- one node's store, seen by a sync session ---------------------------------


class MemoryView:
    """A :class:`~troc.protocol.sync.SyncView` over a ledger, for one community.

    ``clock`` gives the ``now_ms`` that ingestion is checked against.
    ``decoded`` may be shared by the views of one simulation: decoding and
    signature checking are pure functions of the bytes, so one decode per
    distinct wire is enough (it is most of the simulator's cost otherwise).
    Bytes that do not decode are never cached; the ledger words their rejection.
    """

    def __init__(
        self,
        ledger: Ledger,
        community: CommunityId,
        clock: Callable[[], int],
        decoded: dict[bytes, Entry] | None = None,
    ) -> None:
        self.ledger = ledger
        self.community = community
        self.clock = clock
        self._decoded: dict[bytes, Entry] = {} if decoded is None else decoded

    # -- SyncView ----------------------------------------------------------

    def heads(self, community: CommunityId) -> Heads:
        """(seq, id) of each author's first-seen branch head."""
        return {a: (h.seq, h.id) for a, h in self.ledger.backend.heads(community)}

    def entries_after(
        self, community: CommunityId, author: MemberId, after_seq: int, limit: int
    ) -> list[tuple[int, bytes]]:
        return [
            (s.entry.timestamp_ms, s.entry.wire)
            for s in self.chain(author, after_seq, limit, community=community)
        ]

    def wire_of(self, community: CommunityId, ref: Ref) -> bytes | None:
        return self.ledger.held_wire(community, ref)  # parked too: docs/witness.md §6.1

    def is_stored(self, community: CommunityId, ref: Ref) -> bool:
        return self.ledger.backend.entry(community, ref.author, ref.seq, ref.id) is not None

    def forks(self, community: CommunityId) -> list[tuple[MemberId, int, bytes, bytes]]:
        backend = self.ledger.backend
        assert isinstance(backend, MemoryBackend)
        return [
            (author, seq, first, second)
            for (c, author, seq), (first, second) in sorted(backend.forks.items())
            if c == community
        ]

    def ingest_batch(self, wires: list[bytes]) -> list[Outcome]:
        return [self.ingest(w) for w in wires]

    def finals(self, community: CommunityId) -> Finals:
        """Per author with a final tip: its seq and the certificate of it."""
        backend = self.ledger.backend
        out: Finals = {}
        for author, head in backend.heads(community):
            if head.final_seq and head.final_id is not None:
                held = backend.certificate(community, author, head.final_seq)
                if held is not None and held[0] == head.final_id:
                    out[author] = (head.final_seq, held[1])
        return out

    def certificate_of(self, community: CommunityId, ref: Ref) -> bytes | None:
        return certificate_for(self.ledger, community, ref)

    def ingest_certificates(self, datas: list[bytes]) -> list[CertificateOutcome]:
        return [self.ledger.ingest_certificate(d, self.clock()) for d in datas]

    def tips_waiting(self, community: CommunityId) -> list[Ref]:
        return self.ledger.tips_waiting(community)

    def transfers_wanted(self, community: CommunityId) -> list[Ref]:
        return self.ledger.transfers_wanted(community)

    def race_certificates(
        self, community: CommunityId, author: MemberId, low: int, high: int
    ) -> list[bytes]:
        return race_certificates_between(self.ledger, community, author, low, high)

    def race_certificate(self, community: CommunityId, entry: Entry) -> bytes | None:
        return race_certificate_of(self.ledger, community, entry)

    # -- helpers -----------------------------------------------------------

    def ingest(self, wire: bytes) -> Outcome:
        """Offer one entry to the ledger, as a node does for gossip and sync.

        Entries of another community (a genesis included) are refused: a
        session or topic is about one community, and a peer must not make
        this node follow others.
        """
        entry = self._decoded.get(wire)
        if entry is None:
            try:
                entry = Entry.decode(wire)
            except CodecError:
                return self.ledger.ingest(wire, self.clock())
            self._decoded[wire] = entry
        if entry.community != self.community:
            return Outcome(
                Status.REJECTED, entry, Reason.UNKNOWN_COMMUNITY, "not this view's community"
            )
        return self.ledger.ingest_entry(entry, self.clock())

    def chain(
        self,
        author: MemberId,
        after_seq: int = 0,
        limit: int | None = None,
        *,
        community: CommunityId | None = None,
    ) -> list[Stored]:
        """``author``'s entries on its first-seen branch with seq > ``after_seq``,
        oldest first, at most ``limit``."""
        c = self.community if community is None else community
        backend = self.ledger.backend
        head = backend.head(c, author)
        if head is None or head.seq <= after_seq:
            return []
        hi = head.seq if limit is None else min(head.seq, after_seq + limit)
        out: list[Stored] = []
        if head.frozen_at is None:
            # No fork known, so one entry per seq: walk up by seq.
            for seq in range(after_seq + 1, hi + 1):
                ids = backend.ids_at(c, author, seq)
                stored = backend.entry(c, author, seq, ids[0])
                assert stored is not None
                out.append(stored)
            return out
        # A forked log: follow prev links down from the first-seen head.
        seq, eid = head.seq, head.id
        while seq > after_seq:
            stored = backend.entry(c, author, seq, eid)
            assert stored is not None
            if seq <= hi:
                out.append(stored)
            if stored.entry.prev is None:
                break
            seq, eid = seq - 1, stored.entry.prev
        out.reverse()
        return out

    def holds(self, ref: Ref) -> bool:
        return self.ledger.backend.entry(self.community, ref.author, ref.seq, ref.id) is not None

    def digest(self) -> bytes:
        """The digest a sync session compares (:func:`troc.protocol.sync.view_digest`)."""
        return view_digest(self, self.community)

    def content_digest(self, *, counted: bool = False) -> bytes:
        """A fingerprint of every entry id held, on every branch: equal
        digests mean equal stores (waiting entries aside). With ``counted``,
        only the entries that count (below their author's fork point)."""
        h = hashlib.sha256(b"troc/sim/content")
        backend = self.ledger.backend
        for author, head in backend.heads(self.community):
            seq = 1
            # Every branch is contiguous from seq 1, so the first empty seq
            # past the head ends the log.
            while (not counted or head.counts(seq)) and (
                ids := backend.ids_at(self.community, author, seq)
            ):
                for eid in sorted(ids):
                    h.update(author + seq.to_bytes(8, "big") + eid)
                seq += 1
            assert counted or seq > head.seq
        return h.digest()

    def entries(self) -> Iterator[Entry]:
        """Every entry on every author's first-seen branch."""
        for author, _head in self.ledger.backend.heads(self.community):
            for stored in self.chain(author):
                yield stored.entry

    def balances(self) -> dict[MemberId, int]:
        return dict(self.ledger.balances(self.community))

    def in_flight(self) -> int:
        """Units debited by counted transfers and not (yet) credited back to
        anyone: neither accepted nor reclaimed. With balances it sums to 0."""
        backend = self.ledger.backend
        transfers: dict[EntryId, int] = {}
        settled: set[EntryId] = set()
        for author, head in backend.heads(self.community):
            for stored in self.chain(author):
                e = stored.entry
                if not head.counts(e.seq):
                    continue
                body = e.body
                if isinstance(body, Transfer):
                    transfers[e.id] = body.amount
                elif isinstance(body, Accept):
                    settled.add(body.transfer.id)
                elif isinstance(body, Reclaim):
                    d = body.decline
                    decline = backend.entry(self.community, d.author, d.seq, d.id)
                    assert decline is not None
                    assert isinstance(decline.entry.body, Decline)
                    settled.add(decline.entry.body.transfer.id)
        return sum(amount for eid, amount in transfers.items() if eid not in settled)


# -- a session between two views, in memory (h11's ConnectionPair) -------------


@dataclass(slots=True)
class PairResult:
    """What :func:`sync_pair` did: both sessions and every frame, in order
    (``True`` for a frame the initiator sent)."""

    initiator: SyncSession
    responder: SyncSession
    frames: list[tuple[bool, bytes]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.initiator.done and self.responder.done

    @property
    def bytes_exchanged(self) -> int:
        return sum(len(f) for _, f in self.frames)

    def kinds(self) -> list[str]:
        """The message types, in the order they were delivered."""
        return [str(decode_message(f)["t"]) for _, f in self.frames]

    @property
    def flights(self) -> int:
        """Runs of frames in one direction: with ``lockstep`` delivery, each
        is one one-way trip, so a session costs ``ceil(flights / 2)`` round
        trips of latency."""
        return sum(
            1 for i, (d, _f) in enumerate(self.frames) if i == 0 or d != self.frames[i - 1][0]
        )


def sync_pair(
    initiator: MemoryView,
    responder: MemoryView,
    community: CommunityId | None = None,
    *,
    cut_after: int | None = None,
    max_frames: int = 100_000,
    batch_entries: int = MAX_BATCH,
    batch_bytes: int = MAX_FRAME // 2,
    lockstep: bool = False,
    version: int = 2,
) -> PairResult:
    """Run one sync session between two views over a reliable in-memory stream.

    Frames are encoded and decoded with the real codec and delivered one at
    a time, alternating directions; with ``lockstep``, every frame in flight
    one way is delivered before any the other way (as over a link whose
    latency dwarfs the work: :attr:`PairResult.flights` then counts one-way
    trips). ``version`` is the sync protocol's (both sides speak it).
    ``cut_after`` stops delivery after that
    many frames (a dropped connection). Raises RemoteProtocolError if a side
    refuses a frame, SimulationError if a frame reaches a side that has
    finished, or past ``max_frames`` (a livelock).
    """
    c = initiator.community if community is None else community
    ini, res = (
        SyncSession(
            side,
            c,
            initiator=first,
            batch_entries=batch_entries,
            batch_bytes=batch_bytes,
            version=version,
        )
        for side, first in ((initiator, True), (responder, False))
    )
    result = PairResult(ini, res)
    # queues[0] flows to the responder, queues[1] to the initiator.
    queues: tuple[deque[bytes], deque[bytes]] = (deque(), deque())
    queues[0].extend(encode_message(m) for m in ini.start())
    turn = 0
    while queues[0] or queues[1]:
        if not queues[turn]:
            turn = 1 - turn
        data = queues[turn].popleft()
        result.frames.append((turn == 0, data))
        if cut_after is not None and len(result.frames) >= cut_after:
            return result
        if len(result.frames) > max_frames:
            raise SimulationError(f"a sync session went past {max_frames} frames")
        side = res if turn == 0 else ini
        if side.done:
            raise SimulationError(f"a frame reached a finished session: {data[:40]!r}")
        for out in side.receive(decode_message(data)):
            queues[1 - turn].append(encode_message(out))
        if not lockstep or not queues[turn]:
            turn = 1 - turn
    return result
