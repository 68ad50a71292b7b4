"""The witness protocol's messages and their codec (docs/witness.md §5): what
an author's node sends a witness (:class:`VoteRequest`) and what the witness
answers (:data:`Answer`: :class:`Voted`, :class:`Refused`, :class:`Waiting`,
:class:`Conflicting`), one msgpack map each, with their size limits.

Decoding checks shape and sizes only; what an answer is worth is the
collector's business (:mod:`troc.protocol.collector`), whether to vote the
witness's (:mod:`troc.protocol.witness`). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from troc.errors import CodecError, LocalProtocolError, RemoteProtocolError
from troc.protocol import codec
from troc.protocol.entry import Entry, Ref
from troc.protocol.vote import (
    CERTIFICATE_LIMITS,
    TimeAttestation,
    Vote,
    _bad,
    _text,
)

__all__ = [
    "MAX_CERTIFICATES",
    "MAX_DEPS",
    "MESSAGE_LIMITS",
    "PROTOCOL_ID",
    "Answer",
    "Conflicting",
    "Refused",
    "VoteRequest",
    "Voted",
    "Waiting",
    "decode_answer",
    "decode_request",
    "encode_answer",
    "encode_request",
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


# -- the witness protocol's messages ------------------------------------------------


@dataclass(frozen=True, slots=True)
class VoteRequest:
    """A request to vote for ``entry``, with entries and certificates the witness may
    need to check it (its author's earlier entries, the transfer an accept
    names and that transfer's certificate …).

    Wire form: ``{"t": "ask", "e": entry, "d": [entry, …], "k": [certificate, …]}``.

    With ``void`` set, a request for a *void* vote (docs/witness.md §3.6):
    ``{"t": "void", …}``, the same fields; ``k`` carries the certificate of
    the entry's rival.
    """

    entry: bytes
    deps: tuple[bytes, ...] = ()
    certificates: tuple[bytes, ...] = ()
    void: bool = False


@dataclass(frozen=True, slots=True)
class Voted:
    """The witness's vote. Wire form: ``{"t": "vote", "v": vote}``; for a
    take-back or a lapse, with the witness's time attestation
    (docs/witness.md §3.5): ``{"t": "vote", "v": vote, "w": [time_ms,
    signature]}``."""

    vote: Vote
    time: TimeAttestation | None = None


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
        "t": "void" if request.void else "ask",
        "e": request.entry,
        "d": list(request.deps),
        "k": list(request.certificates),
    }
    return codec.pack(msg, MESSAGE_LIMITS)


def _message(data: bytes) -> dict[str, Any]:
    return codec.unpack_message(data, MESSAGE_LIMITS, "witness message")


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
    if msg["t"] not in ("ask", "void"):
        raise RemoteProtocolError(f"bad witness request: type {msg['t']!r}")
    _keys(msg, "e", "d", "k")
    if not isinstance(msg["e"], bytes):
        raise RemoteProtocolError("bad witness request: the entry must be a bin")
    return VoteRequest(
        msg["e"],
        _blobs(msg["d"], MAX_DEPS, "deps"),
        _blobs(msg["k"], MAX_CERTIFICATES, "certs"),
        void=msg["t"] == "void",
    )


def encode_answer(answer: Answer) -> bytes:
    msg: dict[str, Any]
    if isinstance(answer, Voted):
        msg = {"t": "vote", "v": answer.vote.encode()}
        if answer.time is not None:
            msg["w"] = answer.time.to_wire()
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
            _keys(msg, "v", optional=("w",))
            if not isinstance(msg["v"], bytes):
                raise _bad("the vote must be a bin")
            vote = Vote.decode(msg["v"])
            time = None if "w" not in msg else TimeAttestation.from_wire(vote, msg["w"])
            return Voted(vote, time)
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
