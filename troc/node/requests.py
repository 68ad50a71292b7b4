"""Payment requests: the store steps of the ``request.*`` operations
(the table is :mod:`troc.node.operations`).

A member asks another for a payment (``request.create``), which returns the
request's id and its ``troc-request:`` text for face-to-face payment; the
payer sees it in ``pending`` and ``request.list``, pays it
(``request.pay``: by id, or by the text even if this node never held the
request) or refuses it (``request.refuse``). The rules are the ledger's
(docs/protocol.md §4.10); what is here finds the request the member means
and says plainly why it cannot be paid before anything is signed.
"""

from __future__ import annotations

from typing import Any

from troc.errors import LocalProtocolError, RefusedError
from troc.node.local import LocalNode
from troc.node.opdata import (
    Done,
    NotFoundError,
    amount_of,
    community_of,
    eid,
    join_names,
    member_of,
    mid,
)
from troc.node.store import RequestState
from troc.node.views import resolve
from troc.protocol.entry import CommunityId, Entry, Ref, Request
from troc.protocol.ledger import Status
from troc.protocol.request_text import PREFIX, decode_request_text, encode_request_text

__all__ = [
    "op_request_create",
    "op_request_list",
    "op_request_pay",
    "op_request_refuse",
    "pending_requests",
]


def _request_json(
    node: LocalNode, e: Entry, unit: str, state: RequestState, by: Ref | None
) -> dict[str, Any]:
    r = e.body
    assert isinstance(r, Request)
    expired = state is RequestState.OPEN and r.expires_ms is not None and r.expires_ms < node.now()
    return {
        "request": eid(e.id),
        "from": mid(e.author),
        "to": mid(r.to),
        "amount": r.amount,
        "unit": unit,
        "memo": r.memo,
        "offer": None if r.offer is None else eid(r.offer.id),
        "expires_ms": r.expires_ms,
        "timestamp_ms": e.timestamp_ms,
        # open, paid, refused; or expired: open, and no payment can be stamped in time now.
        "state": "expired" if expired else state.value,
        "by": None if by is None else eid(by.id),
        # What the payer's node (or a QR code) pays it by, even unsynced.
        "text": encode_request_text(e),
    }


def _listed(
    node: LocalNode, community: CommunityId, *, to_me: bool
) -> list[tuple[Entry, RequestState, Ref | None]]:
    return node.store.requests(community, node.member, to_member=to_me)


def pending_requests(node: LocalNode, community: CommunityId) -> list[dict[str, Any]]:
    """Requests made to this member that it can still pay or refuse."""
    unit = node.community(community).unit
    rows = [
        _request_json(node, e, unit, s, by) for e, s, by in _listed(node, community, to_me=True)
    ]
    return [r for r in rows if r["state"] == "open"]


def op_request_create(node: LocalNode, p: dict[str, Any]) -> Done:
    community = community_of(node, p.get("community"))
    offer = node.find_offer(community, p["offer"]) if p.get("offer") else None
    expires = p.get("expires_ms")
    if expires is not None and (type(expires) is not int or expires < 0):
        raise LocalProtocolError("expires_ms must be a time in milliseconds")
    body = Request(
        to=member_of(p["to"]),
        amount=amount_of(p["amount"]),
        memo=p.get("memo") or "",
        offer=offer,
        expires_ms=expires,
    )
    entry = node.request(community, body)
    return Done(
        {"request": eid(entry.id), "text": encode_request_text(entry), "expires_ms": expires}, entry
    )


def op_request_list(node: LocalNode, p: dict[str, Any]) -> Done:
    community = community_of(node, p.get("community"))
    unit = node.community(community).unit
    incoming, outgoing = (
        [_request_json(node, e, unit, s, by) for e, s, by in _listed(node, community, to_me=to_me)]
        for to_me in (True, False)
    )
    members = [r["from"] for r in incoming] + [r["to"] for r in outgoing]
    return Done(
        {
            "incoming": incoming,
            "outgoing": outgoing,
            "names": join_names(node, community, [member_of(m) for m in members]),
        }
    )


def _find_incoming(
    node: LocalNode, community: CommunityId, text: str
) -> tuple[Entry, RequestState]:
    """A request made to this member, named by (a prefix of) its id."""
    rows = {e.ref: (e, state) for e, state, _ in _listed(node, community, to_me=True)}
    return rows[resolve(text, "request", list(rows))]


def op_request_refuse(node: LocalNode, p: dict[str, Any]) -> Done:
    community = community_of(node, p.get("community"))
    request, state = _find_incoming(node, community, str(p["request"]))
    _still_open(state)
    entry = node.refuse(community, request.ref, reason=p.get("reason") or "")
    return Done({"refusal": eid(entry.id), "request": eid(request.id)}, entry)


def _still_open(state: RequestState) -> None:
    if state is not RequestState.OPEN:
        raise RefusedError(f"already_{state.value}", f"that request is already {state.value}")


def op_request_pay(node: LocalNode, p: dict[str, Any]) -> Done:
    """Pay a request named by id, or given as its ``troc-request:`` text.

    From the text, the request is first offered to this node's ledger (it
    is stored, or waits for its author's log): the payment carries it, so
    it can be signed either way."""
    text = str(p["request"]).strip()
    if text.lower().startswith(PREFIX):
        request = decode_request_text(text)
        assert request.community is not None
        if node.store.genesis(request.community) is None:
            raise NotFoundError("that request is of a community this node does not follow")
        if p.get("community") and community_of(node, p["community"]) != request.community:
            raise LocalProtocolError("that request is of another community than --community")
        community = request.community
        outcome = node.ingest(request.wire)
        if outcome.status is Status.REJECTED:
            assert outcome.reason is not None
            raise RefusedError(outcome.reason.value, f"that request is not valid: {outcome.detail}")
        assert isinstance(request.body, Request)
        if request.body.to != node.member:
            raise RefusedError(
                "request_mismatch", f"that request asks {mid(request.body.to)[:14]}…, not you"
            )
        for e, state, _ in _listed(node, community, to_me=True):
            if e.id == request.id:
                _still_open(state)
    else:
        community = community_of(node, p.get("community"))
        request, state = _find_incoming(node, community, text)
        _still_open(state)
    entry = node.pay_request(community, request)
    return Done({"transfer": eid(entry.id), "request": eid(request.id)}, entry)
