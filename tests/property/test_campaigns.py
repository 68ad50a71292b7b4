"""Campaigns (docs/protocol.md §10) in every arrival order, on both backends.

A random history of campaigns, pledges, closes naming random subsets,
withdrawals, lapses (withdrawals naming no close, after the deadline) racing
the closes, payments, pledgers who fork to spend what they pledged, and
authors who fork to sign two closes, is fed to fresh nodes (in memory and on
SQLite) in a random order. Every node must reach the balances that an
independent reading of the entries gives (:func:`tests.helpers.counted_balances`), and:

* Σ counted balances + Σ counted in flight (transfers and pledges) = 0;
* no pledge credited twice: by a counted, successful close and by a counted
  withdrawal or lapse, or by two closes (a lapse that a counted close
  counting its pledge beats is undone, §10.5);
* no close credits anything below its goal;
* reserved capacity is never spent twice: no log's nominal balance (which
  counts its open pledges as spent) goes below its limit.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import T0, World, certify, counted_balances, key, witnessed_world
from troc.crypto.sign import MemberId, SigningKey
from troc.errors import RefusedError
from troc.node.store import Store
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import (
    Accept,
    AnyBody,
    Campaign,
    CampaignClose,
    Entry,
    Pledge,
    Ref,
    Transfer,
    Withdraw,
)
from troc.protocol.ledger import Ledger, Status

EXAMPLES = settings().max_examples
MEMBERS = [key(n) for n in range(5)]
# Weighted: closes that succeed and pledges left to withdraw need several pledges first.
OPS = (
    *("campaign", "pay", "fork_author"),
    *("fork_pledger",) * 2,
    *("pledge",) * 5,
    *("close", "withdraw") * 2,
    *("lapse",) * 3,
)


class Campaigns:
    """Builds a valid history on a :class:`World`, the node's way where it
    can (``prepare`` refusing what the rules refuse) and by hand for forks."""

    def __init__(self, witnessed: bool = False) -> None:
        self.w = (
            witnessed_world(credit_limit=100) if witnessed else World(MEMBERS[0], credit_limit=100)
        )
        #: Witnessed: every entry signed the node's way is certified (a fork's
        #: second entry is not), and kept here with its certificate.
        self.certified: list[tuple[Entry, bytes]] = []
        if witnessed:
            self.w.certifier = self.certify
        for m in MEMBERS:
            self.w.join(m)
        self.campaigns: list[Entry] = []
        self.pledges: list[Entry] = []
        self.closes: list[Entry] = []
        self.witnessed = witnessed
        #: Witnessed: members whose entry lost a lapse / close race (the
        #: witnesses certify one of the two, docs/witness.md §3.5): their
        #: log stops there, as the witnesses lock nothing more of it.
        self.stopped: set[MemberId] = set()

    def certify(self, entry: Entry) -> bytes:
        cert = certify(entry)
        self.certified.append((entry, cert))
        return cert

    def add(self, signer: SigningKey, body: AnyBody) -> Entry | None:
        if signer.public in self.stopped:
            return None
        try:
            if self.witnessed and self.loses(body):
                # Signed and valid, but never certified: its rival is.
                entry = self.w.ledger.prepare(signer, self.w.community, body, self.w.tick())
                assert self.w.ledger.ingest_entry(entry, self.w.now).ok
                self.w.log.append(entry)
                self.stopped.add(signer.public)
                return entry
            return self.w.add(signer, body)
        except RefusedError:
            return None  # refused by the rules (or the log is frozen): not signed

    def counting(self, close: CampaignClose) -> set[Ref]:
        """The pledges ``close`` counts: those it names, if they reach the goal."""
        by_ref = {p.ref: p for p in self.pledges}
        camp = next(c for c in self.campaigns if c.ref == close.campaign)
        assert isinstance(camp.body, Campaign)
        total = sum(by_ref[r].body.amount for r in close.pledges if r in by_ref)  # type: ignore[union-attr]
        return set(close.pledges) if total >= camp.body.goal else set()

    def loses(self, body: AnyBody) -> bool:
        """Witnessed: a lapse of a pledge that a certified close counts, or a
        close counting a pledge whose lapse is certified."""
        done = [e.body for e, _ in self.certified]
        if isinstance(body, Withdraw) and body.lapse:
            return any(
                body.pledge in self.counting(b) for b in done if isinstance(b, CampaignClose)
            )
        if isinstance(body, CampaignClose):
            lapsed = {b.pledge for b in done if isinstance(b, Withdraw) and b.lapse}
            return bool(self.counting(body) & lapsed)
        return False

    def of(self, camp: Entry) -> list[Entry]:
        return [p for p in self.pledges if p.body.campaign == camp.ref]  # type: ignore[union-attr]

    def close_body(self, camp: Entry, mask: int) -> CampaignClose:
        """A close of ``camp`` naming the pledges picked by ``mask``, one per pledger."""
        chosen: dict[MemberId, Entry] = {}
        for n, p in enumerate(self.of(camp)):
            if mask >> n & 1:
                chosen.setdefault(p.author, p)
        refs = tuple(p.ref for _, p in sorted(chosen.items()))
        return CampaignClose(campaign=camp.ref, pledges=refs)

    def fork(self, author: SigningKey, first: AnyBody, second: AnyBody) -> None:
        """``author`` signs ``first`` the node's way and ``second`` beside it."""
        a = self.add(author, first)
        if a is None:
            return
        # Stamped apart: two closes naming the same pledges still differ.
        b = self.w.create(author, second, seq=a.seq, prev=a.prev, timestamp_ms=a.timestamp_ms + 1)
        outcome = self.w.ingest(b)
        assert outcome.status is not Status.WAITING, outcome
        made = [a]
        if outcome.status is Status.ACCEPTED:  # else invalid on its prev (a pledge made twice)
            self.w.log.append(b)
            made.append(b)
        for e in made:
            if isinstance(e.body, Pledge):
                self.pledges.append(e)
            elif isinstance(e.body, CampaignClose):
                self.closes.append(e)

    def apply(self, op: str, i: int, j: int, amount: int, mask: int) -> None:
        m, other = MEMBERS[i % 5], MEMBERS[j % 5]
        closed = {c.body.campaign for c in self.closes}  # type: ignore[union-attr]
        # Mostly campaigns still open: pledges to closed ones just lapse.
        open_ = [c for c in self.campaigns if c.ref not in closed] or self.campaigns
        camp = open_[j % len(open_)] if open_ else None
        if op == "campaign":
            goal = amount % 60 + 1
            body = Campaign(title=f"c{len(self.campaigns)}", goal=goal, deadline_ms=T0)
            if (e := self.add(m, body)) is not None:
                self.campaigns.append(e)
        elif op == "pledge" and camp is not None:
            pledge = Pledge(campaign=camp.ref, amount=amount % 50 + 1)
            if (e := self.add(m, pledge)) is not None:
                self.pledges.append(e)
        elif op == "close" and camp is not None:
            author = next(k for k in MEMBERS if k.public == camp.author)
            if (e := self.add(author, self.close_body(camp, mask))) is not None:
                self.closes.append(e)
        elif op == "withdraw":
            for p in [p for p in self.pledges if p.author == m.public]:
                for c in self.closes:
                    self.add(m, Withdraw(pledge=p.ref, close=c.ref))
        elif op == "lapse":
            # Every campaign's deadline is T0, so every pledge may lapse: the
            # closes that count them (signed before or after) race it.
            if mask & 2:
                self.apply("pledge", i, j, amount, mask)
            for p in [p for p in self.pledges if p.author == m.public]:
                if self.add(m, Withdraw(pledge=p.ref)) is not None and mask & 1:
                    # The author, not holding the lapse, closes naming every pledge.
                    camp = next(c for c in self.campaigns if c.ref == p.body.campaign)  # type: ignore[union-attr]
                    author = next(k for k in MEMBERS if k.public == camp.author)
                    if (e := self.add(author, self.close_body(camp, -1))) is not None:
                        self.closes.append(e)
        elif op == "pay" and m is not other:
            if (t := self.add(m, Transfer(to=other.public, amount=amount))) is not None:
                self.add(other, Accept(transfer=t.ref))
        elif op == "fork_pledger" and camp is not None and camp.author != m.public:
            head = self.w.ledger.head(self.w.community, m.public)
            assert head is not None
            room = head.balance + head.limit
            if room >= 1 and other is not m:
                # The same capacity pledged on one branch and paid away on the other.
                pledge = Pledge(campaign=camp.ref, amount=min(amount, room))
                spend = Transfer(to=other.public, amount=room)
                # Either branch first: in a witnessed community the first is
                # certified, so the pledge may be the one that never is.
                self.fork(m, *((pledge, spend) if mask & 2 else (spend, pledge)))
                if mask & 1:  # and the campaign closes at once, naming every pledge
                    self.apply("close", i, j, amount, -1)
        elif op == "fork_author" and camp is not None:
            author = next(k for k in MEMBERS if k.public == camp.author)
            self.fork(author, self.close_body(camp, mask), self.close_body(camp, ~mask))


