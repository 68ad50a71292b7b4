"""Operations' data at the edges: parameters in, JSON out, errors as data.

Parameters arrive as JSON (ids in their text form, amounts as text or
numbers, communities by id or by name); results leave as JSON-able dicts.
The helpers here read the one and write the other for every operation
(:mod:`troc.node.steps`), and :func:`describe_error` turns any exception into
the ``{"kind", "reason", "message"}`` the CLI maps to an exit code and the
control socket sends back.
"""

from __future__ import annotations

import datetime as dt
import functools
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from troc.crypto.ids import IdError, decode_id, encode_id
from troc.crypto.sign import MemberId
from troc.errors import (
    BundleError,
    CodecError,
    KeystoreError,
    LocalProtocolError,
    NetworkError,
    RefusedError,
    StoreError,
    TrocError,
)
from troc.node.local import LocalNode, OfferInfo, TransferInfo
from troc.node.store import store_error, unusable_file
from troc.protocol.backend import RefRow
from troc.protocol.entry import (
    MAX_AMOUNT,
    Accept,
    CampaignClose,
    CommunityId,
    Entry,
    Genesis,
    Kind,
    Reclaim,
    Ref,
    TakeBack,
    Withdraw,
)
from troc.protocol.statement import name_of
from troc.protocol.vote import decode_any_certificate
from troc.protocol.witness_time import is_timed

__all__ = [
    "DEFAULT_COMMUNITY",
    "Done",
    "NotFoundError",
    "amount_of",
    "cid",
    "community_of",
    "describe_error",
    "eid",
    "member_of",
    "mid",
]

#: The store's meta key naming the community used when none is named.
DEFAULT_COMMUNITY = "default_community"

#: Codec reasons the ledger gives when the caller's own entry would be
#: malformed (a memo too long, too many tags, an amount out of range): the
#: request was malformed, so these are usage errors, not the ledger's verdict.
MALFORMED_REASONS = frozenset({"bad_shape", "bad_amount", "bad_member", "too_large"})


class NotFoundError(LocalProtocolError):
    """Something named by the caller does not exist here."""


