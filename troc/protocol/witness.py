"""Witnessed finality, the pure core: votes, certificates, the witness's
decisions and the payer's collection of votes (docs/witness.md).

Theory of operation
-------------------
A payment needs no global order: only the payer writes the payer's log, so
the one thing to agree on is "which entry is this author's seq n". That is
consistent broadcast, not consensus. The genesis of a ``finality: witnessed``
community names n witnesses, the number f of them that may be faulty, and a
quorum q with 2q >= n + f + 1 (two quorums share at least f + 1 witnesses, so
at least one honest one) and q <= n - f (f silent witnesses cannot stop
payments). :class:`WitnessRules` holds them.

A **vote** is a witness's Ed25519 signature, in the ``troc/vote/v1`` domain,
of the canonical msgpack array ``[community, author, seq, id]``. q votes of
distinct witnesses for one entry form a **certificate**, which anyone can
check against the genesis alone.

An honest witness (:class:`WitnessState`) signs a vote for entry E at
(author, n) only if

1. E is valid on top of the author's log it holds (its ledger says so; what
   it lacks it waits for), and every entry of E's chain that it has not
   checked before passes the witnessed rule of :func:`certificate_needed`
   (an accept needs its transfer's certificate, a reclaim its decline's);
2. E's chain is consistent with every vote it ever gave for this author: the
   witness's vote log holds, per (community, author), one id for each seq
   1 … last, and these ids form one chain (each links to the one below). E at
   n <= last is voted for only if it is the recorded id; E at n > last only
   if its ancestor at ``last`` is the recorded id (then, the ids being a hash
   chain, every lower ancestor matches too), and voting records E and its
   ancestors above ``last``;
3. the records are written durably *before* the vote is signed.

Rule 2 is stronger than "one id per (author, seq)": it locks the whole chain
below each vote. Without it a payer could fork at an entry nobody asked
witnesses about (an offer, say) and spend the same credit once on each
branch, at two different seqs, each with its own certificate. With it, two
certified entries of one author always lie on one chain: a quorum for each
shares an honest witness, whose records contain both chains up to the lower
seq. So at most one certificate exists per (author, seq), and the certified
entries of a log, read in seq order, never spend more than the log's credit.

A witness asked to vote for an entry that contradicts its records answers,
instead of a vote, with the proof: its vote for the recorded id and the two
entries the author signed at that seq (:class:`Conflicting`). The payer's
node gathers votes with a :class:`Collector`, which keeps distinct, valid
votes of the community's witnesses for its one entry, ignores the rest, and
keeps the proof when a witness is caught voting for two ids at one seq
(:class:`Equivocation`).

Everything here is sans-I/O. The witness's storage is two narrow protocols:
:class:`VoteLog` (its votes; the node's implementation must fsync before
:meth:`VoteLog.put` returns) and :class:`WitnessView` (the author's log as
its ledger holds it; :class:`LedgerView` implements it over a
:class:`~troc.protocol.ledger.Ledger`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from troc.crypto.sign import MemberId, SigningKey
from troc.errors import CodecError, LocalProtocolError
from troc.protocol.campaign_rules import BEFORE_DEADLINE_HERE, campaign_race
from troc.protocol.collector import LIES, Collector, Tally
from troc.protocol.entry import (
    Accept,
    CampaignClose,
    CommunityId,
    Entry,
    EntryId,
    Kind,
    Reclaim,
    Ref,
    TakeBack,
    Transfer,
    Withdraw,
    expiry_of,
)
from troc.protocol.vote import (
    CERTIFICATE_LIMITS,
    VOTE_LIMITS,
    Certificate,
    Equivocation,
    Position,
    TimeAttestation,
    VoidCertificate,
    VoidVote,
    Vote,
    WitnessRules,
    certified_time,
    check_quorum,
    decode_any_certificate,
    default_quorum,
    fork_proof_problem,
    is_void_certificate,
    max_faults,
    min_quorum,
    quorum_problem,
    vote_message,
)
from troc.protocol.witness_time import deadline_of, is_timed
from troc.protocol.witness_wire import (
    MAX_CERTIFICATES,
    MAX_DEPS,
    MESSAGE_LIMITS,
    PROTOCOL_ID,
    Answer,
    Conflicting,
    Refused,
    Voted,
    VoteRequest,
    Waiting,
    decode_answer,
    decode_request,
    encode_answer,
    encode_request,
)

if TYPE_CHECKING:  # the ledger imports this module (certificates) at run time
    from troc.protocol.ledger import Ledger

__all__ = [
    "CERTIFICATE_LIMITS",
    "LIES",
    "MAX_CERTIFICATES",
    "MAX_DEPS",
    "MESSAGE_LIMITS",
    "PROTOCOL_ID",
    "VOTE_LIMITS",
    "Answer",
    "Certificate",
    "Collector",
    "Conflicting",
    "Equivocation",
    "LedgerView",
    "MemoryVoteLog",
    "Position",
    "Refused",
    "Tally",
    "TimeAttestation",
    "VoidCertificate",
    "VoidVote",
    "Vote",
    "VoteLog",
    "VoteRequest",
    "Voted",
    "Waiting",
    "WitnessRules",
    "WitnessState",
    "WitnessView",
    "can_be_void",
    "certificate_needed",
    "certified_time",
    "check_quorum",
    "decode_answer",
    "decode_any_certificate",
    "decode_request",
    "default_quorum",
    "encode_answer",
    "encode_request",
    "fork_proof_problem",
    "is_void_certificate",
    "max_faults",
    "may_exclude",
    "min_quorum",
    "quorum_problem",
    "raceable",
    "rivals_of",
    "vote_message",
]


#: Refusal codes of the witness itself; the others are ledger reasons
#: (:class:`troc.protocol.ledger.Reason`) and codec reasons.
UNKNOWN_COMMUNITY = "unknown_community"
#: Refusals of the accept / take-back rule (docs/witness.md §3.5).
NOT_EXPIRED_HERE = "not_expired_here"
VOTED_TAKE_BACK = "voted_take_back"
VOTED_ACCEPT = "voted_accept"
#: Refusals of void votes (docs/witness.md §3.6).
VOIDED = "void"  # a normal vote for an entry this witness voted void
NOT_RACEABLE = "not_raceable"  # only an accept or a take-back can be void
NO_RIVAL = "no_certified_rival"  # no certificate of the entry's rival is held
CERTIFIED = "certified"  # the entry itself is certified: it cannot be void
#: An entry that would spend credit of a void accept or take-back below it.
VOID_OVERDRAFT = "void_overdraft"


# -- the witness -------------------------------------------------------------------


class VoteLog(Protocol):
    """A witness's votes, per (community, author): one entry id for each seq
    1 … :meth:`last`, forming one chain. The node keeps it durably."""

    def get(self, community: CommunityId, author: MemberId, seq: int) -> EntryId | None:
        """The id voted for (or locked as an ancestor of a vote) at ``seq``."""
        ...

    def last(self, community: CommunityId, author: MemberId) -> int:
        """The highest seq recorded; 0 if none. Every seq below it is recorded."""
        ...

    def put(
        self, community: CommunityId, author: MemberId, records: Sequence[tuple[int, EntryId]]
    ) -> None:
        """Record ``records`` ((seq, id) at seqs last+1, last+2 …, in order).

        Must be durable when it returns (the node: committed and fsynced),
        and atomic, or at least in order (a crash may keep a prefix). Must
        raise, and record nothing more, rather than give a recorded seq
        another id or leave a gap.
        """
        ...

    def voids(self, community: CommunityId, author: MemberId) -> dict[int, EntryId]:
        """The entries this witness holds void (§3.6): seq → id. Few per log."""
        ...

    def put_void(self, community: CommunityId, author: MemberId, seq: int, eid: EntryId) -> None:
        """Mark ``eid`` at ``seq`` void, for good, durable when it returns. It
        may precede the record of ``eid`` (:meth:`put`) or follow it; either
        way no normal vote for ``eid`` is signed after it."""
        ...


class MemoryVoteLog:
    """A :class:`VoteLog` in a dict, for tests and simulation ("durable" for
    as long as the object lives: a restarted witness reuses it)."""

    def __init__(self) -> None:
        self._ids: dict[tuple[CommunityId, MemberId], list[EntryId]] = {}
        self._voids: dict[tuple[CommunityId, MemberId], dict[int, EntryId]] = {}
        self.writes = 0

    def voids(self, community: CommunityId, author: MemberId) -> dict[int, EntryId]:
        return dict(self._voids.get((community, author), {}))

    def put_void(self, community: CommunityId, author: MemberId, seq: int, eid: EntryId) -> None:
        self._voids.setdefault((community, author), {})[seq] = eid

    def get(self, community: CommunityId, author: MemberId, seq: int) -> EntryId | None:
        ids = self._ids.get((community, author), [])
        return ids[seq - 1] if 1 <= seq <= len(ids) else None

    def last(self, community: CommunityId, author: MemberId) -> int:
        return len(self._ids.get((community, author), []))

    def put(
        self, community: CommunityId, author: MemberId, records: Sequence[tuple[int, EntryId]]
    ) -> None:
        ids = self._ids.setdefault((community, author), [])
        for seq, eid in records:
            if seq <= len(ids):
                if ids[seq - 1] != eid:
                    raise LocalProtocolError(f"seq {seq} is recorded with another id")
                continue
            if seq != len(ids) + 1:
                raise LocalProtocolError(f"seq {seq} would leave a gap after {len(ids)}")
            self._record(ids, eid)

    def _record(self, ids: list[EntryId], eid: EntryId) -> None:
        """Append one record (a hook for tests that crash mid-write)."""
        ids.append(eid)
        self.writes += 1


class WitnessView(Protocol):
    """The community as the witness's node holds it."""

    def check(self, entry: Entry) -> Refused | Waiting | None:
        """Is ``entry`` valid on top of its author's log as held here? None if
        so (and then it is stored: the next entry builds on it); Refused with
        the ledger's reason if not; Waiting for the entries it lacks."""
        ...

    def get(self, community: CommunityId, ref: Ref) -> Entry | None:
        """A stored entry (stored means valid)."""
        ...

    def certified(self, community: CommunityId, ref: Ref) -> bool:
        """True if ``ref`` is final here (a verified certificate of it, or of
        an entry above it on its chain, is held)."""
        ...

    def tip_waits_for(self, community: CommunityId, author: MemberId) -> Ref | None:
        """The raceable entry whose own certificate ``author``'s final tip
        waits for here (§6.1), if any: what a wait must name besides the
        entry it needs final."""
        ...

    def own_certificate(self, community: CommunityId, ref: Ref) -> bool:
        """True if a verified (normal) certificate of exactly ``ref`` is held:
        for an accept or take-back, the proof that it won its race (§3.6)."""
        ...

    def void_certified(self, community: CommunityId, ref: Ref) -> bool:
        """True if a verified void certificate of exactly ``ref`` was given."""
        ...

    def add_void_certificate(self, certificate: VoidCertificate) -> None:
        """Keep a verified void certificate."""
        ...

    def balance(self, community: CommunityId, ref: Ref) -> tuple[int, int] | None:
        """The stored entry's nominal balance after it and its credit limit."""
        ...

    def raceable_below(self, community: CommunityId, author: MemberId, below: int) -> list[Ref]:
        """``author``'s stored accepts, take-backs, closes and withdraws below
        seq ``below`` (on any branch; the witness picks the raceable ones);
        it may leave out those below a seq :meth:`settled_below` was told of."""
        ...

    def settled_below(self, community: CommunityId, author: MemberId, below: int) -> None:
        """A hint: every accept and take-back this witness recorded on
        ``author``'s log below ``below`` is settled (§3.6)."""
        ...

    def offer(self, community: CommunityId, wire: bytes) -> None:
        """An entry a requester sent along: check and store it if valid."""
        ...

    def add_certificate(self, certificate: Certificate) -> None:
        """Keep a verified certificate."""
        ...

    def now(self) -> int:
        """The witness's clock (ms): it judges expiry by it (§3.5)."""
        ...

    def expiry(self, community: CommunityId, transfer: Ref) -> int | None:
        """When the stored transfer ``transfer`` expires (None: never).
        A transfer parked with its own certificate counts as stored here
        (an accept may name it, docs/witness.md §6.1)."""
        ...

    def holds_transfer(self, community: CommunityId, transfer: Ref) -> bool:
        """True if the transfer ``transfer`` is stored, or parked with its
        own certificate: :meth:`expiry` knows it."""
        ...

    def may_expire(self, community: CommunityId, transfer: Ref) -> bool:
        """True unless the transfer ``transfer`` is held (:meth:`holds_transfer`)
        and never expires (:meth:`expiry` None): an accept of it may race."""
        ...

    def answers(
        self, community: CommunityId, author: MemberId, kind: Kind, transfer: EntryId
    ) -> list[Ref]:
        """``author``'s stored entries of ``kind`` naming ``transfer``."""
        ...


