"""The signed entry: its fields, its bodies, its bytes.

Wire form (docs/protocol.md §2)::

    entry  = [signed, signature]                     msgpack array of two bin
    signed = [version, community, author, seq, prev, timestamp_ms, kind, body]

``signed`` is itself canonical msgpack; the entry id is SHA-256 of ``signed``;
the signature is Ed25519 over ``signed`` in the ``troc/entry/v1`` domain.
A genesis entry founds a community: its ``community`` is nil, its seq is 0 and
its id *is* the community id. Every other entry belongs to one community and
one author's log, seq 1, 2, 3 …, each ``prev`` naming the entry before.

Decoding checks everything that needs only the entry itself: canonical bytes,
limits, field types, the body schema of its kind, the signature. Rules that
need other entries (links, balances) live in :mod:`troc.protocol.ledger`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, NewType, TypeAlias

from troc.crypto.sign import Domain, MemberId, SigningKey, is_valid_public_key, verify
from troc.errors import CodecError
from troc.protocol import codec
from troc.protocol._frozen import fast_init

__all__ = [
    "MAX_AMOUNT",
    "VERSION",
    "Accept",
    "Body",
    "Campaign",
    "CampaignClose",
    "CommunityId",
    "Decline",
    "Entry",
    "EntryId",
    "Genesis",
    "Join",
    "Kind",
    "Offer",
    "OfferClose",
    "Pledge",
    "Profile",
    "Reclaim",
    "Ref",
    "Refusal",
    "Request",
    "TakeBack",
    "Transfer",
    "Vouch",
    "Withdraw",
    "entry_id",
    "expiry_of",
    "names_no_expiry",
]

VERSION = 1
#: Amounts are integers in the smallest unit, 0 < amount <= MAX_AMOUNT
#: (2**53 - 1: exact in every JSON and JavaScript number).
MAX_AMOUNT = 2**53 - 1
MAX_SEQ = 2**53 - 1
MAX_TITLE = 200
MAX_TEXT = 4000
MAX_TAGS = 16
MAX_TAG = 40
MAX_WITNESSES = 64
MAX_ABOUT = 1000
MAX_LANGUAGES = 8
#: The most bytes a transfer's embedded request may take: a request with the
#: longest memo in 4-byte characters and every optional field is ~1 200 bytes.
MAX_REQUEST_WIRE = 2048
#: At most this many pledges in one campaign_close: 200 references of at
#: most 78 bytes each keep the entry under the 16 384-byte limit.
MAX_PLEDGES = 200

EntryId = NewType("EntryId", bytes)
CommunityId = NewType("CommunityId", bytes)


def expiry_of(transfer: Entry, rules: Genesis) -> int | None:
    """When ``transfer`` expires (docs/protocol.md §4.11): its own
    ``expires_ms``, else its timestamp plus the community's
    ``transfer_expiry_ms``, else never (None)."""
    body = transfer.body
    assert isinstance(body, Transfer)
    if body.expires_ms is not None:
        return body.expires_ms
    if rules.transfer_expiry_ms is not None:
        return transfer.timestamp_ms + rules.transfer_expiry_ms
    return None


def names_no_expiry(entry: Entry) -> bool:
    """True if ``entry`` is a transfer that names no expiry of its own
    (``expires_ms``): where the community's rules give transfers none
    either, it never expires (:func:`expiry_of`)."""
    body = entry.body
    return isinstance(body, Transfer) and body.expires_ms is None


def entry_id(signed: bytes) -> EntryId:
    """An entry's id: SHA-256 of its signed bytes (docs/protocol.md §3)."""
    return EntryId(hashlib.sha256(signed).digest())


class Kind(StrEnum):
    """The closed set of entry kinds of version 1."""

    GENESIS = "genesis"
    JOIN = "join"
    OFFER = "offer"
    OFFER_CLOSE = "offer_close"
    TRANSFER = "transfer"
    ACCEPT = "accept"
    DECLINE = "decline"
    RECLAIM = "reclaim"
    VOUCH = "vouch"
    PROFILE = "profile"
    REQUEST = "request"
    REFUSAL = "refusal"
    TAKE_BACK = "take_back"
    CAMPAIGN = "campaign"
    PLEDGE = "pledge"
    CAMPAIGN_CLOSE = "campaign_close"
    WITHDRAW = "withdraw"


