"""The payer's side of witnessed finality (docs/witness.md §4): a
:class:`Collector` gathers the witnesses' answers for one entry into a
certificate, saying of each answer what it made of it (:class:`Tally`), and
keeps the proofs of lying witnesses and forked authors. Pure: no I/O.
"""

from __future__ import annotations

from enum import StrEnum

from troc.crypto.sign import MemberId
from troc.errors import LocalProtocolError
from troc.protocol.entry import CommunityId, Entry, Ref
from troc.protocol.vote import (
    Certificate,
    Equivocation,
    Position,
    TimeAttestation,
    VoidCertificate,
    Vote,
    WitnessRules,
)
from troc.protocol.witness_wire import Answer, Conflicting, Refused, Voted, Waiting

__all__ = ["LIES", "Collector", "Tally"]

# -- the payer's side ----------------------------------------------------------------


class Tally(StrEnum):
    """What a :class:`Collector` made of one vote or answer."""

    COUNTED = "counted"  # a valid vote for the entry, from a new witness
    DUPLICATE = "duplicate"  # this witness's vote was already in hand
    INVALID = "invalid"  # a vote with a bad signature
    OUTSIDER = "outsider"  # not one of the community's witnesses
    ELSEWHERE = "elsewhere"  # a vote for another (community, author, seq)
    CONFLICTING = "conflicting"  # a valid vote for another id at the entry's seq
    EQUIVOCATION = "equivocation"  # a witness voted for two ids here: proof kept
    EXCLUDED = "excluded"  # a vote of a witness caught equivocating: not counted
    REFUSED = "refused"
    WAITING = "waiting"
    FORK = "fork"  # a witness proved the author signed two entries at one seq
    FALSE_FORK = "false_fork"  # a conflict answer that proves no fork: a lying witness
    UNTIMED = "untimed"  # a timed entry's vote without the witness's time: not counted
    BAD_TIME = "bad_time"  # a time that does not verify, or not past the deadline


#: Answers no honest witness gives to a request for the collector's entry:
#: their sender is faulty (:attr:`Collector.faulty`) and not asked again.
LIES = frozenset(
    {
        Tally.INVALID,
        Tally.OUTSIDER,
        Tally.ELSEWHERE,
        Tally.CONFLICTING,
        Tally.EQUIVOCATION,
        Tally.EXCLUDED,
        Tally.FALSE_FORK,
        Tally.BAD_TIME,
    }
)


