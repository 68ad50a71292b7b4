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
    CommunityId,
    Entry,
    EntryId,
    Kind,
    Reclaim,
    Ref,
    TakeBack,
    Transfer,
    expiry_of,
)
from troc.protocol.vote import (
    CERTIFICATE_LIMITS,
    VOTE_LIMITS,
    Certificate,
    Equivocation,
    Position,
    Vote,
    WitnessRules,
    check_quorum,
    default_quorum,
    fork_proof_problem,
    max_faults,
    min_quorum,
    quorum_problem,
    vote_message,
)
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
    "Vote",
    "VoteLog",
    "VoteRequest",
    "Voted",
    "Waiting",
    "WitnessRules",
    "WitnessState",
    "WitnessView",
    "certificate_needed",
    "check_quorum",
    "decode_answer",
    "decode_request",
    "default_quorum",
    "encode_answer",
    "encode_request",
    "fork_proof_problem",
    "max_faults",
    "min_quorum",
    "quorum_problem",
    "vote_message",
]


#: Refusal codes of the witness itself; the others are ledger reasons
#: (:class:`troc.protocol.ledger.Reason`) and codec reasons.
UNKNOWN_COMMUNITY = "unknown_community"
#: Refusals of the accept / take-back rule (docs/witness.md §3.5).
NOT_EXPIRED_HERE = "not_expired_here"
VOTED_TAKE_BACK = "voted_take_back"
VOTED_ACCEPT = "voted_accept"


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


class MemoryVoteLog:
    """A :class:`VoteLog` in a dict, for tests and simulation ("durable" for
    as long as the object lives: a restarted witness reuses it)."""

    def __init__(self) -> None:
        self._ids: dict[tuple[CommunityId, MemberId], list[EntryId]] = {}
        self.writes = 0

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
        """True if a verified certificate for exactly ``ref`` is held."""
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
        """When the stored transfer ``transfer`` expires (None: never)."""
        ...

    def answers(
        self, community: CommunityId, author: MemberId, kind: Kind, transfer: EntryId
    ) -> list[Ref]:
        """``author``'s stored entries of ``kind`` naming ``transfer``."""
        ...


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
        """Take what the request carries along, then :meth:`decide` on its entry."""
        for data in request.certificates[:MAX_CERTIFICATES]:
            try:
                cert = Certificate.decode(data)
            except CodecError:
                continue
            # One the witness holds already adds nothing: not verified again.
            if not self.view.certified(cert.community, cert.ref) and cert.verify(self.rules):
                self.view.add_certificate(cert)
        for wire in request.deps[:MAX_DEPS]:
            self.view.offer(self.rules.community, wire)
        return self.decide(request.entry)

    def decide(self, entry: bytes | Entry) -> Answer:
        """Vote for ``entry``, or say why not. A vote is signed only after its
        records are in the vote log (:meth:`VoteLog.put` returned)."""
        if not isinstance(entry, Entry):
            try:
                entry = Entry.decode(entry)
            except CodecError as exc:
                return Refused(exc.reason, str(exc))
        c = self.rules.community
        if entry.community != c:
            return Refused(UNKNOWN_COMMUNITY, "not an entry of this witness's community")
        a, n = entry.author, entry.seq
        recorded = self.votes.get(c, a, n)
        if recorded == entry.id:
            return Voted(self._sign(entry.ref))  # again: the same bytes as before
        problem = self._admissible(entry)
        if problem is not None:
            return problem
        if recorded is not None:
            return self._conflict(Ref(a, n, recorded), entry.wire)
        last = self.votes.last(c, a)
        if n <= last:  # pragma: no cover - a VoteLog that breaks its contract
            raise LocalProtocolError(f"the vote log has a gap at seq {n} below {last}")
        # Walk E's chain down to seq last + 1: each entry there gets locked,
        # so each must pass the witnessed rule too (checked once, here).
        chain = [entry]
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
            if self._exclusive(below) is not None:
                # Locked with E: the same rule, unless it is certified, which
                # the requester shows with its certificate (§3.5).
                return Waiting(certificates=(below.ref,))
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
        self.votes.put(c, a, [(e.seq, e.id) for e in reversed(chain)])
        return Voted(self._sign(entry.ref))

    # -- internals ---------------------------------------------------------

    def _needs_certificate(self, entry: Entry) -> Waiting | None:
        ref = certificate_needed(entry)
        if ref is not None and not self.view.certified(self.rules.community, ref):
            return Waiting(certificates=(ref,))
        return None

    def _admissible(self, entry: Entry) -> Refused | Waiting | None:
        need = self._needs_certificate(entry)
        if need is not None:
            return need
        return self.view.check(entry) or self._exclusive(entry)

    def _exclusive(self, entry: Entry) -> Refused | None:
        """An accept and a take-back of one transfer: vote for at most one
        (or for one that is certified already), and for a take-back only
        once this witness's clock is past the transfer's expiry
        (docs/witness.md §3.5). ``entry`` is stored."""
        body, c = entry.body, self.rules.community
        if isinstance(body, Accept | TakeBack) and self.view.certified(c, entry.ref):
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
        for answer in self.view.answers(c, author, kind, ref.id):
            if self.votes.get(c, answer.author, answer.seq) == answer.id:
                return Refused(reason, f"this witness voted for {answer}, which excludes it")
        return None

    def _campaign_exclusive(self, entry: Entry) -> Refused | None:
        """A lapse and a successful close counting its pledge: the same
        rule, with the rivals of troc/protocol/campaign_rules.py and the
        campaign's deadline for the expiry (docs/witness.md §3.5)."""
        c = self.rules.community
        race = campaign_race(entry, self.view, c)
        if race is None or self.view.certified(c, entry.ref):
            return None  # no race, or certified already (rule 1, as above)
        if race.early is not None:
            return Refused(BEFORE_DEADLINE_HERE, race.early)
        for rival in race.rivals:
            if self.votes.get(c, rival.author, rival.seq) == rival.id:
                return Refused(race.voted, f"this witness voted for {rival}, which excludes it")
        return None

    def _conflict(self, recorded: Ref, second: bytes) -> Conflicting:
        first = self.view.get(self.rules.community, recorded)
        return Conflicting(self._sign(recorded), second, None if first is None else first.wire)

    def _sign(self, ref: Ref) -> Vote:
        # The one place votes are signed: only ever for what the log records.
        c = self.rules.community
        if self.votes.get(c, ref.author, ref.seq) != ref.id:
            raise LocalProtocolError(f"refusing to sign a vote for {ref}: not what the log holds")
        return Vote.sign(self.key, c, ref)


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

    def now(self) -> int:
        return self.clock()

    def expiry(self, community: CommunityId, transfer: Ref) -> int | None:
        t = self.get(community, transfer)
        rules = self.ledger.rules(community)
        if t is None or rules is None or not isinstance(t.body, Transfer):
            return None
        return expiry_of(t, rules)

    def answers(
        self, community: CommunityId, author: MemberId, kind: Kind, transfer: EntryId
    ) -> list[Ref]:
        rows = self.ledger.backend.refs_by(community, author, kind, transfer)
        return [Ref(r.by_author, r.by_seq, r.by_id) for r in rows]