def _bad(message: str) -> CodecError:
    return CodecError("bad_shape", message)


# -- field checkers: each takes the wire value and returns it, or raises -----


def _bin32(name: str) -> Callable[[Any], bytes]:
    def check(v: Any) -> bytes:
        if not isinstance(v, bytes) or len(v) != 32:
            raise _bad(f"{name} must be 32 bytes")
        return v

    return check


def _member(name: str) -> Callable[[Any], MemberId]:
    def check(v: Any) -> MemberId:
        if not isinstance(v, bytes) or not is_valid_public_key(v):
            raise CodecError("bad_member", f"{name} is not a valid member id")
        return MemberId(v)

    return check


def _text(name: str, max_len: int, *, min_len: int = 0) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if not isinstance(v, str) or not min_len <= len(v) <= max_len:
            raise _bad(f"{name} must be text of {min_len} to {max_len} characters")
        return v

    return check


def _int(name: str, lo: int, hi: int, reason: str = "bad_shape") -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if type(v) is not int or not lo <= v <= hi:
            raise CodecError(reason, f"{name} must be an integer from {lo} to {hi}, got {v!r}")
        return v

    return check


def _amount(name: str) -> Callable[[Any], int]:
    return _int(name, 1, MAX_AMOUNT, "bad_amount")


def _choice(name: str, options: tuple[str, ...]) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in options:
            raise _bad(f"{name} must be one of {', '.join(options)}")
        return str(v)

    return check


def _request_wire(v: Any) -> bytes:
    # Only the size here: whether the bytes are a valid request of the
    # transfer's community is a ledger rule (``bad_request``, docs/protocol.md §4.4).
    if not isinstance(v, bytes) or not 1 <= len(v) <= MAX_REQUEST_WIRE:
        raise _bad(f"request must be 1 to {MAX_REQUEST_WIRE} bytes")
    return v


def _text_set(name: str, max_items: int, max_len: int) -> Callable[[Any], tuple[str, ...]]:
    """A list of at most ``max_items`` texts of 1 to ``max_len`` characters,
    sorted (by code point) and unique: one set, one encoding."""

    def check(v: Any) -> tuple[str, ...]:
        if not isinstance(v, list) or len(v) > max_items:
            raise _bad(f"{name} must be a list of at most {max_items}")
        items = tuple(_text(name, max_len, min_len=1)(t) for t in v)
        if list(items) != sorted(set(items)):
            raise _bad(f"{name} must be sorted and unique")
        return items

    return check


_tags = _text_set("tags", MAX_TAGS, MAX_TAG)


def _members(v: Any) -> tuple[MemberId, ...]:
    if not isinstance(v, list) or len(v) > MAX_WITNESSES:
        raise _bad(f"witnesses must be a list of at most {MAX_WITNESSES}")
    members = tuple(_member("witness")(m) for m in v)
    if list(members) != sorted(set(members)):
        raise _bad("witnesses must be sorted and unique")
    return members


