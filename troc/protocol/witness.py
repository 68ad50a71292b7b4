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

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from troc.crypto.sign import Domain, MemberId, SigningKey, is_valid_public_key, verify
from troc.errors import CodecError, LocalProtocolError, RemoteProtocolError
from troc.protocol import codec
from troc.protocol.entry import (
    MAX_SEQ,
    MAX_WITNESSES,
    Accept,
    CommunityId,
    Entry,
    EntryId,
    Genesis,
    Kind,
    Reclaim,
    Ref,
    TakeBack,
    Transfer,
    expiry_of,
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

#: The libp2p stream protocol a witness serves (docs/witness.md §5).
PROTOCOL_ID = "/troc/witness/1"
#: Entries a request may carry along for the witness to check the entry on.
MAX_DEPS = 64
#: Certificates a request may carry along (of the entries the entry names).
MAX_CERTIFICATES = 16
MAX_REFS = 64
MAX_REASON = 64
MAX_DETAIL = 1000

#: A vote: ``[community, author, seq, id, witness, signature]``, ~210 bytes.
VOTE_LIMITS = codec.Limits(
    max_size=512, max_depth=1, max_str=64, max_bin=64, max_array=8, max_map=4
)
#: A certificate: ``[community, author, seq, id, [[witness, signature], …]]``.
CERTIFICATE_LIMITS = codec.Limits(
    max_size=8 * 1024, max_depth=3, max_str=64, max_bin=64, max_array=MAX_WITNESSES, max_map=4
)
#: One request or answer of the witness protocol.
MESSAGE_LIMITS = codec.Limits(
    max_size=(MAX_DEPS + 2) * (codec.ENTRY_LIMITS.max_size + 8)
    + MAX_CERTIFICATES * (CERTIFICATE_LIMITS.max_size + 8),
    max_depth=3,
    max_str=MAX_DETAIL * 4,
    max_bin=max(codec.ENTRY_LIMITS.max_size, CERTIFICATE_LIMITS.max_size) + 64,
    max_array=max(MAX_DEPS, MAX_REFS),
    max_map=8,
)

#: Where a vote sits: (community, author, seq).
Position: TypeAlias = tuple[CommunityId, MemberId, int]

#: Refusal codes of the witness itself; the others are ledger reasons
#: (:class:`troc.protocol.ledger.Reason`) and codec reasons.
UNKNOWN_COMMUNITY = "unknown_community"
#: Refusals of the accept / take-back rule (docs/witness.md §3.5).
NOT_EXPIRED_HERE = "not_expired_here"
VOTED_TAKE_BACK = "voted_take_back"
VOTED_ACCEPT = "voted_accept"


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
            community, ref.author, ref.seq, ref.id, key.public, key.sign(Domain.VOTE, message)
        )

    def verify(self) -> bool:
        """True if the signature is the witness's strict Ed25519 signature."""
        message = vote_message(self.community, self.author, self.seq, self.id)
        return verify(Domain.VOTE, self.witness, message, self.signature)

    def to_wire(self) -> list[Any]:
        return [self.community, self.author, self.seq, self.id, self.witness, self.signature]

    def encode(self) -> bytes:
        return codec.pack(self.to_wire(), VOTE_LIMITS)

    @classmethod
    def from_wire(cls, v: Any) -> Vote:
        if not isinstance(v, list) or len(v) != 6:
            raise _bad("a vote is [community, author, seq, id, witness, signature]")
        return cls(
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


# -- certificates -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Certificate:
    """Votes of distinct witnesses for one entry, enough to make it final.

    Wire form: ``[community, author, seq, id, [[witness, signature], …]]``,
    the pairs sorted by witness (bytewise), each witness once.
    """

    community: CommunityId
    author: MemberId
    seq: int
    id: EntryId
    votes: tuple[tuple[MemberId, bytes], ...] = field(repr=False)

    @property
    def position(self) -> Position:
        return (self.community, self.author, self.seq)

    @property
    def ref(self) -> Ref:
        return Ref(self.author, self.seq, self.id)

    @property
    def witnesses(self) -> tuple[MemberId, ...]:
        return tuple(w for w, _sig in self.votes)

    @classmethod
    def from_votes(cls, votes: Iterable[Vote]) -> Certificate:
        """A certificate of ``votes`` (one per witness, the first given kept).
        Raises LocalProtocolError if they are not all for one entry or none
        is given. Does not verify them: see :meth:`verify`."""
        by_witness: dict[MemberId, Vote] = {}
        for vote in votes:
            by_witness.setdefault(vote.witness, vote)
        if not by_witness:
            raise LocalProtocolError("a certificate needs votes")
        first = next(iter(by_witness.values()))
        if any((v.position, v.id) != (first.position, first.id) for v in by_witness.values()):
            raise LocalProtocolError("the votes of a certificate must be for one entry")
        pairs = tuple(sorted((w, v.signature) for w, v in by_witness.items()))
        return cls(first.community, first.author, first.seq, first.id, pairs)

    def vote_list(self) -> list[Vote]:
        """The votes, one object each."""
        c, a, s, i = self.community, self.author, self.seq, self.id
        return [Vote(c, a, s, i, w, sig) for w, sig in self.votes]

    def problem(self, rules: WitnessRules) -> str | None:
        """Why this certificate does not make its entry final under ``rules``,
        or None if it does: at least ``rules.quorum`` votes, from distinct
        witnesses of the genesis's set, each signature valid."""
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
        message = vote_message(self.community, self.author, self.seq, self.id)
        for witness, signature in self.votes:
            if not verify(Domain.VOTE, witness, message, signature):
                return f"the vote of {witness.hex()[:16]}… does not verify"
        return None

    def verify(self, rules: WitnessRules) -> bool:
        return self.problem(rules) is None

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
        ]

    def encode(self) -> bytes:
        return codec.pack(self.to_wire(), CERTIFICATE_LIMITS)

    @classmethod
    def from_wire(cls, v: Any) -> Certificate:
        if not isinstance(v, list) or len(v) != 5:
            raise _bad("a certificate is [community, author, seq, id, votes]")
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
        )

    @classmethod
    def decode(cls, data: bytes) -> Certificate:
        """Parse a certificate's canonical bytes (shape only). Raises CodecError."""
        return cls.from_wire(codec.unpack(data, CERTIFICATE_LIMITS))


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


