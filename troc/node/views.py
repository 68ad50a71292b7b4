"""What a member reads: the values :class:`~troc.node.local.LocalNode`
returns (a community's rules, a balance, a transfer, an offer), and finding
an entry by its id or an id prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

from troc.crypto.ids import decode_id, encode_id
from troc.crypto.sign import MemberId
from troc.errors import LocalProtocolError
from troc.protocol.entry import CommunityId, Entry, EntryId, Offer, Ref, Transfer

__all__ = ["BalanceInfo", "CommunityInfo", "OfferInfo", "TransferInfo", "matching", "resolve"]


@dataclass(frozen=True, slots=True)
class CommunityInfo:
    id: CommunityId
    name: str
    unit: str
    credit_limit: int
    admission: str
    finality: str
    founder: MemberId
    witnesses: tuple[MemberId, ...]
    quorum: int
    faults: int
    ceiling: int | None
    genesis: bytes  # the genesis entry's wire bytes: what a newcomer needs to join


@dataclass(frozen=True, slots=True)
class BalanceInfo:
    member: MemberId
    balance: int  # counted: what everyone agrees on
    credit_limit: int
    pending_in: int  # sent to this member, not yet accepted or declined
    pending_out: int  # sent by this member, not yet accepted, or declined and not reclaimed
    joined: bool
    frozen_at: int | None  # seq of a known fork of this member's log
    # Witnessed communities: ``balance`` is final (certified); ``unconfirmed``
    # is what the member's own newer entries change, not final yet.
    witnessed: bool = False
    unconfirmed: int = 0
    pending_in_final: int = 0  # of pending_in: certified, so acceptable now
    # Of pending_in_final: held parked with their own certificate, the
    # payer's history not checked here yet (docs/witness.md §6.1).
    pending_in_parked: int = 0


@dataclass(frozen=True, slots=True)
class TransferInfo:
    ref: Ref
    payer: MemberId
    payee: MemberId
    amount: int
    memo: str
    timestamp_ms: int
    offer: Ref | None

    @classmethod
    def of(cls, entry: Entry) -> TransferInfo:
        body = entry.body
        assert isinstance(body, Transfer)
        return cls(
            entry.ref, entry.author, body.to, body.amount, body.memo, entry.timestamp_ms, body.offer
        )


@dataclass(frozen=True, slots=True)
class OfferInfo:
    ref: Ref
    author: MemberId
    side: str
    title: str
    description: str
    tags: tuple[str, ...]
    price: int | None
    expires_ms: int | None
    timestamp_ms: int
    closed: bool

    @classmethod
    def of(cls, entry: Entry, closed: bool) -> OfferInfo:
        body = entry.body
        assert isinstance(body, Offer)
        return cls(
            entry.ref,
            entry.author,
            body.side,
            body.title,
            body.description,
            body.tags,
            body.price,
            body.expires_ms,
            entry.timestamp_ms,
            closed,
        )


def matching(text: str, what: str, refs: list[Ref]) -> list[Ref]:
    """The refs a full entry id or an id prefix of 6 characters or more names."""
    text = text.strip().lower()
    if len(text) >= 50:
        wanted = EntryId(decode_id("e", text))
        return [r for r in refs if r.id == wanted]
    if len(text) < 6:
        raise LocalProtocolError(f"give at least 6 characters of the {what} id")
    return [r for r in refs if encode_id("e", r.id).startswith(text)]


def resolve(text: str, what: str, refs: list[Ref]) -> Ref:
    found = matching(text, what, refs)
    text = text.strip().lower()
    if not found:
        raise LocalProtocolError(f"no {what} {text} here")
    if len(found) > 1:
        raise LocalProtocolError(f"{text} names several {what}s: give more characters")
    return found[0]
