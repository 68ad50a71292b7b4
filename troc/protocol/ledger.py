"""The ledger: which entries count, and the balances they give.

Theory of operation
-------------------
Each member writes one log per community; only the key holder appends. An
entry's validity is a function of three things only: the entry itself, its
author's log up to its ``prev``, and the entries it references (by author,
seq and exact id). Nothing else, not arrival order, not the clock beyond the
future-timestamp guard, not whether a fork is known yet, enters the decision.
That is what makes every honest node that holds the same entries reach the
same verdicts, whatever order gossip delivered them in.

Balances are mutual credit: everyone starts at 0; a transfer debits its
author at once; the payee's accept credits the payee; a decline lets the
payer reclaim. Each log's *nominal* balance (every entry counted) is stored
with each entry, so checking a new entry against its prev is one lookup.

Forks: two entries at one (community, author, seq) prove the author
equivocated. The pair is stored as a proof and the author is frozen at that
seq: from then on only entries below it *count*, and credits that others
took from transfers in the frozen part do not count either (the victims bear
the loss; witnessed finality, docs/protocol.md §6, prevents it). Freezing
changes which entries count, never which are valid, so it cannot split honest
nodes. The counted balance (``Head.counted_balance``) is what the node shows.

Every missing dependency is a reason to wait, not to reject: the entry is
parked (bounded) under the exact (author, seq, id) it needs and retried when
that entry is stored; the caller is told what to fetch.

Witnessed communities (docs/witness.md §6.1) add certificates: q witnesses'
votes that an entry is *the* entry at its (author, seq). Each log has a
*final tip*, its highest entry held with a certificate; an entry at or below
it on its chain is final. An accept is valid only once its transfer is
final, or held (even parked, for want of its payer's earlier entries) with
its own certificate; a reclaim only once its decline is final: until then
it waits, exactly as for a missing entry, and :meth:`Ledger.ingest_certificate`
releases it. The
counted balance there is the balance after the final tip, so no credit from
an uncertified transfer ever counts, and a forker's other branch never did.

Why one module (about 1,000 lines): it is one concept, the rules of validity.
Each kind's rule (``_check`` and the helpers it calls) reads against
docs/protocol.md §4 and §10 in one pass, and most rules share the same few
questions (is it on this chain, is it final, what did the log already answer);
the verdicts it gives are plain data in troc.protocol.verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from troc.crypto.sign import MemberId, SigningKey
from troc.errors import CodecError, RefusedError
from troc.protocol.backend import Backend, Head, Parking, RefRow, Stored, WaitKey, final_key
from troc.protocol.entry import (
    MAX_AMOUNT,
    Accept,
    AnyBody,
    Campaign,
    CampaignClose,
    CommunityId,
    Decline,
    Entry,
    EntryId,
    Genesis,
    Join,
    Kind,
    Offer,
    OfferClose,
    Pledge,
    Reclaim,
    Ref,
    Refusal,
    Request,
    TakeBack,
    Transfer,
    Vouch,
    Withdraw,
    expiry_of,
)
from troc.protocol.verdicts import CertificateOutcome, Outcome, Reason, Status
from troc.protocol.vote import Certificate, decode_any_certificate, is_void_certificate
from troc.protocol.witness import LedgerView, WitnessRules, can_be_void, raceable

__all__ = [
    "FUTURE_TOLERANCE_MS",
    "MAX_BALANCE",
    "CertificateOutcome",
    "Ledger",
    "Outcome",
    "Reason",
    "Status",
]

#: An entry stamped further ahead of the receiver's clock is held back.
FUTURE_TOLERANCE_MS = 10 * 60 * 1000
#: How many entries a frozen author may still add on each side of its fork,
#: beyond the fork point (they never count; they are kept so that references
#: into them can be checked). More are rejected.
MAX_BEYOND_FORK = 1000
#: A nominal balance stays within -MAX_BALANCE .. MAX_BALANCE (docs/protocol.md
#: §4.4): exact in every JSON and JavaScript number, and far inside SQLite's
#: 64-bit integers. The low side follows from the credit limit (at most
#: MAX_AMOUNT); accepts and reclaims that would pass the high side are refused.
MAX_BALANCE = MAX_AMOUNT


class _Reject(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail


class _Wait(Exception):
    def __init__(self, missing: list[Ref], finals: list[Ref] | None = None) -> None:
        self.missing = missing
        self.finals = finals or []


@dataclass(slots=True)
class _Checked:
    """What a valid entry changes: its stored form and its reference rows."""

    stored: Stored
    refs: list[RefRow] = field(default_factory=list)
    witnessed: bool = False
    #: An accept or take-back of a transfer that expires, a lapse or a
    #: successful close (optimistic communities): the accept may undo a
    #: take-back (docs/protocol.md §4.11), the close a lapse (§10.5).
    expiring: bool = False
    #: The author's head as the rules read it, for :meth:`Ledger._apply`
    #: (read again if a fork was recorded in between).
    head: Head | None = None


def _credit(balance: int, amount: int) -> int:
    """``balance + amount``, refused (``balance_range``) above MAX_BALANCE.

    A function of the log up to prev and the entry credited, like every rule,
    so the verdict is the same in every arrival order and on every backend.
    """
    if balance + amount > MAX_BALANCE:
        raise _Reject(
            Reason.BALANCE_RANGE,
            f"balance {balance} + {amount} would pass the highest balance, {MAX_BALANCE}",
        )
    return balance + amount


def _crediting(query: Callable[..., list[RefRow]], *args: object) -> list[RefRow]:
    """The rows by which entries credit their author with someone else's
    units: accepts (of a transfer) and a successful close's counted pledges
    (the close's row naming its own campaign carries no amount). ``query``
    is ``refs_to`` or ``refs_from``; ``args`` its arguments after the kind."""
    c, member, *bounds = args
    rows = query(c, member, Kind.ACCEPT, *bounds) + query(c, member, Kind.CAMPAIGN_CLOSE, *bounds)
    return [r for r in rows if r.amount]


#: Optimistic races decided after the fact (docs/protocol.md §4.11, §10.5):
#: an entry of the key's kind counts unless a counted entry of the value's
#: kind credits the same transfer or pledge to someone else (it wins).
_UNDONE_BY = {Kind.TAKE_BACK: Kind.ACCEPT, Kind.WITHDRAW: Kind.CAMPAIGN_CLOSE}


class Ledger:
    """Applies entries to a :class:`Backend` by the rules of docs/protocol.md.

    Not thread-safe; callers serialise and wrap calls in the backend's
    transactions. Time is a parameter (``now_ms``): the ledger reads no clock.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        # Keys of entries that became final during the current call: what
        # waited for them is retried (see _release).
        self._finalised: list[WaitKey] = []
        # Logs whose certificates or final tip changed during the current
        # call: what waits for their entries to be final may never be.
        self._certified: set[tuple[CommunityId, MemberId]] = set()
        self._witness_rules: dict[CommunityId, WitnessRules] = {}
        # What :func:`raceable` reads: only held entries. Its clock only
        # words a witness's refusal (a lapse too early), never the verdict.
        self._races = LedgerView(self, lambda: 0)
        # Per log, the raceable entry whose own certificate its final tip
        # waits for (_passable): a hint for sync to ask for it, kept since
        # this Ledger was made (never state: a verdict never reads it).
        self._tips_waiting: dict[tuple[CommunityId, MemberId], Ref] = {}
        # Transfers that parked accepts wait for (the entry or its own
        # certificate, docs/witness.md §6.1): a hint for sync to ask for
        # them, bounded, never read by a verdict.
        self._transfers_wanted: dict[tuple[CommunityId, Ref], None] = {}

    # -- reading ----------------------------------------------------------

    def rules(self, community: CommunityId) -> Genesis | None:
        g = self.backend.genesis(community)
        return None if g is None else g.body  # type: ignore[return-value]

    def balance(self, community: CommunityId, member: MemberId) -> int:
        """The counted balance of ``member`` (0 for a member never seen)."""
        head = self.backend.head(community, member)
        return 0 if head is None else head.counted_balance

    def head(self, community: CommunityId, member: MemberId) -> Head | None:
        return self.backend.head(community, member)

    def profile(self, community: CommunityId, member: MemberId) -> Entry | None:
        """``member``'s profile: its ``profile`` entry at the highest seq that
        counts (below its fork point, if it forked), or None if it has none.

        "Latest" is by the author's seq, never by timestamp: the same on every
        node holding the same entries, whatever order they arrived in
        (docs/protocol.md §4.4).
        """
        head = self.backend.head(community, member)
        if head is None:
            return None
        stored = self.backend.latest(community, member, Kind.PROFILE, head.frozen_at)
        return None if stored is None else stored.entry

    def balances(self, community: CommunityId) -> Iterator[tuple[MemberId, int]]:
        for member, head in self.backend.heads(community):
            yield member, head.counted_balance

    # -- writing ----------------------------------------------------------

    def ingest(
        self,
        wire: bytes,
        now_ms: int,
        *,
        community: CommunityId | None = None,
        source: str | None = None,
    ) -> Outcome:
        """Decode, check and (if valid) store one entry given as wire bytes.

        With ``community``, only that community's log entries are taken (what
        a sync session or a community's gossip topic may carry): a genesis or
        another community's entry is rejected as ``unknown_community``.
        ``source`` names the peer that delivered it, if known: what it parks
        counts against that peer's bound (:class:`~troc.protocol.backend.WaitLimits`).
        """
        try:
            entry = Entry.decode(wire)
        except CodecError as exc:
            return Outcome(Status.REJECTED, reason=Reason(exc.reason), detail=str(exc))
        if community is not None and entry.community != community:
            return Outcome(
                Status.REJECTED,
                entry,
                Reason.UNKNOWN_COMMUNITY,
                "not an entry of the community this channel carries",
            )
        return self.ingest_entry(entry, now_ms, source=source)

    def ingest_entry(self, entry: Entry, now_ms: int, *, source: str | None = None) -> Outcome:
        """Check and store an already decoded, signature-checked entry."""
        outcome = self._ingest_one(entry, now_ms, source)
        if outcome.status is Status.WAITING and self.is_certified_transfer(entry):
            # Held now, with its own certificate: an accept of it may be
            # valid before it is stored (docs/witness.md §6.1).
            assert entry.community is not None
            released, dropped = self._release(
                [final_key(entry.community, entry.author, entry.seq, entry.id)], now_ms
            )
            return replace(outcome, released=tuple(released), dropped=tuple(dropped))
        if outcome.status is not Status.ACCEPTED or entry.community is None:
            return outcome
        if not self.backend.waiting_count():
            # The usual case: nothing is parked, so nothing waits for this
            # entry or for what became final (what _release would find).
            self._finalised = []
            self._certified.clear()
            return outcome
        released, dropped = self._release(
            [(entry.community, entry.author, entry.seq, entry.id)], now_ms
        )
        if not released and not dropped:  # the usual case; dataclasses.replace costs ~2 µs
            return outcome
        return replace(outcome, released=tuple(released), dropped=tuple(dropped))

    def ingest_certificate(
        self, data: bytes | Certificate, now_ms: int, *, replay_unchecked: bool = False
    ) -> CertificateOutcome:
        """Check and keep a certificate of a witnessed community: its
        canonical bytes, or a :class:`Certificate` (either kind) already
        decoded whose :meth:`~Certificate.signatures` were all found valid
        (the node's verify workers); the rest is checked here all the same.

        A valid certificate is stored whether or not its entry is held (the
        final tip moves when the entry arrives); if the entry is held and
        lies above its author's final tip, the tip moves there (or part way:
        :meth:`_passable`; on, if it was the certificate the tip waited
        for) and what waited for the entries that became final is stored.

        ``replay_unchecked``: a certificate of an entry whose certificate
        (either kind) is held already adds nothing (any valid certificate
        of an entry is as good as another) and is a duplicate before
        anything is checked, its signatures included (what a node does
        with what peers send: replays cost nothing). One lookup serves
        both that and the check for a conflicting certificate.
        """
        if isinstance(data, Certificate):
            cert, checked = data, True
        else:
            try:
                # A void certificate (docs/witness.md §3.6) is kept in the same
                # place: it makes its entry final as a position, with no effect.
                cert, checked = decode_any_certificate(data), False
            except CodecError as exc:
                return CertificateOutcome(
                    Status.REJECTED, reason=Reason.BAD_CERTIFICATE, detail=str(exc)
                )
        c, a, seq, eid = cert.community, cert.author, cert.seq, cert.id
        held = self.backend.certificate(c, a, seq) if replay_unchecked else None
        if held is not None and held[0] == eid:
            return CertificateOutcome(Status.DUPLICATE, cert)
        rules = self.witness_rules(c)
        if rules is None:
            genesis = self.backend.genesis(c)
            reason = Reason.UNKNOWN_COMMUNITY if genesis is None else Reason.NOT_WITNESSED
            return CertificateOutcome(
                Status.REJECTED, cert, reason, "no witnessed community of that id is followed"
            )
        problem = cert.problem(rules, check_signatures=not checked)
        if problem is not None:
            return CertificateOutcome(Status.REJECTED, cert, Reason.BAD_CERTIFICATE, problem)
        if not replay_unchecked:
            held = self.backend.certificate(c, a, seq)
        if held is not None:
            if held[0] == eid and is_void_certificate(held[1]) == cert.void:
                return CertificateOutcome(Status.DUPLICATE, cert)
            fault = self.backend.put_witness_fault(c, a, seq, held[1], cert.encode())
            return CertificateOutcome(
                Status.REJECTED,
                cert,
                Reason.BAD_CERTIFICATE,
                "another entry at this position is certified: more than f witnesses lied",
                fault=fault,
                conflict=True,
            )
        self.backend.put_certificate(c, a, seq, eid, cert.encode())
        self._certified.add((c, a))
        stored = self.backend.entry(c, a, seq, eid)
        if cert.void and self.is_final(c, cert.ref):
            # Final already by a later certificate: now known void, its
            # credit leaves the final balance. (Only an entry that is not
            # raceable, which only more than f liars certify void: the tip
            # passes a raceable one only with its own certificate.)
            self._void_below_tip(c, a, self._void_credit(c, cert.ref))
        moved = stored is not None and self._advance_final(c, a, stored)
        if stored is not None and moved and raceable(stored.entry, self._races, c):
            # A raceable entry's own certificate (only that) may be what
            # held the tip below later certified entries: go on up to them.
            head = self.backend.head(c, a)
            assert head is not None
            if (head.final_seq, head.final_id) == (seq, eid):
                self._advance_above(c, a, head)
        # An accept waits on its transfer's final key also while the
        # transfer is missing or parked: its own certificate may be enough
        # (docs/witness.md §6.1). If the tip moved there, the key is in
        # _finalised already, and taking it twice finds nothing.
        keys = [] if cert.void else [final_key(c, a, seq, eid)]
        released, dropped = self._release(keys, now_ms)
        return CertificateOutcome(
            Status.ACCEPTED,
            cert,
            final=moved,
            released=tuple(released),
            dropped=tuple(dropped),
        )

    def witness_rules(self, community: CommunityId) -> WitnessRules | None:
        """The witness set of a witnessed community (None if optimistic or unknown)."""
        rules = self._witness_rules.get(community)
        if rules is None:
            genesis = self.backend.genesis(community)
            if genesis is None or genesis.body.finality != "witnessed":  # type: ignore[union-attr]
                return None
            rules = self._witness_rules[community] = WitnessRules.from_genesis(genesis)
        return rules

    def is_final(self, community: CommunityId, ref: Ref) -> bool:
        """True if the entry ``ref`` is held and lies on its log's certified
        chain, at or below the final tip.

        Two lookups whatever the log's length or forks: the final chain is
        recorded as the tip moves (:meth:`_advance_final`), and only held
        entries are on it. (A walk back from the tip cost one read per seq
        between: a forked certified log made every want of a certificate,
        even for a random id, a walk.)
        """
        head = self.backend.head(community, ref.author)
        if head is None or not head.final_seq or ref.seq > head.final_seq:
            return False
        return self.backend.final_at(community, ref.author, ref.seq) == ref.id

    def is_void(self, community: CommunityId, ref: Ref) -> bool:
        """True if a void certificate of exactly ``ref`` is held: an accept
        or take-back that lost its race, final as a position of its log but
        with no effect (docs/witness.md §3.6)."""
        held = self.certificate_of(community, ref)
        return held is not None and is_void_certificate(held)

    def is_raceable(self, community: CommunityId, ref: Ref, entry: Entry | None = None) -> bool:
        """True if the held entry ``ref`` may lose a race
        (:func:`troc.protocol.witness.raceable`): its log's final tip passes
        it only once its own certificate, normal or void, is held
        (docs/witness.md §6.1). ``entry``: the entry itself, if the caller
        holds it decoded (one read less)."""
        if entry is None:
            stored = self.backend.entry(community, ref.author, ref.seq, ref.id)
            if stored is None:
                return False
            entry = stored.entry
        return raceable(entry, self._races, community)

    def tips_waiting(self, community: CommunityId) -> list[Ref]:
        """The raceable entries whose own certificate (normal or void) a
        final tip of ``community`` waits for (docs/witness.md §6.1), as seen
        since this ledger was made: what a sync asks its peer for."""
        return [r for (c, _a), r in sorted(self._tips_waiting.items()) if c == community]

    #: Transfers remembered as wanted by parked accepts, at most.
    MAX_TRANSFERS_WANTED = 1024

    def transfers_wanted(self, community: CommunityId) -> list[Ref]:
        """Transfers that accepts parked here wait for, not yet held with
        their own certificate (as seen since this ledger was made): what a
        sync asks its peer for, the entry and its certificate (docs/witness.md
        §6.1). Those held by now are forgotten."""
        out = []
        for key in list(self._transfers_wanted):
            c, ref = key
            if c != community:
                continue
            held = self.held_transfer(c, ref) is not None and self.certified_itself(c, ref)
            if held or self.is_final(c, ref):
                del self._transfers_wanted[key]
            else:
                out.append(ref)
        return out

    def tip_waits_for(self, community: CommunityId, author: MemberId) -> Ref | None:
        """The raceable entry whose own certificate ``author``'s final tip
        waits for, if any (seen since this ledger was made; docs/witness.md
        §6.1)."""
        return self._tips_waiting.get((community, author))

    def _void_credit(self, c: CommunityId, ref: Ref) -> int:
        """What the entry ``ref`` credited its author if it is void, else 0:
        its nominal change, for a void accept or take-back its transfer's
        amount, for a void lapse its pledge's, for a void close the pledges
        it counted (docs/witness.md §3.6)."""
        if not self.is_void(c, ref):
            return 0
        stored = self.backend.entry(c, ref.author, ref.seq, ref.id)
        if stored is None or not can_be_void(stored.entry) or stored.entry.prev is None:
            return 0  # only more than f liars certify another kind void
        prev = self.backend.entry(c, ref.author, ref.seq - 1, stored.entry.prev)
        assert prev is not None  # a stored entry's prev is stored
        return stored.balance - prev.balance

    def _void_below_tip(self, c: CommunityId, author: MemberId, amount: int) -> None:
        if amount:
            head = self.backend.head(c, author)
            assert head is not None
            self.backend.put_head(
                c, author, replace(head, final_balance=head.final_balance - amount)
            )

    def certified_itself(self, community: CommunityId, ref: Ref) -> bool:
        """True if a certificate (not a void one) of exactly ``ref`` is held."""
        held = self.backend.certificate(community, ref.author, ref.seq)
        return held is not None and held[0] == ref.id and not is_void_certificate(held[1])

    def parked_certified(self, community: CommunityId, ref: Ref) -> Entry | None:
        """The entry ``ref`` if it is parked here, waiting for what it builds
        on, and its own certificate is held: a payee may accept it before
        the payer's history is stored (docs/witness.md §6.1). None otherwise
        (stored entries included: read those from the backend)."""
        if not self.certified_itself(community, ref):
            return None
        for wire in self.backend.parked(community, ref.author):
            # Parked entries passed their signature check before parking.
            entry = Entry.decode(wire, check_signature=False)
            if entry.seq == ref.seq and entry.id == ref.id:
                return entry
        return None

    #: Parked transfers to one member that :meth:`parked_to` returns, at most.
    MAX_PARKED_TO = 100

    def parked_to(
        self,
        community: CommunityId,
        payee: MemberId,
        *,
        certified: bool,
        limit: int = MAX_PARKED_TO,
    ) -> list[Entry]:
        """Transfers to ``payee`` held parked here (waiting for entries of
        their payer's log), oldest first, at most ``limit``: with
        ``certified``, those held with their own certificate, which the
        payee may accept now (docs/witness.md §6.1); without, those still
        lacking it, whose certificates a sync asks for (docs/sync.md). Only
        in a witnessed community (else []). One read of the waiting set
        (bounded by the backend's :class:`WaitLimits`); a wire is decoded
        only if it holds the payee's key, and each parked transfer to the
        payee costs one certificate lookup."""
        if self.witness_rules(community) is None:  # cached: no read
            return []
        out: list[Entry] = []
        for wire in self.backend.parked(community, None):
            if len(out) >= limit:
                break
            if wire.find(payee) < 0:  # cheap: most parked entries are not for the payee
                continue
            # Parked entries passed their signature check before parking.
            entry = Entry.decode(wire, check_signature=False)
            if not isinstance(entry.body, Transfer) or entry.body.to != payee:
                continue
            if self.certified_itself(community, entry.ref) == certified:
                out.append(entry)
        return out

    def held_certified(self, community: CommunityId, ref: Ref) -> Entry | None:
        """The entry ``ref`` as an answer to it may read it: stored, or
        parked with its own certificate (:meth:`parked_certified`); None if
        neither."""
        stored = self.backend.entry(community, ref.author, ref.seq, ref.id)
        return stored.entry if stored is not None else self.parked_certified(community, ref)

    def held_wire(self, community: CommunityId, ref: Ref) -> bytes | None:
        """The bytes of the entry ``ref`` if held here: stored, parked with
        its own certificate (:meth:`held_certified`), or parked waiting
        for its prev. What a sync serves a peer that wants ``ref``: an
        accept there may need the transfer parked here (docs/witness.md
        §6.1). A bounded number of index reads, whatever ``ref`` is."""
        held = self.held_certified(community, ref)
        if held is not None:
            return held.wire
        return self.backend.parked_on_prev(community, ref)

    def held_transfer(self, community: CommunityId, ref: Ref) -> Entry | None:
        """The transfer ``ref`` as a payee may read it (:meth:`held_certified`);
        None if not held so or not a transfer."""
        entry = self.held_certified(community, ref)
        return entry if entry is not None and isinstance(entry.body, Transfer) else None

    def is_certified_transfer(self, entry: Entry) -> bool:
        """True if ``entry`` is a transfer whose own certificate is held
        (only in a witnessed community): parked, its payee may accept it."""
        return (
            isinstance(entry.body, Transfer)
            and entry.community is not None
            and self.witness_rules(entry.community) is not None  # cached: no read
            and self.certified_itself(entry.community, entry.ref)
        )

    def certificate_of(self, community: CommunityId, ref: Ref) -> bytes | None:
        """The certificate held for exactly this entry, if any (possibly a
        void certificate: :meth:`is_void`)."""
        held = self.backend.certificate(community, ref.author, ref.seq)
        return None if held is None or held[0] != ref.id else held[1]

    def prepare(self, key: SigningKey, community: CommunityId, body: AnyBody, now_ms: int) -> Entry:
        """Sign the next entry of ``key``'s log, after checking it is valid.

        Does not store it: the caller stores it (durably) with :meth:`ingest_entry`.
        Raises RefusedError (with the reason code) if the entry would be rejected.
        """
        head = self.backend.head(community, key.public)
        if head is not None and head.frozen_at is not None:
            raise RefusedError("frozen", "this log is frozen: a fork of it is known")
        seq = 1 if head is None else head.seq + 1
        prev = None if head is None else head.id
        try:
            entry = Entry.create(
                key, community=community, seq=seq, prev=prev, timestamp_ms=now_ms, body=body
            )
        except CodecError as exc:
            raise RefusedError(exc.reason, str(exc)) from None
        try:
            self._check(entry, now_ms)
        except _Reject as exc:
            raise RefusedError(exc.reason.value, exc.detail) from None
        except _Wait as exc:
            if exc.finals and not exc.missing:
                raise RefusedError(
                    "not_final",
                    "not final yet: this node holds no certificate for "
                    + ", ".join(map(str, exc.finals)),
                ) from None
            raise RefusedError(
                "missing", "this node does not hold " + ", ".join(map(str, exc.missing))
            ) from None
        return entry

    # -- internals --------------------------------------------------------

    def _release(self, keys: list[WaitKey], now_ms: int) -> tuple[list[Entry], list[Outcome]]:
        """Retry what waited on ``keys``, on entries that became final, and on
        entries that never can (:meth:`_never_final`), and what waited for
        those, in order. Returns the entries stored and the verdicts on
        those that turned out invalid (they leave the waiting set)."""
        released: list[Entry] = []
        dropped: list[Outcome] = []
        queue = keys + self._finalised
        self._finalised = []
        while True:
            while queue:
                key = queue.pop(0)
                for wire in self.backend.take_waiting(key):
                    try:
                        parked = Entry.decode(wire)
                    except CodecError:  # pragma: no cover - it decoded when parked
                        continue
                    again = self._ingest_one(parked, now_ms, None)
                    if again.status is Status.ACCEPTED:
                        assert parked.community is not None
                        released.append(parked)
                        queue.append((parked.community, parked.author, parked.seq, parked.id))
                    elif again.status is Status.REJECTED:
                        dropped.append(again)
                if self._finalised:
                    queue += self._finalised
                    self._finalised = []
            if not self._certified:  # the usual case: no set to sort and renew
                return released, dropped
            certified, self._certified = sorted(self._certified), set()
            for c, author in certified:
                for key in self.backend.waiting_finals(c, author):
                    if self._never_final(c, Ref(author, -key[2], key[3])):
                        queue.append(key)
            if not queue:
                return released, dropped

    def _advance_final(self, c: CommunityId, author: MemberId, stored: Stored) -> bool:
        """Move ``author``'s final tip up to the certified ``stored`` entry,
        or only part way (:meth:`_passable`).

        Every entry between the old tip and the new one becomes final;
        their keys go to ``_finalised``. A chain that does not pass through
        the old tip means two certified branches: more than f witnesses
        lied; the tip stays (docs/witness.md §8).
        """
        entry = stored.entry
        head = self.backend.head(c, author)
        assert head is not None
        assert head.final_seq is not None
        if entry.seq <= head.final_seq:
            return False
        chain: list[Stored] = []
        seq, eid = entry.seq, entry.id
        while seq > head.final_seq:
            s = stored if seq == entry.seq else self.backend.entry(c, author, seq, eid)
            assert s is not None
            chain.append(s)
            if seq == 1:
                break
            assert s.entry.prev is not None
            seq, eid = seq - 1, s.entry.prev
        if head.final_seq and eid != head.final_id:
            mine = self.backend.certificate(c, author, entry.seq)
            low = self.backend.certificate(c, author, head.final_seq)
            if mine is not None and low is not None:
                self.backend.put_witness_fault(c, author, head.final_seq, low[1], mine[1])
            return False
        chain.reverse()
        passable = self._passable(c, author, head.final_seq, chain)
        if not passable:
            return False
        stored, entry = passable[-1], passable[-1].entry
        keys = [final_key(c, author, s.entry.seq, s.entry.id) for s in passable]
        # The final balance is the nominal one less what void entries on the
        # final chain credited (docs/witness.md §3.6): those below the old
        # tip, as counted before, and those the tip moves through.
        old = 0
        if head.final_seq and head.final_id is not None:
            tip = self.backend.entry(c, author, head.final_seq, head.final_id)
            assert tip is not None
            old = tip.balance - head.final_balance
        # Only an entry of a kind that can be void reads its certificate.
        void = sum(self._void_credit(c, s.entry.ref) for s in passable if can_be_void(s.entry))
        self.backend.put_head(
            c,
            author,
            replace(
                head,
                final_seq=entry.seq,
                final_id=entry.id,
                final_balance=stored.balance - old - void,
            ),
        )
        self.backend.put_final(c, author, [(s.entry.seq, s.entry.id) for s in passable])
        waited = self._tips_waiting.get((c, author))
        if waited is not None and waited.seq <= entry.seq:
            del self._tips_waiting[(c, author)]
        self._finalised += keys
        self._certified.add((c, author))
        return True

    def _passable(
        self, c: CommunityId, author: MemberId, final_seq: int, chain: list[Stored]
    ) -> list[Stored]:
        """The part of ``chain`` (the entries above the final tip up to a
        certified one, ascending) the tip may move through: all of it, unless
        a raceable entry on it (:func:`troc.protocol.witness.raceable`) lacks
        its own certificate, normal or void; then up to the highest certified
        entry below the first such (none: the tip stays). A tip never passes
        an entry whose kind (void or not) it does not know (docs/witness.md
        §6.1).

        ``chain``'s last entry is certified (every caller moves the tip to
        a held certified entry), so it needs no look: for an accept, the
        raceable test reads and decodes its transfer, and a newcomer's
        catch-up takes most certified entries one at a time, each its own
        chain's top (the certificate came ahead of it, docs/sync.md)."""
        # raceable first: for most kinds two isinstance checks, no read.
        n = next(
            (
                n
                for n, s in enumerate(chain[:-1])
                if raceable(s.entry, self._races, c) and self.certificate_of(c, s.entry.ref) is None
            ),
            None,
        )
        if n is None:
            return chain
        self._tips_waiting[(c, author)] = chain[n].entry.ref
        ids = {s.entry.seq: s.entry.id for s in chain[:n]}
        held = self.backend.certified_between(c, author, final_seq, chain[n].entry.seq)
        top = max((seq for seq, eid in held if ids.get(seq) == eid), default=final_seq)
        return chain[: top - final_seq]

    def _advance_above(self, c: CommunityId, author: MemberId, head: Head) -> None:
        """Move ``author``'s final tip towards the highest held certified
        entry above it (the tip stopped below it for want of a raceable
        entry's own certificate, now held)."""
        assert head.final_seq is not None
        for seq, eid in reversed(
            self.backend.certified_between(c, author, head.final_seq, head.seq + 1)
        ):
            above = self.backend.entry(c, author, seq, eid)
            if above is not None:
                self._advance_final(c, author, above)
                return

    def finalise_up_to(self, community: CommunityId, tip: Ref) -> bool:
        """Move ``tip.author``'s final tip towards the held certified entry
        ``tip`` by the rule every certificate follows (:meth:`_advance_final`):
        all the way, or to the highest certified entry below a raceable one
        lacking its own certificate. Store format 8's migration runs it on a
        log whose old tip it cleared (troc/node/_store_retip.py). Returns True
        if the tip moved."""
        stored = self.backend.entry(community, tip.author, tip.seq, tip.id)
        if stored is None or self.certificate_of(community, tip) is None:
            return False
        return self._advance_final(community, tip.author, stored)

    def _never_final(self, c: CommunityId, ref: Ref) -> bool:
        """True if the held entry ``ref`` can never become final, whatever
        arrives later (unless more than f witnesses lie): another entry is
        certified at its position, or the log's certified chain is not its
        chain: at or above it, the final tip is on a branch beside it; below
        it, the final tip or a certificate held lower down (its entry may
        not be held yet) names an entry that is not its ancestor, so its
        chain left the certified one at a fork."""
        a = ref.author
        held = self.backend.certificate(c, a, ref.seq)
        if held is not None and held[0] != ref.id:
            return True
        head = self.backend.head(c, a)
        if head is None or head.final_seq is None:
            return False
        if ref.seq <= head.final_seq:
            return not self.is_final(c, ref)
        stored = self.backend.entry(c, a, ref.seq, ref.id)
        if stored is None:
            return False
        below = self.backend.certified_between(c, a, head.final_seq, ref.seq)
        if head.final_seq and head.final_id is not None:
            below.append((head.final_seq, head.final_id))
        return any(not self._is_ancestor(c, a, seq, eid, stored.entry) for seq, eid in below)

    def _wait_all_final(self, c: CommunityId, named: tuple[Ref, ...]) -> None:
        """Wait until every entry ``named`` is final (all listed at once);
        reject if one never can be."""
        waiting = [r for r in named if not self.is_final(c, r)]
        for r in waiting:
            if self._never_final(c, r):
                raise _Reject(
                    Reason.NOT_FINAL,
                    f"{r} can never become final: another entry of its log is certified",
                )
        if waiting:
            raise _Wait([], waiting)

    def _wait_final(self, c: CommunityId, ref: Ref) -> None:
        """Wait until ``ref`` is final; reject if it never can be."""
        if self._never_final(c, ref):
            raise _Reject(
                Reason.NOT_FINAL,
                f"{ref} can never become final: another entry of its log is certified",
            )
        raise _Wait([], [ref])

    def _ingest_one(self, entry: Entry, now_ms: int, source: str | None) -> Outcome:
        if entry.kind is Kind.GENESIS:
            if self.backend.genesis(CommunityId(entry.id)) is not None:
                return Outcome(Status.DUPLICATE, entry)
            self.backend.put_genesis(entry)
            return Outcome(Status.ACCEPTED, entry)
        assert entry.community is not None
        c, a = entry.community, entry.author
        if self.backend.entry(c, a, entry.seq, entry.id) is not None:
            return Outcome(Status.DUPLICATE, entry)
        try:
            checked = self._check(entry, now_ms)
        except _Reject as exc:
            return Outcome(Status.REJECTED, entry, exc.reason, exc.detail)
        except _Wait as exc:
            keys = [(c, r.author, r.seq, r.id) for r in exc.missing]
            keys += [final_key(c, r.author, r.seq, r.id) for r in exc.finals]
            # Whether the author's join is held: strangers park in a pool of their own.
            member = self.backend.head(c, a) is not None
            parking = Parking(c, a, member, source, now_ms)
            if not self.backend.put_waiting(keys, entry.wire, parking):
                return Outcome(
                    Status.REJECTED,
                    entry,
                    Reason.WAITING_FULL,
                    "too many entries of this author or from this peer are waiting",
                )
            return Outcome(
                Status.WAITING,
                entry,
                missing=tuple(exc.missing),
                missing_final=tuple(exc.finals),
            )
        # A second *valid* entry at a stored (author, seq) proves a fork. An
        # invalid one proves nothing that counts (no honest node stores it),
        # and ignoring it keeps the verdict independent of arrival order.
        others = self.backend.ids_at(c, a, entry.seq)
        fork = False
        if others:
            fork = self._record_fork(entry, others[0])
            checked.head = self.backend.head(c, a)  # freezing may have changed it
        self._apply(checked)
        return Outcome(Status.ACCEPTED, entry, fork=fork)

    def _record_fork(self, entry: Entry, other_id: EntryId) -> bool:
        """Store the proof that ``entry``'s author signed two entries at its seq."""
        assert entry.community is not None
        c, a = entry.community, entry.author
        other = self.backend.entry(c, a, entry.seq, other_id)
        assert other is not None
        if not self.backend.put_fork(c, a, entry.seq, other.entry.wire, entry.wire):
            return False
        self._freeze(c, a, entry.seq)
        return True

    def _freeze(self, c: CommunityId, author: MemberId, at: int) -> None:
        """Stop counting ``author``'s entries from seq ``at`` on."""
        head = self.backend.head(c, author)
        assert head is not None  # a fork needs a stored entry
        old = head.frozen_at
        if old is not None and old <= at:
            return
        # Credits others took from the newly frozen transfers (and pledges,
        # counted by a campaign's close) stop counting.
        for row in _crediting(self.backend.refs_to, c, author, at, old):
            payee = self.backend.head(c, row.by_author)
            if payee is not None and payee.counts(row.by_seq):
                self.backend.put_head(
                    c, row.by_author, replace(payee, frozen_credit=payee.frozen_credit + row.amount)
                )
        head = self.backend.head(c, author)  # may have changed above? not for author itself
        assert head is not None
        cut = 0
        if at > 1:
            ids = self.backend.ids_at(c, author, at - 1)
            cut_entry = self.backend.entry(c, author, at - 1, ids[0])
            assert cut_entry is not None
            cut = cut_entry.balance
        frozen_credit = 0
        for row in _crediting(self.backend.refs_from, c, author, at):
            payer = self.backend.head(c, row.target_author)
            if payer is not None and not payer.counts(row.target_seq):
                frozen_credit += row.amount
        self.backend.put_head(
            c, author, replace(head, frozen_at=at, cut_balance=cut, frozen_credit=frozen_credit)
        )
        # Take-backs undone by accepts (§4.11): the author's own that no
        # longer count, and those whose undoing accept, by the author, no
        # longer counts. Forks are rare; this walks the author's log.
        if not head.witnessed:
            self._recount_undone(c, author)
            for row in _crediting(self.backend.refs_from, c, author, None):
                if row.by_seq >= at:
                    self._recount_undone(c, row.target_author)

    def _apply(self, checked: _Checked) -> None:
        entry = checked.stored.entry
        assert entry.community is not None
        c, a = entry.community, entry.author
        self.backend.put_entry(checked.stored, checked.refs)
        head = checked.head  # as _check read it: nothing wrote it since
        if head is None:
            head = Head(
                entry.seq,
                entry.id,
                checked.stored.balance,
                checked.stored.limit,
                final_seq=0 if checked.witnessed else None,
            )
        elif entry.prev == head.id:
            # Built directly rather than with dataclasses.replace: this runs once per entry.
            head = Head(
                entry.seq,
                entry.id,
                checked.stored.balance,
                checked.stored.limit,
                head.frozen_at,
                head.cut_balance,
                head.frozen_credit,
                head.final_seq,
                head.final_id,
                head.final_balance,
                head.undone,
            )
        # else: a branch beside the first-seen one; the head stays.
        if isinstance(entry.body, Accept) and head.counts(entry.seq):
            t = entry.body.transfer
            payer = self.backend.head(c, t.author)
            if payer is not None and not payer.counts(t.seq):
                head = replace(head, frozen_credit=head.frozen_credit + checked.refs[0].amount)
        if (
            checked.expiring
            and entry.kind in _UNDONE_BY
            and head.counts(entry.seq)
            and self._won(c, checked.refs[0], _UNDONE_BY[entry.kind])
        ):
            # The payee's accept (a close counting the pledge) is held
            # already: it wins (§4.11, §10.5).
            head = replace(head, undone=head.undone + checked.refs[0].amount)
        if isinstance(entry.body, CampaignClose) and head.counts(entry.seq):
            # Credit from a pledge in its pledger's frozen part never counts.
            frozen = 0
            for row in checked.refs:
                pledger = self.backend.head(c, row.target_author)
                if row.amount and pledger is not None and not pledger.counts(row.target_seq):
                    frozen += row.amount
            if frozen:
                head = replace(head, frozen_credit=head.frozen_credit + frozen)
        self.backend.put_head(c, a, head)
        if checked.expiring and head.counts(entry.seq):
            if isinstance(entry.body, Accept):
                self._undo(c, checked.refs[0], Kind.TAKE_BACK)
            elif isinstance(entry.body, CampaignClose):
                for row in checked.refs:
                    if row.amount:  # a pledge it counts: that pledge's lapse is undone
                        self._undo(c, row, Kind.WITHDRAW)
        if checked.witnessed and self.certificate_of(c, entry.ref) is not None:
            self._advance_final(c, a, checked.stored)
            if isinstance(entry.body, Transfer):
                self._accepted_before(c, entry, entry.body)

    def _accepted_before(self, c: CommunityId, transfer: Entry, body: Transfer) -> None:
        """The certified ``transfer`` is stored at last: if its payee accepted
        it while it was parked (docs/witness.md §6.1) and that payee's final
        tip stopped below the accept, because the transfer was not held then
        and the accept was taken as raceable, let the tip go on now. The
        backend is told first (its derived state assumed nothing names a
        new entry)."""
        self.backend.named_early(c, transfer.ref)
        for row in self.backend.refs_by(c, body.to, Kind.ACCEPT, transfer.id):
            head = self.backend.head(c, body.to)
            if head is not None and head.final_seq is not None and head.final_seq < row.by_seq:
                self._advance_above(c, body.to, head)

    # -- the rules --------------------------------------------------------

    def _check(self, entry: Entry, now_ms: int) -> _Checked:
        """Decide validity. Raises _Reject or _Wait; returns what to store."""
        assert entry.community is not None
        c, a, body = entry.community, entry.author, entry.body
        genesis = self.backend.genesis(c)
        if genesis is None:
            raise _Reject(Reason.UNKNOWN_COMMUNITY, "this node does not follow that community")
        rules: Genesis = genesis.body  # type: ignore[assignment]
        witnessed = rules.finality == "witnessed"
        if entry.timestamp_ms > now_ms + FUTURE_TOLERANCE_MS:
            ahead = (entry.timestamp_ms - now_ms) // 1000
            raise _Reject(Reason.FUTURE_TIMESTAMP, f"stamped {ahead} s in the future")

        # The log link: the entry extends its author's log at prev.
        head = self.backend.head(c, a)
        if entry.seq == 1:
            balance, limit = 0, 0
        else:
            assert entry.prev is not None
            if head is not None and head.id == entry.prev and head.seq == entry.seq - 1:
                # The usual case, the entry extends the head, stored, whose
                # balance and limit the head holds (_apply): no read. (A
                # witnessed newcomer's catch-up streams each log's entries
                # ~1,000 apart, merged by time: its prev was read from
                # SQLite and decoded, out of the store's cache.)
                balance, limit = head.balance, head.limit
            else:
                prev = self.backend.entry(c, a, entry.seq - 1, entry.prev)
                if prev is None:
                    # Either a gap, or a branch whose earlier entries have not
                    # arrived yet (a fork): both are waits, never rejections, so
                    # the verdict does not depend on arrival order.
                    raise _Wait([Ref(a, entry.seq - 1, entry.prev)])
                balance, limit = prev.balance, prev.limit
            if (
                head is not None
                and head.frozen_at is not None
                and entry.seq > head.frozen_at + MAX_BEYOND_FORK
            ):
                raise _Reject(Reason.FORK_LIMIT, "too many entries beyond this log's fork")

        if (entry.seq == 1) != isinstance(body, Join):
            raise _Reject(Reason.JOIN_FIRST, "a log starts with one join, at seq 1")

        refs: list[RefRow] = []
        expiring = False
        if isinstance(body, Join):
            limit = self._join_limit(c, entry, body, rules)
        elif isinstance(body, Transfer):
            if body.to == a:
                raise _Reject(Reason.SELF_PAYMENT, "a member cannot pay itself")
            if body.request is not None:
                refs.append(self._paid_request(c, entry, body, body.request))
            if body.offer is not None:
                offer = self._need(c, body.offer)
                if not isinstance(offer.entry.body, Offer):
                    raise _Reject(
                        Reason.NOT_AN_OFFER, "the transfer names an entry that is not an offer"
                    )
            if balance - body.amount < -limit:
                raise _Reject(
                    Reason.OVERDRAFT,
                    f"balance {balance} - {body.amount} would pass the credit limit of -{limit}",
                )
            balance -= body.amount
        elif isinstance(body, Accept | Decline):
            transfer = self._answered(c, body, witnessed)
            if not isinstance(transfer.body, Transfer):
                raise _Reject(Reason.NOT_A_TRANSFER, "the entry named is not a transfer")
            if transfer.body.to != a:
                raise _Reject(Reason.NOT_PAYEE, "the transfer is addressed to someone else")
            for kind in (Kind.ACCEPT, Kind.DECLINE):
                for row in self.backend.refs_by(c, a, kind, body.transfer.id):
                    if self._is_ancestor(c, a, row.by_seq, row.by_id, entry):
                        raise _Reject(
                            Reason.ALREADY_ANSWERED,
                            f"this transfer was already answered ({kind.value})",
                        )
            amount = transfer.body.amount
            if isinstance(body, Accept):
                expiring = not witnessed and expiry_of(transfer, rules) is not None
                if rules.ceiling is not None and balance + amount > rules.ceiling:
                    raise _Reject(
                        Reason.OVER_CEILING, f"balance would pass the ceiling of {rules.ceiling}"
                    )
                balance = _credit(balance, amount)
                # A payee takes only final payments, or certified ones: the
                # transfer's own certificate proves it valid on the one chain
                # the witnesses lock, stored here or not (docs/witness.md §6.1).
                if (
                    witnessed
                    and not self.is_final(c, body.transfer)
                    and not self.certified_itself(c, body.transfer)
                ):
                    self._wait_final(c, body.transfer)
            refs.append(self._row(entry, body.transfer, amount))
        elif isinstance(body, Reclaim):
            d = self._need(c, body.decline)
            if not isinstance(d.entry.body, Decline):
                raise _Reject(Reason.NOT_A_DECLINE, "the entry named is not a decline")
            t_ref = d.entry.body.transfer
            if t_ref.author != a or not self._is_ancestor(c, a, t_ref.seq, t_ref.id, entry):
                raise _Reject(Reason.NOT_PAYER, "the declined transfer is not in this log")
            self._not_taken_back(c, entry, t_ref.id)
            t = self._need(c, t_ref)
            assert isinstance(t.entry.body, Transfer)
            balance = _credit(balance, t.entry.body.amount)
            # Else the payee could accept on one branch and decline on another.
            if witnessed and not self.is_final(c, body.decline):
                self._wait_final(c, body.decline)
            refs.append(self._row(entry, t_ref, t.entry.body.amount))
        elif isinstance(body, TakeBack):
            t = self._need(c, body.transfer)
            if not isinstance(t.entry.body, Transfer):
                raise _Reject(Reason.NOT_A_TRANSFER, "the entry named is not a transfer")
            t_ref = body.transfer
            if t_ref.author != a or not self._is_ancestor(c, a, t_ref.seq, t_ref.id, entry):
                raise _Reject(Reason.NOT_PAYER, "the transfer is not in this log")
            self._not_taken_back(c, entry, t_ref.id)
            expiry = expiry_of(t.entry, rules)
            if expiry is None or entry.timestamp_ms <= expiry:
                raise _Reject(
                    Reason.NOT_EXPIRED,
                    "the transfer never expires"
                    if expiry is None
                    else f"the transfer expires at {expiry}, this is stamped {entry.timestamp_ms}",
                )
            amount = t.entry.body.amount
            balance = _credit(balance, amount)
            refs.append(self._row(entry, t_ref, amount))
            expiring = not witnessed
        elif isinstance(body, OfferClose):
            o = self._need(c, body.offer)
            if not isinstance(o.entry.body, Offer):
                raise _Reject(Reason.NOT_AN_OFFER, "the entry named is not an offer")
            if body.offer.author != a or not self._is_ancestor(
                c, a, body.offer.seq, body.offer.id, entry
            ):
                raise _Reject(Reason.NOT_OWN_OFFER, "a member can close only its own offers")
            for row in self.backend.refs_by(c, a, Kind.OFFER_CLOSE, body.offer.id):
                if self._is_ancestor(c, a, row.by_seq, row.by_id, entry):
                    raise _Reject(Reason.ALREADY_CLOSED, "this offer is already closed")
            refs.append(self._row(entry, body.offer, 0))
        elif isinstance(body, Request):
            if body.to == a:
                raise _Reject(Reason.SELF_PAYMENT, "a member cannot ask itself for a payment")
            if body.offer is not None and not isinstance(
                self._need(c, body.offer).entry.body, Offer
            ):
                raise _Reject(
                    Reason.NOT_AN_OFFER, "the request names an entry that is not an offer"
                )
        elif isinstance(body, Refusal):
            q = self._need(c, body.request)
            if not isinstance(q.entry.body, Request):
                raise _Reject(Reason.NOT_A_REQUEST, "the entry named is not a request")
            if q.entry.body.to != a:
                raise _Reject(Reason.NOT_ASKED, "the request is addressed to someone else")
            self._request_open(c, entry, body.request.id)
            refs.append(self._row(entry, body.request, q.entry.body.amount))
        elif isinstance(body, Campaign | Pledge | CampaignClose | Withdraw):
            balance = self._campaign_rule(entry, balance, limit, rules, refs, witnessed)
            # A lapse and a successful close race (§10.5): the close wins.
            expiring = not witnessed and (
                (isinstance(body, Withdraw) and body.lapse)
                or (isinstance(body, CampaignClose) and any(r.amount for r in refs))
            )
        elif isinstance(body, Vouch):
            if body.member == a:
                raise _Reject(Reason.BAD_VOUCH, "a member cannot vouch for itself")
            if body.limit is not None and body.limit > rules.credit_limit:
                raise _Reject(
                    Reason.BAD_VOUCH,
                    f"a vouch may grant at most the community's limit {rules.credit_limit}",
                )
        elif isinstance(body, Genesis):  # pragma: no cover - decode forbids it here
            raise _Reject(Reason.BAD_SHAPE, "a genesis cannot be part of a log")
        # Offer, Profile: nothing to check beyond the schema.
        assert -MAX_BALANCE <= balance <= MAX_BALANCE  # the credit limit and _credit
        return _Checked(Stored(entry, balance, limit), refs, witnessed, expiring, head)

    def _answered(self, c: CommunityId, body: Accept | Decline, witnessed: bool) -> Entry:
        """The transfer an accept or a decline names, or wait for it. In a
        witnessed community an accept may read it parked, with its own
        certificate (:meth:`parked_certified`); while the transfer is
        missing or parked, the accept waits for it and for its certificate
        (either may come first; both are named, so a sync asks for both),
        unless it can never be final."""
        ref = body.transfer
        stored = self.backend.entry(c, ref.author, ref.seq, ref.id)
        if stored is not None:
            return stored.entry
        if not witnessed or not isinstance(body, Accept):
            raise _Wait([ref])
        parked = self.parked_certified(c, ref)
        if parked is not None:
            return parked
        if self._never_final(c, ref):
            raise _Wait([ref])
        if len(self._transfers_wanted) >= self.MAX_TRANSFERS_WANTED:
            self._transfers_wanted.clear()  # only a hint
        self._transfers_wanted[(c, ref)] = None
        raise _Wait([ref], [ref])

    def _not_taken_back(self, c: CommunityId, entry: Entry, transfer: EntryId) -> None:
        """Refuse ``entry`` if its chain already reclaimed or took back ``transfer``."""
        a = entry.author
        for kind in (Kind.RECLAIM, Kind.TAKE_BACK):
            for row in self.backend.refs_by(c, a, kind, transfer):
                if self._is_ancestor(c, a, row.by_seq, row.by_id, entry):
                    raise _Reject(
                        Reason.ALREADY_RECLAIMED,
                        "this transfer was already "
                        + ("reclaimed" if kind is Kind.RECLAIM else "taken back"),
                    )

    # -- take-backs undone by an accept, lapses by a close (optimistic, §4.11, §10.5) --

    def _won(self, c: CommunityId, row: RefRow, kind: Kind) -> bool:
        """True if a counted entry of ``kind`` (an accept; a close) crediting
        the transfer (pledge) ``row`` points at is held: it beats ``row``'s
        take-back (lapse). A close's row naming a pledge carries its amount
        only if the close succeeded."""
        for won in self.backend.refs_to(
            c, row.target_author, kind, row.target_seq, row.target_seq + 1
        ):
            if won.target_id == row.target_id and won.amount:
                winner = self.backend.head(c, won.by_author)
                if winner is not None and winner.counts(won.by_seq):
                    return True
        return False

    def _recount_undone(self, c: CommunityId, member: MemberId) -> None:
        """Sum again ``member``'s counted take-backs and lapses that an accept
        or a close undid (after a fork changed which entries count).

        A counted withdraw that names a close is never undone: a counted
        close counting its pledge would be a second close of the campaign
        beside the one it names, on another branch of its author's log, and
        then neither counts (§10.4). So every withdraw found here is a lapse.
        """
        head = self.backend.head(c, member)
        if head is None or head.witnessed:
            return
        undone = sum(
            row.amount
            for kind, by in _UNDONE_BY.items()
            for row in self.backend.refs_from(c, member, kind, head.frozen_at)
            if self._won(c, row, by)
        )
        if undone != head.undone:
            self.backend.put_head(c, member, replace(head, undone=undone))

    def _undo(self, c: CommunityId, winner: RefRow, kind: Kind) -> None:
        """A counted accept (close) was stored: the take-backs (lapses) of
        kind ``kind`` of its transfer (pledge) that count stop counting."""
        loser = winner.target_author
        for row in self.backend.refs_to(c, loser, kind, winner.target_seq, winner.target_seq + 1):
            head = self.backend.head(c, loser)
            if row.target_id == winner.target_id and head is not None and head.counts(row.by_seq):
                self.backend.put_head(c, loser, replace(head, undone=head.undone + row.amount))

    def _paid_request(self, c: CommunityId, entry: Entry, body: Transfer, wire: bytes) -> RefRow:
        """Check the request a transfer pays (embedded, so no wait): its
        reference row, or _Reject."""
        try:
            req = Entry.decode(wire)
        except CodecError as exc:
            raise _Reject(
                Reason.BAD_REQUEST, f"the request embedded does not decode ({exc.reason}): {exc}"
            ) from None
        r = req.body
        if not isinstance(r, Request) or req.community != c:
            raise _Reject(
                Reason.BAD_REQUEST, "the entry embedded is not a request of this community"
            )
        if req.author != body.to or r.to != entry.author:
            raise _Reject(Reason.REQUEST_MISMATCH, "the request is not from the payee to the payer")
        if r.amount != body.amount or r.offer != body.offer:
            raise _Reject(
                Reason.REQUEST_MISMATCH,
                f"the request asks {r.amount} (offer {r.offer}), the transfer pays"
                f" {body.amount} (offer {body.offer})",
            )
        if r.expires_ms is not None and entry.timestamp_ms > r.expires_ms:
            raise _Reject(
                Reason.REQUEST_EXPIRED,
                f"the transfer is stamped {entry.timestamp_ms}, the request expired at"
                f" {r.expires_ms}",
            )
        self._request_open(c, entry, req.id)
        return self._row(entry, req.ref, body.amount)

    def _request_open(self, c: CommunityId, entry: Entry, request: EntryId) -> None:
        """Refuse ``entry`` if its chain already paid or refused ``request``.

        Only the payer a request names can pay or refuse it, and both live on
        the payer's log: "the first on the chain" is decided by seq, so the
        verdict is the same in every arrival order.
        """
        a = entry.author
        for kind, reason in (
            (Kind.TRANSFER, Reason.ALREADY_PAID),
            (Kind.REFUSAL, Reason.ALREADY_REFUSED),
        ):
            for row in self.backend.refs_by(c, a, kind, request):
                if self._is_ancestor(c, a, row.by_seq, row.by_id, entry):
                    raise _Reject(
                        reason, f"this request was already {reason.value.removeprefix('already_')}"
                    )

    def _campaign_rule(
        self,
        entry: Entry,
        balance: int,
        limit: int,
        rules: Genesis,
        refs: list[RefRow],
        witnessed: bool,
    ) -> int:
        """The rules of campaign, pledge, campaign_close and withdraw
        (docs/protocol.md §10.2, §10.6). Returns the new nominal balance and
        adds the entry's reference rows to ``refs``."""
        assert entry.community is not None
        c, a, body = entry.community, entry.author, entry.body
        if isinstance(body, Pledge):
            camp = self._need(c, body.campaign)
            if not isinstance(camp.entry.body, Campaign):
                raise _Reject(
                    Reason.NOT_A_CAMPAIGN, "the pledge names an entry that is not a campaign"
                )
            if body.campaign.author == a:
                raise _Reject(Reason.SELF_PAYMENT, "a member cannot pledge to its own campaign")
            least = camp.entry.body.min_pledge
            if least is not None and body.amount < least:
                raise _Reject(
                    Reason.BELOW_MINIMUM, f"this campaign takes pledges of {least} or more"
                )
            if self._on_log(c, a, Kind.PLEDGE, body.campaign.id, entry):
                raise _Reject(Reason.ALREADY_PLEDGED, "this log already pledged to this campaign")
            if balance - body.amount < -limit:
                raise _Reject(
                    Reason.OVERDRAFT,
                    f"balance {balance} - {body.amount} would pass the credit limit of -{limit}",
                )
            refs.append(self._row(entry, body.campaign, body.amount))
            return balance - body.amount
        if isinstance(body, CampaignClose):
            camp = self._need(c, body.campaign)
            if not isinstance(camp.entry.body, Campaign):
                raise _Reject(
                    Reason.NOT_A_CAMPAIGN, "the close names an entry that is not a campaign"
                )
            if body.campaign.author != a or not self._is_ancestor(
                c, a, body.campaign.seq, body.campaign.id, entry
            ):
                raise _Reject(Reason.NOT_OWN_CAMPAIGN, "a member can close only its own campaigns")
            if self._on_log(c, a, Kind.CAMPAIGN_CLOSE, body.campaign.id, entry):
                raise _Reject(Reason.ALREADY_CLOSED, "this campaign is already closed")
            found = [self.backend.entry(c, r.author, r.seq, r.id) for r in body.pledges]
            missing = [r for r, s in zip(body.pledges, found, strict=True) if s is None]
            if missing:
                raise _Wait(missing)
            amounts: list[int] = []
            for s in found:
                assert s is not None
                p = s.entry.body
                if not isinstance(p, Pledge) or p.campaign != body.campaign:
                    raise _Reject(
                        Reason.NOT_A_PLEDGE, f"{s.entry.ref} is no pledge to this campaign"
                    )
                amounts.append(p.amount)
            total = sum(amounts)
            if witnessed:  # a close names only final pledges (§10.6), as an accept
                self._wait_all_final(c, body.pledges)
            refs.append(self._row(entry, body.campaign, 0))
            if total < camp.entry.body.goal:
                return balance  # failed: nothing counts, every pledge lapses
            if rules.ceiling is not None and balance + total > rules.ceiling:
                raise _Reject(
                    Reason.OVER_CEILING, f"balance would pass the ceiling of {rules.ceiling}"
                )
            refs += [self._row(entry, r, n) for r, n in zip(body.pledges, amounts, strict=True)]
            return _credit(balance, total)
        if isinstance(body, Withdraw):
            pledged = self._need(c, body.pledge)
            p = pledged.entry.body
            if not isinstance(p, Pledge):
                raise _Reject(Reason.NOT_A_PLEDGE, "the entry named is not a pledge")
            if body.pledge.author != a or not self._is_ancestor(
                c, a, body.pledge.seq, body.pledge.id, entry
            ):
                raise _Reject(Reason.NOT_PLEDGER, "the pledge is not in this log")
            if self._on_log(c, a, Kind.WITHDRAW, body.pledge.id, entry):
                raise _Reject(Reason.ALREADY_WITHDRAWN, "this pledge was already withdrawn")
            if body.close is None:
                # A lapse (§10.5): after the deadline by the pledger's own
                # stamp, as a take-back after its expiry. A close counting
                # the pledge wins over it (optimistic: undone when held;
                # witnessed: the witnesses certify one of the two).
                camp = self._need(c, p.campaign)  # held: the pledge waited for it
                assert isinstance(camp.entry.body, Campaign)
                deadline = camp.entry.body.deadline_ms
                if entry.timestamp_ms <= deadline:
                    raise _Reject(
                        Reason.NOT_LAPSED,
                        f"the campaign's deadline is {deadline}, this is stamped"
                        f" {entry.timestamp_ms}: name its close",
                    )
                refs.append(self._row(entry, body.pledge, p.amount))
                return _credit(balance, p.amount)
            closed = self._need(c, body.close)
            cb = closed.entry.body
            if not isinstance(cb, CampaignClose) or cb.campaign != p.campaign:
                raise _Reject(Reason.NOT_A_CLOSE, "the entry named is not this campaign's close")
            if body.pledge in cb.pledges and self._succeeded(c, closed):
                raise _Reject(Reason.PLEDGE_COUNTED, "the close counts this pledge: it is paid")
            refs.append(self._row(entry, body.pledge, p.amount))
            balance = _credit(balance, p.amount)
            # Else the author could close one way on one branch and another on another.
            if witnessed and not self.is_final(c, body.close):
                self._wait_final(c, body.close)
            return balance
        return balance  # a campaign: nothing to check beyond its schema

    def _succeeded(self, c: CommunityId, close: Stored) -> bool:
        """True if the stored campaign_close ``close`` reached its goal: it
        credited its author (a failed close changes no balance, and a
        campaign comes before its close, so the close has a prev)."""
        e = close.entry
        assert e.prev is not None
        prev = self.backend.entry(c, e.author, e.seq - 1, e.prev)
        assert prev is not None
        return close.balance != prev.balance

    def _on_log(
        self, c: CommunityId, a: MemberId, kind: Kind, target: EntryId, entry: Entry
    ) -> bool:
        """True if an entry of ``kind`` naming ``target`` lies on the chain ``entry`` extends."""
        return any(
            self._is_ancestor(c, a, row.by_seq, row.by_id, entry)
            for row in self.backend.refs_by(c, a, kind, target)
        )

    def _join_limit(self, c: CommunityId, entry: Entry, body: Join, rules: Genesis) -> int:
        genesis = self.backend.genesis(c)
        assert genesis is not None
        if rules.admission == "open" or entry.author == genesis.author:
            if body.vouch is not None and rules.admission == "open":
                raise _Reject(Reason.BAD_VOUCH, "an open community takes joins without vouches")
            return rules.credit_limit
        if body.vouch is None:
            raise _Reject(Reason.BAD_VOUCH, "this community admits members by vouch: name one")
        v = self._need(c, body.vouch)
        if not isinstance(v.entry.body, Vouch) or v.entry.body.member != entry.author:
            raise _Reject(Reason.BAD_VOUCH, "the entry named is not a vouch for this member")
        return rules.credit_limit if v.entry.body.limit is None else v.entry.body.limit

    def _need(self, c: CommunityId, ref: Ref) -> Stored:
        """The referenced entry, or wait for it."""
        stored = self.backend.entry(c, ref.author, ref.seq, ref.id)
        if stored is None:
            raise _Wait([ref])
        return stored

    def _is_ancestor(
        self, c: CommunityId, author: MemberId, seq: int, eid: EntryId, entry: Entry
    ) -> bool:
        """True if (author, seq, eid) lies on the chain that ``entry`` extends."""
        if seq >= entry.seq:
            return False
        head = self.backend.head(c, author)
        if head is None or head.frozen_at is None or seq < head.frozen_at:
            # One entry per seq below any fork: being stored means being on the chain.
            return self.backend.entry(c, author, seq, eid) is not None
        if self.backend.entry(c, author, seq, eid) is None:
            return False  # on no chain held here: no walk for it
        # Walk down the prev links; a chain that reaches the final tip goes on
        # as the final chain, which is recorded: the rest is one lookup.
        final = head.final_seq or 0
        cur_seq, cur_id = entry.seq - 1, entry.prev
        while cur_seq > seq and cur_id is not None:
            if cur_seq == final and cur_id == head.final_id:
                return self.backend.final_at(c, author, seq) == eid
            s = self.backend.entry(c, author, cur_seq, cur_id)
            if s is None:
                return False
            cur_seq, cur_id = cur_seq - 1, s.entry.prev
        return cur_id == eid

    @staticmethod
    def _row(entry: Entry, target: Ref, amount: int) -> RefRow:
        return RefRow(
            entry.kind,
            entry.author,
            entry.seq,
            entry.id,
            target.author,
            target.seq,
            target.id,
            amount,
        )