@fast_init
@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to one entry: whose log, which seq, which exact entry.

    Naming author and seq lets a node find the entry by its log position (an
    ordered key, cheap to look up) and fetch it from a peer if missing; the id
    pins the exact entry, so a reference into a forked log is unambiguous.
    Wire form: ``[author, seq, id]``.
    """

    author: MemberId
    seq: int
    id: EntryId

    def to_wire(self) -> list[Any]:
        return [self.author, self.seq, self.id]

    @classmethod
    def from_wire(cls, v: Any, name: str = "ref") -> Ref:
        if not isinstance(v, list) or len(v) != 3:
            raise _bad(f"{name} must be [author, seq, id]")
        author, seq, eid = v
        # The checkers (and their messages) are made only for a bad value:
        # made for every reference, they cost ~1.5 µs of each entry's decode.
        if type(author) is not bytes or not is_valid_public_key(author):
            _member(f"{name} author")(author)
        if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
            _int(f"{name} seq", 1, MAX_SEQ)(seq)
        if type(eid) is not bytes or len(eid) != 32:
            _bin32(f"{name} id")(eid)
        return cls(MemberId(author), seq, EntryId(eid))

    def __str__(self) -> str:
        return f"{self.author.hex()[:8]}…#{self.seq}:{self.id.hex()[:8]}…"


def _ref(name: str) -> Callable[[Any], Ref]:
    return lambda v: Ref.from_wire(v, name)


def _pledge_refs(v: Any) -> tuple[Ref, ...]:
    """A close's pledges: at most MAX_PLEDGES references sorted by author
    (bytewise), one per author: one set, one encoding, and no pledger
    counted twice, even one that forked and pledged on both branches."""
    if not isinstance(v, list) or len(v) > MAX_PLEDGES:
        raise _bad(f"pledges must be a list of at most {MAX_PLEDGES}")
    refs = tuple(Ref.from_wire(r, "pledge") for r in v)
    authors = [r.author for r in refs]
    if authors != sorted(set(authors)):
        raise _bad("pledges must be sorted by author, one per author")
    return refs


class Body:
    """Base of the per-kind bodies: a frozen dataclass with a wire schema.

    ``_FIELDS`` maps each wire key to (checker, required). Optional fields are
    omitted from the wire when unset, never sent as nil: one value, one encoding.
    """

    KIND: ClassVar[Kind]
    _FIELDS: ClassVar[Mapping[str, tuple[Callable[[Any], Any], bool]]]

    @classmethod
    def from_wire(cls, raw: Any) -> Body:
        if not isinstance(raw, dict):
            raise _bad(f"{cls.KIND.value} body must be a map")
        fields = cls._FIELDS
        if not raw.keys() <= fields.keys():
            unknown = set(raw) - set(fields)
            if unknown:
                raise _bad(f"unknown field(s) in {cls.KIND.value}: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for key, (check, required) in fields.items():
            if key in raw:
                values[key] = check(raw[key])
            elif required:
                raise _bad(f"{cls.KIND.value} needs the field {key!r}")
        body = cls(**values)
        body._check()
        return body

    def _check(self) -> None:
        """Cross-field checks; subclasses override."""

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in self._FIELDS:
            v = getattr(self, key)
            if v is None:
                continue
            if isinstance(v, Ref):
                v = v.to_wire()
            elif isinstance(v, tuple):
                v = list(v)
            out[key] = v
        return out


@dataclass(frozen=True, slots=True)
class Genesis(Body):
    """A community's rules. The genesis entry's id is the community id."""

    KIND: ClassVar[Kind] = Kind.GENESIS
    name: str
    unit: str
    credit_limit: int
    admission: str = "open"
    finality: str = "optimistic"
    witnesses: tuple[MemberId, ...] = ()
    faults: int = 0
    quorum: int = 0
    ceiling: int | None = None
    transfer_expiry_ms: int | None = None
    _FIELDS: ClassVar[Mapping[str, tuple[Callable[[Any], Any], bool]]] = {
        "name": (_text("name", MAX_TITLE, min_len=1), True),
        "unit": (_text("unit", 40, min_len=1), True),
        "credit_limit": (_int("credit_limit", 0, MAX_AMOUNT), True),
        "admission": (_choice("admission", ("open", "vouch")), True),
        "finality": (_choice("finality", ("optimistic", "witnessed")), True),
        "witnesses": (_members, True),
        "faults": (_int("faults", 0, MAX_WITNESSES), True),
        "quorum": (_int("quorum", 0, MAX_WITNESSES), True),
        "ceiling": (_int("ceiling", 1, MAX_AMOUNT), False),
        # A transfer without expires_ms of its own expires this long after its timestamp.
        "transfer_expiry_ms": (_int("transfer_expiry_ms", 1, MAX_AMOUNT), False),
    }

    def _check(self) -> None:
        n, f, q = len(self.witnesses), self.faults, self.quorum
        if self.finality == "optimistic":
            if n or f or q:
                raise _bad("an optimistic community names no witnesses, faults or quorum")
            return
        # Two quorums must share an honest witness, and f silent witnesses
        # must not stop payments (docs/protocol.md §6).
        if n < 1 or not (2 * q >= n + f + 1 and q <= n - f):
            raise _bad(f"witnesses={n}, faults={f}, quorum={q}: need 2q >= n+f+1 and q <= n-f")


@dataclass(frozen=True, slots=True)
class Join(Body):
    """The first entry of every member's log. In a community with admission
    by vouches it names a vouch for its author; its limit becomes the member's
    credit limit."""

    KIND: ClassVar[Kind] = Kind.JOIN
    name: str | None = None
    vouch: Ref | None = None
    _FIELDS: ClassVar[Mapping[str, tuple[Callable[[Any], Any], bool]]] = {
        "name": (_text("name", MAX_TITLE), False),
        "vouch": (_ref("vouch"), False),
    }


@dataclass(frozen=True, slots=True)
class Offer(Body):
    """Something a member offers, or wants (``side``)."""

    KIND: ClassVar[Kind] = Kind.OFFER
    side: str
    title: str
    description: str = ""
    tags: tuple[str, ...] = ()
    price: int | None = None
    expires_ms: int | None = None
    _FIELDS: ClassVar[Mapping[str, tuple[Callable[[Any], Any], bool]]] = {
        "side": (_choice("side", ("offer", "want")), True),
        "title": (_text("title", MAX_TITLE, min_len=1), True),
        "description": (_text("description", MAX_TEXT), True),
        "tags": (_tags, True),
        "price": (_amount("price"), False),
        "expires_ms": (_int("expires_ms", 0, MAX_AMOUNT), False),
    }


@dataclass(frozen=True, slots=True)
class OfferClose(Body):
    """Withdraws one of the author's own offers."""

    KIND: ClassVar[Kind] = Kind.OFFER_CLOSE
    offer: Ref
    _FIELDS: ClassVar[Mapping[str, tuple[Callable[[Any], Any], bool]]] = {
        "offer": (_ref("offer"), True),
    }


