"""The lapse / close race of campaigns, as witnesses decide it.

docs/protocol.md §10.5: after its campaign's deadline a pledge may *lapse*
(its pledger signs a withdraw naming no close) while the campaign's author
signs a close counting it. In an optimistic community the close wins after
the fact (the ledger undoes the lapse). In a witnessed one the witnesses
decide before either counts, exactly as for an accept and a take-back of an
expiring transfer (docs/witness.md §3.5): an honest witness votes for at
most one of the two, and for a lapse only once its own clock is past the
deadline.

This module answers, for an entry X a witness is asked to lock, which
entries are X's **rivals** (the entries that exclude X):

* X a lapse of pledge P: every successful close naming P (by the author of
  P's campaign);
* X a successful close: the lapses of each pledge it names (by their
  pledgers). A failed close counts no pledge, so it has no rival.

Pure: it reads the witness's view (the entries it holds and its clock) and
nothing else; the witness checks its vote log against the rivals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from troc.crypto.sign import MemberId
from troc.protocol.entry import (
    Campaign,
    CampaignClose,
    CommunityId,
    Entry,
    EntryId,
    Kind,
    Pledge,
    Ref,
    Withdraw,
)

__all__ = ["BEFORE_DEADLINE_HERE", "VOTED_CLOSE", "VOTED_LAPSE", "Race", "campaign_race"]

#: Refusals of the witness (docs/witness.md §3.5): a lapse while its clock
#: is not past the deadline; one entry of a race whose rival it voted for.
BEFORE_DEADLINE_HERE = "before_deadline_here"
VOTED_CLOSE = "voted_close"
VOTED_LAPSE = "voted_lapse"


class RaceView(Protocol):
    """What :func:`campaign_race` reads: a part of the witness's view."""

    def get(self, community: CommunityId, ref: Ref) -> Entry | None: ...

    def now(self) -> int: ...

    def answers(
        self, community: CommunityId, author: MemberId, kind: Kind, transfer: EntryId
    ) -> list[Ref]: ...


@dataclass(frozen=True, slots=True)
class Race:
    """An entry in a lapse / close race: its rivals, the refusal code if
    the witness voted for one, and why it is too early (a lapse before the
    deadline by the witness's clock), if it is."""

    rivals: tuple[Ref, ...]
    voted: str
    early: str | None = None


def campaign_race(entry: Entry, view: RaceView, community: CommunityId) -> Race | None:
    """The race ``entry`` (held by the witness, so valid) takes part in, or
    None: it is neither a lapse nor a successful close."""
    body = entry.body
    if isinstance(body, Withdraw) and body.lapse:
        pledge = view.get(community, body.pledge)
        if pledge is None or not isinstance(pledge.body, Pledge):
            return None  # the ledger refused it already
        camp = view.get(community, pledge.body.campaign)
        if camp is None or not isinstance(camp.body, Campaign):
            return None
        deadline, now = camp.body.deadline_ms, view.now()
        early = None
        if now <= deadline:
            early = f"by this witness's clock ({now}) the deadline ({deadline}) has not passed"
        # A close's row names a pledge only if the close succeeded (it counts it).
        closes = view.answers(community, camp.author, Kind.CAMPAIGN_CLOSE, body.pledge.id)
        return Race(tuple(closes), VOTED_CLOSE, early)
    if isinstance(body, CampaignClose) and body.pledges:
        camp = view.get(community, body.campaign)
        pledges = [view.get(community, r) for r in body.pledges]
        if camp is None or not isinstance(camp.body, Campaign):
            return None
        total = sum(p.body.amount for p in pledges if p is not None and isinstance(p.body, Pledge))
        if total < camp.body.goal:
            return None  # failed: it counts no pledge
        lapses = []
        for r in body.pledges:
            for w in view.answers(community, r.author, Kind.WITHDRAW, r.id):
                held = view.get(community, w)
                if held is not None and isinstance(held.body, Withdraw) and held.body.lapse:
                    lapses.append(w)
        return Race(tuple(lapses), VOTED_LAPSE)
    return None