class Collector:
    """Gathers witnesses' votes for one entry into a certificate.

    Counts at most one valid vote per witness of the genesis's set; ignores
    duplicates, garbage, outsiders and votes for other entries; keeps the
    proof when a witness votes for two ids at the entry's (author, seq), and
    stops counting that witness. :attr:`certificate` is set as soon as
    ``rules.quorum`` votes are counted, and never changes after.

    A conflict answer counts as a fork (:attr:`conflicts`) only if it holds
    two entries the author validly signed at one position
    (:meth:`Conflicting.problem`); anything else is a lie. A witness that
    answers what no honest witness would (:data:`LIES`: a lying conflict, a
    bad or misplaced vote …) is named in :attr:`faulty` with what it did and
    drops out of :meth:`pending`: the others are asked, and with at most f
    liars they make the quorum.

    With ``deadline_ms`` set (a take-back's or a lapse's, docs/witness.md
    §3.5) the certificate is *timed*: a vote counts only with its witness's
    time attestation past the deadline (:attr:`times`). A vote without one
    is kept aside (:attr:`untimed`: an honest witness whose clock is behind
    gives one under rule 1) and that witness is not asked again; a time that
    does not verify or is not past the deadline is a lie (no honest witness
    signs one).
    """

    def __init__(
        self,
        rules: WitnessRules,
        community: CommunityId,
        target: Ref,
        *,
        void: bool = False,
        deadline_ms: int | None = None,
    ) -> None:
        if community != rules.community:
            raise LocalProtocolError("the entry is not of the rules' community")
        self.rules = rules
        self.target = target
        #: Collecting void votes (docs/witness.md §3.6) into a void certificate;
        #: a vote of the other kind is no answer to the request (a lie).
        self.void = void
        self.position: Position = (community, target.author, target.seq)
        self.votes: dict[MemberId, Vote] = {}
        self.others: dict[MemberId, Vote] = {}  # a valid vote for another id here
        self.equivocations: dict[MemberId, Equivocation] = {}
        self.conflicts: list[Conflicting] = []
        self.refusals: dict[MemberId, Refused] = {}
        self.faulty: dict[MemberId, str] = {}  # witness → what it did wrong
        self.certificate: Certificate | None = None
        #: Void certificates carry no times.
        self.deadline_ms = None if void else deadline_ms
        self.times: dict[MemberId, TimeAttestation] = {}
        self.untimed: dict[MemberId, Vote] = {}

    @classmethod
    def for_entry(
        cls,
        rules: WitnessRules,
        entry: Entry,
        *,
        void: bool = False,
        deadline_ms: int | None = None,
    ) -> Collector:
        if entry.community is None:
            raise LocalProtocolError("a genesis is not voted on")
        return cls(rules, entry.community, entry.ref, void=void, deadline_ms=deadline_ms)

    @property
    def done(self) -> bool:
        return self.certificate is not None

    def pending(self) -> list[MemberId]:
        """Witnesses worth asking (again): no vote counted, not caught lying."""
        return sorted(
            w
            for w in self.rules.witnesses
            if w not in self.votes
            and w not in self.equivocations
            and w not in self.faulty
            and w not in self.untimed
        )

    def add(self, vote: Vote, time: TimeAttestation | None = None) -> Tally:
        """Take one vote (with its witness's time attestation, if any)."""
        if vote.position != self.position or vote.void != self.void:
            return Tally.ELSEWHERE
        w = vote.witness
        if w not in self.rules.witnesses:
            return Tally.OUTSIDER
        if w in self.equivocations:
            return Tally.EXCLUDED
        ours = vote.id == self.target.id
        if ours and w in self.votes:
            return Tally.DUPLICATE
        if not ours and w in self.others:
            return Tally.DUPLICATE if self.others[w].id == vote.id else Tally.CONFLICTING
        if not vote.verify():
            return Tally.INVALID
        if not ours:
            self.others[w] = vote
            counted = self.votes.get(w)
            if counted is None:
                return Tally.CONFLICTING
            self._caught(counted, vote)
            return Tally.EQUIVOCATION
        if w in self.others:
            self._caught(self.others[w], vote)
            return Tally.EQUIVOCATION
        timed = self._time(vote, time)
        if timed is not Tally.COUNTED:
            return timed
        self.votes[w] = vote
        if self.certificate is None and len(self.votes) >= self.rules.quorum:
            kind = VoidCertificate if self.void else Certificate
            times = [self.times[v] for v in self.votes] if self.deadline_ms is not None else []
            self.certificate = kind.from_votes(self.votes.values(), times)
        return Tally.COUNTED

    def _time(self, vote: Vote, time: TimeAttestation | None) -> Tally:
        """Whether ``vote`` (valid, for the entry) counts as timed: COUNTED
        if the collector is untimed or ``time`` is its witness's for the
        entry, verifies and is past the deadline (then kept)."""
        if self.deadline_ms is None:
            return Tally.COUNTED
        if time is None:
            self.untimed[vote.witness] = vote
            return Tally.UNTIMED
        same = (time.community, time.author, time.seq, time.id, time.witness) == (
            *vote.position,
            vote.id,
            vote.witness,
        )
        if not same or time.time_ms <= self.deadline_ms or not time.verify():
            return Tally.BAD_TIME
        self.times[vote.witness] = time
        self.untimed.pop(vote.witness, None)
        return Tally.COUNTED

    def add_answer(self, answer: Answer, witness: MemberId | None = None) -> Tally:
        """Take one witness answer (``witness``: who sent it, if known; only
        then can a lie be held against a witness, as a vote or proof may be
        another witness's)."""
        tally = self._tally(answer, witness)
        if witness is not None and tally in LIES and witness in self.rules.witnesses:
            self.faulty.setdefault(witness, self._lie(answer, tally))
        return tally

    def _tally(self, answer: Answer, witness: MemberId | None) -> Tally:
        if isinstance(answer, Refused):
            if witness is not None:
                self.refusals[witness] = answer
            return Tally.REFUSED
        # A witness that now waits, or votes for the entry, refuses no more:
        # a refusal it gave earlier (it lacked what a later request carried)
        # no longer counts towards the shell giving up (certifier.py).
        if isinstance(answer, Voted):
            tally = self.add(answer.vote, answer.time)
            if witness is not None and tally in (Tally.COUNTED, Tally.DUPLICATE, Tally.UNTIMED):
                self.refusals.pop(witness, None)
            return tally
        if isinstance(answer, Waiting):
            if witness is not None:
                self.refusals.pop(witness, None)
            return Tally.WAITING
        vote = answer.vote
        if (
            vote.community != self.position[0]
            or vote.author != self.target.author
            or vote.seq > self.target.seq
            or vote.witness not in self.rules.witnesses
            or not answer.verify()
        ):
            return Tally.FALSE_FORK
        self.conflicts.append(answer)
        self.add(vote)  # for equivocation bookkeeping when at our seq
        return Tally.FORK

    def blame(self, witness: MemberId, what: str) -> None:
        """Hold a lie the shell saw (say, a garbage frame) against ``witness``:
        named in :attr:`faulty`, not asked again."""
        if witness in self.rules.witnesses:
            self.faulty.setdefault(witness, what)

    @staticmethod
    def _lie(answer: Answer, tally: Tally) -> str:
        if isinstance(answer, Conflicting):
            return f"false fork claim: {answer.problem() or 'not at or below this entry'}"
        return f"{tally.value} vote"

    def _caught(self, first: Vote, second: Vote) -> None:
        w = first.witness
        self.equivocations.setdefault(w, Equivocation(first, second))
        if self.certificate is None:
            self.votes.pop(w, None)