@dataclass(frozen=True, slots=True)
class Transfer(Body):
    """A payment: debits the author at once, credits ``to`` when accepted.

    ``request``, if set, holds the wire bytes of the payment request this
    transfer pays (signed by ``to``): the request travels with the payment,
    so the payment can be checked without the requester's log.
    """

    KIND: ClassVar[Kind] = Kind.TRANSFER
    to: MemberId
    amount: int
    memo: str = ""
    offer: Ref | None = None
    request: bytes | None = None
    expires_ms: int | None = None
    _FIELDS: ClassVar[Mapping[str, tuple[Callable[[Any], Any], bool]]] = {
        "to": (_member("to"), True),
        "amount": (_amount("amount"), True),
        "memo": (_text("memo", MAX_TITLE), True),
        "offer": (_ref("offer"), False),
        "request": (_request_wire, False),
        "expires_ms": (_int("expires_ms", 0, MAX_AMOUNT), False),
    }

    @classmethod
    def paying(cls, request: Entry) -> Transfer:
        """The transfer that pays ``request`` (a request entry): to its
        author, its amount, memo and offer, carrying its wire bytes."""
        r = request.body
        if not isinstance(r, Request):
            raise _bad(f"a {request.kind.value} is not a request")
        return cls(
            to=request.author, amount=r.amount, memo=r.memo, offer=r.offer, request=request.wire
        )


@dataclass(frozen=True, slots=True)
class Accept(Body):
    """The payee takes a transfer: credits the author."""

    KIND: ClassVar[Kind] = Kind.ACCEPT
    transfer: Ref
    _FIELDS: ClassVar[Mapping[str, tuple[Callable[[Any], Any], bool]]] = {
        "transfer": (_ref("transfer"), True),
    }


@dataclass(frozen=True, slots=True)
class Decline(Body):
    """The payee refuses a transfer; the payer may then reclaim it."""

    KIND: ClassVar[Kind] = Kind.DECLINE
    transfer: Ref
    reason: str = ""
    _FIELDS: ClassVar[Mapping[str, tuple[Callable[[Any], Any], bool]]] = {
        "transfer": (_ref("transfer"), True),
        "reason": (_text("reason", MAX_TITLE), True),
    }


@dataclass(frozen=True, slots=True)
class Reclaim(Body):
    """The payer takes back a declined transfer: credits the author."""

    KIND: ClassVar[Kind] = Kind.RECLAIM
    decline: Ref
    _FIELDS: ClassVar[Mapping[str, tuple[Callable[[Any], Any], bool]]] = {
        "decline": (_ref("decline"), True),
    }


@dataclass(frozen=True, slots=True)
class TakeBack(Body):
    """The payer takes back an expired transfer without the payee's decline
    (docs/protocol.md §4.11): credits the author."""

    KIND: ClassVar[Kind] = Kind.TAKE_BACK
    transfer: Ref
    _FIELDS: ClassVar[Mapping[str, tuple[Callable[[Any], Any], bool]]] = {
        "transfer": (_ref("transfer"), True),
    }


