"""The operations a member asks of a node, as plain data in and out.

Each operation takes JSON-able parameters (ids in their text form) and returns
a JSON-able dict. The CLI calls them directly on a :class:`LocalNode` when no
node is running (the store is then opened by the CLI itself) and through the
node's control socket when one is: one implementation serves both paths, so
a command behaves the same online and offline.
"""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Callable
from typing import Any

import msgpack

from troc.crypto.ids import decode_id, encode_id
from troc.crypto.sign import MemberId
from troc.errors import LocalProtocolError, RefusedError
from troc.node.local import LocalNode, OfferInfo, TransferInfo
from troc.protocol.entry import (
    MAX_AMOUNT,
    CommunityId,
    Entry,
    Join,
    Kind,
    Offer,
    Reclaim,
    Ref,
    Transfer,
)

__all__ = [
    "OPS",
    "SIGNING_OPS",
    "NotFoundError",
    "decode_invitation",
    "describe_error",
    "encode_invitation",
    "run_op",
]

INVITE_PREFIX = "troc-invite:"
#: Addresses in one invitation, at most (what decode_invitation accepts).
MAX_INVITE_ADDRS = 64
DEFAULT_COMMUNITY = "default_community"


#: Operations that sign (and so need the member key, and the restore guard).
SIGNING_OPS = frozenset(
    {
        "community.create",
        "community.join",
        "pay",
        "accept",
        "decline",
        "reclaim",
        "offer.add",
        "offer.close",
        "vouch",
    }
)


#: Codec reasons the ledger gives when the caller's own entry would be
#: malformed (a memo too long, too many tags, an amount out of range): the
#: request was malformed, so these are usage errors, not the ledger's verdict.
MALFORMED_REASONS = frozenset({"bad_shape", "bad_amount", "bad_member", "too_large"})


#: Operations that only read the store: they work on a home that cannot be
#: written (a read-only file system or folder).
READ_OPS = frozenset(
    {
        "whoami",
        "community.list",
        "community.show",
        "community.policy",
        "pending",
        "balance",
        "balances",
        "history",
        "offer.list",
        "forks",
    }
)


class NotFoundError(LocalProtocolError):
    """Something named by the caller does not exist here."""


def describe_error(exc: BaseException) -> dict[str, Any]:
    """What went wrong, as data: ``kind`` (usage, refused, not_found, key,
    store, network, error, bug), ``reason`` (a ledger code, for refused) and
    a one-line ``message``. The CLI maps kinds to exit codes."""
    from troc.crypto.ids import IdError
    from troc.errors import KeystoreError, NetworkError, RefusedError, StoreError, TrocError

    if isinstance(exc, sqlite3.Error):  # a read of a damaged (or locked …) store
        from troc.node.store import store_error

        exc = store_error(exc)
    elif isinstance(exc, OSError) and exc.filename is not None:  # a file of the home
        from troc.node.store import unusable_file

        return {"kind": "store", "reason": None, "message": unusable_file(exc)}
    reason = None
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


def _amount(value: Any) -> int:
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


def _transfer_json(t: TransferInfo, unit: str, state: str | None = None) -> dict[str, Any]:
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


def _offer_json(o: OfferInfo) -> dict[str, Any]:
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


def _entry_json(e: Entry) -> dict[str, Any]:
    body = e.body.to_wire()
    for key, value in list(body.items()):
        if isinstance(value, bytes):
            body[key] = mid(value)
        elif isinstance(value, list) and len(value) == 3 and isinstance(value[2], bytes):
            body[key] = eid(value[2])
    return {
        "entry": eid(e.id),
        "author": mid(e.author),
        "seq": e.seq,
        "kind": e.kind.value,
        "timestamp_ms": e.timestamp_ms,
        "body": body,
    }


# -- invitations ------------------------------------------------------------


def encode_invitation(genesis: bytes, addrs: list[str], vouch: Ref | None = None) -> str:
    """A text a newcomer pastes into ``troc community join``: the community's
    genesis (self-certifying: its id is its hash), addresses to reach, and,
    for a community that admits by vouches, the vouch made for the newcomer."""
    data: dict[str, Any] = {"g": genesis, "a": addrs}
    if vouch is not None:
        data["v"] = vouch.to_wire()
    packed = msgpack.packb(data, use_bin_type=True)
    return INVITE_PREFIX + base64.urlsafe_b64encode(packed).decode().rstrip("=")