def raceable(entry: Entry, view: WitnessView, community: CommunityId) -> bool:
    """An entry that may lose a race: a take-back, an accept of a transfer
    that expires (one that never expires cannot be taken back), a lapse or a
    successful close (troc/protocol/campaign_rules.py). Witnesses lock one
    below a vote only once it holds a certificate of its own (§3.6), so its
    author's node asks for those first."""
    body = entry.body
    if isinstance(body, TakeBack):
        return True
    if isinstance(body, Accept):
        # An accept stored while its transfer was parked, whose transfer is
        # held no more (dropped from the waiting set before it could be
        # stored, docs/witness.md §6.1): it may expire, so it may race.
        return view.may_expire(community, body.transfer)
    return campaign_race(entry, view, community) is not None


def can_be_void(entry: Entry) -> bool:
    """An entry of a kind that may lose a race and be voided (§3.6): an
    accept, a take-back, a lapse or a close (a failed close has no rival, so
    no honest witness voids it; it credits nothing either way)."""
    body = entry.body
    if isinstance(body, Withdraw):
        return body.lapse
    return isinstance(body, Accept | TakeBack | CampaignClose)


def rivals_of(entry: Entry, view: WitnessView, community: CommunityId) -> list[Ref] | None:
    """The stored entries that exclude ``entry`` (§3.5): the take-backs of
    an accept's transfer, the accepts of a take-back's, the rivals of a
    lapse or a successful close (``campaign_race``); None if ``entry`` takes
    part in no race."""
    body = entry.body
    if isinstance(body, Accept):
        ref = body.transfer
        return view.answers(community, ref.author, Kind.TAKE_BACK, ref.id)
    if isinstance(body, TakeBack):
        ref = body.transfer
        transfer = view.get(community, ref)
        if transfer is None or not isinstance(transfer.body, Transfer):
            return []
        return view.answers(community, transfer.body.to, Kind.ACCEPT, ref.id)
    race = campaign_race(entry, view, community)
    return None if race is None else list(race.rivals)