@dataclass(frozen=True, slots=True)
class Vouch(Body):
    """The author vouches for ``member``; with admission by vouches, the
    vouched member's join names this entry and gets ``limit`` as its credit
    limit (default: the community's)."""

    KIND: ClassVar[Kind] = Kind.VOUCH
    member: MemberId
    limit: int | None = None
    _FIELDS: ClassVar[Mapping[str, tuple[Callable[[Any], Any], bool]]] = {
        "member": (_member("member"), True),
        "limit": (_int("limit", 0, MAX_AMOUNT), False),
    }


@dataclass(frozen=True, slots=True)
class Profile(Body):
    """How the author presents itself to its community: a display name, a
    few words about itself, a coarse place, the languages it speaks, how to
    reach it. Public to everyone who follows the community. The author's
    profile entry at the highest seq that counts is its profile
    (docs/protocol.md §4.4): no clock decides, the author's own seq does."""

    KIND: ClassVar[Kind] = Kind.PROFILE
    name: str
    about: str = ""
    place: str = ""
    languages: tuple[str, ...] = ()
    contact: str = ""
    _FIELDS: ClassVar[Mapping[str, tuple[Callable[[Any], Any], bool]]] = {
        "name": (_text("name", MAX_TITLE, min_len=1), True),
        "about": (_text("about", MAX_ABOUT), True),
        "place": (_text("place", MAX_TITLE), True),
        "languages": (_text_set("languages", MAX_LANGUAGES, MAX_TAG), True),
        "contact": (_text("contact", MAX_TITLE), True),
    }


@dataclass(frozen=True, slots=True)
class Request(Body):
    """The author asks ``to`` for a payment of ``amount`` (docs/protocol.md
    §4.4): ``to`` pays it with a transfer that embeds this entry, at most
    once, or refuses it. ``expires_ms``: no transfer stamped later pays it."""

    KIND: ClassVar[Kind] = Kind.REQUEST
    to: MemberId
    amount: int
    memo: str = ""
    offer: Ref | None = None
    expires_ms: int | None = None
    _FIELDS: ClassVar[Mapping[str, tuple[Callable[[Any], Any], bool]]] = {
        "to": (_member("to"), True),
        "amount": (_amount("amount"), True),
        "memo": (_text("memo", MAX_TITLE), True),
        "offer": (_ref("offer"), False),
        "expires_ms": (_int("expires_ms", 0, MAX_AMOUNT), False),
    }


@dataclass(frozen=True, slots=True)
class Refusal(Body):
    """The payer a request names refuses it: no transfer of its log pays it after."""

    KIND: ClassVar[Kind] = Kind.REFUSAL
    request: Ref
    reason: str = ""
    _FIELDS: ClassVar[Mapping[str, tuple[Callable[[Any], Any], bool]]] = {
        "request": (_ref("request"), True),
        "reason": (_text("reason", MAX_TITLE), True),
    }


@dataclass(frozen=True, slots=True)
class Campaign(Body):
    """An all-or-nothing crowdfunding campaign (docs/protocol.md §10): the
    author asks for ``goal`` units by ``deadline_ms`` (the author's promise,
    not a rule: the close is judged by what it names, never by a clock)."""

    KIND: ClassVar[Kind] = Kind.CAMPAIGN
    title: str
    goal: int
    deadline_ms: int
    description: str = ""
    tags: tuple[str, ...] = ()
    reward: str = ""
    min_pledge: int | None = None
    _FIELDS: ClassVar[Mapping[str, tuple[Callable[[Any], Any], bool]]] = {
        "title": (_text("title", MAX_TITLE, min_len=1), True),
        "description": (_text("description", MAX_TEXT), True),
        "tags": (_tags, True),
        "goal": (_amount("goal"), True),
        "deadline_ms": (_int("deadline_ms", 0, MAX_AMOUNT), True),
        "min_pledge": (_amount("min_pledge"), False),
        "reward": (_text("reward", MAX_ABOUT), True),
    }

    def _check(self) -> None:
        if self.min_pledge is not None and self.min_pledge > self.goal:
            raise _bad(f"min_pledge {self.min_pledge} is above the goal {self.goal}")