@st.composite
def campaign_histories(draw: st.DrawFn, witnessed: bool = False) -> Campaigns:
    h = Campaigns(witnessed)
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(OPS),
                st.integers(0, 4),
                st.integers(0, 7),
                st.integers(1, 120),
                st.integers(0, 255),
            ),
            min_size=4,
            max_size=40,
        ),
        label="steps",
    )
    h.apply("campaign", 0, 0, 60, 0)  # at least one campaign
    for step in steps:
        h.apply(*step)
    return h


def state(node: Ledger, community: bytes) -> tuple[dict[MemberId, int], dict[MemberId, int]]:
    balances, frozen = {}, {}
    for member, head in node.backend.heads(community):  # type: ignore[arg-type]
        balances[member] = head.counted_balance
        assert head.frozen_at is not None or head.balance >= -head.limit, "capacity spent twice"
        if head.frozen_at is not None:
            frozen[member] = head.frozen_at
    return balances, frozen


@settings(max_examples=max(EXAMPLES // 2, 10))
@given(campaign_histories(), st.data())
def test_campaigns_agree_in_any_order_on_both_backends(h: Campaigns, data: st.DataObject) -> None:
    w = h.w
    # Also asserts that no transfer or pledge is credited twice.
    expected, in_flight = counted_balances(w.log)
    assert sum(expected.values()) + in_flight == 0
    # No close credits below its goal (nominally: whatever forks say later).
    for c in h.closes:
        body = c.body
        assert isinstance(body, CampaignClose)
        stored = w.backend.entry(w.community, c.author, c.seq, c.id)
        prev = w.backend.entry(w.community, c.author, c.seq - 1, c.prev)  # type: ignore[arg-type]
        assert stored is not None
        assert prev is not None
        r = body.campaign
        camp = w.backend.entry(w.community, r.author, r.seq, r.id)
        assert camp is not None
        assert isinstance(camp.entry.body, Campaign)
        total = 0
        for r in body.pledges:
            p = w.backend.entry(w.community, r.author, r.seq, r.id)
            assert p is not None
            assert isinstance(p.entry.body, Pledge)
            total += p.entry.body.amount
        gained = stored.balance - prev.balance
        assert gained == (total if total >= camp.entry.body.goal else 0)
    source = state(w.ledger, w.community)
    assert source[0] == expected
    order = data.draw(st.permutations(w.log), label="order")
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "store.sqlite") as store:
        for node in (Ledger(MemoryBackend()), Ledger(store)):
            with store.transaction():
                assert node.ingest(w.genesis.wire, w.now).ok
                for e in order:
                    assert node.ingest(e.wire, w.now).status is not Status.REJECTED
                assert state(node, w.community) == source


@settings(max_examples=max(EXAMPLES // 4, 10))
@given(campaign_histories(witnessed=True), st.data())
def test_witnessed_campaigns_agree_in_any_order_on_both_backends(
    h: Campaigns, data: st.DataObject
) -> None:
    """docs/protocol.md §10.6: the same histories in a witnessed community,
    entries and certificates in any order. The counted (final) balances are
    those of the certified entries alone, read as if nothing else existed:
    a close names only final pledges, a withdraw needs a final close."""
    w = h.w
    expected, in_flight = counted_balances(e for e, _ in h.certified)
    assert sum(expected.values()) + in_flight == 0
    source = state(w.ledger, w.community)
    assert source[0] == {m: expected.get(m, 0) for m in source[0]}
    items = [e.wire for e in w.log] + [c for _, c in h.certified]
    order = data.draw(st.permutations(items), label="order")
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "store.sqlite") as store:
        for node in (Ledger(MemoryBackend()), Ledger(store)):
            with store.transaction():
                assert node.ingest(w.genesis.wire, w.now).ok
                certs = {c for _, c in h.certified}
                for item in order:
                    if item in certs:
                        assert node.ingest_certificate(item, w.now).ok
                    else:
                        assert node.ingest(item, w.now).status is not Status.REJECTED
                assert state(node, w.community) == source
