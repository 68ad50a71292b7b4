"""Profiles, the member directory and statements, as node operations
(issue 14 parts 3 and 4).

Each is a store step like those of :mod:`troc.node.steps`: JSON-able
parameters in, a :class:`~troc.node.opdata.Done` out; the operation table
(:mod:`troc.node.operations`) names them.
The rules they show are the protocol's: a member's profile is
:meth:`Ledger.profile` (docs/protocol.md §4.4), a statement and its bundle
are :mod:`troc.protocol.statement` (§9).
"""

from __future__ import annotations

import base64
from collections import Counter
from typing import Any

from troc.crypto.sign import MemberId
from troc.errors import LocalProtocolError
from troc.node.local import LocalNode
from troc.node.notices import PROFILE_IS_PUBLIC
from troc.node.opdata import Done, NotFoundError, community_of, eid, member_of, mid
from troc.protocol.entry import MAX_TAG, CommunityId, Entry, Kind, Profile, Ref, Vouch
from troc.protocol.statement import (
    Statement,
    build_bundle,
    chain_of,
    name_of,
    period,
    statement_of,
)

__all__ = [
    "PUBLIC",
    "display_name",
    "op_members",
    "op_profile_set",
    "op_profile_show",
    "op_statement",
    "op_statement_bundle",
    "statement_json",
]

PUBLIC = PROFILE_IS_PUBLIC

_PROFILE_FIELDS = ("name", "about", "place", "languages", "contact")


def display_name(node: LocalNode, community: CommunityId, member: MemberId) -> str | None:
    """The name a member gives itself: its profile's, else its join's, else None."""
    return name_of(node.ledger, community, member)