@dataclass(frozen=True, slots=True)
class Pledge(Body):
    """The author reserves ``amount`` for a campaign: debited at once, held
    in flight until the campaign's close counts it (the campaign's author is
    credited) or lets it lapse (the pledger withdraws it)."""

    KIND: ClassVar[Kind] = Kind.PLEDGE
    campaign: Ref
    amount: int
    _FIELDS: ClassVar[Mapping[str, tuple[Callable[[Any], Any], bool]]] = {
        "campaign": (_ref("campaign"), True),
        "amount": (_amount("amount"), True),
    }


@dataclass(frozen=True, slots=True)
class CampaignClose(Body):
    """Ends one of the author's campaigns, naming the pledges that count. If
    they reach the goal the campaign succeeds and the author is credited
    with all of them; otherwise it failed and every pledge lapses."""

    KIND: ClassVar[Kind] = Kind.CAMPAIGN_CLOSE
    campaign: Ref
    pledges: tuple[Ref, ...] = ()
    _FIELDS: ClassVar[Mapping[str, tuple[Callable[[Any], Any], bool]]] = {
        "campaign": (_ref("campaign"), True),
        "pledges": (_pledge_refs, True),
    }

    def to_wire(self) -> dict[str, Any]:
        return {"campaign": self.campaign.to_wire(), "pledges": [r.to_wire() for r in self.pledges]}


@dataclass(frozen=True, slots=True)
class Withdraw(Body):
    """The pledger takes back a pledge that lapsed: ``close`` is its
    campaign's close, which does not count it. Without ``close`` it is a
    *lapse* (docs/protocol.md §10.5): the pledge comes back after the
    campaign's deadline with no close, unless a close counting it wins."""

    KIND: ClassVar[Kind] = Kind.WITHDRAW
    pledge: Ref
    close: Ref | None = None
    _FIELDS: ClassVar[Mapping[str, tuple[Callable[[Any], Any], bool]]] = {
        "pledge": (_ref("pledge"), True),
        "close": (_ref("close"), False),
    }

    @property
    def lapse(self) -> bool:
        """True if this withdraw names no close: a lapse after the deadline."""
        return self.close is None


AnyBody: TypeAlias = (
    Genesis
    | Join
    | Offer
    | OfferClose
    | Transfer
    | Accept
    | Decline
    | Reclaim
    | Vouch
    | Profile
    | Request
    | Refusal
    | TakeBack
    | Campaign
    | Pledge
    | CampaignClose
    | Withdraw
)

_BODIES: dict[str, type[Body]] = {
    cls.KIND.value: cls
    for cls in (
        Genesis,
        Join,
        Offer,
        OfferClose,
        Transfer,
        Accept,
        Decline,
        Reclaim,
        Vouch,
        Profile,
        Request,
        Refusal,
        TakeBack,
        Campaign,
        Pledge,
        CampaignClose,
        Withdraw,
    )
}


def _split(wire: object) -> tuple[bytes, bytes] | None:
    """``[signed, signature]`` read from the bytes of an entry in the only
    form a valid one has: the canonical msgpack array of two bins, the
    second 64 bytes. None for anything else, which :func:`codec.unpack`
    then reads (and says what is wrong): this only spares the usual entry
    the general decoder (~2 µs, a tenth of a decode)."""
    if type(wire) is not bytes or len(wire) > codec.ENTRY_LIMITS.max_size or len(wire) < 69:
        return None
    if wire[0] != 0x92:
        return None
    if wire[1] == 0xC4:  # bin 8: the canonical header below 256 bytes
        n, start = wire[2], 3
    elif wire[1] == 0xC5:  # bin 16: from 256 bytes
        n, start = (wire[2] << 8) | wire[3], 4
        if n < 256:
            return None
    else:
        return None
    end = start + n
    if len(wire) != end + 66 or wire[end] != 0xC4 or wire[end + 1] != 64:
        return None
    return wire[start:end], wire[end + 2 :]


# Bodies are built once per entry decoded: the cheaper __init__ (see _frozen).
for _body in _BODIES.values():
    fast_init(_body)

# The field checkers of every entry's decode, made once.
_check_author = _member("author")
_check_community = _bin32("community")
_check_seq = _int("seq", 1, MAX_SEQ)
_check_prev = _bin32("prev")


