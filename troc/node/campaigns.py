"""Campaigns (all-or-nothing crowdfunding, issue 15) as node operations.

Store steps like those of :mod:`troc.node.steps`, named in the operation
table (:mod:`troc.node.operations`). The rules are the ledger's
(docs/protocol.md §10); this module only reads what the store holds to show
a campaign's state, and picks what the member's entries name:

* ``campaign.close`` names every pledge the node holds that counts (below
  its pledger's fork point, if any; in a witnessed community, final) and
  that its pledger has not withdrawn or let lapse, one per pledger, the
  largest first if there are more than a close can name (200);
* ``campaign.withdraw`` names the member's pledge and the campaign's close
  if the node holds one; else, once the deadline has passed by the node's
  clock, it lets the pledge *lapse* (a withdraw naming no close, §10.5),
  which a close counting the pledge would still beat.

The node's own guards refuse a pledge after the deadline and a close before
it unless the member says otherwise (``late``, ``early``).
:func:`pledge_totals` gives what ``balance`` shows of a member's pledges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from troc.crypto.sign import MemberId
from troc.errors import LocalProtocolError, RefusedError
from troc.node.local import LocalNode
from troc.node.opdata import (
    Done,
    NotFoundError,
    amount_of,
    community_of,
    eid,
    join_names,
    mid,
)
from troc.node.views import resolve
from troc.protocol.backend import Head, RefRow
from troc.protocol.entry import (
    MAX_PLEDGES,
    Campaign,
    CampaignClose,
    CommunityId,
    Entry,
    Kind,
    Pledge,
    Ref,
    Withdraw,
)

__all__ = [
    "op_campaign_close",
    "op_campaign_create",
    "op_campaign_list",
    "op_campaign_pledge",
    "op_campaign_show",
    "op_campaign_withdraw",
]


@dataclass(slots=True)
class _View:
    """A campaign and what the store holds about it."""

    entry: Entry
    pledges: list[Entry] = field(default_factory=list)
    closes: list[Entry] = field(default_factory=list)
    withdrawn: set[Ref] = field(default_factory=set)
    lapsed: set[Ref] = field(default_factory=set)

    @property
    def body(self) -> Campaign:
        assert isinstance(self.entry.body, Campaign)
        return self.entry.body


def _views(node: LocalNode, community: CommunityId) -> dict[Ref, _View]:
    """Every campaign held, with its pledges, closes and withdrawn pledges."""
    store = node.store
    views = {e.ref: _View(e) for e in store.of_kind(community, Kind.CAMPAIGN)}
    for e in store.of_kind(community, Kind.PLEDGE):
        assert isinstance(e.body, Pledge)
        if e.body.campaign in views:
            views[e.body.campaign].pledges.append(e)
    for e in store.of_kind(community, Kind.CAMPAIGN_CLOSE):
        assert isinstance(e.body, CampaignClose)
        if e.body.campaign in views:
            views[e.body.campaign].closes.append(e)
    pledge_of = {p.ref: v for v in views.values() for p in v.pledges}
    for e in store.of_kind(community, Kind.WITHDRAW):
        assert isinstance(e.body, Withdraw)
        if e.body.pledge in pledge_of:
            pledge_of[e.body.pledge].withdrawn.add(e.body.pledge)
            if e.body.lapse:
                pledge_of[e.body.pledge].lapsed.add(e.body.pledge)
    return views


def _counts(heads: dict[MemberId, Head], e: Entry) -> bool:
    head = heads.get(e.author)
    return head is not None and head.counts(e.seq)


def _amount(pledge: Entry) -> int:
    assert isinstance(pledge.body, Pledge)
    return pledge.body.amount


def _close_of(v: _View, heads: dict[MemberId, Head]) -> Entry | None:
    """The campaign's close that counts (on its author's counted chain), or,
    if its author forked, the first held."""
    counted = [c for c in v.closes if _counts(heads, c)]
    found = counted or v.closes
    return found[0] if found else None


def _json(node: LocalNode, community: CommunityId, v: _View, full: bool) -> dict[str, Any]:
    heads = dict(node.store.heads(community))
    b = v.body
    close = _close_of(v, heads)
    named: set[Ref] = set()
    succeeded = False
    if close is not None:
        assert isinstance(close.body, CampaignClose)
        named = set(close.body.pledges)
        total = sum(_amount(p) for p in v.pledges if p.ref in named)
        succeeded = total >= b.goal
    # Progress: while open, the counted pledges not taken back (lapsed);
    # once closed, those the close names (the close alone decides, §10.1).
    counted = [
        p
        for p in v.pledges
        if _counts(heads, p) and (p.ref in named if close is not None else p.ref not in v.withdrawn)
    ]
    pledged = sum(_amount(p) for p in counted)
    state = "open" if close is None else "succeeded" if succeeded else "failed"
    out: dict[str, Any] = {
        "campaign": eid(v.entry.id),
        "author": mid(v.entry.author),
        "title": b.title,
        "goal": b.goal,
        "deadline_ms": b.deadline_ms,
        "min_pledge": b.min_pledge,
        "pledged": pledged,
        "pledges": len(counted),
        "state": state,
        "deadline_passed": node.now() > b.deadline_ms,
        "close": None if close is None else eid(close.id),
        "unit": node.community(community).unit,
    }
    if full:
        out["description"] = b.description
        out["reward"] = b.reward
        out["tags"] = list(b.tags)
        out["forked_author"] = not _counts(heads, v.entry) or len(v.closes) > 1
        rows = []
        for p in v.pledges:
            assert isinstance(p.body, Pledge)
            if succeeded and p.ref in named:
                status = "paid"  # a lapse of it, if any, is undone: the close wins
            elif p.ref in v.withdrawn:
                status = "withdrawn"
            elif close is None:
                status = "reserved"
            elif succeeded and p.ref in named:
                status = "paid"
            else:
                status = "lapsed"
            rows.append(
                {
                    "pledge": eid(p.id),
                    "pledger": mid(p.author),
                    "amount": p.body.amount,
                    "status": status,
                    "lapse": p.ref in v.lapsed,
                    "counts": _counts(heads, p),
                }
            )
        out["pledge_list"] = rows
    return out


def _find(node: LocalNode, community: CommunityId, text: Any) -> _View:
    if not isinstance(text, str):
        raise LocalProtocolError("name a campaign by its id (or its first 6 or more characters)")
    views = _views(node, community)
    return views[resolve(text, "campaign", list(views))]


def op_campaign_create(node: LocalNode, p: dict[str, Any]) -> Done:
    community = community_of(node, p.get("community"))
    deadline = p["deadline_ms"]
    if type(deadline) is not int or deadline < 0:
        raise LocalProtocolError("deadline_ms is a time in ms since 1970")
    least = amount_of(p["min_pledge"]) if p.get("min_pledge") is not None else None
    body = Campaign(
        title=str(p["title"]),
        goal=amount_of(p["goal"]),
        deadline_ms=deadline,
        description=str(p.get("description") or ""),
        tags=tuple(sorted({str(t) for t in p.get("tags") or ()})),
        reward=str(p.get("reward") or ""),
        min_pledge=least,
    )
    entry = node.append(community, body)
    return Done({"campaign": eid(entry.id)}, entry)


def op_campaign_list(node: LocalNode, p: dict[str, Any]) -> Done:
    """Campaigns, newest first; ``text`` filters on title, description and
    tags (case ignored), ``open`` keeps those not closed yet."""
    community = community_of(node, p.get("community"))
    wanted = str(p.get("text") or "").casefold().strip()
    rows = []
    views = sorted(_views(node, community).values(), key=lambda v: -v.entry.timestamp_ms)
    for v in views:
        b = v.body
        words = " ".join((b.title, b.description, *b.tags)).casefold()
        if wanted and wanted not in words:
            continue
        row = _json(node, community, v, full=False)
        if p.get("open") and row["state"] != "open":
            continue
        rows.append(row)
    authors = [v.entry.author for v in views]
    return Done({"campaigns": rows, "names": join_names(node, community, authors)})


def op_campaign_show(node: LocalNode, p: dict[str, Any]) -> Done:
    community = community_of(node, p.get("community"))
    v = _find(node, community, p["campaign"])
    out = _json(node, community, v, full=True)
    out["names"] = join_names(node, community, [v.entry.author, *(e.author for e in v.pledges)])
    return Done(out)


def op_campaign_pledge(node: LocalNode, p: dict[str, Any]) -> Done:
    community = community_of(node, p.get("community"))
    v = _find(node, community, p["campaign"])
    if node.now() > v.body.deadline_ms and not p.get("late"):
        raise RefusedError(
            "past_deadline",
            "the campaign's deadline has passed: its close may not name this pledge"
            " (pledge anyway with --late)",
        )
    entry = node.append(community, Pledge(campaign=v.entry.ref, amount=amount_of(p["amount"])))
    return Done({"pledge": eid(entry.id), "campaign": eid(v.entry.id)}, entry)


def op_campaign_close(node: LocalNode, p: dict[str, Any]) -> Done:
    """Close one of the member's campaigns, naming every counted pledge held."""
    community = community_of(node, p.get("community"))
    v = _find(node, community, p["campaign"])
    if v.entry.author != node.member:
        raise RefusedError("not_own_campaign", "a member can close only its own campaigns")
    if node.now() < v.body.deadline_ms and not p.get("early"):
        raise RefusedError(
            "before_deadline",
            "the campaign's deadline has not passed: pledges may still come (close now with"
            " --early)",
        )
    heads = dict(node.store.heads(community))
    # Witnessed: a close names only final pledges (§10.6); one not final yet
    # lapses like one not received yet.
    witnessed = node.community(community).finality == "witnessed"
    best: dict[MemberId, Entry] = {}
    for e in sorted(v.pledges, key=_amount, reverse=True):
        if witnessed and not node.is_final(community, e.ref):
            continue
        if _counts(heads, e) and e.ref not in v.withdrawn:
            best.setdefault(e.author, e)
    chosen = sorted(best.values(), key=_amount, reverse=True)[:MAX_PLEDGES]
    refs = tuple(sorted((e.ref for e in chosen), key=lambda r: r.author))
    entry = node.append(community, CampaignClose(campaign=v.entry.ref, pledges=refs))
    total = sum(map(_amount, chosen))
    return Done(
        {
            "close": eid(entry.id),
            "campaign": eid(v.entry.id),
            "pledges": len(refs),
            "pledged": total,
            "state": "succeeded" if total >= v.body.goal else "failed",
        },
        entry,
    )


