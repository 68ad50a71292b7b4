"""Anti-entropy: two nodes make their copies of a community equal.

Theory of operation
-------------------
Gossip is fast but lossy; this protocol makes convergence certain. One sync
session runs over one ordered, reliable channel (a libp2p stream
``/troc/sync/3`` or ``/troc/sync/2`` in the node; an in-memory pair in tests). Both sides run
a :class:`SyncSession`; it is fed messages and returns messages to send, and
never touches a socket, a clock or a file (h11's shape).

1. The initiator sends ``hello``: the community, a digest of its per-author
   heads and frozen points (see 6), and the heads' count. If the responder's
   digest is equal the responder answers ``same`` and the session ends: an
   up-to-date pair exchanges a few hundred bytes, whatever the history.
2. Otherwise both send their ``heads`` (author, seq, id of each log's head;
   and fork proofs, see 6). Version 3 (``version=3``) sends no heads: the
   responder opens a range-based reconciliation of per-author records
   (:mod:`troc.protocol.recon`, ``recon`` messages) that ends with each
   side knowing the peer's heads where they differ from its own, in bytes
   that grow with the difference, not with the community; its fork proofs
   ride on its ``end``. All that follows is the same in both versions.
   Each side then knows what the other lacks and streams it in ``entries``
   batches, oldest first per author, the authors' entries merged by
   timestamp so that an accept tends to arrive after the transfer it names
   (fewer entries wait), then ``end``. The cost grows with the difference,
   not the history. The bulk flows one way at a time: the responder streams
   first, the initiator only after the responder's ``end``. Were both to
   stream at once, each could block writing into a full flow-control window
   while the other, also writing, never reads: a deadlock. Small messages
   (``want``) may cross at any time.
3. An entry that arrives before something it names (waiting) makes the
   receiver ask for exactly that (``want``: author, seq, id); the answer is an
   ``entries`` message with ``reply`` set, as many of the wanted entries as
   fit in one frame. Chains of wants are bounded per session; the next
   session continues.
4. A side that has sent ``end``, received ``end`` and has no want
   outstanding sends ``fin``; the session is over when both have sent ``fin``.
5. Forks. An entry whose prev is not the receiver's entry at that seq shows
   the two sides hold different branches of a forked log. The receiver
   wants the sender's entry at that seq (and, if its ledger rejected the
   entry as bad_prev rather than parking it, sends its own there), so both
   sides get the fork proof, not only the one that happened to be behind.
   Likewise a peer head below one's own that one does not hold is on the
   other branch: the initiator wants it with its heads, the responder after
   its ``end`` (a reply may be large: it must not cross a stream).
   A want for an entry at or below the asker's own head (as announced in
   its heads) can only come from the other branch: the reply then carries
   the responder's branch below that entry too, oldest first (as much as
   fits), so the asker finds where the branches meet in one round trip
   rather than one per entry.
6. Frozen logs. Once a fork is known, the author's entries from the fork
   point on never count, and nodes may well hold different parts of them
   (each its own first-seen branch). So for sync a frozen author's head is
   its last *counted* entry: seq ``frozen_at - 1`` and that entry's id (the
   prefix below the fork, which every node agrees on); an author frozen at
   seq 1 is left out of the heads. The digest also covers the frozen points
   (author, seq). ``heads`` carries the proofs of the sender's frozen points
   (``f``: [first wire, second wire] pairs, bounded; the initiator leaves
   out those the responder just sent), and the receiver ingests both
   entries of each once the sender's stream has ended (what they build on
   has arrived by then): storing the one it lacks records the fork through
   the ledger's ordinary path. Nodes that know the same fork thus converge
   to one digest; entries beyond a fork point are never streamed, only
   fetched when something references them (a want), and the reply then
   carries the branch below the wanted entry down to the fork point.
7. Certificates (witnessed communities, docs/witness.md). Each author's
   *final tip* (its highest entry held with a certificate) is part of a
   node's state: the digest covers every (author, final seq), and ``heads``
   carries them (``k``). Each side, at the end of its own stream (before its
   ``end``, so the one-way rule holds), sends in ``certs`` frames the
   certificate of its final tip for every author whose final seq is above
   the peer's; that one certificate makes the whole chain below it final.
   The receiver ingests them after the entries they follow (a certificate
   whose entry has not arrived is kept, and applied when it does) and wants
   the certified entry if it still lacks it (beyond a fork point, where
   entries are not streamed). The initiator re-reads its final tips before
   its part: the responder's entries may have made final what a
   certificate held on its own already named.

Everything a peer sends is bounded (frame size, entries per batch, heads,
wants) and checked; so is what it can ask for: at most MAX_WANT_ROUNDS
wants a session, after the heads, each answered in a bounded number of
lookups per ref (:func:`certificate_for`), and at most MAX_REPLY_BYTES of
replies (docs/sync.md, "Limits on wants"). A peer that sends bytes that
are not well-formed, or entries with bad signatures, (or certificates that
do not verify) is reported in :attr:`SyncSession.misbehaviour` so the node
can cut it off.

The frames are :mod:`troc.protocol.sync_wire`, what a session reads of a
ledger :mod:`troc.protocol.sync_view` (both re-exported here). This module
is the session alone, one state machine; at ~700 lines it stays whole on
purpose: its steps (hello, recon or heads, wants, entries, certs, done)
share the session's state, and reading them in order is how one checks
that both sides end equal.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from troc.crypto.sign import MemberId
from troc.errors import CodecError
from troc.protocol.entry import CommunityId, Entry, EntryId, Ref
from troc.protocol.ledger import CertificateOutcome, Reason, Status
from troc.protocol.recon import Reconciler, Record
from troc.protocol.sync_view import (
    SyncView,
    _points,
    _tips,
    certificate_for,
    digest,
    race_certificate_of,
    race_certificates_between,
    sync_state,
    view_digest,
)
from troc.protocol.sync_wire import (
    _FINAL_ITEM,
    _HEAD_ITEM,
    MAX_BATCH,
    MAX_CERTS,
    MAX_FRAME,
    MAX_HEADS,
    MAX_PROOF_BYTES,
    MAX_PROOFS,
    MAX_REPLY_BYTES,
    MAX_WANT_ROUNDS,
    MAX_WANTS,
    VERSIONS,
    Finals,
    Frozen,
    Heads,
    _bad,
    _parse_finals,
    _parse_heads,
    _parse_proofs,
)
from troc.protocol.witness import certificate_needed, decode_any_certificate

__all__ = [
    "Streamed",
    "SyncSession",
    "SyncStats",
    "SyncView",
    "certificate_for",
    "digest",
    "race_certificate_of",
    "race_certificates_between",
    "sync_state",
    "view_digest",
]

#: Entries a responder's stream holds read ahead of sending, over all authors
#: (each author's page is this divided by the authors it streams, 16 to 1000).
SEND_WINDOW = 65_536
#: In a witnessed community the bulk stream sends, ahead of each run of this
#: many entries, the certificates the run's accepts and reclaims need: a
#: receiver stores a run of frames at a time (the node: up to 4,096 entries).
CERTS_AHEAD = 4096

#: Per author, the seqs ``(after, upto]`` a bulk stream sends.
Streamed = Mapping[MemberId, tuple[int, int]]

#: Reasons that show the *sender* is faulty: an honest node never stores such an entry.
MALICIOUS = frozenset(
    {
        Reason.TOO_LARGE,
        Reason.TOO_DEEP,
        Reason.MALFORMED,
        Reason.TRAILING_BYTES,
        Reason.NON_CANONICAL,
        Reason.BAD_TYPE,
        Reason.BAD_SHAPE,
        Reason.BAD_MEMBER,
        Reason.BAD_AMOUNT,
        Reason.BAD_SIGNATURE,
    }
)


@dataclass(slots=True)
class SyncStats:
    """What one session moved; ``expected`` is known once heads are exchanged."""

    sent: int = 0
    received: int = 0
    accepted: int = 0
    expected: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    same: bool = False
    version: int = 2  # the protocol version the session spoke
    rejected: dict[str, int] = field(default_factory=dict)
    #: Certificates (witnessed communities): sent, received, kept as new,
    #: and refused by reason code.
    certificates_sent: int = 0
    certificates_received: int = 0
    certificates_accepted: int = 0
    certificates_rejected: dict[str, int] = field(default_factory=dict)


class SyncSession:
    """One side of one sync session. Feed :meth:`receive`; send what it returns."""

    def __init__(
        self,
        view: SyncView,
        community: CommunityId,
        *,
        initiator: bool,
        batch_entries: int = MAX_BATCH,
        batch_bytes: int = MAX_FRAME // 2,
        version: int = 2,
        elsewhere: Callable[[], Iterable[Streamed]] | None = None,
    ) -> None:
        if version not in VERSIONS:
            raise ValueError(f"no sync version {version}")
        self.version = version
        self.view = view
        self.community = community
        self.initiator = initiator
        self.batch_entries = min(batch_entries, MAX_BATCH)
        self.batch_bytes = min(batch_bytes, MAX_FRAME // 2)
        self.stats = SyncStats(version=version)
        self.misbehaviour: str | None = None
        self._mine: Heads = {}
        self._frozen: Frozen = {}
        self._finals: Finals = {}
        self._peer_finals: dict[MemberId, int] = {}  # its final seqs, from its heads
        self._sent_heads = False
        self._got_heads = False
        self._sent_end = False
        self._got_end = False
        self._sent_fin = False
        self._got_fin = False
        self._wants_out = 0
        self._want_rounds = 0
        self._wants_in = 0  # the peer's wants answered, and their bytes
        self._reply_bytes = 0
        self._asked: set[Ref] = set()
        self._asked_certs: set[Ref] = set()
        # Entries parked here in this session, and of those the ones that
        # wait for entries to become final: what each waits for.
        self._parked: set[Ref] = set()
        # Entries held here only parked whose chain a want walked down
        # (_lacking): each once a session.
        self._walked: set[Ref] = set()
        self._final_waits: dict[Ref, tuple[Ref, ...]] = {}
        self._pushed: set[tuple[MemberId, int]] = set()
        self._sent_ahead: set[bytes] = set()  # certificates sent in the stream
        # Per author, in the bulk stream: its last entry an earlier run sent,
        # and the seq up to which the certificates sent make its log final.
        self._streamed_top: dict[MemberId, Ref] = {}
        self._made_final: dict[MemberId, int] = {}
        # Per author streamed to our head (here or by another session): the
        # peer's head seq, above which the stream brings race certificates.
        self._covered: dict[MemberId, int] = {}
        self._peer: Heads = {}  # the peer's heads, once received
        self._peer_frozen: dict[MemberId, int] = {}  # fork points it sent proofs of
        self._peer_proofs: list[bytes] = []  # their entries, ingested after its stream
        self._theirs: Heads | None = None
        self._recon: Reconciler | None = None  # version 3
        #: What our bulk stream sends, per author, while it runs (empty
        #: before and after): other sessions with the same peer skip it.
        self.streaming: dict[MemberId, tuple[int, int]] = {}
        # The streams other sessions with the same peer are sending it now.
        self._elsewhere = elsewhere

    @property
    def done(self) -> bool:
        return self._sent_fin and self._got_fin

    @property
    def answered(self) -> bool:
        """Whether the peer answered the hello (a responder that does not
        follow the community closes the stream without a word)."""
        return self._got_heads or self.stats.same

    def peer_head(self, author: MemberId) -> tuple[int, EntryId] | None:
        """The peer's head of ``author``'s log as it reported it (None: it
        holds none, or the digests were equal). Known once :attr:`answered`."""
        return self._peer.get(author)

    def start(self) -> list[dict[str, Any]]:
        """The initiator's first messages."""
        assert self.initiator
        self._load()
        return [{"t": "hello", "c": self.community, "d": self._digest(), "n": len(self._mine)}]

    def receive(self, msg: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Handle one message from the peer; yields messages to send (lazily,
        so a large catch-up streams batch by batch). Raises RemoteProtocolError
        for a message that breaks the protocol."""
        kind = msg.get("t")
        if kind == "hello":
            yield from self._on_hello(msg)
        elif kind == "same":
            self._sent_fin = self._got_fin = True
            self.stats.same = True
        elif kind == "heads" and self.version == 2:
            yield from self._on_heads(msg)
        elif kind == "recon" and self.version == 3:
            yield from self._on_recon(msg)
        elif kind == "entries":
            yield from self._on_entries(msg)
        elif kind == "want":
            yield from self._on_want(msg)
        elif kind == "certs":
            yield from self._on_certs(msg)
        elif kind == "end":
            if self._got_end:
                raise _bad("end twice")
            self._got_end = True
            if self.version == 3:
                # Version 3 sends its fork proofs with its end.
                for a, b in _parse_proofs(msg.get("f"), self.community):
                    self._peer_proofs += [a.wire, b.wire]
            if self.initiator and self._theirs is not None and not self._sent_end:
                yield from self._send_missing(self._theirs)
                # Re-read: the responder's entries may have made final what
                # a certificate we held alone already named.
                yield from self._send_certificates(self.view.finals(self.community))
                self._sent_end = True
                yield self._end()
            # The peer's stream is over, so what its fork proofs build on has
            # arrived: ingest them now (wanting whatever they still lack).
            proofs, self._peer_proofs = self._peer_proofs, []
            if proofs:
                yield from self._ingest(proofs)
            yield from self._maybe_fin()
        elif kind == "fin":
            self._got_fin = True
            yield from self._maybe_fin()
        else:
            raise _bad(f"unknown type {kind!r}")

    # -- handlers ---------------------------------------------------------

    def _load(self) -> None:
        self._mine, self._frozen = sync_state(self.view, self.community)
        self._finals = self.view.finals(self.community)

    def _digest(self) -> bytes:
        return digest(self._mine, _points(self._frozen), _tips(self._finals))

    def _on_hello(self, msg: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if self.initiator or msg.get("c") != self.community or not isinstance(msg.get("d"), bytes):
            raise _bad("hello")
        self._load()
        if msg["d"] == self._digest():
            self._sent_fin = self._got_fin = True
            self.stats.same = True
            yield {"t": "same"}
            return
        if self.version == 3:
            self._recon = Reconciler(self._records())
            yield self._recon.opening()
            return
        self._sent_heads = True
        yield self._heads_msg()

    def _records(self) -> list[Record]:
        """Our record of each author, for version 3's reconciliation."""
        authors = self._mine.keys() | self._frozen.keys() | self._finals.keys()
        out = []
        for a in authors:
            seq, eid = self._mine.get(a, (0, b""))
            final = self._finals.get(a, (0, b""))[0]
            frozen = self._frozen.get(a, (0, b"", b""))[0]
            out.append(Record(a, seq, eid, final, frozen))
        return out

    def _proofs(self) -> tuple[list[list[bytes]], int]:
        """The proofs of our frozen points the peer lacks (those of which it
        did not send or report the same or a lower point), within bounds;
        and their bytes."""
        proofs: list[list[bytes]] = []
        size = 0
        for author, (seq, first, second) in sorted(self._frozen.items()):
            if self._peer_frozen.get(author, seq + 1) <= seq:
                continue
            if len(proofs) >= MAX_PROOFS or size + len(first) + len(second) > MAX_PROOF_BYTES:
                break  # the rest travel in later sessions (the peer then sends its own)
            size += len(first) + len(second)
            proofs.append([first, second])
        return proofs, size

    def _end(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"t": "end"}
        if self.version == 3:
            proofs, _size = self._proofs()
            if proofs:
                msg["f"] = proofs
        return msg

    def _heads_msg(self) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "t": "heads",
            "h": [[a, s, i] for a, (s, i) in sorted(self._mine.items())],
        }
        # The proofs of our frozen points, but those the peer just sent us.
        proofs, size = self._proofs()
        if proofs:
            msg["f"] = proofs
        if self._finals:
            # What fits in the frame beside the heads and proofs (all of it
            # unless there are thousands of authors): an author left out
            # looks not final to the peer, which then sends certificates we
            # hold (duplicates), never fewer than we need.
            used = 4096 + len(self._mine) * _HEAD_ITEM + size + 8 * len(proofs)
            room = (MAX_FRAME - used) // _FINAL_ITEM
            tips = sorted(_tips(self._finals))[: max(0, min(room, MAX_HEADS))]
            if tips:
                msg["k"] = [[a, s] for a, s in tips]
        return msg

    def _on_heads(self, msg: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if self._got_heads:
            raise _bad("heads twice")
        theirs = _parse_heads(msg.get("h"))
        proofs = _parse_proofs(msg.get("f"), self.community)
        self._peer_finals = _parse_finals(msg.get("k"))
        self._got_heads = True
        self._peer = theirs
        for a, b in proofs:
            if a.seq < self._peer_frozen.get(a.author, a.seq + 1):
                self._peer_frozen[a.author] = a.seq
            self._peer_proofs += [a.wire, b.wire]
        if not self._sent_heads:
            self._sent_heads = True
            yield self._heads_msg()
        yield from self._after_heads(theirs)

    def _on_recon(self, msg: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if self._got_heads:
            raise _bad("recon after reconciliation")
        if self._recon is None:
            if not self.initiator:
                raise _bad("recon before hello")
            self._recon = Reconciler(self._records())
        reply = self._recon.receive(msg)
        if reply is not None:
            yield reply
        if self._recon.done:
            yield from self._after_heads(self._reconciled(self._recon))

    def _reconciled(self, recon: Reconciler) -> Heads:
        """The peer's heads, final seqs and (claimed) fork points, from ours
        where reconciliation found them equal and its records elsewhere."""
        theirs = dict(self._mine)
        self._peer_finals = {a: seq for a, (seq, _c) in self._finals.items()}
        self._peer_frozen = {a: seq for a, (seq, _f, _s) in self._frozen.items()}
        for a, r in recon.peer.items():
            theirs.pop(a, None)
            self._peer_finals.pop(a, None)
            self._peer_frozen.pop(a, None)
            if r is None:
                continue
            if r.seq:
                theirs[a] = (r.seq, EntryId(r.id))
            if r.final:
                self._peer_finals[a] = r.final
            if r.frozen:
                # Claimed, proved with its end: a false claim only keeps
                # from the peer what it said it would not count.
                self._peer_frozen[a] = r.frozen
        return theirs

    def _after_heads(self, theirs: Heads) -> Iterator[dict[str, Any]]:
        """Both sides know each other's heads: stream (the responder), or wait
        for the responder's stream (the initiator)."""
        self._got_heads = True
        self._peer = theirs
        self.stats.expected = sum(
            max(0, seq - self._mine.get(a, (0, b""))[0]) for a, (seq, _i) in theirs.items()
        )
        # A peer head below ours that we do not hold is on another branch of
        # a forked log: ask for it (the reply brings its branch below it).
        # The responder asks after its stream: the reply may be large and
        # must not cross it.
        forked = [
            Ref(a, seq, eid)
            for a, (seq, eid) in theirs.items()
            if seq < self._mine.get(a, (0, b""))[0]
        ]
        if self.initiator:
            self._theirs = theirs  # our turn to stream comes after the responder's end
            yield from self._want(forked)
            return
        yield from self._send_missing(theirs)
        yield from self._send_certificates(self._finals)
        self._sent_end = True
        yield self._end()
        yield from self._want(forked)

    def _send_missing(self, theirs: Heads) -> Iterator[dict[str, Any]]:
        """Stream what the peer lacks, per author oldest first, merged by time,
        but what another of our sessions with the peer is streaming to it now."""
        ranges = []
        sending = self._streamed_elsewhere()
        for author, (seq, eid) in self._mine.items():
            their_seq, their_id = theirs.get(author, (0, b""))
            # Nothing from a fork point the peer proved on: it never counts.
            upto = min(seq, self._peer_frozen.get(author, seq + 1) - 1)
            if their_seq < upto:
                if upto == seq:
                    # Streamed to our head, here or by another session, with
                    # the race certificates ahead of their entries.
                    self._covered[author] = their_seq
                # What other streams over the same connection bring from there on.
                for after, other_upto in sending.get(author, ()):
                    if after <= their_seq < other_upto:
                        their_seq = min(other_upto, upto)
                if their_seq < upto:
                    ranges.append((author, their_seq, upto))
            elif their_seq == seq == upto and their_id != eid:
                # Same length, different head: a fork. Our head proves it.
                ranges.append((author, seq - 1, seq))
        # The merge holds a page of every author's stream at once: pages
        # shrink as authors grow, so a catch-up of 1,000 members' logs holds
        # SEND_WINDOW entries, not 1,000 pages of 1,000 (all of history).
        page = max(16, min(1000, SEND_WINDOW // max(1, len(ranges))))
        streams = [self._author_entries(a, after, upto, page) for a, after, upto in ranges]
        self.streaming = {a: (after, upto) for a, after, upto in ranges}
        yield from self._stream(wire for _ts, wire in heapq.merge(*streams))
        self.streaming = {}

    def _streamed_elsewhere(self) -> dict[MemberId, list[tuple[int, int]]]:
        """Per author, the ranges ``(after, upto]`` that other sessions with
        the same peer are streaming to it now (``elsewhere``), by ``after``.

        A node that holds two sessions with one peer at once (each side
        started one: on connecting, to learn a payee's join, on its sync
        interval) would otherwise stream the same history twice, and a
        newcomer catching up a long history takes all of it twice. What the
        other stream was to send and this one skips comes in a later session
        if that stream is cut, as after any cut stream."""
        out: dict[MemberId, list[tuple[int, int]]] = {}
        for streamed in self._elsewhere() if self._elsewhere is not None else ():
            for author, span in streamed.items():
                out.setdefault(author, []).append(span)
        for spans in out.values():
            spans.sort()
        return out

    def _send_certificates(self, finals: Finals) -> Iterator[dict[str, Any]]:
        """The final-tip certificate of every author whose final seq is above
        the peer's, and below it those of the raceable and void entries
        above the peer's final seq (docs/witness.md §3.6, §6.2: the peer's
        tip passes a raceable entry only with its own certificate), in
        ``certs`` frames (bounded in count and bytes)."""
        datas: list[bytes] = []
        for author, (seq, tip) in sorted(finals.items()):
            theirs = self._peer_finals.get(author, 0)
            if seq > theirs:
                # Above the peer's head, the stream (ours or another
                # session's) sent them ahead of their entries (_needed): a
                # newcomer's catch-up reads no range of history here.
                high = min(seq, self._covered.get(author, seq) + 1)
                datas += self.view.race_certificates(self.community, author, theirs, high)
                datas.append(tip)
        # Not again what went ahead of the stream's entries (_stream).
        yield from self._cert_frames(d for d in datas if d not in self._sent_ahead)

    def _cert_frames(self, datas: Iterable[bytes]) -> Iterator[dict[str, Any]]:
        """``certs`` frames of ``datas``, bounded in count and bytes."""
        batch: list[bytes] = []
        size = 0
        for data in datas:
            if batch and (len(batch) >= MAX_CERTS or size + len(data) > self.batch_bytes):
                yield self._certs(batch)
                batch, size = [], 0
            batch.append(data)
            size += len(data)
        if batch:
            yield self._certs(batch)

    def _certs(self, datas: list[bytes]) -> dict[str, Any]:
        self.stats.certificates_sent += len(datas)
        self.stats.bytes_out += sum(len(d) for d in datas)
        return {"t": "certs", "k": datas}

    def _on_certs(self, msg: dict[str, Any]) -> Iterator[dict[str, Any]]:
        datas = msg.get("k")
        if (
            not isinstance(datas, list)
            or len(datas) > MAX_CERTS
            or not all(isinstance(d, bytes) for d in datas)
        ):
            raise _bad("certs")
        if msg.get("r"):
            if self._wants_out <= 0:
                raise _bad("a reply nobody asked for")
            self._wants_out -= 1
        elif not self._got_heads or self._got_end:
            # Sent at the end of the peer's stream, after its heads.
            raise _bad("certs out of turn")
        self.stats.certificates_received += len(datas)
        self.stats.bytes_in += sum(len(d) for d in datas)
        # The shape and community are checked here; the votes by the ledger.
        mine: list[bytes] = []
        for data in datas:
            try:
                cert = decode_any_certificate(data)  # either kind (docs/witness.md §3.6)
            except CodecError:
                self._refused_certificate(Reason.BAD_CERTIFICATE.value, faulty=True)
                continue
            if cert.community != self.community:
                self._refused_certificate(Reason.UNKNOWN_COMMUNITY.value, faulty=True)
                continue
            mine.append(data)
        certified: list[Ref] = []
        for outcome in self.view.ingest_certificates(mine) if mine else []:
            if outcome.status is Status.ACCEPTED:
                self.stats.certificates_accepted += 1
                self.stats.accepted += len(outcome.released)
                self._unparked(*outcome.released)
            if outcome.ok:
                ref = None if outcome.certificate is None else outcome.certificate.ref
                point = None if ref is None else self._frozen.get(ref.author)
                if ref is not None and point is not None and point[0] <= ref.seq:
                    certified.append(ref)
                continue
            code = "unknown" if outcome.reason is None else outcome.reason.value
            self._refused_certificate(code, faulty=not _witness_fault(outcome))
        # A certified entry beyond a fork point (those are not streamed) that
        # we lack: fetch it, the branch below it comes along.
        yield from self._want(certified)
        yield from self._maybe_fin()

    def _refused_certificate(self, code: str, *, faulty: bool) -> None:
        rejected = self.stats.certificates_rejected
        rejected[code] = rejected.get(code, 0) + 1
        if faulty and self.misbehaviour is None:
            self.misbehaviour = f"sent an invalid certificate ({code})"

    def _stream(self, wires: Iterable[bytes]) -> Iterator[dict[str, Any]]:
        """The bulk stream of ``wires`` in ``entries`` frames; in a witnessed
        community, each run of CERTS_AHEAD entries preceded by the
        certificates its accepts and reclaims need (their transfers' and
        declines'), so that the peer can store them as they come instead
        of parking them until the final tips' certificates at the end,
        and then a session more for each accept along a chain of payments
        (docs/sync.md, "Certificates")."""
        if not self._finals:  # optimistic, or nothing certified here
            yield from self._batches(wires)
            return
        run: list[dict[str, Any]] = []
        count = 0
        for msg in self._batches(wires):
            run.append(msg)
            count += len(msg["e"])
            if count >= CERTS_AHEAD:
                yield from self._cert_frames(self._needed(run))
                yield from run
                run, count = [], 0
        yield from self._cert_frames(self._needed(run))
        yield from run

    def _needed(self, run: list[dict[str, Any]]) -> list[bytes]:
        """The certificates held here that make final what the accepts and
        reclaims of ``run`` (``entries`` messages) need, and the own
        certificates of its final raceable and void entries (which the
        peer's tip passes only with them), unless the peer holds it final
        already (its final seq) or this session sent it."""
        out = []
        # The view's own entries (entries_after), each checked whole when it
        # was stored: not proven canonical again (a sender decodes every
        # entry it streams in a witnessed community).
        entries = [
            Entry.decode(wire, check_signature=False, check_canonical=False)
            for msg in run
            for wire in msg["e"]
        ]
        for entry in entries:
            ref = certificate_needed(entry)
            if ref is not None:
                out.append(self._making_final(ref))
            # The entry's own certificate if it races: what the range
            # read at the stream's end would send (_send_certificates).
            if entry.seq > self._peer_finals.get(entry.author, 0):
                out.append(self.view.race_certificate(self.community, entry))
        for entry in entries:
            self._streamed_top[entry.author] = entry.ref
        new = []
        for data in out:
            if data is not None and data not in self._sent_ahead:
                self._sent_ahead.add(data)
                new.append(data)
        return new

    def _making_final(self, ref: Ref) -> bytes | None:
        """A certificate that makes ``ref`` (a transfer or decline a streamed
        entry needs) final at the peer, or None if one sent already does
        (or the peer's final seq shows it final).

        Preferably the own certificate of the last entry of ``ref``'s log
        that an earlier run streamed (final here): the peer holds that
        entry by now, so its tip moves there and makes final every entry
        of the log below it, what this run's other accepts of the log's
        payments need and what later runs' need of the same stretch. One
        certificate per payer and run rather than one per accept: at
        200,000 entries by 1,000 members, 60,443 certificates in all
        instead of 93,738, each checked and stored by the newcomer. Else (``ref``
        came in this run, or that entry is not certified here) what
        :func:`certificate_for` gives for ``ref`` itself."""
        author = ref.author
        if ref.seq <= max(self._peer_finals.get(author, 0), self._made_final.get(author, 0)):
            return None
        top = self._streamed_top.get(author)
        if top is not None and ref.seq <= top.seq <= self._finals.get(author, (0, b""))[0]:
            data = self.view.certificate_of(self.community, top)
            if data is not None and decode_any_certificate(data).seq == top.seq:
                self._made_final[author] = top.seq
                return data
        data = self.view.certificate_of(self.community, ref)
        if data is not None:
            self._made_final[author] = ref.seq
        return data

    def _batches(self, wires: Iterable[bytes]) -> Iterator[dict[str, Any]]:
        batch: list[bytes] = []
        size = 0
        for wire in wires:
            batch.append(wire)
            size += len(wire)
            if len(batch) >= self.batch_entries or size >= self.batch_bytes:
                yield self._entries(batch)
                batch, size = [], 0
        if batch:
            yield self._entries(batch)

    def _author_entries(
        self, author: MemberId, after: int, upto: int, page: int = 1000
    ) -> Iterator[tuple[int, bytes]]:
        """``author``'s entries after seq ``after`` up to ``upto`` (one per seq:
        at most our reported head, which is below any fork we know), read
        ``page`` at a time."""
        while after < upto:
            n = min(page, upto - after)
            rows = self.view.entries_after(self.community, author, after, n)
            yield from rows
            if len(rows) < n:
                return
            after += len(rows)

    def _entries(self, wires: list[bytes], *, reply: bool = False) -> dict[str, Any]:
        self.stats.sent += len(wires)
        self.stats.bytes_out += sum(len(w) for w in wires)
        msg: dict[str, Any] = {"t": "entries", "e": wires}
        if reply:
            msg["r"] = True
        return msg

    def receive_entries(self, msgs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Several ``entries`` messages received in a row, handled as one:
        each is checked as :meth:`receive` checks it, then their entries are
        ingested in one batch. A node's catch-up then commits a few thousand
        entries at a time rather than one frame's (SQLite's cost is per page
        a commit dirties, and every member's log is a place in each B-tree),
        and an entry that waits for one later in the run is released without
        a want. Raises RemoteProtocolError as :meth:`receive` would."""
        wires: list[bytes] = []
        for msg in msgs:
            wires += self._entries_of(msg)
        yield from self._ingest(wires)
        yield from self._maybe_fin()

    def _entries_of(self, msg: dict[str, Any]) -> list[bytes]:
        """The wires of an ``entries`` message, checked; counts a reply."""
        wires = msg.get("e")
        if (
            msg.get("t") != "entries"
            or not isinstance(wires, list)
            or len(wires) > MAX_BATCH
            or not all(isinstance(w, bytes) for w in wires)
        ):
            raise _bad("entries")
        if msg.get("r"):
            if self._wants_out <= 0:
                raise _bad("a reply nobody asked for")
            self._wants_out -= 1
        return wires

    def _on_entries(self, msg: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield from self.receive_entries([msg])

    def _ingest(self, wires: list[bytes]) -> Iterator[dict[str, Any]]:
        """Store what the peer sent; ask for what it depends on."""
        self.stats.received += len(wires)
        self.stats.bytes_in += sum(len(w) for w in wires)
        missing: list[Ref] = []
        # Per author, the lowest entry that does not link to our chain: the
        # ones above it in this batch build on it and tell nothing more.
        off_branch: dict[MemberId, Entry] = {}
        for outcome in self.view.ingest_batch(wires):
            if outcome.status is Status.ACCEPTED:
                self.stats.accepted += 1 + len(outcome.released)
                self._unparked(outcome.entry, *outcome.released)
            elif outcome.status is Status.WAITING:
                missing.extend(outcome.missing)
                if outcome.entry is not None:
                    self._parked.add(outcome.entry.ref)
                    if outcome.missing_final:
                        self._final_waits[outcome.entry.ref] = outcome.missing_final
            elif outcome.status is Status.REJECTED and outcome.reason is not None:
                e = outcome.entry
                if outcome.reason is Reason.BAD_PREV and e is not None and e.prev is not None:
                    low = off_branch.get(e.author)
                    if low is None or e.seq < low.seq:
                        off_branch[e.author] = e
                code = outcome.reason.value
                self.stats.rejected[code] = self.stats.rejected.get(code, 0) + 1
                # An entry that did not even decode (e is None) cannot come
                # from an honest store; a well-formed bad_prev is a fork.
                faulty = outcome.reason in MALICIOUS or (
                    outcome.reason is Reason.BAD_PREV and e is None
                )
                if faulty and self.misbehaviour is None:
                    self.misbehaviour = f"sent an invalid entry ({code})"
        push: list[bytes] = []
        branches: list[Ref] = []
        for e in off_branch.values():
            # It extends a branch we lack (a fork): fetch the branch down to
            # where it meets ours (the reply brings the branch below too),
            # then the entry again (it was refused, not parked, and what
            # came after it waits for it); the fork proof follows. Asked
            # first: a reply comes in the order asked.
            assert e.prev is not None
            ref = Ref(e.author, e.seq - 1, e.prev)
            branches += [ref, e.ref]
            # The peer holds the other branch and may never ask for ours
            # (its head can be ahead of ours): send it our entry at that
            # seq, the other half of the proof. One entry: it may cross
            # the peer's stream. Not for a fork we knew at the start: its
            # proof went with our heads.
            point = self._frozen.get(ref.author)
            if point is not None and point[0] <= ref.seq:
                continue
            if (ref.author, ref.seq) not in self._pushed:
                self._pushed.add((ref.author, ref.seq))
                rows = self.view.entries_after(self.community, ref.author, ref.seq - 1, 1)
                push.extend(w for _ts, w in rows)
        if push and not self._sent_fin:
            yield from self._batches(push)
        yield from self._want(branches + missing)

    def _unparked(self, *entries: Entry | None) -> None:
        if self._final_waits:
            for e in entries:
                if e is not None:
                    self._final_waits.pop(e.ref, None)

    def _want(self, missing: list[Ref]) -> Iterator[dict[str, Any]]:
        """Ask for what is missing, unless asked before or stored by now
        (sent later in the same batch, or released); for what is held
        here only parked, what that waits for (:meth:`_lacking`)."""
        wanted: list[Ref] = []
        for r in dict.fromkeys(missing):
            if r in self._asked or r in self._parked:  # parked now: what it waits for is asked
                continue
            wire = self.view.wire_of(self.community, r)
            if wire is not None:
                low = self._lacking(r, wire)
                if low is None or low in self._asked:
                    continue
                r = low
            wanted.append(r)
        wanted = list(dict.fromkeys(wanted))[:MAX_WANTS]
        if wanted and self._want_rounds < MAX_WANT_ROUNDS and not self._sent_fin:
            self._want_rounds += 1
            self._wants_out += 1
            self._asked.update(wanted)
            yield {"t": "want", "r": [r.to_wire() for r in wanted]}

    def _lacking(self, ref: Ref, wire: bytes) -> Ref | None:
        """What to ask for so that ``ref``, held here (``wire``), can be
        stored: None if it is stored; if it is only parked, the first entry
        down its prevs that is not held at all, or the lowest parked one
        again when its prev is stored (it waits for something else, and
        ingesting it says what). Parked before this session, nothing else
        would ask: what it waited for was asked when it came, and an entry
        beyond a fork point is never streamed again (docs/sync.md, "Digest,
        heads and forks"). Each entry is walked once a session, so the
        waiting set bounds the reads."""
        if ref in self._walked or self.view.is_stored(self.community, ref):
            return None
        r = ref
        while r not in self._walked:  # ``ref``, then each below it: held, not stored
            self._walked.add(r)
            prev = Entry.decode(wire, check_signature=False).prev
            if prev is None:  # pragma: no cover - a join waits for nothing of its log
                return None
            below = Ref(r.author, r.seq - 1, prev)
            below_wire = self.view.wire_of(self.community, below)
            if below_wire is None:
                return below
            if self.view.is_stored(self.community, below):
                return r
            r, wire = below, below_wire
        return None

    def _want_certificates(self) -> Iterator[dict[str, Any]]:
        """Ask for the certificates that entries still parked here wait for
        (an accept for its transfer's, a reclaim for its decline's): the
        final tips' certificates were not enough, as when a log's tip is
        itself held up by what waits; and those of the raceable entries a
        final tip here waits for (docs/witness.md §6.1, §6.2)."""
        refs = [r for waits in self._final_waits.values() for r in waits]
        refs += self.view.tips_waiting(self.community)
        refs += self.view.transfers_wanted(self.community)
        wanted = [r for r in dict.fromkeys(refs) if r not in self._asked_certs][:MAX_WANTS]
        if wanted and self._want_rounds < MAX_WANT_ROUNDS and not self._sent_fin:
            self._want_rounds += 1
            self._wants_out += 1
            self._asked_certs.update(wanted)
            yield {"t": "want", "k": [r.to_wire() for r in wanted]}

    def _on_want(self, msg: dict[str, Any]) -> Iterator[dict[str, Any]]:
        certificates = "k" in msg
        raw = msg.get("k") if certificates else msg.get("r")
        if not isinstance(raw, list) or len(raw) > MAX_WANTS:
            raise _bad("want")
        # A want follows the heads (it names what they showed missing), and
        # an honest side sends at most MAX_WANT_ROUNDS per session.
        if not self._got_heads:
            raise _bad("want out of turn")
        self._wants_in += 1
        if self._wants_in > MAX_WANT_ROUNDS:
            raise _bad(f"more than {MAX_WANT_ROUNDS} wants in a session")
        refs = []
        for item in raw:
            try:
                refs.append(Ref.from_wire(item))
            except CodecError:
                raise _bad("want ref") from None
        if certificates:
            yield self._certificates_of(refs)
            return
        # One want, one reply: answer what fits in a frame and in what is
        # left of the session's reply bytes; the peer asks again for the
        # rest in a later session.
        found: list[bytes] = []
        seen: set[bytes] = set()
        size = 0
        left = MAX_REPLY_BYTES - self._reply_bytes
        for ref in refs:
            wire = self.view.wire_of(self.community, ref)
            if wire is None:
                continue
            for w in [*self._branch_below(ref, wire, len(found)), wire]:
                if w in seen:
                    continue
                if size + len(w) > left or (
                    found and (size + len(w) > self.batch_bytes or len(found) >= self.batch_entries)
                ):
                    yield self._reply(found)
                    return
                found.append(w)
                seen.add(w)
                size += len(w)
        yield self._reply(found)

    def _reply(self, wires: list[bytes]) -> dict[str, Any]:
        self._reply_bytes += sum(len(w) for w in wires)
        return self._entries(wires, reply=True)

    def _branch_below(self, ref: Ref, wire: bytes, used: int) -> list[bytes]:
        """The entries below ``ref`` on its branch, oldest first, when the
        peer evidently lacks them; else nothing.

        * ``ref`` lies beyond a fork point we know: the peer (which may hold
          the other branch) needs the branch from the fork point up to it,
          and it is not streamed (it never counts).
        * A peer whose head (at the start of the session) is at or past
          ``ref.seq`` holds an entry at that seq, and wants ours: its log is
          forked below. Without the entries under ``ref`` it would find
          where the branches meet one want round at a time, never if the
          fork is deeper than the rounds a session allows (a ledger may
          reject, rather than park, an entry whose prev is on a branch it
          lacks).

        The branch is followed by prev links, so ``ref`` may be on any branch.
        """
        # Bounded like a want (typical entries: well under 100 KB), since a
        # reply may cross the peer's stream.
        room = min(MAX_WANTS, self.batch_entries - used - 1)
        if ref.seq <= 1 or room <= 0:
            return []
        point = self._frozen.get(ref.author)
        if point is not None and ref.seq > point[0]:
            floor = point[0]
        elif self._peer.get(ref.author, (0, b""))[0] >= ref.seq:
            floor = 1
        else:
            return []
        out: list[bytes] = []
        seq, cur = ref.seq, wire
        while seq > max(floor, ref.seq - room):
            prev = Entry.decode(cur, check_signature=False).prev
            assert prev is not None  # seq > 1
            below = self.view.wire_of(self.community, Ref(ref.author, seq - 1, prev))
            if below is None:  # pragma: no cover - a stored entry's prev is stored
                break
            out.append(below)
            seq, cur = seq - 1, below
        out.reverse()
        return out

    def _certificates_of(self, refs: list[Ref]) -> dict[str, Any]:
        """The reply to a want of certificates: one that makes each entry
        final, as many as fit in one frame."""
        found: list[bytes] = []
        seen: set[bytes] = set()
        size = 0
        left = MAX_REPLY_BYTES - self._reply_bytes
        for ref in refs:
            data = self.view.certificate_of(self.community, ref)
            if data is None or data in seen:
                continue
            if size + len(data) > left or (
                found and (len(found) >= MAX_CERTS or size + len(data) > self.batch_bytes)
            ):
                break
            found.append(data)
            seen.add(data)
            size += len(data)
        self._reply_bytes += size
        msg = self._certs(found)
        msg["r"] = True
        return msg

    def _maybe_fin(self) -> Iterator[dict[str, Any]]:
        if self._sent_end and self._got_end and self._wants_out == 0 and not self._sent_fin:
            # Last, the certificates that what is parked here still waits
            # for, and the transfers parked accepts wait for (docs/witness.md
            # §6.1: a peer may hold one parked, with or without its own
            # certificate, where no stream brings it).
            yield from self._want_certificates()
            yield from self._want(self.view.transfers_wanted(self.community))
            if self._wants_out:
                return
            self._sent_fin = True
            yield {"t": "fin"}


def _witness_fault(outcome: CertificateOutcome) -> bool:
    """A certificate refused because another one holds its position: it
    verified, so more than f witnesses lied, not the peer that relayed it."""
    return outcome.conflict