@fast_init
@dataclass(frozen=True, slots=True)
class Entry:
    """One decoded, signature-checked entry. Build with :meth:`create` or
    :meth:`decode`; ``wire`` holds the exact bytes it came from."""

    community: CommunityId | None
    author: MemberId
    seq: int
    prev: EntryId | None
    timestamp_ms: int
    kind: Kind
    body: AnyBody
    signed: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    id: EntryId
    wire: bytes = field(repr=False)

    @property
    def ref(self) -> Ref:
        """A reference to this entry."""
        return Ref(self.author, self.seq, self.id)

    @classmethod
    def create(
        cls,
        key: SigningKey,
        *,
        community: CommunityId | None,
        seq: int,
        prev: EntryId | None,
        timestamp_ms: int,
        body: AnyBody,
    ) -> Entry:
        """Sign a new entry. Checks the body as a decoder would."""
        signed = codec.pack(
            [
                VERSION,
                community,
                key.public,
                seq,
                prev,
                timestamp_ms,
                body.KIND.value,
                body.to_wire(),
            ]
        )
        signature = key.sign(Domain.ENTRY, signed)
        # Decode what we built: an entry we would reject is never published.
        return cls.decode(codec.pack([signed, signature]))

    def signature_ok(self) -> bool:
        """Check the signature (for entries decoded with check_signature=False)."""
        return verify(Domain.ENTRY, self.author, self.signed, self.signature)

    @classmethod
    def decode(
        cls, wire: bytes, *, check_signature: bool = True, check_canonical: bool = True
    ) -> Entry:
        """Parse and check one entry's wire bytes.

        ``check_signature=False`` is for callers that verify signatures
        themselves, in bulk and on several cores (:meth:`signature_ok`).
        ``check_canonical=False`` (with ``check_signature=False``) is for
        bytes this node decoded whole before (its store's), or whose signed
        part a verify worker proves canonical as it checks the signature
        (troc.node.verifier): that part is not proven canonical here
        (:func:`codec.unpack_checked`; the proof is most of what unpacking
        it costs); every field is checked as ever.

        Raises CodecError whose ``reason`` is one of: too_large, too_deep,
        malformed, trailing_bytes, non_canonical, bad_type, bad_shape,
        bad_version, bad_member, bad_amount, bad_signature.
        """
        parts = _split(wire)
        if parts is None:
            outer = codec.unpack(wire)
            if (
                not isinstance(outer, list)
                or len(outer) != 2
                or not isinstance(outer[0], bytes)
                or not isinstance(outer[1], bytes)
            ):
                raise _bad("an entry is [signed, signature]")
            signed, signature = outer
        else:
            signed, signature = parts
        fields = codec.unpack(signed) if check_canonical else codec.unpack_checked(signed)
        if not isinstance(fields, list) or len(fields) != 8:
            raise _bad("signed part must be an array of 8 fields")
        version, community, author, seq, prev, timestamp_ms, kind, raw_body = fields
        if type(version) is not int or version != VERSION:  # bool is an int in Python
            raise CodecError("bad_version", f"entry version {version!r}, this node reads {VERSION}")
        author = _check_author(author)
        if type(timestamp_ms) is not int or not 0 <= timestamp_ms <= MAX_AMOUNT:
            raise _bad("timestamp_ms must be a non-negative integer")
        body_cls = _BODIES.get(kind) if isinstance(kind, str) else None
        if body_cls is None:
            raise _bad(f"unknown kind {kind!r}")
        if body_cls is Genesis:
            if community is not None or type(seq) is not int or seq != 0 or prev is not None:
                raise _bad("a genesis has no community, seq 0 and no prev")
        else:
            community = _check_community(community)
            seq = _check_seq(seq)
            if (seq == 1) != (prev is None):
                raise CodecError("bad_prev", "prev must be nil at seq 1 and set after it")
            if prev is not None:
                prev = _check_prev(prev)
        body = body_cls.from_wire(raw_body)
        if check_signature and not verify(Domain.ENTRY, author, signed, signature):
            raise CodecError("bad_signature", "the signature does not verify")
        return cls(
            community=None if community is None else CommunityId(community),
            author=author,
            seq=seq,
            prev=None if prev is None else EntryId(prev),
            timestamp_ms=timestamp_ms,
            kind=body_cls.KIND,
            body=body,  # type: ignore[arg-type]
            signed=signed,
            signature=signature,
            id=entry_id(signed),
            wire=bytes(wire),
        )
