"""Ledger rules: one entry per rejection, with its exact reason; waiting,
duplicates, forks and the counted balance.

The world: an open community (credit limit 100) founded by A, with members
A, B and C joined. Most rejections are checked twice: :meth:`Ledger.prepare`
refuses to sign the entry (``RefusedError.reason``), and a ledger given the
entry signed anyway rejects it (``Outcome.reason``), with the same code.
"""

from __future__ import annotations

from typing import Any

import pytest

import troc.protocol.ledger as ledger_module
from tests.helpers import T0, World, fresh_ledger, key, make_genesis
from troc.errors import RefusedError
from troc.protocol.backend import MemoryBackend, WaitLimits
from troc.protocol.entry import (
    Accept,
    AnyBody,
    Decline,
    Entry,
    Join,
    Offer,
    OfferClose,
    Reclaim,
    Ref,
    Transfer,
    Vouch,
)
from troc.protocol.ledger import FUTURE_TOLERANCE_MS, Ledger, Outcome, Reason, Status

A, B, C, D = key(0), key(1), key(2), key(3)


@pytest.fixture
def w() -> World:
    world = World(A, credit_limit=100)
    for member in (A, B, C):
        world.join(member)
    return world


def refused(w: World, signer: Any, body: AnyBody, reason: Reason) -> Outcome:
    """``prepare`` refuses ``body`` for ``signer``; signed anyway, it is rejected."""
    with pytest.raises(RefusedError) as info:
        w.ledger.prepare(signer, w.community, body, w.now)
    assert info.value.reason == reason.value
    return rejected(w, w.create(signer, body), reason)


def rejected(w: World, entry: Entry | bytes, reason: Reason, now_ms: int | None = None) -> Outcome:
    outcome = w.ingest(entry, now_ms)
    assert outcome.status is Status.REJECTED, outcome
    assert outcome.reason is reason, outcome.detail
    assert not outcome.ok
    return outcome


# -- a valid history ---------------------------------------------------------------


def test_accepted_chain(w: World) -> None:
    bread = w.offer(B, "Bread")
    t1 = w.pay(A, B, 30, memo="two loaves", offer=bread.ref)
    w.accept(B, t1)
    t2 = w.pay(A, C, 20)
    d2 = w.decline(C, t2)
    assert w.balance(A) == -50
    w.reclaim(A, d2)
    w.close(B, bread)
    w.vouch(A, D)  # allowed in an open community, and changes nothing
    assert w.balances() == {A.public: -30, B.public: 30, C.public: 0}
    # Heads follow each log.
    head = w.ledger.head(w.community, A.public)
    assert head is not None
    assert (head.seq, head.balance, head.limit, head.frozen_at) == (5, -30, 100, None)


def test_transfer_to_a_key_that_has_not_joined(w: World) -> None:
    """Nothing requires the payee to have joined yet: it accepts after joining."""
    t = w.pay(A, D, 10)
    w.join(D)
    w.accept(D, t)
    assert w.balance(D) == 10


def test_transfer_may_name_a_closed_offer(w: World) -> None:
    bread = w.offer(B)
    w.close(B, bread)
    w.pay(A, B, 5, offer=bread.ref)


# -- which community ------------------------------------------------------------------


def test_unknown_community(w: World) -> None:
    rejected(
        w,
        w.raw(A, "offer", Offer("offer", "x").to_wire(), community=bytes(32)),
        Reason.UNKNOWN_COMMUNITY,
    )


def test_entry_of_another_community(w: World) -> None:
    other = World(B, name="Other valley")
    join = other.join(B)
    rejected(w, join, Reason.UNKNOWN_COMMUNITY)
    # The node following both takes it.
    assert w.ingest(other.genesis).status is Status.ACCEPTED
    assert w.ingest(join).status is Status.ACCEPTED


# -- the log link ------------------------------------------------------------------------


def test_broken_prev_link(w: World) -> None:
    """prev nil after seq 1 is rejected; a prev naming an entry nobody holds
    (a broken link, or a fork branch not seen yet) waits for exactly that
    entry, since rejecting it would make the verdict depend on arrival order."""
    w.offer(A)  # A: seq 2
    rejected(w, w.raw(A, "offer", Offer("offer", "x").to_wire(), prev=None), Reason.BAD_PREV)
    wire = w.raw(A, "offer", Offer("offer", "x").to_wire(), prev=bytes(32))
    outcome = w.ingest(wire)
    assert outcome.status is Status.WAITING
    assert [(r.author, r.seq, r.id) for r in outcome.missing] == [(A.public, 2, bytes(32))]