def op_campaign_withdraw(node: LocalNode, p: dict[str, Any]) -> Done:
    """Take back the member's pledge: naming the campaign's close if one is
    held (it must not count the pledge), else as a lapse once the deadline
    has passed (docs/protocol.md §10.5)."""
    community = community_of(node, p.get("community"))
    v = _find(node, community, p["campaign"])
    mine = [e for e in v.pledges if e.author == node.member]
    if not mine:
        raise NotFoundError("you have no pledge to this campaign")
    close = _close_of(v, dict(node.store.heads(community)))
    if close is None and node.now() <= v.body.deadline_ms:
        raise RefusedError(
            "not_closed",
            "the campaign is neither closed nor past its deadline"
            f" ({render_ms(v.body.deadline_ms)}): the pledge stays reserved until then",
        )
    entry = node.append(
        community, Withdraw(pledge=mine[0].ref, close=None if close is None else close.ref)
    )
    return Done(
        {"withdraw": eid(entry.id), "pledge": eid(mine[0].id), "lapse": close is None}, entry
    )


def render_ms(ms: int) -> str:
    """A time in ms since 1970 as an ISO date and time, UTC (for messages)."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def pledge_totals(
    node: LocalNode,
    community: CommunityId,
    member: MemberId,
    pledges: list[RefRow] | None = None,
) -> dict[str, int]:
    """What ``member``'s counted pledges amount to (docs/protocol.md §10.3, §10.5):

    * ``reserved``: in flight, neither paid by a successful close nor
      withdrawn: capacity the member cannot spend;
    * ``lapsed``: taken back by a lapse that no held close beats: counted,
      but a close counting the pledge that arrives later would win;
    * ``lapse_undone``: taken back by a lapse that a held close counting the
      pledge beat (part of the ledger's ``Head.undone``).

    In a witnessed community "counted" means final, and nothing is undone.
    ``pledges``: the rows of ``member``'s pledges (``refs_from``, the whole
    log), if the caller read them.
    """
    store = node.store
    head = store.head(community, member)
    out = {"reserved": 0, "lapsed": 0, "lapse_undone": 0}
    if head is None:
        return out
    heads: dict[MemberId, Head | None] = {}

    def counts(r: RefRow) -> bool:
        """True if the entry ``r`` is made by counts (final, if witnessed)."""
        if head.witnessed:
            return node.is_final(community, Ref(r.by_author, r.by_seq, r.by_id))
        if r.by_author not in heads:
            heads[r.by_author] = store.head(community, r.by_author)
        h = heads[r.by_author]
        return h is not None and h.counts(r.by_seq)

    if pledges is None:
        pledges = store.refs_from(community, member, Kind.PLEDGE, head.frozen_at)
    elif head.frozen_at is not None:
        frozen_at = head.frozen_at
        pledges = [r for r in pledges if r.by_seq < frozen_at]
    for pledge in pledges:
        if not counts(pledge):
            continue
        paid = withdrawn = lapsed = False
        for kind in (Kind.CAMPAIGN_CLOSE, Kind.WITHDRAW):
            for r in store.refs_to(community, member, kind, pledge.by_seq, pledge.by_seq + 1):
                # A close's row names a pledge (with its amount) only if it succeeded.
                if r.target_id != pledge.by_id or not r.amount or not counts(r):
                    continue
                if kind is Kind.CAMPAIGN_CLOSE:
                    paid = True
                else:
                    withdrawn = True
                    lapsed = lapsed or _is_lapse(node, community, r)
        if paid:
            out["lapse_undone"] += pledge.amount if lapsed and not head.witnessed else 0
        elif lapsed:
            out["lapsed"] += pledge.amount
        elif not withdrawn:
            out["reserved"] += pledge.amount
    return out


def _is_lapse(node: LocalNode, community: CommunityId, row: Any) -> bool:
    stored = node.store.entry(community, row.by_author, row.by_seq, row.by_id)
    return (
        stored is not None and isinstance(stored.entry.body, Withdraw) and stored.entry.body.lapse
    )
