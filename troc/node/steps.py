"""The operations' store steps: what each does to a member's :class:`LocalNode`.

Each step takes the operation's JSON parameters and returns a
:class:`~troc.node.opdata.Done`: the JSON result and the entry it signed.
Steps are plain, synchronous code on the store; they run alike with no node
running (the CLI opens the store) and inside a running node (through its
control socket). What surrounds them, the table that names them and what a
running node does before and after, is :mod:`troc.node.operations`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from troc.crypto.sign import MemberId
from troc.errors import LocalProtocolError, RefusedError
from troc.node.campaigns import pledge_totals
from troc.node.codes import policy_of
from troc.node.invitation import MAX_INVITE_ADDRS, decode_invitation, encode_invitation
from troc.node.local import LocalNode, TransferInfo
from troc.node.opdata import (
    DEFAULT_COMMUNITY,
    VOIDABLE_KINDS,
    Done,
    NotFoundError,
    amount_of,
    cid,
    community_json,
    community_of,
    declined_out,
    eid,
    history_json,
    join_names,
    member_of,
    mid,
    offer_json,
    own_head,
    timed_take_backs,
    transfer_json,
    transfer_status,
    void_entries,
)
from troc.node.store import TransferState
from troc.protocol.entry import (
    MAX_AMOUNT,
    CommunityId,
    Entry,
    EntryId,
    Genesis,
    Kind,
    Offer,
    Ref,
    Transfer,
)


def op_whoami(node: LocalNode, p: dict[str, Any]) -> Done:
    return Done({"member": mid(node.member)})


def op_community_create(node: LocalNode, p: dict[str, Any]) -> Done:
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
        transfer_expiry_ms=p.get("transfer_expiry_ms"),
        member_name=p.get("member_name"),
    )
    if node.store.get_meta(DEFAULT_COMMUNITY) is None:
        node.store.set_meta(DEFAULT_COMMUNITY, community.hex())
    return Done({"community": cid(community)}, own_head(node, community))


def op_community_list(node: LocalNode, p: dict[str, Any]) -> Done:
    default = node.store.get_meta(DEFAULT_COMMUNITY)
    out = []
    for info in node.communities():
        row = community_json(node, info.id)
        row["default"] = info.id.hex() == default
        out.append(row)
    return Done({"communities": out})


def op_community_show(node: LocalNode, p: dict[str, Any]) -> Done:
    return Done(community_json(node, community_of(node, p.get("community"))))


def op_community_invite(node: LocalNode, p: dict[str, Any]) -> Done:
    community = community_of(node, p.get("community"))
    info = node.community(community)
    vouch = None
    if p.get("for"):
        vouch = node.vouch(community, member_of(p["for"]))
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
    ref = None if vouch is None else vouch.ref
    result: dict[str, Any] = {"invitation": encode_invitation(info.genesis, addrs, ref)}
    if not own:
        result["warning"] = (
            "this invitation holds no address of this node (it has never run): the newcomer's"
            " node will have no way to reach anyone. Start `troc run` and invite again"
        )
    return Done(result, vouch)


def op_community_join(node: LocalNode, p: dict[str, Any]) -> Done:
    # A server's code (troc-code:) was redeemed for an invitation already
    # (troc.node.operations: the same step for a running node and offline).
    genesis, addrs, vouch = decode_invitation(str(p["invitation"]))
    if vouch is not None and vouch.author == node.member:
        raise LocalProtocolError("this invitation was made by you, for someone else")
    community = CommunityId(Entry.decode(genesis, check_signature=False).id)
    joined = node.store.head(community, node.member) is not None
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
    signed = None if joined else own_head(node, community)
    return Done({"community": cid(community), "addrs": addrs}, signed)


def op_community_follow(node: LocalNode, p: dict[str, Any]) -> Done:
    """Follow a community without joining it: store, serve and (as a
    witness) vote on its logs. What servers and witnesses do."""
    genesis, addrs, _vouch = decode_invitation(p["invitation"])
    outcome = node.ingest(genesis)
    if not outcome.ok or outcome.entry is None:  # pragma: no cover - the invitation checked it
        raise RefusedError(str(outcome.reason or "refused"), outcome.detail)
    community = CommunityId(outcome.entry.id)
    if node.store.get_meta(DEFAULT_COMMUNITY) is None:
        node.store.set_meta(DEFAULT_COMMUNITY, community.hex())
    return Done({"community": cid(community), "addrs": addrs})


def op_pay(node: LocalNode, p: dict[str, Any]) -> Done:
    community = community_of(node, p.get("community"))
    to = member_of(p["to"])
    amount = amount_of(p["amount"])
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
    expires = p.get("expires_ms")
    if expires is not None and (type(expires) is not int or not 0 <= expires <= MAX_AMOUNT):
        raise LocalProtocolError("expires_ms must be a time in milliseconds")
    entry = node.pay(community, to, amount, memo=p.get("memo", ""), offer=offer, expires_ms=expires)
    return Done({"transfer": eid(entry.id), "expires_ms": node.expiry(community, entry.ref)}, entry)


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


def op_answer(verb: str) -> Callable[[LocalNode, dict[str, Any]], Done]:
    def op(node: LocalNode, p: dict[str, Any]) -> Done:
        community = community_of(node, p.get("community"))
        late = verb == "accept" and bool(p.get("late"))
        ref = node.find_transfer(community, p["transfer"], taken_back=late)
        if verb == "accept":
            if node.expired(community, ref) and not late:
                # The payer may have taken it back: this accept would win,
                # and the payer lose what it spent again (docs/protocol.md §4.11).
                raise RefusedError(
                    "expired",
                    f"transfer {eid(ref.id)[:12]} has expired: the payer may have taken it"
                    " back; accepting now takes the amount from them again (insist with --late)",
                )
            entry = node.accept(community, ref)
        elif verb == "take_back":
            entry = node.take_back(community, ref)
        elif verb == "decline":
            entry = node.decline(community, ref, reason=p.get("reason", ""))
        else:
            entry = node.reclaim(community, ref)
        return Done({verb: eid(entry.id), "transfer": eid(ref.id)}, entry)

    return op


def op_pending(node: LocalNode, p: dict[str, Any]) -> Done:
    community = community_of(node, p.get("community"))
    info = node.community(community)
    witnessed = info.finality == "witnessed"  # only certified transfers can be accepted

    def rows(transfers: list[TransferInfo]) -> list[dict[str, Any]]:
        out = []
        for t in transfers:
            item = transfer_json(t, info.unit)
            # Outgoing ones stay listed after a decline until reclaimed.
            item["status"] = transfer_status(node, community, t)
            if witnessed:
                item["final"] = node.is_final(community, t.ref)
            out.append(item)
        return out

    incoming, outgoing = node.pending(community), node.pending_out(community)
    incoming_rows = rows(incoming)
    if witnessed:
        # Also those held parked with their own certificate (docs/witness.md
        # §6.1, "What the node shows"): final, acceptable now, the payer's
        # history not checked here yet (at most Ledger.MAX_PARKED_TO).
        parked = [TransferInfo.of(e) for e in node.certified_parked_in(community)]
        for row in incoming_rows:
            row["history_checked"] = True
        for row in rows(parked):
            incoming_rows.append({**row, "final": True, "history_checked": False})
        incoming += parked
    from troc.node.requests import pending_requests

    requests = pending_requests(node, community)
    return Done(
        {
            "incoming": incoming_rows,
            "outgoing": rows(outgoing),
            "requests": requests,
            # Own take-backs certified with the witnesses' times (docs/witness.md §3.5).
            **({"taken_back": timed_take_backs(node, community, node.member)} if witnessed else {}),
            "names": join_names(node, community, [t.payer for t in incoming + outgoing])
            | join_names(node, community, [t.payee for t in outgoing])
            | join_names(node, community, [member_of(r["from"]) for r in requests]),
        }
    )


def op_balance(node: LocalNode, p: dict[str, Any]) -> Done:
    community = community_of(node, p.get("community"))
    member = member_of(p["member"]) if p.get("member") else node.member
    info = node.community(community)
    b = node.balance(community, member)
    # Read once: a payer with many unanswered payments (a shop's day) asks
    # for its balance often, and each read goes over every pending transfer:
    # only those in the declined state can have a decline held (storing one
    # moves its transfer there), and only those read here as expired are
    # decoded (the store remembers each transfer's expiry: decoding them all
    # on every read was most of it, ~9 ms at 1,000 pending).
    stored_genesis = node.store.genesis(community)
    assert stored_genesis is not None  # community_of found it
    genesis = stored_genesis.body
    assert isinstance(genesis, Genesis)
    states = node.store.pending_out_expiries(community, member, genesis)

    def transfer(seq: int, id_: EntryId) -> TransferInfo:
        stored = node.store.entry(community, member, seq, id_)
        assert stored is not None  # a pending transfer is stored
        return TransferInfo.of(stored.entry)

    declined = declined_out(
        node,
        community,
        member,
        [transfer(seq, i) for seq, i, state, _ in states if state is TransferState.DECLINED],
    )
    answered = {t.ref for t in declined}
    now = node.now()
    expired = [
        t
        for t in (
            transfer(seq, i) for seq, i, _, expiry in states if expiry is not None and expiry < now
        )
        if t.ref not in answered
    ]
    head = node.store.head(community, member)
    # One walk of the member's log for the kinds read below (one each was
    # ~0.3 ms at a payer's 1,000 transfers, seven of them).
    refs = node.store.refs_from_kinds(community, member, (*VOIDABLE_KINDS, Kind.PLEDGE))
    pledges = pledge_totals(node, community, member, refs[Kind.PLEDGE])
    # The ledger's undone sums take-backs and lapses (§4.7); shown apart.
    undone = 0 if head is None or head.witnessed else head.undone - pledges["lapse_undone"]
    taken = sum(r.amount for r in refs[Kind.TAKE_BACK])
    return Done(
        {
            "member": mid(b.member),
            "balance": b.balance,
            "credit_limit": b.credit_limit,
            "pending_in": b.pending_in,
            "pending_out": b.pending_out,
            # Of pending_out: declined by the payee, waiting for `troc reclaim`.
            "declined_out": sum(t.amount for t in declined),
            "declined": [eid(t.ref.id) for t in declined],
            # Of pending_out: expired, unanswered: `troc take-back` takes them back.
            "expired_out": sum(t.amount for t in expired),
            "expired": [eid(t.ref.id) for t in expired],
            # Take-backs (docs/protocol.md §4.11): counted until an accept of
            # their transfer arrives (at risk), and those an accept undid.
            "taken_back": taken - undone,
            "undone": undone,
            # Campaigns (docs/protocol.md §10.5): pledges in flight (reserved),
            # lapses counted until a close counting their pledge arrives
            # (lapsed), and lapses such a close undid (lapse_undone).
            **pledges,
            "unit": info.unit,
            "joined": b.joined,
            "frozen": b.frozen_at is not None,
            "finality": info.finality,
            "names": join_names(node, community, [member]),
            **(
                {
                    "unconfirmed": b.unconfirmed,
                    "pending_in_final": b.pending_in_final,
                    # Of pending_in_final: held parked with their own
                    # certificate, the payer's history still being fetched.
                    "pending_in_parked": b.pending_in_parked,
                    # Accepts and take-backs that lost their race (docs/witness.md §3.6).
                    "void": void_entries(node, community, member, refs),
                    # Take-backs certified with the witnesses' times (§3.5).
                    "taken_back_certified": timed_take_backs(
                        node, community, member, refs[Kind.TAKE_BACK]
                    ),
                }
                if b.witnessed
                else {}
            ),
        }
    )


def op_balances(node: LocalNode, p: dict[str, Any]) -> Done:
    community = community_of(node, p.get("community"))
    balances = node.balances(community)
    return Done(
        {
            "balances": {mid(m): v for m, v in sorted(balances.items())},
            "names": join_names(node, community, balances),
        }
    )


def op_history(node: LocalNode, p: dict[str, Any]) -> Done:
    community = community_of(node, p.get("community"))
    member = member_of(p["member"]) if p.get("member") else node.member
    limit = int(p.get("limit", 50))
    entries = node.history(community, member, before_ms=p.get("before_ms"), limit=limit)
    return Done(
        {
            "member": mid(member),
            "entries": [history_json(node, community, e) for e in entries],
            "names": join_names(
                node,
                community,
                [e.author for e in entries]
                + [e.body.to for e in entries if isinstance(e.body, Transfer)],
            ),
            "next_before_ms": entries[-1].timestamp_ms if len(entries) == limit else None,
        }
    )


def op_offer_add(node: LocalNode, p: dict[str, Any]) -> Done:
    community = community_of(node, p.get("community"))
    price = amount_of(p["price"]) if p.get("price") is not None else None
    entry = node.offer(
        community,
        p["title"],
        side=p.get("side", "offer"),
        description=p.get("description", ""),
        tags=tuple(p.get("tags", ())),
        price=price,
        expires_ms=p.get("expires_ms"),
    )
    return Done({"offer": eid(entry.id)}, entry)


def op_offer_list(node: LocalNode, p: dict[str, Any]) -> Done:
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
    return Done(
        {
            "offers": [offer_json(o) for o in offers],
            "names": join_names(node, community, [o.author for o in offers]),
        }
    )


def op_offer_close(node: LocalNode, p: dict[str, Any]) -> Done:
    community = community_of(node, p.get("community"))
    ref = node.find_offer(community, p["offer"])
    entry = node.close_offer(community, ref)
    return Done({"offer": eid(ref.id), "close": eid(entry.id)}, entry)


def op_vouch(node: LocalNode, p: dict[str, Any]) -> Done:
    community = community_of(node, p.get("community"))
    limit = int(p["limit"]) if p.get("limit") is not None else None
    entry = node.vouch(community, member_of(p["member"]), limit=limit)
    return Done(
        {"vouch": eid(entry.id), "ref": [mid(entry.author), entry.seq, eid(entry.id)]}, entry
    )


def op_forks(node: LocalNode, p: dict[str, Any]) -> Done:
    community = community_of(node, p.get("community"))
    return Done(
        {
            "forks": [
                {
                    "member": mid(m),
                    "seq": seq,
                    "proof": [base64.b64encode(a).decode(), base64.b64encode(b).decode()],
                }
                for m, seq, a, b in node.forks(community)
            ]
        }
    )


def op_community_policy(node: LocalNode, p: dict[str, Any]) -> Done:
    """A community's policy as its genesis states it (what a server's codes publish)."""
    genesis = node.store.genesis(community_of(node, p.get("community")))
    if genesis is None:  # pragma: no cover - community_of found it
        raise NotFoundError("unknown community")
    return Done(policy_of(genesis))