def test_seq_gap_waits_for_the_missing_entry(w: World) -> None:
    e2, e3 = w.offer(A, "two"), w.offer(A, "three")
    node = fresh_ledger(w.genesis)
    assert node.ingest(w.log[0].wire, T0).status is Status.ACCEPTED  # A's join
    waiting = node.ingest(e3.wire, T0)
    assert waiting.status is Status.WAITING
    assert waiting.missing == (Ref(A.public, 2, e2.id),)
    assert not waiting.ok
    assert node.ingest(e3.wire, T0).status is Status.WAITING  # again: still parked, once
    assert node.backend.waiting_count() == 1  # type: ignore[attr-defined]
    done = node.ingest(e2.wire, T0)
    assert done.status is Status.ACCEPTED
    assert done.released == (e3,)
    assert node.head(w.community, A.public).seq == 3  # type: ignore[union-attr]
    assert node.backend.waiting_count() == 0  # type: ignore[attr-defined]


def test_release_cascades_in_order(w: World) -> None:
    """An accept waits for a transfer, which waits for its prev: storing the
    prev releases both, in dependency order."""
    o = w.offer(A)
    t = w.pay(A, B, 10)
    a = w.accept(B, t)
    node = fresh_ledger(w.genesis)
    for join in w.log[:3]:
        node.ingest(join.wire, T0)
    assert node.ingest(a.wire, T0).missing == (t.ref,)
    assert node.ingest(t.wire, T0).missing == (o.ref,)
    assert node.ingest(o.wire, T0).released == (t, a)
    assert dict(node.balances(w.community)) == w.balances()


def test_identical_repeat_is_a_duplicate(w: World) -> None:
    t = w.pay(A, B, 10)
    again = w.ingest(t)
    assert again.status is Status.DUPLICATE
    assert again.ok
    assert w.ingest(w.genesis).status is Status.DUPLICATE
    assert w.balance(A) == -10


def test_repeat_with_different_content_is_a_fork(w: World) -> None:
    """Two entries at one (author, seq): not a rejection, a fork. Both are
    kept, the pair is the proof, and the author's log stops counting there."""
    first = w.pay(A, B, 10)
    second = w.create(A, Transfer(to=C.public, amount=10), seq=first.seq, prev=first.prev)
    outcome = w.ingest(second)
    assert outcome.status is Status.ACCEPTED
    assert outcome.fork
    proof = w.backend.forks[(w.community, A.public, first.seq)]
    assert proof == (first.wire, second.wire)
    head = w.ledger.head(w.community, A.public)
    assert head is not None
    assert (head.seq, head.id, head.frozen_at) == (first.seq, first.id, first.seq)
    assert w.balance(A) == 0  # neither transfer counts
    # A third entry at the seq: no new proof, still accepted.
    third = w.create(A, Offer("offer", "x"), seq=first.seq, prev=first.prev)
    assert w.ingest(third).fork is False
    # The frozen author can no longer prepare entries.
    with pytest.raises(RefusedError) as info:
        w.ledger.prepare(A, w.community, Offer("offer", "y"), w.now)
    assert info.value.reason == "frozen"


def test_an_invalid_sibling_proves_nothing(w: World) -> None:
    """Only a second *valid* entry at one seq records a fork: an invalid one
    is rejected whichever arrives first, so the verdict cannot depend on
    arrival order (see test_fork_by_invalid_sibling_is_order_independent)."""
    first = w.pay(A, B, 10)
    bad = w.create(A, Transfer(to=C.public, amount=500), seq=first.seq, prev=first.prev)
    outcome = rejected(w, bad, Reason.OVERDRAFT)
    assert not outcome.fork
    assert w.ledger.head(w.community, A.public).frozen_at is None  # type: ignore[union-attr]


# -- time --------------------------------------------------------------------------------


def test_far_future_timestamp(w: World) -> None:
    limit = w.now + FUTURE_TOLERANCE_MS
    late = w.create(A, Offer("offer", "later"), timestamp_ms=limit + 1)
    rejected(w, late, Reason.FUTURE_TIMESTAMP)
    assert FUTURE_TOLERANCE_MS == 10 * 60 * 1000
    # The same bytes are fine once the receiver's clock has caught up.
    assert w.ingest(late, now_ms=w.now + 1).status is Status.ACCEPTED
    # Exactly at the tolerance: accepted.
    edge = w.create(A, Offer("offer", "edge"), timestamp_ms=limit)
    assert w.ingest(edge).status is Status.ACCEPTED


