"""Votes and certificates of witnessed finality (docs/witness.md §2, §3): the
quorum arithmetic of a genesis's witness set (:class:`WitnessRules`), a
witness's signed :class:`Vote`, the :class:`Certificate` q of them make, and
the proofs (:func:`fork_proof_problem`, :class:`Equivocation`).

These are the objects every other part of witnessed finality passes around:
the ledger checks certificates, the witness (:mod:`troc.protocol.witness`)
signs votes, the payer's :mod:`troc.protocol.collector` counts them, and the
wire messages (:mod:`troc.protocol.witness_wire`) carry them. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

from troc.crypto.sign import Domain, MemberId, SigningKey, is_valid_public_key, verify
from troc.errors import CodecError, LocalProtocolError
from troc.protocol import codec
from troc.protocol.entry import (
    MAX_SEQ,
    MAX_WITNESSES,
    CommunityId,
    Entry,
    EntryId,
    Genesis,
    Kind,
    Ref,
)

__all__ = [
    "CERTIFICATE_LIMITS",
    "MAX_TIME_MS",
    "VOID_MARK",
    "VOTE_LIMITS",
    "Certificate",
    "Equivocation",
    "Position",
    "TimeAttestation",
    "VoidCertificate",
    "VoidVote",
    "Vote",
    "WitnessRules",
    "certified_time",
    "check_quorum",
    "decode_any_certificate",
    "default_quorum",
    "fork_proof_problem",
    "is_void_certificate",
    "max_faults",
    "min_quorum",
    "quorum_problem",
    "time_message",
    "vote_message",
]

#: The last element of a void vote's and a void certificate's array
#: (docs/witness.md §3.6): exactly this string, nothing else.
VOID_MARK = "void"

#: A vote: ``[community, author, seq, id, witness, signature]``, ~210 bytes.
VOTE_LIMITS = codec.Limits(
    max_size=512, max_depth=1, max_str=64, max_bin=64, max_array=8, max_map=4
)
#: A certificate: ``[community, author, seq, id, [[witness, signature], …]]``,
#: optionally with ``[[witness, time_ms, signature], …]`` after the votes
#: (docs/witness.md §2.2): 64 votes and 64 times take ~13.6 KB.
CERTIFICATE_LIMITS = codec.Limits(
    max_size=16 * 1024, max_depth=3, max_str=64, max_bin=64, max_array=MAX_WITNESSES, max_map=4
)

#: A time attestation's ``time_ms``: 0 to 2**53 - 1 (what msgpack and JSON agree on).
MAX_TIME_MS = 2**53 - 1

#: Where a vote sits: (community, author, seq).
Position: TypeAlias = tuple[CommunityId, MemberId, int]


def _bad(message: str, reason: str = "bad_shape") -> CodecError:
    return CodecError(reason, message)


# -- quorum arithmetic ---------------------------------------------------------


def max_faults(n: int) -> int:
    """The most faulty witnesses that n witnesses tolerate: the largest f
    with n >= 3f + 1 (which 2q >= n+f+1 and q <= n-f together imply)."""
    if n < 1:
        raise LocalProtocolError("a witnessed community needs at least one witness")
    return (n - 1) // 3


def min_quorum(n: int, f: int) -> int:
    """The smallest q with 2q >= n + f + 1: ceil((n + f + 1) / 2)."""
    return (n + f + 2) // 2


def default_quorum(n: int, faults: int | None = None) -> tuple[int, int]:
    """(f, q) for n witnesses: f defaults to :func:`max_faults`, q is the
    smallest safe quorum (q = 2f + 1 when n = 3f + 1). Raises
    LocalProtocolError if no quorum is both safe and live for (n, f)."""
    f = max_faults(n) if faults is None else faults
    q = min_quorum(n, f)
    check_quorum(n, f, q)
    return f, q


def quorum_problem(n: int, f: int, q: int) -> str | None:
    """Why n witnesses, f faults and quorum q are refused, or None if the
    genesis accepts them (exactly :class:`~troc.protocol.entry.Genesis`'s check)."""
    if not 1 <= n <= MAX_WITNESSES:
        return f"a witnessed community names 1 to {MAX_WITNESSES} witnesses, not {n}"
    if not 0 <= f <= MAX_WITNESSES or not 0 <= q <= MAX_WITNESSES:
        return f"faults and quorum must be 0 to {MAX_WITNESSES}"
    if 2 * q < n + f + 1:
        return (
            f"quorum {q} of {n} witnesses is unsafe with {f} faulty: two quorums share only "
            f"{max(2 * q - n, 0)} witnesses, which must be more than {f} "
            f"(2q >= n+f+1: q >= {min_quorum(n, f)})"
        )
    if q > n - f:
        return (
            f"quorum {q} of {n} witnesses is not live with {f} faulty: with {f} down only "
            f"{n - f} can answer (q <= n-f)"
        )
    return None


def check_quorum(n: int, f: int, q: int) -> None:
    """Raise LocalProtocolError (with :func:`quorum_problem`'s sentence) unless valid."""
    problem = quorum_problem(n, f, q)
    if problem is not None:
        raise LocalProtocolError(problem)


@dataclass(frozen=True, slots=True)
class WitnessRules:
    """A witnessed community's witness set, faults and quorum."""

    community: CommunityId
    witnesses: frozenset[MemberId]
    faults: int
    quorum: int

    def __post_init__(self) -> None:
        check_quorum(len(self.witnesses), self.faults, self.quorum)

    @classmethod
    def from_genesis(cls, genesis: Entry) -> WitnessRules:
        """The rules of the community ``genesis`` founds. Raises
        LocalProtocolError if it is not a genesis of a witnessed community."""
        body = genesis.body
        if genesis.kind is not Kind.GENESIS or not isinstance(body, Genesis):
            raise LocalProtocolError("not a genesis entry")
        if body.finality != "witnessed":
            raise LocalProtocolError("this community's finality is optimistic: it has no witnesses")
        return cls(CommunityId(genesis.id), frozenset(body.witnesses), body.faults, body.quorum)


# -- field checks ----------------------------------------------------------------


def _bin(v: Any, size: int, name: str) -> bytes:
    if not isinstance(v, bytes) or len(v) != size:
        raise _bad(f"{name} must be {size} bytes")
    return v


def _member(v: Any, name: str) -> MemberId:
    if not isinstance(v, bytes) or not is_valid_public_key(v):
        raise _bad(f"{name} is not a valid member id", "bad_member")
    return MemberId(v)


def _seq(v: Any) -> int:
    if type(v) is not int or not 1 <= v <= MAX_SEQ:
        raise _bad(f"seq must be an integer from 1 to {MAX_SEQ}")
    return v


def _time(v: Any) -> int:
    if type(v) is not int or not 0 <= v <= MAX_TIME_MS:
        raise _bad(f"time_ms must be an integer from 0 to {MAX_TIME_MS}")
    return v


def _text(v: Any, max_len: int, name: str) -> str:
    if not isinstance(v, str) or len(v) > max_len:
        raise _bad(f"{name} must be text of at most {max_len} characters")
    return v


# -- votes ----------------------------------------------------------------------


def vote_message(community: CommunityId, author: MemberId, seq: int, eid: EntryId) -> bytes:
    """The bytes a vote signs (in the ``troc/vote/v1`` domain): the canonical
    msgpack array ``[community, author, seq, id]``."""
    return codec.pack([community, author, seq, eid], VOTE_LIMITS)


@dataclass(frozen=True, slots=True)
class Vote:
    """A witness's signature for "(author, seq) of community is entry id".

    Wire form: ``[community, author, seq, id, witness, signature]``.
    :meth:`decode` checks the shape only; :meth:`verify` checks the signature.
    """

    community: CommunityId
    author: MemberId
    seq: int
    id: EntryId
    witness: MemberId
    signature: bytes = field(repr=False)

    #: The signing domain; :class:`VoidVote` signs in ``troc/void/v1``.
    DOMAIN: ClassVar[Domain] = Domain.VOTE
    #: What follows the six fields on the wire (a void vote: its mark).
    TAIL: ClassVar[tuple[str, ...]] = ()

    @property
    def void(self) -> bool:
        return bool(self.TAIL)

    @property
    def position(self) -> Position:
        return (self.community, self.author, self.seq)

    @property
    def ref(self) -> Ref:
        return Ref(self.author, self.seq, self.id)

    @classmethod
    def sign(cls, key: SigningKey, community: CommunityId, ref: Ref) -> Vote:
        """``key``'s vote for ``ref`` (deterministic: the same bytes every time)."""
        message = vote_message(community, ref.author, ref.seq, ref.id)
        return cls(
            community, ref.author, ref.seq, ref.id, key.public, key.sign(cls.DOMAIN, message)
        )

    def verify(self) -> bool:
        """True if the signature is the witness's strict Ed25519 signature."""
        message = vote_message(self.community, self.author, self.seq, self.id)
        return verify(self.DOMAIN, self.witness, message, self.signature)

    def to_wire(self) -> list[Any]:
        return [
            self.community,
            self.author,
            self.seq,
            self.id,
            self.witness,
            self.signature,
            *self.TAIL,
        ]

    def encode(self) -> bytes:
        return codec.pack(self.to_wire(), VOTE_LIMITS)

    @classmethod
    def from_wire(cls, v: Any) -> Vote:
        """A vote or, with the void mark as a 7th element, a :class:`VoidVote`
        (whichever the array is; ``VoidVote.from_wire`` takes void ones only)."""
        if isinstance(v, list) and len(v) == 7 and v[6] == VOID_MARK:
            kind: type[Vote] = VoidVote
        elif isinstance(v, list) and len(v) == 6:
            kind = Vote
        else:
            raise _bad('a vote is [community, author, seq, id, witness, signature(, "void")]')
        if cls is VoidVote and kind is not VoidVote:
            raise _bad("not a void vote")
        return kind(
            CommunityId(_bin(v[0], 32, "community")),
            _member(v[1], "author"),
            _seq(v[2]),
            EntryId(_bin(v[3], 32, "id")),
            _member(v[4], "witness"),
            _bin(v[5], 64, "signature"),
        )

    @classmethod
    def decode(cls, data: bytes) -> Vote:
        """Parse a vote's canonical bytes (shape only). Raises CodecError."""
        return cls.from_wire(codec.unpack(data, VOTE_LIMITS))


@dataclass(frozen=True, slots=True)
class VoidVote(Vote):
    """A witness's signature for "(author, seq) of community is entry id, and
    that entry is void": it lost its accept / take-back race to a certified
    rival (docs/witness.md §3.6). Signed in the ``troc/void/v1`` domain over
    the same message as a vote, so it never counts as a vote, nor a vote as
    it. Wire form: ``[community, author, seq, id, witness, signature, "void"]``."""

    DOMAIN: ClassVar[Domain] = Domain.VOID
    TAIL: ClassVar[tuple[str, ...]] = (VOID_MARK,)


# -- time attestations -------------------------------------------------------------


def time_message(
    community: CommunityId, author: MemberId, seq: int, eid: EntryId, time_ms: int
) -> bytes:
    """The bytes a time attestation signs (in the ``troc/witness-time/v1``
    domain): the canonical msgpack array ``[community, author, seq, id, time_ms]``."""
    return codec.pack([community, author, seq, eid, time_ms], VOTE_LIMITS)


@dataclass(frozen=True, slots=True)
class TimeAttestation:
    """A witness's signature for "when I decided to vote for (author, seq) =
    id, my clock said ``time_ms``" (docs/witness.md §3.5): given with its
    vote for a take-back or a lapse, once its clock is past the deadline.
    In a certificate it is the triple ``[witness, time_ms, signature]``."""

    community: CommunityId
    author: MemberId
    seq: int
    id: EntryId
    witness: MemberId
    time_ms: int
    signature: bytes = field(repr=False)

    @classmethod
    def sign(
        cls, key: SigningKey, community: CommunityId, ref: Ref, time_ms: int
    ) -> TimeAttestation:
        message = time_message(community, ref.author, ref.seq, ref.id, time_ms)
        signature = key.sign(Domain.WITNESS_TIME, message)
        return cls(community, ref.author, ref.seq, ref.id, key.public, time_ms, signature)

    def verify(self) -> bool:
        """True if the signature is the witness's strict Ed25519 signature."""
        message = time_message(self.community, self.author, self.seq, self.id, self.time_ms)
        return verify(Domain.WITNESS_TIME, self.witness, message, self.signature)

    @property
    def triple(self) -> tuple[MemberId, int, bytes]:
        return (self.witness, self.time_ms, self.signature)

    def to_wire(self) -> list[Any]:
        return [self.time_ms, self.signature]

    @classmethod
    def from_wire(cls, vote: Vote, v: Any) -> TimeAttestation:
        """The attestation ``[time_ms, signature]`` that came with ``vote``
        (shape only). Raises CodecError."""
        if not isinstance(v, list) or len(v) != 2:
            raise _bad("a time attestation is [time_ms, signature]")
        c, a, s, i, w = vote.community, vote.author, vote.seq, vote.id, vote.witness
        return cls(c, a, s, i, w, _time(v[0]), _bin(v[1], 64, "signature"))


def certified_time(times: Iterable[int], faults: int) -> int:
    """The certified time of a certificate's attested times: their lower
    median, the ⌈k/2⌉-th smallest of k. With k ≥ 2f + 1 times of which at
    most f lie, it lies between the smallest and the largest honest time
    (docs/witness.md §3.5). Raises LocalProtocolError if k < 2f + 1."""
    ordered = sorted(times)
    if len(ordered) < 2 * faults + 1:
        raise LocalProtocolError(
            f"{len(ordered)} times cannot outvote {faults} liars: at least {2 * faults + 1} needed"
        )
    return ordered[(len(ordered) + 1) // 2 - 1]


# -- certificates -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Certificate:
    """Votes of distinct witnesses for one entry, enough to make it final.

    Wire form: ``[community, author, seq, id, [[witness, signature], …]]``,
    the pairs sorted by witness (bytewise), each witness once; a *timed*
    certificate (a take-back's, a lapse's: docs/witness.md §3.5) has a 6th
    element, ``[[witness, time_ms, signature], …]``, the time attestations
    of exactly its voting witnesses, sorted likewise.
    """

    community: CommunityId
    author: MemberId
    seq: int
    id: EntryId
    votes: tuple[tuple[MemberId, bytes], ...] = field(repr=False)
    #: Time attestations ``(witness, time_ms, signature)``, sorted by witness
    #: (empty: an untimed certificate; always empty for a void one).
    times: tuple[tuple[MemberId, int, bytes], ...] = field(default=(), repr=False)
    #: Its canonical bytes, if it was decoded from them (:meth:`decode`):
    #: :meth:`encode` returns them rather than packing it again (a node
    #: stores every certificate it takes). Not part of its value.
    wire: bytes | None = field(default=None, compare=False, repr=False)

    #: The kind of vote it is made of (:class:`VoidCertificate`: void votes).
    VOTE: ClassVar[type[Vote]] = Vote

    @property
    def void(self) -> bool:
        return self.VOTE.DOMAIN is Domain.VOID

    @property
    def position(self) -> Position:
        return (self.community, self.author, self.seq)

    @property
    def ref(self) -> Ref:
        return Ref(self.author, self.seq, self.id)

    @property
    def witnesses(self) -> tuple[MemberId, ...]:
        return tuple(w for w, _sig in self.votes)

    @property
    def timed(self) -> bool:
        return bool(self.times)

    @classmethod
    def from_votes(
        cls, votes: Iterable[Vote], times: Iterable[TimeAttestation] = ()
    ) -> Certificate:
        """A certificate of ``votes`` (one per witness, the first given kept),
        timed by ``times`` if any is given (then one per voting witness, for
        the same entry). Raises LocalProtocolError if they are not all for
        one entry, none is given, or the times do not match the votes. Does
        not verify them: see :meth:`verify`."""
        by_witness: dict[MemberId, Vote] = {}
        for vote in votes:
            if type(vote) is not cls.VOTE:
                raise LocalProtocolError(f"a {cls.__name__} is made of {cls.VOTE.__name__}s")
            by_witness.setdefault(vote.witness, vote)
        if not by_witness:
            raise LocalProtocolError("a certificate needs votes")
        first = next(iter(by_witness.values()))
        if any((v.position, v.id) != (first.position, first.id) for v in by_witness.values()):
            raise LocalProtocolError("the votes of a certificate must be for one entry")
        pairs = tuple(sorted((w, v.signature) for w, v in by_witness.items()))
        timed: dict[MemberId, TimeAttestation] = {}
        for t in times:
            timed.setdefault(t.witness, t)
        if timed:
            if cls.VOTE.TAIL:
                raise LocalProtocolError("a void certificate carries no times")
            if set(timed) != set(by_witness) or any(
                (t.community, t.author, t.seq, t.id) != (*first.position, first.id)
                for t in timed.values()
            ):
                raise LocalProtocolError("a timed certificate has one time per vote, for its entry")
        triples = tuple(sorted(t.triple for t in timed.values()))
        return cls(first.community, first.author, first.seq, first.id, pairs, triples)

    def vote_list(self) -> list[Vote]:
        """The votes, one object each."""
        c, a, s, i = self.community, self.author, self.seq, self.id
        return [self.VOTE(c, a, s, i, w, sig) for w, sig in self.votes]

    def problem(self, rules: WitnessRules, *, check_signatures: bool = True) -> str | None:
        """Why this certificate does not make its entry final under ``rules``,
        or None if it does: at least ``rules.quorum`` votes, from distinct
        witnesses of the genesis's set, each signature valid.

        ``check_signatures=False``: every signature of :meth:`signatures`
        was found valid already (the node's verify workers, ahead of the
        store: troc.node.verifier); the rest is checked as always, so the
        verdict is the same."""
        if self.community != rules.community:
            return "a certificate of another community"
        witnesses = self.witnesses
        if len(set(witnesses)) != len(witnesses):
            return "a witness is counted twice"
        if len(witnesses) < rules.quorum:
            return f"{len(witnesses)} votes, the quorum is {rules.quorum}"
        outsiders = [w for w in witnesses if w not in rules.witnesses]
        if outsiders:
            return f"{outsiders[0].hex()[:16]}… is not a witness of this community"
        if check_signatures:
            message = vote_message(self.community, self.author, self.seq, self.id)
            for witness, signature in self.votes:
                if not verify(self.VOTE.DOMAIN, witness, message, signature):
                    return f"the vote of {witness.hex()[:16]}… does not verify"
        if self.times:
            if tuple(w for w, _t, _sig in self.times) != witnesses:
                return "a timed certificate has a time of exactly each voting witness"
            for attestation in self.attestations() if check_signatures else ():
                if not attestation.verify():
                    return f"the time of {attestation.witness.hex()[:16]}… does not verify"
        return None

    def signatures(self) -> list[tuple[Domain, MemberId, bytes, bytes]]:
        """Every signature :meth:`problem` checks, as ``(domain, key,
        message, signature)``: each vote's, then each time attestation's.
        The certificate is valid only if all of them verify (and the rest
        of :meth:`problem` holds)."""
        c, a, s, i = self.community, self.author, self.seq, self.id
        message = vote_message(c, a, s, i)
        out = [(self.VOTE.DOMAIN, w, message, sig) for w, sig in self.votes]
        out += [
            (Domain.WITNESS_TIME, w, time_message(c, a, s, i, t), sig) for w, t, sig in self.times
        ]
        return out

    def verify(self, rules: WitnessRules) -> bool:
        return self.problem(rules) is None

    def attestations(self) -> list[TimeAttestation]:
        """The time attestations, one object each (none if untimed)."""
        c, a, s, i = self.community, self.author, self.seq, self.id
        return [TimeAttestation(c, a, s, i, w, t, sig) for w, t, sig in self.times]

    def time_problem(self, deadline_ms: int, rules: WitnessRules) -> str | None:
        """Why this certificate, valid under ``rules`` (:meth:`problem`), does
        not prove that its witnesses judged ``deadline_ms`` past (a
        take-back's transfer expiry, a lapse's campaign deadline), or None:
        it must be timed, every attested time after the deadline, and hold
        at least 2f + 1 of them (q does, as 2q ≥ n + f + 1 and n ≥ 3f + 1)."""
        if not self.times:
            return "a take-back's or a lapse's certificate must carry the witnesses' times"
        if len(self.times) < 2 * rules.faults + 1:
            return f"{len(self.times)} times, at least {2 * rules.faults + 1} needed"
        for witness, time_ms, _sig in self.times:
            if time_ms <= deadline_ms:
                return (
                    f"{witness.hex()[:16]}… attests {time_ms}, not past the deadline {deadline_ms}"
                )
        return None

    def certified_time(self, rules: WitnessRules) -> int | None:
        """The certified time (:func:`certified_time` of the attested times),
        or None if the certificate is untimed."""
        if not self.times:
            return None
        return certified_time((t for _w, t, _sig in self.times), rules.faults)

    def certifies(self, entry: Entry) -> bool:
        """True if this certificate names ``entry`` (whether or not it verifies)."""
        return (entry.community, entry.author, entry.seq, entry.id) == (
            self.community,
            self.author,
            self.seq,
            self.id,
        )

    def to_wire(self) -> list[Any]:
        return [
            self.community,
            self.author,
            self.seq,
            self.id,
            [[w, sig] for w, sig in self.votes],
            *([[[w, t, sig] for w, t, sig in self.times]] if self.times else []),
            *self.VOTE.TAIL,
        ]

    def encode(self) -> bytes:
        if self.wire is not None:
            return self.wire
        return codec.pack(self.to_wire(), CERTIFICATE_LIMITS)

    @classmethod
    def from_wire(cls, v: Any) -> Certificate:
        """Parse a certificate of this class's kind only: ``Certificate``
        refuses a void one (6 elements), ``VoidCertificate`` a normal one, so
        no reader of certificates takes one kind for the other."""
        tail = list(cls.VOTE.TAIL)
        timed = not tail and isinstance(v, list) and len(v) == 6 and isinstance(v[5], list)
        if not isinstance(v, list) or (not timed and (len(v) != 5 + len(tail) or v[5:] != tail)):
            if cls.VOTE.TAIL:
                raise _bad('a void certificate is [community, author, seq, id, votes, "void"]')
            raise _bad("a certificate is [community, author, seq, id, votes(, times)]")
        raw = v[4]
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_WITNESSES:
            raise _bad(f"a certificate holds 1 to {MAX_WITNESSES} votes")
        pairs: list[tuple[MemberId, bytes]] = []
        for item in raw:
            if not isinstance(item, list) or len(item) != 2:
                raise _bad("a certificate's vote is [witness, signature]")
            pairs.append((_member(item[0], "witness"), _bin(item[1], 64, "signature")))
        witnesses = [w for w, _sig in pairs]
        if witnesses != sorted(set(witnesses)):
            raise _bad("a certificate's votes must be sorted by witness, each witness once")
        return cls(
            CommunityId(_bin(v[0], 32, "community")),
            _member(v[1], "author"),
            _seq(v[2]),
            EntryId(_bin(v[3], 32, "id")),
            tuple(pairs),
            _times(v[5]) if timed else (),
        )

    @classmethod
    def decode(cls, data: bytes) -> Certificate:
        """Parse a certificate's canonical bytes (shape only). Raises CodecError."""
        return _decoded_from(cls.from_wire(codec.unpack(data, CERTIFICATE_LIMITS)), data)


def _times(raw: list[Any]) -> tuple[tuple[MemberId, int, bytes], ...]:
    """A certificate's 6th element: 1 to 64 ``[witness, time_ms, signature]``
    sorted by witness, each once (an empty list is refused: an untimed
    certificate has 5 elements, so each certificate has one encoding)."""
    if not 1 <= len(raw) <= MAX_WITNESSES:
        raise _bad(f"a timed certificate holds 1 to {MAX_WITNESSES} times")
    triples: list[tuple[MemberId, int, bytes]] = []
    for item in raw:
        if not isinstance(item, list) or len(item) != 3:
            raise _bad("a certificate's time is [witness, time_ms, signature]")
        triples.append(
            (_member(item[0], "witness"), _time(item[1]), _bin(item[2], 64, "signature"))
        )
    witnesses = [w for w, _t, _sig in triples]
    if witnesses != sorted(set(witnesses)):
        raise _bad("a certificate's times must be sorted by witness, each witness once")
    return tuple(triples)


@dataclass(frozen=True, slots=True)
class VoidCertificate(Certificate):
    """q void votes of distinct witnesses for one entry (docs/witness.md
    §3.6): the entry is final as a position of its log but has no effect.
    Wire form: ``[community, author, seq, id, [[witness, signature], …],
    "void"]``; the same limits and validity rules as a certificate, every
    signature in the ``troc/void/v1`` domain."""

    VOTE: ClassVar[type[Vote]] = VoidVote


def is_void_certificate(data: bytes) -> bool:
    """True if ``data``, a certificate's canonical bytes as stored, is a void
    certificate (told by its shape: 6 elements, the last the void mark; no signature checked)."""
    try:
        raw = codec.unpack(data, CERTIFICATE_LIMITS)
    except CodecError:
        return False
    return isinstance(raw, list) and len(raw) == 6 and raw[5] == VOID_MARK


def decode_any_certificate(data: bytes) -> Certificate:
    """A certificate or a void certificate, whichever ``data`` is (shape
    only). Raises CodecError."""
    raw = codec.unpack(data, CERTIFICATE_LIMITS)
    if isinstance(raw, list) and len(raw) == 6 and not isinstance(raw[5], list):
        return _decoded_from(VoidCertificate.from_wire(raw), data)
    return _decoded_from(Certificate.from_wire(raw), data)


def _decoded_from(cert: Certificate, data: bytes) -> Certificate:
    """``cert``, decoded from ``data`` (proven its canonical encoding by
    :func:`codec.unpack`), with ``data`` as its :attr:`~Certificate.wire`."""
    object.__setattr__(cert, "wire", bytes(data))  # frozen: set once, as made
    return cert


# -- proofs ------------------------------------------------------------------------


def fork_proof_problem(first: bytes, second: bytes) -> str | None:
    """Why ``first`` and ``second`` are not two entries one author signed at
    one seq of one community (checked by signatures alone), or None."""
    try:
        a, b = Entry.decode(first), Entry.decode(second)
    except CodecError as exc:
        return f"an entry of the proof does not decode: {exc}"
    if a.community is None or (a.community, a.author, a.seq) != (b.community, b.author, b.seq):
        return "the entries are not at one (community, author, seq)"
    if a.id == b.id:
        return "the entries are the same"
    return None


@dataclass(frozen=True, slots=True)
class Equivocation:
    """Proof that a witness voted for two ids at one (community, author, seq):
    a faulty witness. Wire form: ``[first vote, second vote]`` (as arrays)."""

    first: Vote
    second: Vote

    def problem(self) -> str | None:
        a, b = self.first, self.second
        if a.witness != b.witness or a.position != b.position:
            return "the votes are not one witness's at one position"
        if a.id == b.id:
            return "the votes are for the same entry"
        if not (a.verify() and b.verify()):
            return "a vote does not verify"
        return None

    def verify(self) -> bool:
        return self.problem() is None

    def encode(self) -> bytes:
        return codec.pack([self.first.to_wire(), self.second.to_wire()], CERTIFICATE_LIMITS)

    @classmethod
    def decode(cls, data: bytes) -> Equivocation:
        raw = codec.unpack(data, CERTIFICATE_LIMITS)
        if not isinstance(raw, list) or len(raw) != 2:
            raise _bad("an equivocation is [vote, vote]")
        return cls(Vote.from_wire(raw[0]), Vote.from_wire(raw[1]))