# -- the witness protocol's messages ------------------------------------------------


@dataclass(frozen=True, slots=True)
class VoteRequest:
    """A request to vote for ``entry``, with entries and certificates the witness may
    need to check it (its author's earlier entries, the transfer an accept
    names and that transfer's certificate …).

    Wire form: ``{"t": "ask", "e": entry, "d": [entry, …], "k": [certificate, …]}``.
    """

    entry: bytes
    deps: tuple[bytes, ...] = ()
    certificates: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Voted:
    """The witness's vote. Wire form: ``{"t": "vote", "v": vote}``."""

    vote: Vote


@dataclass(frozen=True, slots=True)
class Refused:
    """The entry is invalid (or not for this witness). ``reason`` is a stable
    code: a codec or ledger reason, or ``unknown_community``. Wire form:
    ``{"t": "refuse", "r": reason, "m": detail}``."""

    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Waiting:
    """The witness lacks entries (``missing``) or certificates
    (``certificates``) to check the entry; ask again with them. Wire form:
    ``{"t": "wait", "e": [ref, …], "k": [ref, …]}``."""

    missing: tuple[Ref, ...] = ()
    certificates: tuple[Ref, ...] = ()


@dataclass(frozen=True, slots=True)
class Conflicting:
    """The witness already voted for another entry on this author's log at
    ``vote.seq`` (the seq asked for or below it): ``vote`` is that vote,
    ``second`` the author's other entry there, ``first`` the entry voted for
    (None only if the witness's store lacks it). ``first`` and ``second``
    form a fork proof; without ``first`` the answer proves nothing, and a
    :class:`Collector` takes it for a lying witness. Wire form:
    ``{"t": "conflict", "v": vote, "s": second, "f": first}`` (``f``
    omitted when None)."""

    vote: Vote
    second: bytes
    first: bytes | None = None

    def problem(self) -> str | None:
        """Why this is not a proof that the author signed two entries at
        ``vote``'s position with the witness voting for one, or None.

        Only the two entries prove a fork: both must be validly signed by
        the author at one (community, author, seq), with different ids. A
        vote alone proves nothing about the author (a lying witness can sign
        a vote for any id), so an answer without ``first`` is no proof."""
        if not self.vote.verify():
            return "the vote does not verify"
        if self.first is None:
            return "no entry voted for: a vote alone proves no fork"
        try:
            first = Entry.decode(self.first)
        except CodecError as exc:
            return f"the entry voted for does not decode: {exc}"
        if (first.community, first.author, first.seq, first.id) != (
            *self.vote.position,
            self.vote.id,
        ):
            return "the first entry is not the one voted for"
        try:
            second = Entry.decode(self.second)
        except CodecError as exc:
            return f"the other entry does not decode: {exc}"
        if (second.community, second.author, second.seq) != self.vote.position:
            return "the other entry is not at the vote's position"
        if second.id == self.vote.id:
            return "the other entry is the one voted for"
        return None

    def verify(self) -> bool:
        return self.problem() is None

    @property
    def fork_proof(self) -> tuple[bytes, bytes] | None:
        """(first, second) wire bytes, to travel like any fork proof."""
        return None if self.first is None else (self.first, self.second)