def test_timestamps_need_not_increase(w: World) -> None:
    w.offer(A)
    assert w.ingest(w.create(A, Offer("offer", "old"), timestamp_ms=0)).status is Status.ACCEPTED


# -- joins and vouches --------------------------------------------------------------------


def test_join_not_first(w: World) -> None:
    refused(w, D, Transfer(to=A.public, amount=5), Reason.JOIN_FIRST)
    refused(w, D, Offer("offer", "x"), Reason.JOIN_FIRST)


def test_second_join(w: World) -> None:
    refused(w, A, Join(), Reason.JOIN_FIRST)


def test_join_with_vouch_in_open_community(w: World) -> None:
    v = w.vouch(A, D)
    refused(w, D, Join(vouch=v.ref), Reason.BAD_VOUCH)


@pytest.fixture
def vw() -> World:
    """A community that admits by vouches: limit 100, founder A joined."""
    world = World(A, credit_limit=100, admission="vouch")
    world.join(A)  # the founder needs no vouch
    return world


def test_join_without_vouch(vw: World) -> None:
    refused(vw, B, Join(), Reason.BAD_VOUCH)


def test_join_with_vouch_for_someone_else(vw: World) -> None:
    v = vw.vouch(A, C)
    refused(vw, B, Join(vouch=v.ref), Reason.BAD_VOUCH)


def test_join_naming_something_else(vw: World) -> None:
    o = vw.offer(A)
    refused(vw, B, Join(vouch=o.ref), Reason.BAD_VOUCH)


def test_valid_vouch_sets_the_limit(vw: World) -> None:
    v = vw.vouch(A, B, limit=30)
    vw.join(B, v)
    assert vw.ledger.head(vw.community, B.public).limit == 30  # type: ignore[union-attr]
    refused(vw, B, Transfer(to=A.public, amount=31), Reason.OVERDRAFT)
    vw.pay(B, A, 30)
    # Without a limit, the vouch grants the community's.
    v2 = vw.vouch(A, C)
    vw.join(C, v2)
    assert vw.ledger.head(vw.community, C.public).limit == 100  # type: ignore[union-attr]
    # A vouched member may vouch in turn.
    vw.join(D, vw.vouch(B, D, limit=0))
    refused(vw, D, Transfer(to=A.public, amount=1), Reason.OVERDRAFT)


def test_join_waits_for_its_vouch(vw: World) -> None:
    v = vw.vouch(A, B)
    join = vw.create(B, Join(vouch=v.ref))
    node = fresh_ledger(vw.genesis)
    node.ingest(vw.log[0].wire, T0)
    assert node.ingest(join.wire, T0).missing == (v.ref,)
    assert node.ingest(v.wire, T0).released == (join,)


def test_vouch_for_oneself(vw: World) -> None:
    refused(vw, A, Vouch(member=A.public), Reason.BAD_VOUCH)


def test_vouch_above_the_community_limit(vw: World) -> None:
    refused(vw, A, Vouch(member=B.public, limit=101), Reason.BAD_VOUCH)
    vw.vouch(A, B, limit=100)


# -- transfers ------------------------------------------------------------------------------


def test_self_payment(w: World) -> None:
    refused(w, A, Transfer(to=A.public, amount=5), Reason.SELF_PAYMENT)


def test_overdraft(w: World) -> None:
    refused(w, A, Transfer(to=B.public, amount=101), Reason.OVERDRAFT)
    w.pay(A, B, 60)
    refused(w, A, Transfer(to=B.public, amount=41), Reason.OVERDRAFT)
    w.pay(A, C, 40)
    assert w.balance(A) == -100
    refused(w, A, Transfer(to=B.public, amount=1), Reason.OVERDRAFT)


def test_zero_credit_limit() -> None:
    w = World(A, credit_limit=0)
    w.join(A)
    refused(w, A, Transfer(to=B.public, amount=1), Reason.OVERDRAFT)


def test_transfer_naming_a_non_offer(w: World) -> None:
    t = w.pay(B, C, 1)
    refused(w, A, Transfer(to=B.public, amount=5, offer=t.ref), Reason.NOT_AN_OFFER)


# -- answers: accept and decline ---------------------------------------------------------------