def may_exclude(other: Entry, entry: Entry) -> bool:
    """Whether ``other`` could be a rival of ``entry`` (:func:`rivals_of`),
    by their bodies alone: the take-back of an accept's transfer or the
    accept of a take-back's, a close naming a lapse's pledge or a lapse of
    a pledge a close names. Whether it really is one (a close that succeeded,
    a lapse after the deadline) needs ``other`` stored."""
    mine, theirs = entry.body, other.body
    if isinstance(mine, Accept):
        return isinstance(theirs, TakeBack) and theirs.transfer.id == mine.transfer.id
    if isinstance(mine, TakeBack):
        return isinstance(theirs, Accept) and theirs.transfer.id == mine.transfer.id
    if isinstance(mine, Withdraw) and mine.lapse:
        return isinstance(theirs, CampaignClose) and mine.pledge in theirs.pledges
    if isinstance(mine, CampaignClose):
        return isinstance(theirs, Withdraw) and theirs.lapse and theirs.pledge in mine.pledges
    return False


def certificate_needed(entry: Entry) -> Ref | None:
    """The entry whose certificate ``entry`` needs in a witnessed community,
    or None: an accept needs its transfer's (a payee takes only final
    payments), a reclaim its decline's (else a payee could accept on one
    branch and decline on another, and the transfer be credited twice)."""
    body = entry.body
    if isinstance(body, Accept):
        return body.transfer
    if isinstance(body, Reclaim):
        return body.decline
    return None