def _profile_json(entry: Entry | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    body = entry.body
    assert isinstance(body, Profile)
    return {
        "name": body.name,
        "about": body.about,
        "place": body.place,
        "languages": list(body.languages),
        "contact": body.contact,
        "entry": eid(entry.id),
        "seq": entry.seq,
        "timestamp_ms": entry.timestamp_ms,
    }


def op_profile_set(node: LocalNode, p: dict[str, Any]) -> Done:
    """Sign a new profile: the fields given replace the current profile's,
    the others are kept."""
    community = community_of(node, p.get("community"))
    current = node.ledger.profile(community, node.member)
    fields: dict[str, Any] = {"about": "", "place": "", "languages": (), "contact": ""}
    if current is not None:
        assert isinstance(current.body, Profile)
        fields = {f: getattr(current.body, f) for f in _PROFILE_FIELDS}
    for f in _PROFILE_FIELDS:
        if p.get(f) is not None:
            fields[f] = p[f]
    if not fields.get("name"):
        fields["name"] = display_name(node, community, node.member) or ""
    if not fields["name"]:
        raise LocalProtocolError("a profile needs a name (--name)")
    languages = [str(x).strip() for x in fields["languages"]]
    if any(not 1 <= len(x) <= MAX_TAG for x in languages):
        raise LocalProtocolError(f"a language is 1 to {MAX_TAG} characters, e.g. en or fr")
    fields["languages"] = tuple(sorted(set(languages)))
    entry = node.set_profile(community, Profile(**fields))
    return Done({"profile": eid(entry.id), "public": PUBLIC}, entry)


def op_profile_show(node: LocalNode, p: dict[str, Any]) -> Done:
    community = community_of(node, p.get("community"))
    member = member_of(p["member"]) if p.get("member") else node.member
    if node.store.head(community, member) is None:
        raise NotFoundError(f"{mid(member)[:14]}… has no log in this community")
    return Done(
        {
            "member": mid(member),
            "profile": _profile_json(node.ledger.profile(community, member)),
            "name": display_name(node, community, member),
            "since_ms": _since(node, community, member),
        }
    )


def _since(node: LocalNode, community: CommunityId, member: MemberId) -> int | None:
    first = node.store.entries_since(community, member, 0, limit=1)
    return Entry.decode(first[0], check_signature=False).timestamp_ms if first else None


def op_members(node: LocalNode, p: dict[str, Any]) -> Done:
    """Every member with a log: name, id, since when (its join's stamp),
    vouches received (distinct vouchers, counted entries only), open
    offers, and with ``balances`` its counted balance. ``search``: only
    those whose name or place contains the text (case ignored)."""
    community = community_of(node, p.get("community"))
    heads = dict(node.store.heads(community))
    vouchers: dict[MemberId, set[MemberId]] = {}
    for e in node.store.of_kind(community, Kind.VOUCH):
        head = heads.get(e.author)
        if head is not None and head.counts(e.seq):
            assert isinstance(e.body, Vouch)
            vouchers.setdefault(e.body.member, set()).add(e.author)
    offers = Counter(o.author for o in node.offers(community, limit=100_000))
    wanted = str(p.get("search") or "").casefold().strip()
    rows = []
    for member, head in sorted(heads.items()):
        profile = node.ledger.profile(community, member)
        place = profile.body.place if profile is not None else ""  # type: ignore[union-attr]
        name = display_name(node, community, member)
        if wanted and not any(wanted in (x or "").casefold() for x in (name, place)):
            continue
        row: dict[str, Any] = {
            "member": mid(member),
            "name": name,
            "place": place,
            "since_ms": _since(node, community, member),
            "vouches": len(vouchers.get(member, ())),
            "offers": offers.get(member, 0),
            "frozen": head.frozen_at is not None,
        }
        if p.get("balances"):
            row["balance"] = head.counted_balance
        rows.append(row)
    return Done({"members": rows, "unit": node.community(community).unit})


def _period(node: LocalNode, p: dict[str, Any]) -> tuple[CommunityId, list[Any], int, int]:
    community = community_of(node, p.get("community"))
    member = member_of(p["member"]) if p.get("member") else node.member
    head = node.store.head(community, member)
    if head is None:
        raise NotFoundError(f"{mid(member)[:14]}… has no log in this community")
    chain = chain_of(node.store, community, Ref(member, head.seq, head.id))
    from_seq, to_seq = period(chain, p.get("from_ms"), p.get("to_ms"))
    return community, chain, from_seq, to_seq


def statement_json(s: Statement, names: dict[MemberId, str]) -> dict[str, Any]:
    """A statement as data (``troc statement --json``, ``troc verify --json``):
    ``names`` are the counterparties' self-given names, where known."""
    return {
        "member": mid(s.member),
        "from_seq": s.from_seq,
        "to_seq": s.to_seq,
        "movements": [
            {
                "seq": m.seq,
                "entry": eid(m.id),
                "timestamp_ms": m.timestamp_ms,
                "kind": m.kind.value,
                "counterparty": None if m.counterparty is None else mid(m.counterparty),
                "name": None if m.counterparty is None else names.get(m.counterparty),
                "memo": m.memo,
                "amount": m.amount,
                "balance": m.balance,
            }
            for m in s.movements
        ],
        "totals": {
            "opening": s.opening,
            "in": s.total_in,
            "out": s.total_out,
            "closing": s.closing,
            "movements": len(s.movements),
        },
    }


def op_statement(node: LocalNode, p: dict[str, Any]) -> Done:
    """Every movement of a stretch of the member's log (``from_ms`` …
    ``to_ms``, both optional), with the running balance and totals."""
    community, chain, from_seq, to_seq = _period(node, p)
    s = statement_of(node.store, community, chain, from_seq, to_seq)
    names = {
        m: n
        for m in {mv.counterparty for mv in s.movements if mv.counterparty is not None}
        if (n := display_name(node, community, m)) is not None
    }
    info = node.community(community)
    return Done({**statement_json(s, names), "community": info.name, "unit": info.unit})


def op_statement_bundle(node: LocalNode, p: dict[str, Any]) -> Done:
    """The signed bundle proving the member's statement (docs/protocol.md
    §9), base64 in ``bundle``: the CLI writes it to a file."""
    community, chain, from_seq, to_seq = _period(node, p)
    if chain[0].entry.author != node.member:
        raise LocalProtocolError("a member can sign a statement of its own log only")
    if to_seq < 1:
        raise LocalProtocolError("the period holds no entry of your log: nothing to prove")
    key = node.signing_key()
    end = chain[to_seq - 1].entry.ref
    data = build_bundle(node.ledger, key, community, end, from_seq, node.now())
    return Done(
        {
            "bundle": base64.b64encode(data).decode(),
            "bytes": len(data),
            "from_seq": from_seq,
            "to_seq": to_seq,
        }
    )