def test_double_accept(w: World) -> None:
    t = w.pay(A, B, 10)
    w.accept(B, t)
    refused(w, B, Accept(transfer=t.ref), Reason.ALREADY_ANSWERED)
    assert w.balance(B) == 10


def test_accept_then_decline(w: World) -> None:
    t = w.pay(A, B, 10)
    w.accept(B, t)
    refused(w, B, Decline(transfer=t.ref), Reason.ALREADY_ANSWERED)


def test_decline_then_accept(w: World) -> None:
    t = w.pay(A, B, 10)
    w.decline(B, t)
    refused(w, B, Accept(transfer=t.ref), Reason.ALREADY_ANSWERED)
    refused(w, B, Decline(transfer=t.ref), Reason.ALREADY_ANSWERED)


def test_accept_a_transfer_to_someone_else(w: World) -> None:
    t = w.pay(A, B, 10)
    refused(w, C, Accept(transfer=t.ref), Reason.NOT_PAYEE)
    refused(w, A, Accept(transfer=t.ref), Reason.NOT_PAYEE)  # the payer itself
    refused(w, C, Decline(transfer=t.ref), Reason.NOT_PAYEE)


def test_accept_a_non_transfer(w: World) -> None:
    o = w.offer(A)
    refused(w, B, Accept(transfer=o.ref), Reason.NOT_A_TRANSFER)
    refused(w, B, Decline(transfer=o.ref), Reason.NOT_A_TRANSFER)


def test_accept_waits_for_its_transfer(w: World) -> None:
    t = w.create(A, Transfer(to=B.public, amount=10))
    accept = w.create(B, Accept(transfer=t.ref))
    outcome = w.ingest(accept)
    assert outcome.status is Status.WAITING
    assert outcome.missing == (t.ref,)
    with pytest.raises(RefusedError) as info:
        w.ledger.prepare(B, w.community, Accept(transfer=t.ref), w.now)
    assert info.value.reason == "missing"
    assert w.ingest(t).released == (accept,)


def test_ceiling() -> None:
    w = World(A, credit_limit=100, ceiling=50)
    for m in (A, B, C):
        w.join(m)
    t1, t2, t3 = w.pay(A, C, 40), w.pay(B, C, 10), w.pay(B, C, 1)
    w.accept(C, t1)
    w.accept(C, t2)  # exactly at the ceiling
    assert w.balance(C) == 50
    refused(w, C, Accept(transfer=t3.ref), Reason.OVER_CEILING)
    w.decline(C, t3)  # declining is always possible


def test_reclaim_may_pass_the_ceiling() -> None:
    """Only accepts are checked against the ceiling: a reclaim returns the
    payer's own units, even above it (else they would stay in flight)."""
    w = World(A, credit_limit=100, ceiling=50)
    for m in (A, B, C):
        w.join(m)
    t = w.pay(A, B, 30)
    w.accept(A, w.pay(C, A, 50))
    w.accept(A, w.pay(B, A, 30))
    assert w.balance(A) == 50
    w.reclaim(A, w.decline(B, t))
    assert w.balance(A) == 80


def test_balances_stay_in_range_without_a_ceiling() -> None:
    """With no ceiling and the largest credit limit, many payers could push
    one balance past any integer a store holds: accepts and reclaims stop at
    MAX_BALANCE (2**53 - 1), the bound itself included."""
    top = ledger_module.MAX_BALANCE
    w = World(A, credit_limit=top)
    for m in (A, B, C, D):
        w.join(m)
    t1, t2 = w.pay(A, C, top), w.pay(B, C, 1)
    w.accept(C, t1)
    assert w.balance(C) == top  # the bound itself is a balance
    refused(w, C, Accept(transfer=t2.ref), Reason.BALANCE_RANGE)
    d2 = w.decline(C, t2)  # declining is always possible
    # A reclaim is held to the same bound: B is paid up to the top first.
    w.accept(B, w.pay(C, B, top))
    w.accept(B, w.pay(D, B, 1))
    assert w.balance(B) == top
    refused(w, B, Reclaim(decline=d2.ref), Reason.BALANCE_RANGE)
    # After spending one unit, the same reclaim fits exactly.
    w.pay(B, D, 1)
    w.reclaim(B, d2)
    assert w.balance(B) == top
    # The low side: the credit limit already keeps a balance >= -top.
    assert w.balance(A) == -top
    refused(w, A, Transfer(to=B.public, amount=1), Reason.OVERDRAFT)


# -- reclaims -----------------------------------------------------------------------------------