class WitnessState:
    """The witness role's decisions for one community (docs/witness.md §3).

    Holds no state of its own: everything lives in ``votes`` and ``view``, so
    a restarted witness is a new WitnessState on the same two. Calls must be
    serialised (the node: one lock per community), or two concurrent requests
    could both find a seq unrecorded.
    """

    def __init__(
        self, key: SigningKey, rules: WitnessRules, votes: VoteLog, view: WitnessView
    ) -> None:
        if key.public not in rules.witnesses:
            raise LocalProtocolError("this key is not one of the community's witnesses")
        self.key = key
        self.rules = rules
        self.votes = votes
        self.view = view

    @property
    def witness(self) -> MemberId:
        return self.key.public

    def handle(self, request: VoteRequest) -> Answer:
        """Take what the request carries along, then :meth:`decide` on its
        entry (:meth:`decide_void` for a request of a void vote)."""
        c = self.rules.community
        for data in request.certificates[:MAX_CERTIFICATES]:
            try:
                cert = decode_any_certificate(data)
            except CodecError:
                continue
            # One the witness holds already adds nothing: not verified again.
            if isinstance(cert, VoidCertificate):
                if not self.view.void_certified(c, cert.ref) and cert.verify(self.rules):
                    self.view.add_void_certificate(cert)
            elif not self.view.own_certificate(c, cert.ref) and cert.verify(self.rules):
                self.view.add_certificate(cert)
        for wire in request.deps[:MAX_DEPS]:
            self.view.offer(c, wire)
        if request.void:
            return self.decide_void(request.entry, shown=request.deps[:MAX_DEPS])
        return self.decide(request.entry)

    def decide(self, entry: bytes | Entry) -> Answer:
        """Vote for ``entry``, or say why not. A vote is signed only after its
        records are in the vote log (:meth:`VoteLog.put` returned)."""
        checked = self._entry(entry)
        if not isinstance(checked, Entry):
            return checked
        entry = checked
        c, a, n = self.rules.community, entry.author, entry.seq
        recorded = self.votes.get(c, a, n)
        if recorded == entry.id:
            if self._void_here(entry.ref):
                return Refused(VOIDED, f"this witness voted {entry.ref} void: its rival won")
            # Again: the same vote bytes as before (a take-back's time is now's).
            return self._timed(entry, Voted(self._sign(entry.ref)))
        problem = self._admissible(entry)
        if problem is not None:
            return problem
        return self._timed(entry, self._lock(entry, recorded, void=False))

    def decide_void(self, entry: bytes | Entry, *, shown: Sequence[bytes] = ()) -> Answer:
        """Sign a void vote for ``entry``, an accept, a take-back, a lapse or
        a successful close one of whose rivals (:func:`rivals_of`) holds a
        certificate here, or say why not (docs/witness.md §3.6). The entry's
        chain is locked as for a vote; the void mark is durable before the
        void vote is signed, and from then on the entry gets no vote.
        ``shown``: the entries the request carried; a rival among them this
        witness could not store yet is waited for, not refused."""
        checked = self._entry(entry)
        if not isinstance(checked, Entry):
            return checked
        entry = checked
        c = self.rules.community
        if not can_be_void(entry):
            return Refused(NOT_RACEABLE, "only an accept, take-back, lapse or close can be void")
        if self.view.own_certificate(c, entry.ref):
            return Refused(CERTIFIED, f"{entry.ref} is certified: it won its race")
        locked = self.votes.get(c, entry.author, entry.seq) == entry.id
        if locked and self.votes.voids(c, entry.author).get(entry.seq) == entry.id:
            # Recorded and marked void here once its checks passed (the
            # answer may have been lost: a crash after the record): the same
            # void vote again, as decide signs a recorded vote again.
            return Voted(self._sign(entry.ref, void=True))
        need = self._needs_certificate(entry)
        if need is not None:
            return need
        recorded = self.votes.get(c, entry.author, entry.seq)
        if recorded != entry.id:
            problem = self.view.check(entry)
            if problem is not None:
                return problem
        rivals = rivals_of(entry, self.view, c)
        if rivals is None:
            return Refused(NOT_RACEABLE, f"{entry.ref} takes part in no race (a failed close)")
        if not any(self.view.own_certificate(c, r) for r in rivals):
            parked = self._parked_rivals(entry, shown)
            if rivals or parked.missing or parked.certificates:
                certificates = (*rivals, *parked.certificates)
                return Waiting(parked.missing, tuple(dict.fromkeys(certificates)))
            return Refused(NO_RIVAL, f"no certified rival of {entry.ref} is held here")
        if recorded == entry.id:
            self.votes.put_void(c, entry.author, entry.seq, entry.id)
            return Voted(self._sign(entry.ref, void=True))
        return self._lock(entry, recorded, void=True)

    # -- internals ---------------------------------------------------------

    def _parked_rivals(self, entry: Entry, shown: Sequence[bytes]) -> Waiting:
        """What the entries of ``shown`` that may exclude ``entry``
        (:func:`may_exclude`), and that this witness could not store, wait
        for: an accept's transfer's certificate, entries of its log below it
        (docs/witness.md §3.6, step 3). Empty if none waits."""
        c = self.rules.community
        missing: list[Ref] = []
        certificates: list[Ref] = []
        for wire in shown:
            try:
                other = Entry.decode(wire, check_signature=False)
            except CodecError:
                continue
            if (
                other.community != c
                or not may_exclude(other, entry)
                or self.view.get(c, other.ref) is not None
            ):
                continue
            if not other.signature_ok():  # checked only now: few get here
                continue
            problem = self.view.check(other)
            if isinstance(problem, Waiting):
                missing += problem.missing
                certificates += problem.certificates
        return Waiting(tuple(dict.fromkeys(missing)), tuple(dict.fromkeys(certificates)))

    def _entry(self, entry: bytes | Entry) -> Entry | Refused:
        if not isinstance(entry, Entry):
            try:
                entry = Entry.decode(entry)
            except CodecError as exc:
                return Refused(exc.reason, str(exc))
        if entry.community != self.rules.community:
            return Refused(UNKNOWN_COMMUNITY, "not an entry of this witness's community")
        return entry

    def _lock(self, entry: Entry, recorded: EntryId | None, *, void: bool) -> Answer:
        """Steps 5 to 7 of §3.2: lock ``entry``'s chain and sign (a void vote
        if ``void``), or answer the conflict or what to wait for."""
        c, a, n = self.rules.community, entry.author, entry.seq
        if recorded is not None:
            return self._conflict(Ref(a, n, recorded), entry.wire)
        last = self.votes.last(c, a)
        if n <= last:  # pragma: no cover - a VoteLog that breaks its contract
            raise LocalProtocolError(f"the vote log has a gap at seq {n} below {last}")
        # Walk E's chain down to seq last + 1: each entry there gets locked,
        # so each must pass the witnessed rule too (checked once, here).
        chain = [entry]
        voids: dict[int, EntryId] = {}
        cur = entry
        while cur.seq > last + 1:
            assert cur.prev is not None
            ref = Ref(a, cur.seq - 1, cur.prev)
            below = self.view.get(c, ref)
            if below is None:
                return Waiting(missing=(ref,))
            need = self._needs_certificate(below)
            if need is not None:
                return need
            kind = self._settled(below)
            if kind is None:
                # An accept or take-back below E: locked with E only once it
                # is certified, either way (§3.5 rule 3, §3.6): the requester
                # holds its certificate or void certificate.
                return Waiting(certificates=(below.ref,))
            if kind == VOIDED:
                voids[below.seq] = below.id
            chain.append(below)
            cur = below
        if last:
            assert cur.prev is not None
            locked = self.votes.get(c, a, last)
            assert locked is not None
            if cur.prev != locked:
                other = self.view.get(c, Ref(a, last, cur.prev))
                if other is None:  # pragma: no cover - the view holds what it validated
                    return Waiting(missing=(Ref(a, last, cur.prev),))
                return self._conflict(Ref(a, last, locked), other.wire)
        # Below the walk: every accept or take-back this witness recorded on
        # E's chain must be settled too (§3.6), and what is void spends nothing.
        floor = min(n, last + 1)
        unsettled = self._unsettled_below(a, floor)
        if unsettled:
            return Waiting(certificates=unsettled)
        self.view.settled_below(c, a, floor)
        problem = self._void_overdraft(chain, voids)
        if problem is not None:
            return problem
        if void:
            self.votes.put_void(c, a, n, entry.id)  # before the record: see put_void
        for seq, eid in voids.items():
            self.votes.put_void(c, a, seq, eid)
        self.votes.put(c, a, [(e.seq, e.id) for e in reversed(chain)])
        return Voted(self._sign(entry.ref, void=void))

    def _timed(self, entry: Entry, answer: Answer) -> Answer:
        """``answer`` with this witness's time attestation if it is a vote
        for a take-back or a lapse and this witness's clock is past its
        deadline (docs/witness.md §3.5): always so under rule 2; under rule
        1 (certified already) a clock behind gives no time, and the
        certificate that exists is the one that travels."""
        if not isinstance(answer, Voted) or not is_timed(entry):
            return answer
        c = self.rules.community
        deadline = deadline_of(
            entry, lambda r: self.view.get(c, r), lambda r: self.view.expiry(c, r)
        )
        now = self.view.now()
        if deadline is None or now <= deadline:
            return answer
        return Voted(answer.vote, TimeAttestation.sign(self.key, c, entry.ref, now))

    def _void_here(self, ref: Ref) -> bool:
        """True if this witness holds ``ref`` void: marked in its vote log, or
        shown a void certificate of it (then marked now, for good)."""
        c = self.rules.community
        if self.votes.voids(c, ref.author).get(ref.seq) == ref.id:
            return True
        if self.view.void_certified(c, ref):
            self.votes.put_void(c, ref.author, ref.seq, ref.id)
            return True
        return False

    def _raceable(self, entry: Entry) -> bool:
        return raceable(entry, self.view, self.rules.community)

    def _settled(self, entry: Entry) -> str | None:
        """How a stored entry counts when locked below a vote: "" (as
        itself), :data:`VOIDED` (void), or None: an accept or take-back whose
        race this witness cannot tell yet (no certificate of either kind)."""
        if not self._raceable(entry):
            return ""
        if self._void_here(entry.ref):
            return VOIDED
        if self.view.own_certificate(self.rules.community, entry.ref):
            return ""
        return None

    def _unsettled_below(self, author: MemberId, below: int) -> tuple[Ref, ...]:
        """The accepts and take-backs this witness recorded on ``author``'s
        log below seq ``below`` whose race it cannot tell yet."""
        c = self.rules.community
        out = []
        for ref in self.view.raceable_below(c, author, below):
            if self.votes.get(c, author, ref.seq) != ref.id:
                continue  # not on the recorded chain
            stored = self.view.get(c, ref)
            if stored is not None and self._settled(stored) is None:
                out.append(ref)
        return tuple(out)

    def _void_overdraft(self, chain: list[Entry], new_voids: dict[int, EntryId]) -> Refused | None:
        """Refuse if an entry about to be locked spends credit of a void
        accept, take-back, lapse or close below it: its balance less those void_credits would
        pass its credit limit (§3.6)."""
        c = self.rules.community
        author = chain[0].author
        voids = {**self.votes.voids(c, author), **new_voids}
        if not voids:
            return None
        void_credits: list[tuple[int, int]] = []  # (seq, amount) of the voids on this chain
        for seq, eid in voids.items():
            void = self.view.get(c, Ref(author, seq, eid))
            on_chain = seq in new_voids or self.votes.get(c, author, seq) == eid
            if void is None or not on_chain or not can_be_void(void) or void.prev is None:
                continue
            # What it credited: its nominal change (an accept's or a
            # take-back's amount, a lapse's pledge, a close's pledges).
            after = self.view.balance(c, void.ref)
            before = self.view.balance(c, Ref(author, seq - 1, void.prev))
            if after is not None and before is not None:
                void_credits.append((seq, after[0] - before[0]))
        for e in chain:
            held = self.view.balance(c, e.ref)
            if held is None:  # pragma: no cover - the chain was walked through the view
                continue
            balance, limit = held
            lost = sum(amount for seq, amount in void_credits if seq < e.seq)
            if lost and balance - lost < -limit:
                return Refused(
                    VOID_OVERDRAFT,
                    f"{e.ref}: balance {balance} less {lost} of void credit below it "
                    f"passes the credit limit of -{limit}",
                )
        return None

    def _needs_certificate(self, entry: Entry) -> Waiting | None:
        c = self.rules.community
        ref = certificate_needed(entry)
        if ref is None or self.view.certified(c, ref):
            return None
        if isinstance(entry.body, Accept) and self.view.own_certificate(c, ref):
            # The transfer's own certificate is enough for an accept, even
            # while the transfer is not final here (docs/witness.md §6.1).
            return None
        # Its log's tip may wait for a raceable entry's own certificate
        # below it (§6.1): name that too, or the requester would resend ref's.
        blocking = self.view.tip_waits_for(c, ref.author)
        if blocking is None or blocking == ref or blocking.seq > ref.seq:
            return Waiting(certificates=(ref,))
        return Waiting(certificates=(ref, blocking))

    def _admissible(self, entry: Entry) -> Refused | Waiting | None:
        need = self._needs_certificate(entry)
        if need is not None:
            return need
        return self.view.check(entry) or self._exclusive(entry)

    def _exclusive(self, entry: Entry) -> Refused | None:
        """An accept and a take-back of one transfer: vote for at most one
        (or for one that is certified already), and for a take-back only
        once this witness's clock is past the transfer's expiry
        (docs/witness.md §3.5); never for one this witness holds void
        (§3.6). ``entry`` is stored."""
        body, c = entry.body, self.rules.community
        if isinstance(body, Accept | TakeBack) and self._void_here(entry.ref):
            return Refused(VOIDED, f"this witness holds {entry.ref} void: its rival won")
        if isinstance(body, Accept | TakeBack) and self.view.own_certificate(c, entry.ref):
            # Certified already: a quorum voted for it, so at least q - f
            # honest witnesses refuse the other one for good, which can get
            # at most n - q + f < q votes (2q >= n + f + 1). Locking it now,
            # as part of a later entry's chain, keeps its log live.
            return None
        if isinstance(body, Accept):
            ref = body.transfer
            other = (ref.author, Kind.TAKE_BACK, VOTED_TAKE_BACK)
        elif isinstance(body, TakeBack):
            ref = body.transfer
            transfer = self.view.get(c, ref)
            if transfer is None or not isinstance(transfer.body, Transfer):
                return None  # the ledger refused it already
            expiry = self.view.expiry(c, ref)
            now = self.view.now()
            if expiry is None or now <= expiry:
                return Refused(
                    NOT_EXPIRED_HERE, f"by this witness's clock ({now}) it expires at {expiry}"
                )
            other = (transfer.body.to, Kind.ACCEPT, VOTED_ACCEPT)
        else:
            return self._campaign_exclusive(entry)
        author, kind, reason = other
        voids = self.votes.voids(c, author)
        for answer in self.view.answers(c, author, kind, ref.id):
            recorded = self.votes.get(c, answer.author, answer.seq) == answer.id
            if recorded and voids.get(answer.seq) != answer.id:
                return Refused(reason, f"this witness voted for {answer}, which excludes it")
        return None

    def _campaign_exclusive(self, entry: Entry) -> Refused | None:
        """A lapse and a successful close counting its pledge: the same
        rule, with the rivals of troc/protocol/campaign_rules.py and the
        campaign's deadline for the expiry (docs/witness.md §3.5)."""
        c = self.rules.community
        race = campaign_race(entry, self.view, c)
        if race is None:
            return None
        if self._void_here(entry.ref):
            return Refused(VOIDED, f"this witness holds {entry.ref} void: its rival won")
        if self.view.own_certificate(c, entry.ref):
            return None  # certified already (rule 1, as above)
        if race.early is not None:
            return Refused(BEFORE_DEADLINE_HERE, race.early)
        for rival in race.rivals:
            recorded = self.votes.get(c, rival.author, rival.seq) == rival.id
            if recorded and self.votes.voids(c, rival.author).get(rival.seq) != rival.id:
                return Refused(race.voted, f"this witness voted for {rival}, which excludes it")
        return None

    def _conflict(self, recorded: Ref, second: bytes) -> Conflicting:
        c = self.rules.community
        first = self.view.get(c, recorded)
        void = self.votes.voids(c, recorded.author).get(recorded.seq) == recorded.id
        vote = self._sign(recorded, void=void)
        return Conflicting(vote, second, None if first is None else first.wire)

    def _sign(self, ref: Ref, *, void: bool = False) -> Vote:
        # The one place votes are signed: only ever for what the log records,
        # and a normal vote never for what it holds void.
        c = self.rules.community
        if self.votes.get(c, ref.author, ref.seq) != ref.id:
            raise LocalProtocolError(f"refusing to sign a vote for {ref}: not what the log holds")
        marked = self.votes.voids(c, ref.author).get(ref.seq) == ref.id
        if void != marked:
            raise LocalProtocolError(f"refusing to sign a vote for {ref}: void is {marked}")
        return (VoidVote if void else Vote).sign(self.key, c, ref)