def decode_invitation(text: str) -> tuple[bytes, list[str], Ref | None]:
    """(genesis wire, addresses, vouch) from an invitation; LocalProtocolError if damaged."""
    text = text.strip()
    if not text.startswith(INVITE_PREFIX):
        raise LocalProtocolError(f"not a troc invitation (they start with {INVITE_PREFIX!r})")
    body = text[len(INVITE_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        data = msgpack.unpackb(
            raw,
            raw=False,
            max_bin_len=65536,
            max_array_len=MAX_INVITE_ADDRS,
            max_map_len=8,
            max_str_len=1024,
        )
        genesis, addrs = data["g"], data["a"]
        if not isinstance(genesis, bytes) or not isinstance(addrs, list):
            raise ValueError
        if not all(isinstance(a, str) for a in addrs):
            raise ValueError
        vouch = Ref.from_wire(data["v"]) if "v" in data else None
    except Exception:
        raise LocalProtocolError("the invitation is damaged: copy it again, whole") from None
    try:
        entry = Entry.decode(genesis)
    except Exception:
        raise LocalProtocolError("the invitation holds no valid community") from None
    if entry.kind is not Kind.GENESIS:
        raise LocalProtocolError("the invitation holds no valid community")
    return genesis, addrs, vouch


def needs_key(op: str, params: dict[str, Any]) -> bool:
    """True if ``op`` signs an entry (so it needs the member key)."""
    return op in SIGNING_OPS or (op == "community.invite" and bool(params.get("for")))


# -- the operations ---------------------------------------------------------


def op_whoami(node: LocalNode, p: dict[str, Any]) -> dict[str, Any]:
    return {"member": mid(node.member)}


def _community_json(node: LocalNode, community: CommunityId) -> dict[str, Any]:
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
        "members": sum(1 for _ in node.store.heads(community)),
        "entries": node.store.entry_count(community),
    }


def op_community_create(node: LocalNode, p: dict[str, Any]) -> dict[str, Any]:
    # A second community of the same name is most often a script run twice;
    # it would also make the name ambiguous in every later --community.
    same = [c for c in node.communities() if c.name == p["name"]]
    if same and not p.get("allow_duplicate_name"):
        raise LocalProtocolError(
            f"this node already has a community named {p['name']!r} ({cid(same[0].id)}):"
            " choose another name, or insist with --allow-duplicate-name"
        )
    community = node.create_community(
        p["name"],
        p["unit"],
        int(p["credit_limit"]),
        admission=p.get("admission", "open"),
        finality=p.get("finality", "optimistic"),
        witnesses=tuple(member_of(w) for w in p.get("witnesses", [])),
        faults=int(p.get("faults", 0)),
        quorum=p.get("quorum"),
        ceiling=p.get("ceiling"),
        member_name=p.get("member_name"),
    )
    if node.store.get_meta(DEFAULT_COMMUNITY) is None:
        node.store.set_meta(DEFAULT_COMMUNITY, community.hex())
    return {"community": cid(community)}


def op_community_list(node: LocalNode, p: dict[str, Any]) -> dict[str, Any]:
    default = node.store.get_meta(DEFAULT_COMMUNITY)
    out = []
    for info in node.communities():
        row = _community_json(node, info.id)
        row["default"] = info.id.hex() == default
        out.append(row)
    return {"communities": out}


def op_community_show(node: LocalNode, p: dict[str, Any]) -> dict[str, Any]:
    return _community_json(node, community_of(node, p.get("community")))


def op_community_invite(node: LocalNode, p: dict[str, Any]) -> dict[str, Any]:
    community = community_of(node, p.get("community"))
    info = node.community(community)
    vouch = None
    if p.get("for"):
        vouch = node.vouch(community, member_of(p["for"])).ref
    elif info.admission == "vouch":
        raise LocalProtocolError(
            "this community admits members by vouch: say whom the invitation is for (--for)"
        )
    own = [str(a) for a in p.get("addrs", [])]
    # A witnessed community: where its witnesses are (as the running node
    # knows them), so the newcomer can have its entries certified without
    # first finding them (docs/invitations.md). Own addresses come first.
    extra = [str(a) for a in p.get("witness_addrs", []) if a not in own]
    addrs = (own + extra)[:MAX_INVITE_ADDRS]
    result: dict[str, Any] = {"invitation": encode_invitation(info.genesis, addrs, vouch)}
    if not own:
        result["warning"] = (
            "this invitation holds no address of this node (it has never run): the newcomer's"
            " node will have no way to reach anyone. Start `troc run` and invite again"
        )
    return result


def op_community_join(node: LocalNode, p: dict[str, Any]) -> dict[str, Any]:
    text = str(p["invitation"])
    if text.strip().startswith("troc-code:"):  # a server's code, and no node runs: redeem here
        from troc.node.invites import redeem_offline

        seed = None if node.key is None else node.key.seed  # the running node's peer id
        text = redeem_offline(text, key_seed=seed).invitation()
    genesis, addrs, vouch = decode_invitation(text)
    if vouch is not None and vouch.author == node.member:
        raise LocalProtocolError("this invitation was made by you, for someone else")
    try:
        community = node.join(genesis, name=p.get("member_name"), vouch=vouch)
    except RefusedError as exc:
        if exc.reason == "missing":
            raise RefusedError(
                "missing",
                "the vouch in this invitation has not reached this node yet: start `troc run`"
                " (it connects to the inviter) and join again",
            ) from None
        raise
    if node.store.get_meta(DEFAULT_COMMUNITY) is None:
        node.store.set_meta(DEFAULT_COMMUNITY, community.hex())
    return {"community": cid(community), "addrs": addrs}


def op_community_follow(node: LocalNode, p: dict[str, Any]) -> dict[str, Any]:
    """Follow a community without joining it: store, serve and (as a
    witness) vote on its logs. What servers and witnesses do."""
    genesis, addrs, _vouch = decode_invitation(p["invitation"])
    outcome = node.ingest(genesis)
    if not outcome.ok or outcome.entry is None:  # pragma: no cover - the invitation checked it
        raise RefusedError(str(outcome.reason or "refused"), outcome.detail)
    community = CommunityId(outcome.entry.id)
    if node.store.get_meta(DEFAULT_COMMUNITY) is None:
        node.store.set_meta(DEFAULT_COMMUNITY, community.hex())
    return {"community": cid(community), "addrs": addrs}


def op_pay(node: LocalNode, p: dict[str, Any]) -> dict[str, Any]:
    community = community_of(node, p.get("community"))
    to = member_of(p["to"])
    amount = _amount(p["amount"])
    if not p.get("to_unknown") and node.store.head(community, to) is None:
        # The ledger would take it, but nobody is there to accept: the
        # credit would wait for a decline that never comes. The payer may
        # know better (a join that has not reached this node yet).
        raise RefusedError(
            "unknown_payee",
            f"{mid(to)[:14]}… is not a member of {node.community(community).name!r} as far as"
            " this node knows (check the id; if they joined and it has not reached this node"
            " yet, pay with --to-unknown)",
        )
    offer = node.find_offer(community, p["offer"]) if p.get("offer") else None
    if offer is not None:
        _check_offer_payment(node, community, offer, to, amount, bool(p.get("any_amount")))
    entry = node.pay(community, to, amount, memo=p.get("memo", ""), offer=offer)
    return {"transfer": eid(entry.id)}


def _check_offer_payment(
    node: LocalNode, community: CommunityId, ref: Ref, to: MemberId, amount: int, any_amount: bool
) -> None:
    """A payment names an offer it pays for: an offer of the payee's (or a
    want of the payer's, paid to whoever answered it), at its price unless
    the payer says otherwise. The ledger accepts any reference; these are
    the payer's likely mistakes, caught before signing."""
    stored = node.store.entry(community, ref.author, ref.seq, ref.id)
    if stored is None or not isinstance(stored.entry.body, Offer):  # pragma: no cover
        raise NotFoundError("no such offer here")
    o, short = stored.entry.body, eid(ref.id)[:12]
    if o.side == "offer" and ref.author == node.member:
        raise LocalProtocolError(f"offer {short} is your own: others pay you for it")
    if o.side == "offer" and ref.author != to:
        raise LocalProtocolError(f"offer {short} is {mid(ref.author)[:14]}…'s: pay them for it")
    if o.side == "want" and ref.author != node.member:
        raise LocalProtocolError(
            f"{short} is a want of {mid(ref.author)[:14]}…: they pay whoever answers it"
        )
    if o.price is not None and amount != o.price and not any_amount:
        raise LocalProtocolError(
            f"{short} asks {o.price}, not {amount}: pay {o.price}, or add --any-amount"
        )


def _answer(verb: str) -> Callable[[LocalNode, dict[str, Any]], dict[str, Any]]:
    def op(node: LocalNode, p: dict[str, Any]) -> dict[str, Any]:
        community = community_of(node, p.get("community"))
        ref = node.find_transfer(community, p["transfer"])
        if verb == "accept":
            entry = node.accept(community, ref)
        elif verb == "decline":
            entry = node.decline(community, ref, reason=p.get("reason", ""))
        else:
            entry = node.reclaim(community, ref)
        return {verb: eid(entry.id), "transfer": eid(ref.id)}

    return op


def op_pending(node: LocalNode, p: dict[str, Any]) -> dict[str, Any]:
    community = community_of(node, p.get("community"))
    info = node.community(community)
    witnessed = info.finality == "witnessed"  # only certified transfers can be accepted

    def rows(transfers: list[TransferInfo]) -> list[dict[str, Any]]:
        out = []
        for t in transfers:
            item = _transfer_json(t, info.unit)
            # Outgoing ones stay listed after a decline until reclaimed.
            item["status"] = _transfer_status(node, community, t)
            if witnessed:
                item["final"] = node.is_final(community, t.ref)
            out.append(item)
        return out

    incoming, outgoing = node.pending(community), node.pending_out(community)
    return {
        "incoming": rows(incoming),
        "outgoing": rows(outgoing),
        "names": _join_names(node, community, [t.payer for t in incoming + outgoing])
        | _join_names(node, community, [t.payee for t in outgoing]),
    }


def _transfer_status(node: LocalNode, community: CommunityId, t: TransferInfo) -> str:
    """``pending`` (no answer yet) or ``declined`` (the payer may reclaim it)
    for a transfer still listed as pending; accepted and reclaimed ones are
    not listed."""
    return "declined" if node.decline_of(community, t.ref) is not None else "pending"


def _declined_out(node: LocalNode, community: CommunityId, member: MemberId) -> list[TransferInfo]:
    """``member``'s transfers that their payees declined and that are not reclaimed yet."""
    return [
        t
        for t in (TransferInfo.of(e) for e in node.store.pending_out(community, member))
        if node.decline_of(community, t.ref) is not None
    ]


def op_balance(node: LocalNode, p: dict[str, Any]) -> dict[str, Any]:
    community = community_of(node, p.get("community"))
    member = member_of(p["member"]) if p.get("member") else node.member
    info = node.community(community)
    b = node.balance(community, member)
    declined = _declined_out(node, community, member)
    return {
        "member": mid(b.member),
        "balance": b.balance,
        "credit_limit": b.credit_limit,
        "pending_in": b.pending_in,
        "pending_out": b.pending_out,
        # Of pending_out: declined by the payee, waiting for `troc reclaim`.
        "declined_out": sum(t.amount for t in declined),
        "declined": [eid(t.ref.id) for t in declined],
        "unit": info.unit,
        "joined": b.joined,
        "frozen": b.frozen_at is not None,
        "finality": info.finality,
        "names": _join_names(node, community, [member]),
        **(
            {"unconfirmed": b.unconfirmed, "pending_in_final": b.pending_in_final}
            if b.witnessed
            else {}
        ),
    }


def op_balances(node: LocalNode, p: dict[str, Any]) -> dict[str, Any]:
    community = community_of(node, p.get("community"))
    balances = node.balances(community)
    return {
        "balances": {mid(m): v for m, v in sorted(balances.items())},
        "names": _join_names(node, community, balances),
    }


def op_history(node: LocalNode, p: dict[str, Any]) -> dict[str, Any]:
    community = community_of(node, p.get("community"))
    member = member_of(p["member"]) if p.get("member") else node.member
    limit = int(p.get("limit", 50))
    entries = node.history(community, member, before_ms=p.get("before_ms"), limit=limit)
    return {
        "member": mid(member),
        "entries": [_history_json(node, community, e) for e in entries],
        "names": _join_names(
            node,
            community,
            [e.author for e in entries]
            + [e.body.to for e in entries if isinstance(e.body, Transfer)],
        ),
        "next_before_ms": entries[-1].timestamp_ms if len(entries) == limit else None,
    }


def _join_names(node: LocalNode, community: CommunityId, members: Any) -> dict[str, str]:
    """The names members gave in their join entries (self-chosen, unverified),
    for the members in ``members`` that gave one: ``{member id: name}``."""
    out = {}
    for member in set(members):
        first = node.store.entries_since(community, MemberId(member), 0, limit=1)
        entry = Entry.decode(first[0], check_signature=False) if first else None
        if entry is not None and isinstance(entry.body, Join) and entry.body.name:
            out[mid(member)] = entry.body.name
    return out


def _history_json(node: LocalNode, community: CommunityId, e: Entry) -> dict[str, Any]:
    """An entry of a history; a reclaim also names the transfer it took back
    (its body names only the payee's decline)."""
    out = _entry_json(e)
    if isinstance(e.body, Reclaim):
        taken_back = node.reclaimed_transfer(community, e.body)
        if taken_back is not None:
            out["transfer"] = eid(taken_back.id)
    return out


def op_offer_add(node: LocalNode, p: dict[str, Any]) -> dict[str, Any]:
    community = community_of(node, p.get("community"))
    price = _amount(p["price"]) if p.get("price") is not None else None
    entry = node.offer(
        community,
        p["title"],
        side=p.get("side", "offer"),
        description=p.get("description", ""),
        tags=tuple(p.get("tags", ())),
        price=price,
        expires_ms=p.get("expires_ms"),
    )
    return {"offer": eid(entry.id)}


def op_offer_list(node: LocalNode, p: dict[str, Any]) -> dict[str, Any]:
    community = community_of(node, p.get("community"))
    author = member_of(p["author"]) if p.get("author") else None
    offers = node.offers(
        community,
        p.get("text"),
        tag=p.get("tag"),
        side=p.get("side"),
        author=author,
        include_closed=bool(p.get("include_closed")),
        limit=int(p.get("limit", 50)),
    )
    return {
        "offers": [_offer_json(o) for o in offers],
        "names": _join_names(node, community, [o.author for o in offers]),
    }


def op_offer_close(node: LocalNode, p: dict[str, Any]) -> dict[str, Any]:
    community = community_of(node, p.get("community"))
    ref = node.find_offer(community, p["offer"])
    entry = node.close_offer(community, ref)
    return {"offer": eid(ref.id), "close": eid(entry.id)}


def op_vouch(node: LocalNode, p: dict[str, Any]) -> dict[str, Any]:
    community = community_of(node, p.get("community"))
    limit = int(p["limit"]) if p.get("limit") is not None else None
    entry = node.vouch(community, member_of(p["member"]), limit=limit)
    return {"vouch": eid(entry.id), "ref": [mid(entry.author), entry.seq, eid(entry.id)]}


def op_forks(node: LocalNode, p: dict[str, Any]) -> dict[str, Any]:
    community = community_of(node, p.get("community"))
    return {
        "forks": [
            {
                "member": mid(m),
                "seq": seq,
                "proof": [base64.b64encode(a).decode(), base64.b64encode(b).decode()],
            }
            for m, seq, a, b in node.forks(community)
        ]
    }


def op_community_policy(node: LocalNode, p: dict[str, Any]) -> dict[str, Any]:
    """A community's policy as its genesis states it (what a server's codes publish)."""
    from troc.node.invites import policy_of

    genesis = node.store.genesis(community_of(node, p.get("community")))
    if genesis is None:  # pragma: no cover - community_of found it
        raise NotFoundError("unknown community")
    return policy_of(genesis)


def _invite_op(name: str) -> Callable[[LocalNode, dict[str, Any]], dict[str, Any]]:
    """``invite.*`` (troc.node.invites) on a node that is not running."""

    def op(node: LocalNode, p: dict[str, Any]) -> dict[str, Any]:
        from troc.node import invites

        return invites.OPS[name](node, p)

    return op


OPS: dict[str, Callable[[LocalNode, dict[str, Any]], dict[str, Any]]] = {
    "whoami": op_whoami,
    "community.create": op_community_create,
    "community.list": op_community_list,
    "community.show": op_community_show,
    "community.invite": op_community_invite,
    "community.join": op_community_join,
    "community.follow": op_community_follow,
    "pay": op_pay,
    "accept": _answer("accept"),
    "decline": _answer("decline"),
    "reclaim": _answer("reclaim"),
    "pending": op_pending,
    "balance": op_balance,
    "balances": op_balances,
    "history": op_history,
    "offer.add": op_offer_add,
    "offer.list": op_offer_list,
    "offer.close": op_offer_close,
    "vouch": op_vouch,
    "forks": op_forks,
    "community.policy": op_community_policy,
    "invite.create": _invite_op("invite.create"),
    "invite.list": _invite_op("invite.list"),
    "invite.revoke": _invite_op("invite.revoke"),
}


def run_op(node: LocalNode, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run operation ``name``. Raises TrocError subclasses for the caller's mistakes."""
    op = OPS.get(name)
    if op is None:
        raise LocalProtocolError(f"unknown operation {name!r}")
    if needs_key(name, params):
        # Before anything else: a store that lost the member's log must say
        # so, not "no community yet" (whose advice, joining, would fork it).
        node.check_can_sign()
    return op(node, params)