def test_reclaim_without_decline(w: World) -> None:
    """A reclaim must name a decline; naming the transfer itself is refused."""
    t = w.pay(A, B, 10)
    refused(w, A, Reclaim(decline=t.ref), Reason.NOT_A_DECLINE)
    a = w.accept(B, t)
    refused(w, A, Reclaim(decline=a.ref), Reason.NOT_A_DECLINE)


def test_reclaim_of_someone_elses_transfer(w: World) -> None:
    t = w.pay(B, C, 10)
    d = w.decline(C, t)
    refused(w, A, Reclaim(decline=d.ref), Reason.NOT_PAYER)
    refused(w, C, Reclaim(decline=d.ref), Reason.NOT_PAYER)  # the payee neither
    w.reclaim(B, d)


def test_reclaim_twice(w: World) -> None:
    t = w.pay(A, B, 10)
    d = w.decline(B, t)
    w.reclaim(A, d)
    refused(w, A, Reclaim(decline=d.ref), Reason.ALREADY_RECLAIMED)
    assert w.balance(A) == 0


# -- offers ------------------------------------------------------------------------------------


def test_close_another_members_offer(w: World) -> None:
    o = w.offer(B)
    refused(w, A, OfferClose(offer=o.ref), Reason.NOT_OWN_OFFER)


def test_close_twice(w: World) -> None:
    o = w.offer(B)
    w.close(B, o)
    refused(w, B, OfferClose(offer=o.ref), Reason.ALREADY_CLOSED)


def test_close_a_non_offer(w: World) -> None:
    t = w.pay(B, C, 1)
    refused(w, B, OfferClose(offer=t.ref), Reason.NOT_AN_OFFER)


# -- resource bounds ----------------------------------------------------------------------------


def test_waiting_set_is_bounded(w: World) -> None:
    """More bounds in tests/node/test_waiting.py, on both backends."""
    e2, e3, e4 = w.offer(A, "2"), w.offer(A, "3"), w.offer(A, "4")
    node = Ledger(MemoryBackend(WaitLimits(per_author=1)))
    node.ingest(w.genesis.wire, T0)
    for join in w.log[:3]:
        node.ingest(join.wire, T0)
    assert node.ingest(e3.wire, T0).status is Status.WAITING
    outcome = node.ingest(e4.wire, T0)
    assert (outcome.status, outcome.reason) == (Status.REJECTED, Reason.WAITING_FULL)
    assert node.ingest(e2.wire, T0).released == (e3,)


