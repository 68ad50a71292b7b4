"""Hypothesis strategies for troc's protocol tests: all of them, in one module.

Three families:

* plain values: amounts (good and bad), member ids, refs, bodies of every
  kind, whole signed entries, msgpack value trees;
* byte mutations of valid wire bytes, for the decoder fuzzing;
* histories: valid sets of entries from several members, built by a model run
  through :meth:`Ledger.prepare` on a reference node, optionally with forks,
  and arrival orders of them (shuffled, with duplicates).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from tests.helpers import World, key
from troc.crypto.sign import MemberId, SigningKey
from troc.errors import RefusedError
from troc.protocol.entry import (
    MAX_AMOUNT,
    MAX_SEQ,
    MAX_TAG,
    MAX_TAGS,
    Accept,
    Campaign,
    CampaignClose,
    CommunityId,
    Decline,
    Entry,
    EntryId,
    Genesis,
    Join,
    Offer,
    OfferClose,
    Pledge,
    Profile,
    Reclaim,
    Ref,
    Transfer,
    Vouch,
    Withdraw,
)

# -- plain values ------------------------------------------------------------

amounts = st.integers(1, MAX_AMOUNT)
#: Amounts every node must refuse: zero, negative, above 2**53 - 1 (all still
#: encodable as msgpack integers).
bad_amounts = st.one_of(
    st.just(0),
    st.integers(-(2**63), -1),
    st.just(MAX_AMOUNT + 1),
    st.integers(MAX_AMOUNT + 1, 2**64 - 1),
)
seeds = st.binary(min_size=32, max_size=32)
#: A few fixed keys: signing keys are costly to derive and their choice does
#: not matter to the rules, only their count.
test_keys = st.integers(0, 7).map(key)
member_ids = test_keys.map(lambda k: k.public)
entry_ids = st.binary(min_size=32, max_size=32).map(EntryId)
community_ids = st.binary(min_size=32, max_size=32).map(CommunityId)
timestamps = st.integers(0, MAX_AMOUNT)
refs = st.builds(Ref, member_ids, st.integers(1, MAX_SEQ), entry_ids)


def texts(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    # Short texts: length limits are tested at their edges in the unit tests;
    # here they would only slow every example down.
    return st.text(min_size=min_size, max_size=min(max_size, 24))


tags = st.lists(
    st.text(min_size=1, max_size=min(MAX_TAG, 12)), max_size=min(MAX_TAGS, 4), unique=True
).map(lambda t: tuple(sorted(t)))


@st.composite
def witnessed_rules(draw: st.DrawFn) -> dict[str, Any]:
    """Witness set, faults and quorum satisfying 2q >= n+f+1 and q <= n-f."""
    n = draw(st.integers(1, 7))
    f = draw(st.integers(0, (n - 1) // 3))
    q = draw(st.integers((n + f + 2) // 2, n - f))
    witnesses = draw(st.lists(member_ids, min_size=n, max_size=n, unique=True))
    return {
        "finality": "witnessed",
        "witnesses": tuple(sorted(witnesses)),
        "faults": f,
        "quorum": q,
    }


@st.composite
def genesis_bodies(draw: st.DrawFn) -> Genesis:
    rules = draw(st.just({}) | witnessed_rules())
    return Genesis(
        name=draw(texts(200, 1)),
        unit=draw(texts(40, 1)),
        credit_limit=draw(st.integers(0, MAX_AMOUNT)),
        admission=draw(st.sampled_from(["open", "vouch"])),
        ceiling=draw(st.none() | amounts),
        **rules,
    )


log_bodies = st.one_of(
    st.builds(Join, name=st.none() | texts(200), vouch=st.none() | refs),
    st.builds(
        Offer,
        side=st.sampled_from(["offer", "want"]),
        title=texts(200, 1),
        description=texts(4000),
        tags=tags,
        price=st.none() | amounts,
        expires_ms=st.none() | timestamps,
    ),
    st.builds(OfferClose, offer=refs),
    st.builds(Transfer, to=member_ids, amount=amounts, memo=texts(200), offer=st.none() | refs),
    st.builds(Accept, transfer=refs),
    st.builds(Decline, transfer=refs, reason=texts(200)),
    st.builds(Reclaim, decline=refs),
    st.builds(Vouch, member=member_ids, limit=st.none() | st.integers(0, MAX_AMOUNT)),
    st.builds(
        Profile,
        name=texts(200, 1),
        about=texts(1000),
        place=texts(200),
        languages=tags,
        contact=texts(200),
    ),
    st.builds(
        Campaign,
        title=texts(200, 1),
        goal=amounts,
        deadline_ms=timestamps,
        description=texts(4000),
        tags=tags,
        reward=texts(1000),
        min_pledge=st.none() | st.just(1),
    ),
    st.builds(Pledge, campaign=refs, amount=amounts),
    st.builds(
        CampaignClose,
        campaign=refs,
        # One pledge per pledger, sorted by pledger (docs/protocol.md §2.5).
        pledges=st.lists(refs, max_size=8, unique_by=lambda r: r.author).map(
            lambda rs: tuple(sorted(rs, key=lambda r: r.author))
        ),
    ),
    st.builds(Withdraw, pledge=refs, close=refs),
)


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    """Any well-formed, signed entry (not necessarily valid on a ledger)."""
    signer = draw(test_keys)
    if draw(st.integers(0, 8)) == 0:
        return Entry.create(
            signer,
            community=None,
            seq=0,
            prev=None,
            timestamp_ms=draw(timestamps),
            body=draw(genesis_bodies()),
        )
    seq = draw(st.integers(1, MAX_SEQ))
    return Entry.create(
        signer,
        community=draw(community_ids),
        seq=seq,
        prev=None if seq == 1 else draw(entry_ids),
        timestamp_ms=draw(timestamps),
        body=draw(log_bodies),
    )


def msgpack_values(max_depth: int = 6) -> st.SearchStrategy[Any]:
    """Value trees troc can encode: nil, bool, int (64-bit), str, bin, arrays,
    maps with str keys; at most ``max_depth`` containers deep."""
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.text(max_size=40),
        st.binary(max_size=40),
    )
    if max_depth == 0:
        return leaves
    children = st.deferred(lambda: msgpack_values(max_depth - 1))
    return st.one_of(
        leaves,
        st.lists(children, max_size=4),
        st.dictionaries(
            st.text(alphabet=string.ascii_letters + "éß✓", max_size=6), children, max_size=4
        ),
    )


# -- byte mutations ------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` after one to four random edits: bit flips, truncation,
    insertion, deletion, byte replacement."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "replace"]))
        if not out:
            op = "insert"
        pos = draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "flip":
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del out[pos:]
        elif op == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del out[pos : pos + draw(st.integers(1, 8))]
        else:
            out[pos] = draw(st.integers(0, 255))
    return bytes(out)


# -- histories -----------------------------------------------------------------

#: Operations of the history model: (op, actor index, other index, amount).
OPS = (
    "pay",
    "pay",
    "pay",
    "accept",
    "accept",
    "decline",
    "reclaim",
    "offer",
    "close",
    "vouch",
    "profile",
    "request",
    "pay_request",
    "refuse",
    "take_back",
    "take_back",
)
ops = st.tuples(st.sampled_from(OPS), st.integers(0, 7), st.integers(0, 7), st.integers(1, 120))


@dataclass
class History:
    """A valid set of entries and the reference node that made them."""

    world: World
    members: list[SigningKey]
    #: Expected fork point of each forked author.
    forks: dict[MemberId, int] = field(default_factory=dict)
    open_transfers: list[Entry] = field(default_factory=list)
    declines: list[Entry] = field(default_factory=list)
    offers: list[Entry] = field(default_factory=list)
    #: Requests made; ``paid`` maps a paid request's id to its transfer.
    requests: list[Entry] = field(default_factory=list)
    paid: dict[EntryId, Entry] = field(default_factory=dict)

    @property
    def genesis(self) -> Entry:
        return self.world.genesis

    @property
    def entries(self) -> list[Entry]:
        """Every entry after the genesis, in the order it was made."""
        return self.world.log

    def apply(self, op: str, i: int, j: int, amount: int) -> None:
        """Try one operation; the reference ledger refuses what is invalid.

        ``i`` picks the actor; for answers, reclaims and closes, ``j`` picks
        the transfer, decline or offer and the actor is whoever may act on it.
        """
        w, n = self.world, len(self.members)
        actor, other = self.members[i % n], self.members[j % n]
        try:
            if op == "pay" and actor is not other:
                # Some transfers carry an expiry of their own (§4.11).
                expires = w.now + amount * 100 if i % 3 == 0 else None
                self.open_transfers.append(w.pay(actor, other, amount, expires_ms=expires))
            elif op in ("accept", "decline") and self.open_transfers:
                t = self.open_transfers[j % len(self.open_transfers)]
                payee = self.member(t.body.to)  # type: ignore[union-attr]
                if op == "accept":
                    w.accept(payee, t)
                else:
                    self.declines.append(w.decline(payee, t))
                self.open_transfers.remove(t)
            elif op == "reclaim" and self.declines:
                d = self.declines[j % len(self.declines)]
                w.reclaim(self.member(d.body.transfer.author), d)  # type: ignore[union-attr]
                self.declines.remove(d)
            elif op == "offer":
                self.offers.append(w.offer(actor, title=f"offer {len(self.offers)}"))
            elif op == "close" and self.offers:
                o = self.offers[j % len(self.offers)]
                w.close(self.member(o.author), o)
                self.offers.remove(o)
            elif op == "vouch" and actor is not other:
                w.vouch(actor, other)
            elif op == "profile":
                self.profile(actor, f"m{i % n} v{amount}", back_ms=amount * 1000)
            elif op == "request" and actor is not other:
                self.requests.append(w.request(actor, other, amount, memo="please"))
            elif op == "take_back" and self.open_transfers:
                # Taken back transfers stay open: a later accept races it, and wins.
                t = self.open_transfers[j % len(self.open_transfers)]
                w.now += amount * 200  # time passes: 0.2 to 24 s
                w.take_back(self.member(t.author), t)
            elif op in ("pay_request", "refuse") and self.requests:
                # Paid or refused requests stay in the list: trying again is refused.
                q = self.requests[j % len(self.requests)]
                payer = self.member(q.body.to)  # type: ignore[union-attr]
                if op == "refuse":
                    w.refuse(payer, q)
                else:
                    t = w.pay_request(payer, q)
                    self.paid[q.id] = t
                    self.open_transfers.append(t)
        except RefusedError:
            pass  # overdraft, ceiling, frozen log: the model just moves on

    def profile(self, author: SigningKey, name: str, back_ms: int) -> Entry | None:
        """A profile by ``author`` stamped ``back_ms`` before the clock, so a
        later profile is often older by its timestamp (the latest is decided
        by seq alone). None if the author has no log or a frozen one."""
        w = self.world
        head = w.ledger.head(w.community, author.public)
        if head is None or head.frozen_at is not None:
            return None
        body = Profile(name=name, place=f"place {back_ms % 7}")
        entry = w.create(author, body, timestamp_ms=w.tick() - back_ms)
        outcome = w.ingest(entry)
        assert outcome.ok, outcome
        w.log.append(entry)
        return entry

    def member(self, public: MemberId) -> SigningKey:
        return next(m for m in self.members if m.public == public)

    def fork(self, i: int, j: int, k: int, amount: int) -> bool:
        """Make member i sign two different valid entries at its next seq
        (transfers to j and k where its balance allows, else offers).
        Returns False if it cannot (already forked)."""
        w, n = self.world, len(self.members)
        author = self.members[i % n]
        head = w.ledger.head(w.community, author.public)
        assert head is not None
        if head.frozen_at is not None:
            return False
        room = head.balance + head.limit
        bodies = []
        for x, label in ((j, "a"), (k, "b")):
            payee = self.members[x % n]
            if payee is author or room < 1:
                bodies.append(Offer(side="offer", title=f"fork {label}"))
            else:
                bodies.append(Transfer(to=payee.public, amount=min(amount, room), memo=label))
        first = w.add(author, bodies[0])
        second = w.create(author, bodies[1], seq=first.seq, prev=first.prev)
        outcome = w.ingest(second)
        assert outcome.ok, outcome
        assert outcome.fork, outcome
        w.log.append(second)
        self.forks[author.public] = first.seq
        self.open_transfers.extend(e for e in (first, second) if isinstance(e.body, Transfer))
        return True


@st.composite
def histories(
    draw: st.DrawFn,
    *,
    min_members: int = 3,
    max_members: int = 8,
    max_ops: int = 40,
    forks: int = 0,
) -> History:
    """A valid history of one community. Every member joins (by vouch from
    the founder where the genesis says so), then random operations run; with
    ``forks``, up to that many members (at least one) fork midway, and
    payees accept transfers from either branch."""
    n = draw(st.integers(min_members, max_members))
    members = [key(i) for i in range(n)]
    credit_limit = draw(st.sampled_from([20, 100]))
    admission = draw(st.sampled_from(["open", "vouch"]))
    world = World(
        members[0],
        credit_limit=credit_limit,
        admission=admission,
        ceiling=draw(st.none() | st.sampled_from([60, 200])),
        # Each entry moves the clock 1 s: transfers expire a few entries later.
        transfer_expiry_ms=draw(st.sampled_from([None, 1000, 3000, 8000])),
    )
    h = History(world, members)
    world.join(members[0])
    for m in members[1:]:
        if admission == "vouch":
            vouch = world.vouch(members[0], m, draw(st.none() | st.integers(0, credit_limit)))
            world.join(m, vouch)
        else:
            world.join(m)
    if not forks:
        for op in draw(st.lists(ops, min_size=max_ops // 2, max_size=max_ops)):
            h.apply(*op)
        return h
    for op in draw(st.lists(ops, min_size=max_ops // 6, max_size=max_ops // 2)):
        h.apply(*op)
    fork_payees: list[int] = []
    for _ in range(draw(st.integers(1, forks))):
        # The next forker: anyone not frozen, often someone who was paid
        # from a forked log (so frozen credits get frozen in turn).
        free = [i for i, m in enumerate(members) if m.public not in h.forks]
        paid = [i for i in fork_payees if i in free]
        i = (
            draw(st.sampled_from(paid))
            if paid and draw(st.booleans())
            else draw(st.sampled_from(free))
        )
        j, k = draw(st.integers(0, 7)), draw(st.integers(0, 7))
        h.fork(i, j, k, draw(st.integers(1, 60)))
        fork_payees += [j % n, k % n]
        # Payees take transfers from either branch, or not (yet).
        for t in list(h.open_transfers):
            if draw(st.booleans()):
                h.apply("accept", 0, h.open_transfers.index(t), 0)
        for op in draw(st.lists(ops, min_size=max_ops // 8, max_size=max_ops // 4)):
            h.apply(*op)
    return h


@st.composite
def arrivals(draw: st.DrawFn, h: History) -> list[Entry]:
    """The history's entries (genesis excluded) in any order, some repeated."""
    extra = draw(st.lists(st.sampled_from(h.entries), max_size=len(h.entries) // 3))
    return draw(st.permutations(h.entries + extra))