def describe_error(exc: BaseException) -> dict[str, Any]:
    """What went wrong, as data: ``kind`` (usage, refused, not_found, key,
    store, network, error, bug), ``reason`` (a ledger code, for refused) and
    a one-line ``message``. The CLI maps kinds to exit codes."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]  # what a trio nursery wrapped: the error itself
    if isinstance(exc, sqlite3.Error):  # a read of a damaged (or locked …) store
        exc = store_error(exc)
    elif isinstance(exc, OSError) and exc.filename is not None:  # a file of the home
        return {"kind": "store", "reason": None, "message": unusable_file(exc)}
    reason = None
    if isinstance(exc, BundleError):  # a statement that does not verify: refused, and why
        return {"kind": "refused", "reason": exc.reason, "message": str(exc)}
    if isinstance(exc, RefusedError) and exc.reason in MALFORMED_REASONS:
        kind, reason = "usage", exc.reason
    elif isinstance(exc, RefusedError):
        kind, reason = "refused", exc.reason
    elif isinstance(exc, NotFoundError):
        kind = "not_found"
    elif isinstance(exc, IdError | LocalProtocolError):
        kind = "usage"
    elif isinstance(exc, KeystoreError):
        kind = "key"
    elif isinstance(exc, StoreError):
        kind = "store"
    elif isinstance(exc, NetworkError | OSError):
        kind = "network"
    elif isinstance(exc, TrocError):
        kind = "error"
    else:
        return {"kind": "bug", "reason": None, "message": f"unexpected {type(exc).__name__}: {exc}"}
    return {"kind": kind, "reason": reason, "message": str(exc)}


#: Member ids whose text :func:`mid` keeps (~200 bytes each): a ``status``
#: lists every member's head, and a checksummed text costs ~10 µs to make.
MEMBER_TEXTS = 16_384


@functools.lru_cache(maxsize=MEMBER_TEXTS)
def mid(member: bytes) -> str:
    return encode_id("m", member)


def cid(community: bytes) -> str:
    return encode_id("c", community)


def eid(entry: bytes) -> str:
    return encode_id("e", entry)


def member_of(text: Any) -> MemberId:
    if not isinstance(text, str):
        raise LocalProtocolError("a member id is text")
    return MemberId(decode_id("m", text))


def amount_of(value: Any) -> int:
    if isinstance(value, str):
        value = value.strip()
        # ASCII digits only: str.isdigit() also takes fullwidth and superscript digits
        # (int() then reads the first and fails on the second).
        if not (value.isascii() and value.isdigit()):
            raise LocalProtocolError(
                f"amount must be a positive whole number in digits 0-9, got {value!r}"
            )
        value = int(value)
    if type(value) is int and value > MAX_AMOUNT:
        raise LocalProtocolError(f"amount too large: the most is {MAX_AMOUNT}, got {value}")
    if type(value) is not int or value <= 0:
        raise LocalProtocolError(f"amount must be a positive whole number, got {value!r}")
    return value


def community_of(node: LocalNode, text: str | None) -> CommunityId:
    """The community named by id or by name, or the default one."""
    communities = node.communities()
    if not communities:
        raise NotFoundError("this node is in no community yet: create one or join one")
    if text is None:
        default = node.store.get_meta(DEFAULT_COMMUNITY)
        if default is not None:
            return CommunityId(bytes.fromhex(default))
        if len(communities) == 1:
            return communities[0].id
        raise LocalProtocolError("this node is in several communities: say which (--community)")
    if text.startswith("c") and len(text) > 50:
        wanted = CommunityId(decode_id("c", text))
        for info in communities:
            if info.id == wanted:
                return wanted
        raise NotFoundError(f"unknown community {text[:16]}…: join it first")
    named = [c for c in communities if c.name == text]
    if len(named) == 1:
        return named[0].id
    if len(named) > 1:
        ids = ", ".join(cid(c.id) for c in named)
        raise LocalProtocolError(f"several communities are named {text!r}: use an id: {ids}")
    raise NotFoundError(f"unknown community {text!r}")


def transfer_json(t: TransferInfo, unit: str, state: str | None = None) -> dict[str, Any]:
    out = {
        "transfer": eid(t.ref.id),
        "from": mid(t.payer),
        "to": mid(t.payee),
        "amount": t.amount,
        "unit": unit,
        "memo": t.memo,
        "timestamp_ms": t.timestamp_ms,
        "offer": None if t.offer is None else eid(t.offer.id),
    }
    if state is not None:
        out["state"] = state
    return out


def offer_json(o: OfferInfo) -> dict[str, Any]:
    return {
        "offer": eid(o.ref.id),
        "author": mid(o.author),
        "side": o.side,
        "title": o.title,
        "description": o.description,
        "tags": list(o.tags),
        "price": o.price,
        "expires_ms": o.expires_ms,
        "timestamp_ms": o.timestamp_ms,
        "closed": o.closed,
    }


def _is_ref(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 3 and isinstance(value[2], bytes)


def entry_json(e: Entry) -> dict[str, Any]:
    body = e.body.to_wire()
    for key, value in list(body.items()):
        if key == "request" and isinstance(value, bytes):  # a transfer carries the request
            body[key] = eid(Entry.decode(value, check_signature=False).id)
        elif isinstance(value, bytes):
            body[key] = mid(value)
        elif _is_ref(value):
            body[key] = eid(value[2])
        elif isinstance(value, list) and value and all(_is_ref(v) for v in value):
            body[key] = [eid(v[2]) for v in value]  # a campaign_close's pledges
    return {
        "entry": eid(e.id),
        "author": mid(e.author),
        "seq": e.seq,
        "kind": e.kind.value,
        "timestamp_ms": e.timestamp_ms,
        "body": body,
    }


def _rules(node: LocalNode, community: CommunityId) -> Genesis:
    genesis = node.store.genesis(community)
    assert genesis is not None
    assert isinstance(genesis.body, Genesis)
    return genesis.body


def community_json(node: LocalNode, community: CommunityId) -> dict[str, Any]:
    info = node.community(community)
    return {
        "community": cid(info.id),
        "name": info.name,
        "unit": info.unit,
        "credit_limit": info.credit_limit,
        "admission": info.admission,
        "finality": info.finality,
        "founder": mid(info.founder),
        "witnesses": [mid(w) for w in info.witnesses],
        "faults": info.faults,
        "quorum": info.quorum,
        "ceiling": info.ceiling,
        "transfer_expiry_ms": _rules(node, community).transfer_expiry_ms,
        "members": sum(1 for _ in node.store.heads(community)),
        "entries": node.store.entry_count(community),
    }


def join_names(node: LocalNode, community: CommunityId, members: Any) -> dict[str, str]:
    """The names members gave themselves (self-chosen, unverified): their
    profile's, else their join's, for the members in ``members`` that gave
    one: ``{member id: name}``."""
    out = {}
    for member in set(members):
        name = name_of(node.ledger, community, MemberId(member))
        if name:
            out[mid(member)] = name
    return out


#: What a member is told of its void accept or take-back (docs/witness.md §3.6).
VOID_ACCEPT = "the payer took it back first; your accept is void"
VOID_TAKE_BACK = "the payee accepted it first; your take-back is void"


VOID_LAPSE = "the campaign's author closed it first, counting your pledge; your lapse is void"
VOID_CLOSE = "a pledger's lapse came first; your close is void: it credits nothing"


def void_sentence(entry: Entry) -> str:
    """What to tell the member whose ``entry`` (an accept, take-back, lapse
    or close) is void."""
    body = entry.body
    if isinstance(body, Accept):
        return VOID_ACCEPT
    if isinstance(body, CampaignClose):
        return VOID_CLOSE
    if isinstance(body, Withdraw):
        return VOID_LAPSE
    return VOID_TAKE_BACK


def witnesses_time(node: LocalNode, community: CommunityId, ref: Ref) -> int | None:
    """The certified time of the timed certificate held for exactly ``ref``
    (a take-back, a lapse: docs/witness.md §3.5), or None: no certificate of
    its own, a void one, or one without the witnesses' times."""
    held = node.ledger.certificate_of(community, ref)
    rules = node.ledger.witness_rules(community)
    if held is None or rules is None:
        return None
    try:
        cert = decode_any_certificate(held)
    except CodecError:  # pragma: no cover - the ledger keeps only what decodes
        return None
    if cert.void or cert.problem(rules) is not None:
        return None
    return cert.certified_time(rules)