Answer: TypeAlias = Voted | Refused | Waiting | Conflicting


def encode_request(request: VoteRequest) -> bytes:
    if len(request.deps) > MAX_DEPS or len(request.certificates) > MAX_CERTIFICATES:
        raise LocalProtocolError(
            f"a request carries at most {MAX_DEPS} entries and {MAX_CERTIFICATES} certificates"
        )
    msg = {
        "t": "ask",
        "e": request.entry,
        "d": list(request.deps),
        "k": list(request.certificates),
    }
    return codec.pack(msg, MESSAGE_LIMITS)


def _message(data: bytes) -> dict[str, Any]:
    try:
        msg = codec.unpack(data, MESSAGE_LIMITS)
    except CodecError as exc:
        raise RemoteProtocolError(f"bad witness message: {exc}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
        raise RemoteProtocolError("bad witness message: not a message")
    return msg


def _keys(msg: dict[str, Any], *keys: str, optional: tuple[str, ...] = ()) -> None:
    have = set(msg) - {"t"}
    if not set(keys) <= have or not have <= set(keys) | set(optional):
        raise RemoteProtocolError(f"bad witness message {msg['t']!r}: fields {sorted(have)}")


def _blobs(v: Any, limit: int, name: str) -> tuple[bytes, ...]:
    if not isinstance(v, list) or len(v) > limit or not all(isinstance(b, bytes) for b in v):
        raise RemoteProtocolError(f"bad witness message: {name} must be at most {limit} bins")
    return tuple(v)


def _refs(v: Any, name: str) -> tuple[Ref, ...]:
    if not isinstance(v, list) or len(v) > MAX_REFS:
        raise RemoteProtocolError(f"bad witness message: {name} must be at most {MAX_REFS} refs")
    try:
        return tuple(Ref.from_wire(r, name) for r in v)
    except CodecError as exc:
        raise RemoteProtocolError(f"bad witness message: {exc}") from None


def decode_request(data: bytes) -> VoteRequest:
    """Parse a request. Raises RemoteProtocolError (entries and certificates
    inside are checked when used)."""
    msg = _message(data)
    if msg["t"] != "ask":
        raise RemoteProtocolError(f"bad witness request: type {msg['t']!r}")
    _keys(msg, "e", "d", "k")
    if not isinstance(msg["e"], bytes):
        raise RemoteProtocolError("bad witness request: the entry must be a bin")
    return VoteRequest(
        msg["e"], _blobs(msg["d"], MAX_DEPS, "deps"), _blobs(msg["k"], MAX_CERTIFICATES, "certs")
    )


def encode_answer(answer: Answer) -> bytes:
    msg: dict[str, Any]
    if isinstance(answer, Voted):
        msg = {"t": "vote", "v": answer.vote.encode()}
    elif isinstance(answer, Refused):
        msg = {"t": "refuse", "r": answer.reason, "m": answer.detail[:MAX_DETAIL]}
    elif isinstance(answer, Waiting):
        msg = {
            "t": "wait",
            "e": [r.to_wire() for r in answer.missing[:MAX_REFS]],
            "k": [r.to_wire() for r in answer.certificates[:MAX_REFS]],
        }
    else:
        msg = {"t": "conflict", "v": answer.vote.encode(), "s": answer.second}
        if answer.first is not None:
            msg["f"] = answer.first
    return codec.pack(msg, MESSAGE_LIMITS)


def decode_answer(data: bytes) -> Answer:
    """Parse an answer (shape only: votes and proofs are checked by the
    :class:`Collector`). Raises RemoteProtocolError."""
    msg = _message(data)
    kind = msg["t"]
    try:
        if kind == "vote":
            _keys(msg, "v")
            if not isinstance(msg["v"], bytes):
                raise _bad("the vote must be a bin")
            return Voted(Vote.decode(msg["v"]))
        if kind == "refuse":
            _keys(msg, "r", "m")
            return Refused(
                _text(msg["r"], MAX_REASON, "reason"), _text(msg["m"], MAX_DETAIL, "detail")
            )
        if kind == "wait":
            _keys(msg, "e", "k")
            return Waiting(_refs(msg["e"], "missing"), _refs(msg["k"], "certificates"))
        if kind == "conflict":
            _keys(msg, "v", "s", optional=("f",))
            first = msg.get("f")
            if not isinstance(msg["v"], bytes) or not isinstance(msg["s"], bytes):
                raise _bad("the vote and the entry must be bins")
            if first is not None and not isinstance(first, bytes):
                raise _bad("the first entry must be a bin")
            return Conflicting(Vote.decode(msg["v"]), msg["s"], first)
    except CodecError as exc:
        raise RemoteProtocolError(f"bad witness answer: {exc}") from None
    raise RemoteProtocolError(f"bad witness answer: type {kind!r}")


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
            return None
        author, kind, reason = other
        for answer in self.view.answers(c, author, kind, ref.id):
            if self.votes.get(c, answer.author, answer.seq) == answer.id:
                return Refused(reason, f"this witness voted for {answer}, which excludes it")
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
    """

    def __init__(self, rules: WitnessRules, community: CommunityId, target: Ref) -> None:
        if community != rules.community:
            raise LocalProtocolError("the entry is not of the rules' community")
        self.rules = rules
        self.target = target
        self.position: Position = (community, target.author, target.seq)
        self.votes: dict[MemberId, Vote] = {}
        self.others: dict[MemberId, Vote] = {}  # a valid vote for another id here
        self.equivocations: dict[MemberId, Equivocation] = {}
        self.conflicts: list[Conflicting] = []
        self.refusals: dict[MemberId, Refused] = {}
        self.faulty: dict[MemberId, str] = {}  # witness → what it did wrong
        self.certificate: Certificate | None = None

    @classmethod
    def for_entry(cls, rules: WitnessRules, entry: Entry) -> Collector:
        if entry.community is None:
            raise LocalProtocolError("a genesis is not voted on")
        return cls(rules, entry.community, entry.ref)

    @property
    def done(self) -> bool:
        return self.certificate is not None

    def pending(self) -> list[MemberId]:
        """Witnesses worth asking (again): no vote counted, not caught lying."""
        return sorted(
            w
            for w in self.rules.witnesses
            if w not in self.votes and w not in self.equivocations and w not in self.faulty
        )

    def add(self, vote: Vote) -> Tally:
        """Take one vote."""
        if vote.position != self.position:
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
        self.votes[w] = vote
        if self.certificate is None and len(self.votes) >= self.rules.quorum:
            self.certificate = Certificate.from_votes(self.votes.values())
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
        if isinstance(answer, Voted):
            return self.add(answer.vote)
        if isinstance(answer, Refused):
            if witness is not None:
                self.refusals[witness] = answer
            return Tally.REFUSED
        if isinstance(answer, Waiting):
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