class LedgerView:
    """A :class:`WitnessView` over the witness's own :class:`Ledger` (the
    certificates are the ledger's too). ``clock`` gives the ``now_ms``
    entries are checked against. An entry counts as certified when it is
    final: held on its log's certified chain (:meth:`Ledger.is_final`),
    since every entry below a certified one was locked with it."""

    #: Parked entries remembered with what they wait for (see :meth:`check`).
    MAX_PARKED = 10_000

    def __init__(self, ledger: Ledger, clock: Callable[[], int]) -> None:
        self.ledger = ledger
        self.clock = clock
        # A parked entry → (the entries, the certificates it waits for).
        self._parked: dict[Ref, tuple[tuple[Ref, ...], tuple[Ref, ...]]] = {}
        # Per log, a seq below which every recorded accept and take-back is
        # settled (§3.6): the recorded chain and its settlements never change.
        self._settled: dict[tuple[CommunityId, MemberId], int] = {}

    def check(self, entry: Entry) -> Refused | Waiting | None:
        outcome = self.ledger.ingest_entry(entry, self.clock())
        if outcome.ok:
            return None
        if outcome.status == "waiting":
            # An entry it builds on that the requester did send, but that is
            # parked on a certificate: name the certificate, not the entry
            # (sending the entry again would change nothing).
            missing: list[Ref] = []
            certificates = list(outcome.missing_final)
            for ref in outcome.missing:
                # Follow entries that arrived but are parked themselves down to
                # what is really missing: naming the parked one would bring
                # the same entries again, never the gap below them.
                for _ in range(len(self._parked) + 1):
                    if ref not in self._parked or not self._parked[ref][0]:
                        break
                    ref = self._parked[ref][0][0]
                if ref in self._parked:
                    certificates += self._parked[ref][1]
                else:
                    missing.append(ref)
            self._remember(entry.ref, outcome.missing, outcome.missing_final)
            return Waiting(missing=tuple(missing), certificates=tuple(dict.fromkeys(certificates)))
        reason = "rejected" if outcome.reason is None else outcome.reason.value
        return Refused(reason, outcome.detail)

    def get(self, community: CommunityId, ref: Ref) -> Entry | None:
        stored = self.ledger.backend.entry(community, ref.author, ref.seq, ref.id)
        return None if stored is None else stored.entry

    def certified(self, community: CommunityId, ref: Ref) -> bool:
        return self.ledger.is_final(community, ref)

    def tip_waits_for(self, community: CommunityId, author: MemberId) -> Ref | None:
        return self.ledger.tip_waits_for(community, author)

    def offer(self, community: CommunityId, wire: bytes) -> None:
        # Requests carry entries the witness mostly holds already: skip those
        # without checking a signature (an id is the hash of the entry).
        try:
            head = Entry.decode(wire, check_signature=False)
        except CodecError:
            return
        if (
            head.community == community
            and self.ledger.backend.entry(community, head.author, head.seq, head.id) is not None
        ):
            return
        outcome = self.ledger.ingest(wire, self.clock(), community=community)
        if outcome.entry is not None:
            self._remember(outcome.entry.ref, outcome.missing, outcome.missing_final)

    def _remember(self, ref: Ref, missing: tuple[Ref, ...], finals: tuple[Ref, ...]) -> None:
        if not missing and not finals:
            return
        if len(self._parked) >= self.MAX_PARKED:
            self._parked.clear()  # only a hint: a cleared one is named as an entry
        self._parked[ref] = (missing, finals)

    def add_certificate(self, certificate: Certificate) -> None:
        self.ledger.ingest_certificate(certificate.encode(), self.clock())

    def own_certificate(self, community: CommunityId, ref: Ref) -> bool:
        held = self.ledger.certificate_of(community, ref)
        return held is not None and not is_void_certificate(held)

    def void_certified(self, community: CommunityId, ref: Ref) -> bool:
        return self.ledger.is_void(community, ref)

    def add_void_certificate(self, certificate: VoidCertificate) -> None:
        self.ledger.ingest_certificate(certificate.encode(), self.clock())

    def balance(self, community: CommunityId, ref: Ref) -> tuple[int, int] | None:
        stored = self.ledger.backend.entry(community, ref.author, ref.seq, ref.id)
        return None if stored is None else (stored.balance, stored.limit)

    def raceable_below(self, community: CommunityId, author: MemberId, below: int) -> list[Ref]:
        floor = self._settled.get((community, author), 0)
        if below <= floor:
            return []
        backend = self.ledger.backend
        kinds = (Kind.ACCEPT, Kind.TAKE_BACK, Kind.CAMPAIGN_CLOSE, Kind.WITHDRAW)
        rows = [r for k in kinds for r in backend.refs_from(community, author, k, below, floor)]
        # A close has a row per pledge it names: one ref each.
        return list(dict.fromkeys(Ref(r.by_author, r.by_seq, r.by_id) for r in rows))

    def settled_below(self, community: CommunityId, author: MemberId, below: int) -> None:
        key = (community, author)
        self._settled[key] = max(self._settled.get(key, 0), below)

    def now(self) -> int:
        return self.clock()

    def expiry(self, community: CommunityId, transfer: Ref) -> int | None:
        t = self.ledger.held_transfer(community, transfer)
        rules = self.ledger.rules(community)
        if t is None or rules is None:
            return None
        return expiry_of(t, rules)

    def holds_transfer(self, community: CommunityId, transfer: Ref) -> bool:
        return self.ledger.held_transfer(community, transfer) is not None

    def may_expire(self, community: CommunityId, transfer: Ref) -> bool:
        # Without a read where the rules decide alone: where every transfer
        # expires (transfer_expiry_ms), one held expires and one not held
        # may. Else one read of the transfer, not one for expiry() and
        # another for holds_transfer(): a final tip's move tests every
        # accept it passes, and a witnessed catch-up passes most of them.
        rules = self.ledger.rules(community)  # the store's cached genesis: no read
        if rules is not None and rules.transfer_expiry_ms is not None:
            return True
        # Stored and naming no expiry: the store may know it without a read
        # (an accept's check read the transfer; the tip's move comes later).
        if self.ledger.backend.lasting_transfer(community, transfer):
            return False
        t = self.ledger.held_transfer(community, transfer)
        return t is None or (rules is not None and expiry_of(t, rules) is not None)

    def answers(
        self, community: CommunityId, author: MemberId, kind: Kind, transfer: EntryId
    ) -> list[Ref]:
        rows = self.ledger.backend.refs_by(community, author, kind, transfer)
        return [Ref(r.by_author, r.by_seq, r.by_id) for r in rows]