def taken_back_sentence(time_ms: int) -> str:
    """What a certified take-back's member is told (docs/witness.md §3.5)."""
    when = dt.datetime.fromtimestamp(time_ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"taken back: the witnesses' clocks said {when}"


def _timed(node: LocalNode, community: CommunityId, ref: Ref, out: dict[str, Any]) -> None:
    """Add ``witnesses_time_ms`` and its sentence to ``out`` if ``ref`` is
    certified with the witnesses' times."""
    time_ms = witnesses_time(node, community, ref)
    if time_ms is not None:
        out["witnesses_time_ms"] = time_ms
        out["witnesses_time"] = taken_back_sentence(time_ms)


def history_json(node: LocalNode, community: CommunityId, e: Entry) -> dict[str, Any]:
    """An entry of a history; a reclaim also names the transfer it took back
    (its body names only the payee's decline); a void accept or take-back
    says so (``void``: the sentence, docs/witness.md §3.6)."""
    out = entry_json(e)
    if isinstance(e.body, Reclaim):
        taken_back = node.reclaimed_transfer(community, e.body)
        if taken_back is not None:
            out["transfer"] = eid(taken_back.id)
    if isinstance(e.body, Accept | TakeBack) and node.ledger.is_void(community, e.ref):
        out["void"] = void_sentence(e)
    elif is_timed(e):
        _timed(node, community, e.ref, out)
    return out


def timed_take_backs(
    node: LocalNode,
    community: CommunityId,
    member: MemberId,
    take_backs: list[RefRow] | None = None,
) -> list[dict[str, Any]]:
    """``member``'s take-backs certified with the witnesses' times
    (docs/witness.md §3.5): when the witnesses' clocks said so.
    ``take_backs``: their rows (``refs_from``), if the caller read them."""
    out = []
    if take_backs is None:
        take_backs = node.store.refs_from(community, member, Kind.TAKE_BACK, None)
    for row in take_backs:
        item = {"entry": eid(row.by_id), "transfer": eid(row.target_id), "amount": row.amount}
        _timed(node, community, Ref(row.by_author, row.by_seq, row.by_id), item)
        if "witnesses_time_ms" in item:
            out.append(item)
    return out


#: The kinds that can lose a race and be void (docs/witness.md §3.6), and the
#: name of what each names in ``troc balance --json``'s ``void`` list.
_VOID_NAMES = {
    Kind.ACCEPT: "transfer",
    Kind.TAKE_BACK: "transfer",
    Kind.WITHDRAW: "pledge",
    Kind.CAMPAIGN_CLOSE: "campaign",
}
VOIDABLE_KINDS = tuple(_VOID_NAMES)


def void_entries(
    node: LocalNode,
    community: CommunityId,
    member: MemberId,
    refs: Mapping[Kind, list[RefRow]] | None = None,
) -> list[dict[str, Any]]:
    """``member``'s void accepts, take-backs, lapses and closes (docs/witness.md
    §3.6): final positions of its log that moved nothing. Each names what it
    was about (its ``transfer``, ``pledge`` or ``campaign``) and the
    ``amount`` it would have moved. ``refs``: the rows of those kinds
    (``Store.refs_from_kinds``), if the caller read them."""
    out = []
    if refs is None:
        refs = node.store.refs_from_kinds(community, member, VOIDABLE_KINDS)
    for kind, name in _VOID_NAMES.items():
        moved: dict[Ref, int] = {}
        for row in refs[kind]:
            ref = Ref(row.by_author, row.by_seq, row.by_id)
            moved[ref] = moved.get(ref, 0) + row.amount  # a close: one row a pledge
        for ref, amount in moved.items():
            if not node.ledger.is_void(community, ref):
                continue
            stored = node.store.entry(community, ref.author, ref.seq, ref.id)
            assert stored is not None  # its reference rows are
            body = stored.entry.body
            about = getattr(body, name)
            out.append(
                {
                    "entry": eid(ref.id),
                    name: eid(about.id),
                    "amount": amount,
                    "why": void_sentence(stored.entry),
                }
            )
    return out


def transfer_status(node: LocalNode, community: CommunityId, t: TransferInfo) -> str:
    """``pending`` (no answer yet), ``declined`` (the payer may reclaim it)
    or ``expired`` (the payer may take it back, docs/protocol.md §4.11) for a
    transfer still listed as pending; accepted, reclaimed and taken back ones
    are not listed."""
    if node.decline_of(community, t.ref) is not None:
        return "declined"
    return "expired" if node.expired(community, t.ref) else "pending"


def declined_out(
    node: LocalNode,
    community: CommunityId,
    member: MemberId,
    outgoing: list[TransferInfo] | None = None,
) -> list[TransferInfo]:
    """``member``'s transfers that their payees declined and that are not
    reclaimed yet; of ``outgoing``, its pending outgoing transfers, when the
    caller read them already (reading them decodes every one)."""
    if outgoing is None:
        outgoing = [TransferInfo.of(e) for e in node.store.pending_out(community, member)]
    return [t for t in outgoing if node.decline_of(community, t.ref) is not None]


@dataclass(frozen=True, slots=True)
class Done:
    """What an operation's store step gives back: its JSON-able ``result``,
    and the entry it signed (the last, if several), for the running node to
    follow (certification, ``wait``). None when it signed nothing."""

    result: dict[str, Any]
    signed: Entry | None = None


def own_head(node: LocalNode, community: CommunityId) -> Entry | None:
    """This member's latest entry in ``community`` (None if it has none)."""
    head = node.store.head(community, node.member)
    stored = None if head is None else node.store.entry(community, node.member, head.seq, head.id)
    return None if stored is None else stored.entry