def test_entries_far_beyond_a_fork(w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A frozen author may add MAX_BEYOND_FORK entries past its fork point
    (kept so references into them can be checked), no more."""
    assert ledger_module.MAX_BEYOND_FORK == 1000
    monkeypatch.setattr(ledger_module, "MAX_BEYOND_FORK", 3)
    first = w.offer(A, "a")
    w.ingest(w.create(A, Offer("offer", "b"), seq=first.seq, prev=first.prev))
    prev = first
    for i in range(3):
        prev = w.create(A, Offer("offer", f"more {i}"), seq=prev.seq + 1, prev=prev.id)
        assert w.ingest(prev).status is Status.ACCEPTED
    extra = w.create(A, Offer("offer", "too far"), seq=prev.seq + 1, prev=prev.id)
    rejected(w, extra, Reason.FORK_LIMIT)


# -- forks and the counted balance ----------------------------------------------------------------


def test_credit_from_a_frozen_transfer_does_not_count(w: World) -> None:
    """A signs two transfers at one seq; B and C each accept one. Neither
    debit nor credit counts; the nominal balances still show them."""
    w.pay(A, C, 5)  # below the fork: counts
    x = w.pay(A, B, 30)
    y = w.create(A, Transfer(to=C.public, amount=40), seq=x.seq, prev=x.prev)
    assert w.ingest(y).fork
    w.accept(B, x)
    w.accept(C, y)
    assert w.balances() == {A.public: -5, B.public: 0, C.public: 0}
    nominal = {m: h.balance for m, h in w.backend.heads(w.community)}
    assert nominal == {A.public: -35, B.public: 30, C.public: 40}
    assert sum(w.balances().values()) + 5 == 0  # 5 still in flight to C


@pytest.mark.parametrize("accept_first", [True, False])
def test_fork_found_after_the_accept(w: World, accept_first: bool) -> None:
    """The payee's credit stops counting whether the fork is learnt before
    or after its accept."""
    x = w.pay(A, B, 30)
    y = w.create(A, Transfer(to=C.public, amount=40), seq=x.seq, prev=x.prev)
    acc = w.create(B, Accept(transfer=x.ref))
    if accept_first:
        assert w.ingest(acc).status is Status.ACCEPTED
        assert w.balance(B) == 30
        assert w.ingest(y).fork
    else:
        assert w.ingest(y).fork
        assert w.ingest(acc).status is Status.ACCEPTED
    assert w.balance(B) == 0
    assert w.balance(A) == 0


def test_earlier_fork_moves_the_freeze_down(w: World) -> None:
    e2 = w.offer(A, "2")
    e3 = w.pay(A, B, 10)
    w.accept(B, e3)
    f3 = w.create(A, Offer("offer", "3b"), seq=3, prev=e2.id)
    assert w.ingest(f3).fork
    assert w.ledger.head(w.community, A.public).frozen_at == 3  # type: ignore[union-attr]
    f2 = w.create(A, Offer("offer", "2b"), seq=2, prev=e2.prev)
    assert w.ingest(f2).fork
    head = w.ledger.head(w.community, A.public)
    assert head is not None
    assert (head.frozen_at, head.cut_balance) == (2, 0)
    assert w.balance(B) == 0


# -- arrival order must not matter -------------------------------------------------------------


def _nodes_after(genesis: Entry, orders: list[list[Entry]]) -> list[Ledger]:
    nodes = []
    for order in orders:
        node = fresh_ledger(genesis)
        for e in order:
            node.ingest(e.wire, T0 + 10**6)
        nodes.append(node)
    return nodes


def test_fork_by_invalid_sibling_is_order_independent(w: World) -> None:
    """A signs a valid transfer X and, at the same seq, an overdrawing X'.
    A node that gets X then X' records the fork (X' is rejected but still
    proves it) and freezes A; a node that gets X' first rejects it and
    forgets it, then stores X: no fork, A's debit counts. Counted balances
    differ between honest nodes holding the same entries."""
    x = w.pay(A, B, 50)
    x_bad = w.create(A, Transfer(to=C.public, amount=500), seq=x.seq, prev=x.prev)
    base = w.log[:3]
    one, two = _nodes_after(w.genesis, [[*base, x, x_bad], [*base, x_bad, x]])
    assert dict(one.balances(w.community)) == dict(two.balances(w.community))


def test_branch_extension_arriving_before_its_sibling(w: World) -> None:
    """A forks at seq 2 (X, X') and extends X' with a transfer Y to C; C
    accepts Y and then pays B. A node that gets Y before X' holds X at seq 2,
    so Y's prev "does not match": Y is rejected for good, C's accept waits
    for Y forever, and so does C's payment to B. Another node, given X'
    first, stores all of it. Same entries, different counted balance for C
    (an honest member)."""
    x = w.pay(A, B, 10)
    x2 = w.create(A, Offer("offer", "other branch"), seq=x.seq, prev=x.prev)
    y = Entry.create(
        A,
        community=w.community,
        seq=x.seq + 1,
        prev=x2.id,
        timestamp_ms=w.now,
        body=Transfer(to=C.public, amount=5),
    )
    c_accept = Entry.create(
        C,
        community=w.community,
        seq=2,
        prev=w.log[2].id,
        timestamp_ms=w.now,
        body=Accept(transfer=y.ref),
    )
    c_pays = Entry.create(
        C,
        community=w.community,
        seq=3,
        prev=c_accept.id,
        timestamp_ms=w.now,
        body=Transfer(to=B.public, amount=7),
    )
    base = w.log[:3]
    one, two = _nodes_after(
        w.genesis, [[*base, x, y, x2, c_accept, c_pays], [*base, x, x2, y, c_accept, c_pays]]
    )
    assert dict(one.balances(w.community)) == dict(two.balances(w.community))


def test_genesis_must_come_first(w: World) -> None:
    """A node follows a community once it holds its genesis; entries before
    it are rejected, not parked."""
    node = Ledger(MemoryBackend())
    rejected_outcome = node.ingest(w.log[0].wire, T0)
    assert rejected_outcome.reason is Reason.UNKNOWN_COMMUNITY
    assert node.ingest(w.genesis.wire, T0).status is Status.ACCEPTED
    assert node.ingest(w.log[0].wire, T0).status is Status.ACCEPTED


def test_make_genesis_matches_world() -> None:
    assert make_genesis(A) == World(A).genesis
