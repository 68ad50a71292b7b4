"""Campaign rules (docs/protocol.md §10): one test per rejection with its
exact reason, success and failure, the race at the close, and forks of the
pledger and of the author, on the memory backend and on SQLite.

The world: an open community (credit limit 100) founded by A; B, C and D
joined. A runs the campaigns unless said otherwise.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import T0, World, certify, fresh_ledger, key, witnessed_world
from troc.errors import CodecError, RefusedError
from troc.node.store import Store
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import (
    MAX_PLEDGES,
    MAX_SEQ,
    Campaign,
    CampaignClose,
    Entry,
    EntryId,
    Pledge,
    Ref,
    Transfer,
    Withdraw,
)
from troc.protocol.ledger import Ledger, Reason, Status
from troc.protocol.statement import build_bundle, verify_bundle

A, B, C, D = key(0), key(1), key(2), key(3)


@pytest.fixture
def w() -> World:
    world = World(A, credit_limit=100)
    for member in (A, B, C, D):
        world.join(member)
    return world


def campaign(w: World, author: Any = A, goal: int = 100, **kw: Any) -> Entry:
    return w.add(author, Campaign(title="Oven", goal=goal, deadline_ms=T0 + 10**6, **kw))


def pledge(w: World, who: Any, camp: Entry, amount: int) -> Entry:
    return w.add(who, Pledge(campaign=camp.ref, amount=amount))


def close(w: World, camp: Entry, *pledges: Entry, author: Any = A) -> Entry:
    refs = tuple(sorted((p.ref for p in pledges), key=lambda r: r.author))
    return w.add(author, CampaignClose(campaign=camp.ref, pledges=refs))


def withdraw(w: World, who: Any, p: Entry, closed: Entry) -> Entry:
    return w.add(who, Withdraw(pledge=p.ref, close=closed.ref))


def lapse(w: World, who: Any, p: Entry) -> Entry:
    """A withdraw naming no close (§10.5): valid once stamped after the deadline."""
    return w.add(who, Withdraw(pledge=p.ref))


def past_deadline(w: World, camp: Entry) -> None:
    """The next entry ``w`` signs is stamped just after ``camp``'s deadline."""
    assert isinstance(camp.body, Campaign)
    w.now = max(w.now, camp.body.deadline_ms)


def refused(w: World, signer: Any, body: Any, reason: Reason) -> None:
    """``prepare`` refuses ``body``; signed anyway, the ledger rejects it alike."""
    with pytest.raises(RefusedError) as info:
        w.ledger.prepare(signer, w.community, body, w.now)
    assert info.value.reason == reason.value
    outcome = w.ingest(w.create(signer, body))
    assert outcome.status is Status.REJECTED, outcome
    assert outcome.reason is reason, outcome.detail


def test_success_pays_every_counted_pledge_with_no_action_by_pledgers(w: World) -> None:
    camp = campaign(w, goal=100)
    pb, pc, pd = pledge(w, B, camp, 50), pledge(w, C, camp, 40), pledge(w, D, camp, 30)
    # Reserved: debited at once, in flight, nobody credited yet.
    assert w.balances() == {A.public: 0, B.public: -50, C.public: -40, D.public: -30}
    close(w, camp, pb, pc, pd)  # over the goal: every pledge named counts, in full
    assert w.balances() == {A.public: 120, B.public: -50, C.public: -40, D.public: -30}
    assert sum(w.balances().values()) == 0


def test_failure_credits_nothing_and_every_pledger_takes_its_pledge_back(w: World) -> None:
    camp = campaign(w, goal=100)
    pb, pc = pledge(w, B, camp, 50), pledge(w, C, camp, 40)
    closed = close(w, camp, pb, pc)  # 90 < 100
    assert w.balance(A) == 0
    withdraw(w, B, pb, closed)
    withdraw(w, C, pc, closed)
    assert w.balances() == {A.public: 0, B.public: 0, C.public: 0, D.public: 0}


def test_a_pledge_left_out_of_a_successful_close_lapses(w: World) -> None:
    camp = campaign(w, goal=50)
    pb, pc = pledge(w, B, camp, 50), pledge(w, C, camp, 40)
    closed = close(w, camp, pb)
    withdraw(w, C, pc, closed)
    refused(w, B, Withdraw(pledge=pb.ref, close=closed.ref), Reason.PLEDGE_COUNTED)
    assert w.balances() == {A.public: 50, B.public: -50, C.public: 0, D.public: 0}


def test_reserved_capacity_cannot_be_spent(w: World) -> None:
    camp = campaign(w, goal=100)
    pledge(w, B, camp, 80)
    refused(w, B, Transfer(to=C.public, amount=21), Reason.OVERDRAFT)
    w.pay(B, C, 20)  # exactly to the limit
    refused(w, C, Pledge(campaign=camp.ref, amount=101), Reason.OVERDRAFT)


def test_pledge_rejections(w: World) -> None:
    camp = campaign(w, goal=100, min_pledge=10)
    offer = w.offer(B)
    refused(w, C, Pledge(campaign=offer.ref, amount=10), Reason.NOT_A_CAMPAIGN)
    refused(w, A, Pledge(campaign=camp.ref, amount=10), Reason.SELF_PAYMENT)
    refused(w, C, Pledge(campaign=camp.ref, amount=9), Reason.BELOW_MINIMUM)
    pledge(w, C, camp, 10)
    refused(w, C, Pledge(campaign=camp.ref, amount=10), Reason.ALREADY_PLEDGED)


def test_close_rejections(w: World) -> None:
    camp = campaign(w, goal=10)
    other = campaign(w, author=B, goal=10)
    offer = w.offer(A)
    pc = pledge(w, C, camp, 10)
    po = pledge(w, C, other, 10)
    refused(w, A, CampaignClose(campaign=offer.ref, pledges=()), Reason.NOT_A_CAMPAIGN)
    refused(w, A, CampaignClose(campaign=other.ref, pledges=()), Reason.NOT_OWN_CAMPAIGN)
    refused(w, A, CampaignClose(campaign=camp.ref, pledges=(po.ref,)), Reason.NOT_A_PLEDGE)
    refused(w, A, CampaignClose(campaign=camp.ref, pledges=(offer.ref,)), Reason.NOT_A_PLEDGE)
    close(w, camp, pc)
    refused(w, A, CampaignClose(campaign=camp.ref, pledges=()), Reason.ALREADY_CLOSED)


def test_withdraw_rejections(w: World) -> None:
    camp = campaign(w, goal=100)
    other = campaign(w, goal=100)
    pb = pledge(w, B, camp, 10)
    po = pledge(w, B, other, 10)
    closed = close(w, camp)  # nothing named: failed
    closed_other = close(w, other)
    refused(w, B, Withdraw(pledge=closed.ref, close=closed.ref), Reason.NOT_A_PLEDGE)
    refused(w, C, Withdraw(pledge=pb.ref, close=closed.ref), Reason.NOT_PLEDGER)
    refused(w, B, Withdraw(pledge=pb.ref, close=closed_other.ref), Reason.NOT_A_CLOSE)
    refused(w, B, Withdraw(pledge=pb.ref, close=camp.ref), Reason.NOT_A_CLOSE)
    withdraw(w, B, pb, closed)
    refused(w, B, Withdraw(pledge=pb.ref, close=closed.ref), Reason.ALREADY_WITHDRAWN)
    withdraw(w, B, po, closed_other)
    assert w.balance(B) == 0


def test_close_over_the_ceiling_or_the_range(w: World) -> None:
    w2 = World(A, credit_limit=100, ceiling=50)
    for m in (A, B):
        w2.join(m)
    camp = campaign(w2, goal=10)
    pb = pledge(w2, B, camp, 60)
    refused(w2, A, CampaignClose(campaign=camp.ref, pledges=(pb.ref,)), Reason.OVER_CEILING)
    closed = close(w2, camp)  # failing is always possible: it credits nothing
    withdraw(w2, B, pb, closed)


def test_close_waits_for_every_pledge_it_names(w: World) -> None:
    camp = campaign(w, goal=20)
    pb, pc = pledge(w, B, camp, 10), pledge(w, C, camp, 10)
    closed = close(w, camp, pb, pc)
    node = fresh_ledger(w.genesis)
    for e in w.log:
        if e not in (pb, pc, closed):
            assert node.ingest_entry(e, w.now).status is Status.ACCEPTED
    waiting = node.ingest_entry(closed, w.now)
    assert waiting.status is Status.WAITING
    assert set(waiting.missing) == {pb.ref, pc.ref}  # all of them at once
    assert node.balance(w.community, A.public) == 0
    out = node.ingest_entry(pb, w.now)
    assert out.released == ()
    out = node.ingest_entry(pc, w.now)
    assert out.released == (closed,)
    assert node.balance(w.community, A.public) == 20


def test_close_schema() -> None:
    """A close names each pledger once, in bytewise order of authors; a
    campaign's minimum pledge is at most its goal."""
    w = World(A, credit_limit=100)
    low, high = sorted((B.public, C.public))
    zero = EntryId(bytes(32))
    ref = Ref(low, 2, zero)
    bad = (
        [ref.to_wire(), Ref(low, 3, zero).to_wire()],  # one pledger twice
        [Ref(high, 2, zero).to_wire(), ref.to_wire()],  # not sorted
    )
    good = [ref.to_wire(), Ref(high, 2, zero).to_wire()]
    for pledges in (*bad, good):
        body = {"campaign": ref.to_wire(), "pledges": pledges}
        wire = w.raw(A, "campaign_close", body, seq=3, prev=bytes(32))
        if pledges is good:
            assert Entry.decode(wire).body == CampaignClose(ref, (ref, Ref(high, 2, zero)))
            continue
        with pytest.raises(CodecError) as info:
            Entry.decode(wire)
        assert info.value.reason == "bad_shape"
    too_many = [Ref(key(n).public, 2, zero).to_wire() for n in range(MAX_PLEDGES + 1)]
    too_many.sort(key=lambda r: r[0])
    wire = w.raw(
        A, "campaign_close", {"campaign": ref.to_wire(), "pledges": too_many}, seq=3, prev=bytes(32)
    )
    with pytest.raises(CodecError) as info:
        Entry.decode(wire)
    assert info.value.reason == "bad_shape"
    # The most a close can name fits an entry, whatever the seqs.
    most = sorted(
        (Ref(key(n).public, MAX_SEQ, zero) for n in range(MAX_PLEDGES)), key=lambda r: r.author
    )
    big = Entry.create(
        A,
        community=w.community,
        seq=MAX_SEQ,
        prev=zero,
        timestamp_ms=MAX_SEQ,
        body=CampaignClose(Ref(A.public, MAX_SEQ, zero), tuple(most)),
    )
    assert len(big.wire) <= 16384
    body = {
        "title": "x",
        "description": "",
        "tags": [],
        "goal": 5,
        "deadline_ms": 0,
        "reward": "",
        "min_pledge": 6,
    }
    with pytest.raises(CodecError) as info:
        Entry.decode(w.raw(A, "campaign", body, seq=2, prev=bytes(32)))
    assert info.value.reason == "bad_shape"
    body["min_pledge"] = 5
    assert isinstance(
        Entry.decode(w.raw(A, "campaign", body, seq=2, prev=bytes(32))).body, Campaign
    )


@pytest.mark.parametrize("fork", [False, True])
def test_statement_bundles_carry_a_close_and_its_pledges(w: World, fork: bool) -> None:
    """A close names up to 200 pledges: the bundle of its author's log
    carries each of them (they are its causal past), and a pledge in a
    forked pledger's frozen part shows as credit that does not count."""
    camp = campaign(w, goal=30)
    pb = pledge(w, B, camp, 20)
    pc = pledge(w, C, camp, 20)
    if fork:  # C also pays D the same 20 at the pledge's seq
        spend = w.create(C, Transfer(to=D.public, amount=100), seq=pc.seq, prev=pc.prev)
        assert w.ingest(spend).fork
    closed = close(w, camp, pb, pc)
    verified = verify_bundle(build_bundle(w.ledger, A, w.community, closed.ref, 1, w.now), w.now)
    assert verified.statement.closing == 40
    assert verified.statement.total_in == 40
    assert verified.not_counted == (20 if fork else 0)
    assert w.balance(A) == 40 - verified.not_counted
    # The pledger's side: its pledge is a movement out.
    v = verify_bundle(build_bundle(w.ledger, B, w.community, pb.ref, 1, w.now), w.now)
    assert (v.statement.closing, v.statement.total_out) == (-20, 20)


# -- lapses: a pledge comes back after the deadline without a close (§10.5) ----------


def test_a_pledge_lapses_after_the_deadline_when_no_close_comes(w: World) -> None:
    camp = campaign(w, goal=100)
    pb = pledge(w, B, camp, 40)
    assert isinstance(camp.body, Campaign)
    w.now = camp.body.deadline_ms  # stamped exactly at the deadline: still too early
    refused(w, B, Withdraw(pledge=pb.ref), Reason.NOT_LAPSED)
    lb = lapse(w, B, pb)  # stamped 1 s after it
    assert lb.timestamp_ms == camp.body.deadline_ms + 1000
    assert w.balances() == {A.public: 0, B.public: 0, C.public: 0, D.public: 0}
    refused(w, B, Withdraw(pledge=pb.ref), Reason.ALREADY_WITHDRAWN)
    # The author closes late, leaving the lapsed pledge out: nothing changes.
    closed = close(w, camp)
    refused(w, B, Withdraw(pledge=pb.ref, close=closed.ref), Reason.ALREADY_WITHDRAWN)
    assert w.balances() == {A.public: 0, B.public: 0, C.public: 0, D.public: 0}


def test_a_lapse_is_checked_like_a_withdraw(w: World) -> None:
    camp = campaign(w, goal=100)
    pb = pledge(w, B, camp, 10)
    past_deadline(w, camp)
    refused(w, B, Withdraw(pledge=camp.ref), Reason.NOT_A_PLEDGE)
    refused(w, C, Withdraw(pledge=pb.ref), Reason.NOT_PLEDGER)
    # A withdraw naming a close cannot follow a lapse, nor a lapse a withdraw.
    closed = close(w, camp)
    withdraw(w, B, pb, closed)
    refused(w, B, Withdraw(pledge=pb.ref), Reason.ALREADY_WITHDRAWN)


def _race(w: World) -> tuple[Entry, Entry, Entry, Entry, Entry]:
    """B pledges 40 and C 20 to a goal of 50; after the deadline B, holding
    no close, lets its pledge lapse and spends the 40 again; A, not holding
    the lapse, closes counting both pledges."""
    camp = campaign(w, goal=50)
    pb, pc = pledge(w, B, camp, 40), pledge(w, C, camp, 20)
    past_deadline(w, camp)
    lb = lapse(w, B, pb)
    spend = w.pay(B, D, 100)  # the whole capacity: the lapsed 40 included
    closed = close(w, camp, pb, pc)
    return pb, pc, lb, spend, closed


def test_a_close_counting_the_pledge_wins_over_its_lapse_in_every_order(
    w: World, tmp_path: Path
) -> None:
    """Both are valid; every node counts the close and undoes the lapse,
    whatever it saw first. The pledger spent units that are not there: its
    counted balance is below its credit limit by the lapsed amount."""
    pb, pc, lb, spend, closed = _race(w)
    want = {A.public: 60, B.public: -140, C.public: -20, D.public: 0}  # D: 100 in flight
    assert w.balances() == want
    rest = [e for e in w.log if e not in (pb, pc, lb, spend, closed)]
    for n, order in enumerate(itertools.permutations([pb, lb, spend, closed])):
        path = tmp_path / f"{n}.sqlite"
        for backend in (MemoryBackend(), Store.open(path)):
            ledger = Ledger(backend)
            with backend.transaction() if isinstance(backend, Store) else _nothing():
                ledger.ingest(w.genesis.wire, T0)
                for e in [*rest, pc, *order]:
                    assert ledger.ingest_entry(e, w.now).status is not Status.REJECTED
            assert dict(ledger.balances(w.community)) == want, order
            head = ledger.head(w.community, B.public)
            assert head is not None
            assert (head.balance, head.undone) == (-100, 40)
            if isinstance(backend, Store):
                backend.close()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_a_failed_close_or_one_leaving_the_pledge_out_undoes_no_lapse(w: World) -> None:
    camp = campaign(w, goal=50)
    pb, pc = pledge(w, B, camp, 40), pledge(w, C, camp, 50)
    past_deadline(w, camp)
    lapse(w, B, pb)
    close(w, camp, pc)  # succeeds without B's pledge
    assert w.balances() == {A.public: 50, B.public: 0, C.public: -50, D.public: 0}
    camp2 = campaign(w, goal=100)
    pd = pledge(w, D, camp2, 40)
    past_deadline(w, camp2)
    lapse(w, D, pd)
    close(w, camp2, pd)  # names it, but 40 < 100: failed, nothing counts
    assert w.balance(D) == 0


def test_an_author_fork_below_its_close_gives_the_lapse_back(w: World) -> None:
    """A close that stops counting (its author forked at or below it) no
    longer undoes the lapse: the pledger's credit counts again."""
    _pb, _, _lb, _, closed = _race(w)
    assert w.balance(B) == -140
    other = w.create(A, Transfer(to=C.public, amount=1), seq=closed.seq, prev=closed.prev)
    assert w.ingest(other).fork
    assert w.balance(B) == -100
    assert w.ledger.head(w.community, B.public).undone == 0  # type: ignore[union-attr]
    # In flight: the 100 to D and C's pledge, which the close no longer credits.
    assert sum(w.balances().values()) + 100 + 20 == 0


def test_a_pledger_fork_below_its_lapse_undoes_nothing(w: World) -> None:
    """A lapse in the frozen part of its pledger's log never counted: the
    close has nothing to undo, and the pledge it counts is credited once."""
    _pb, _, lb, _spend, _ = _race(w)
    other = w.create(B, Transfer(to=C.public, amount=1), seq=lb.seq, prev=lb.prev)
    assert w.ingest(other).fork
    assert w.balance(B) == -40  # the pledge counts, paid to A; the lapse does not
    assert w.ledger.head(w.community, B.public).undone == 0  # type: ignore[union-attr]
    assert w.balance(A) == 60


# -- witnessed communities (docs/protocol.md §10.6) ------------------------------------


def test_witnessed_a_close_waits_for_every_pledge_to_be_final() -> None:
    w = witnessed_world(credit_limit=100)
    for m in (A, B, C):
        w.join(m)
    camp = campaign(w, goal=30)
    pb, pc = pledge(w, B, camp, 20), pledge(w, C, camp, 20)
    closed = close(w, camp, pb, pc)
    assert w.balances() == {A.public: 40, B.public: -20, C.public: -20}
    # A node that holds the entries but not the pledges' certificates.
    node = fresh_ledger(w.genesis)
    for e in w.log:
        if e not in (pb, pc, closed):
            assert node.ingest_entry(e, w.now).status is Status.ACCEPTED
            assert node.ingest_certificate(certify(e), w.now).ok
    for e in (pb, pc):
        assert node.ingest_entry(e, w.now).status is Status.ACCEPTED
    waiting = node.ingest_entry(closed, w.now)
    assert waiting.status is Status.WAITING
    assert set(waiting.missing_final) == {pb.ref, pc.ref}  # all of them at once
    assert node.ingest_certificate(certify(pb), w.now).released == ()
    assert node.ingest_certificate(certify(pc), w.now).released == (closed,)
    # Counted in a witnessed community: only once the close itself is final.
    assert node.balance(w.community, A.public) == 0
    assert node.ingest_certificate(certify(closed), w.now).ok
    assert node.balance(w.community, A.public) == 40


def test_witnessed_a_pledge_that_can_never_be_final_is_not_counted() -> None:
    """A pledger forks: a pledge on one branch, the same capacity paid away on
    the other, which the witnesses certify. A close naming the pledge is
    refused (not_final): the certified chain spent it."""
    w = witnessed_world(certified=False, credit_limit=100)
    for m in (A, B, C):
        assert w.ledger.ingest_certificate(certify(w.join(m)), w.now).ok
    camp = campaign(w, goal=10)
    assert w.ledger.ingest_certificate(certify(camp), w.now).ok
    pb = pledge(w, B, camp, 100)
    spend = w.create(B, Transfer(to=C.public, amount=100), seq=pb.seq, prev=pb.prev)
    assert w.ingest(spend).fork
    assert w.ledger.ingest_certificate(certify(spend), w.now).ok
    body = CampaignClose(campaign=camp.ref, pledges=(pb.ref,))
    with pytest.raises(RefusedError) as info:
        w.ledger.prepare(A, w.community, body, w.now)
    assert info.value.reason == "not_final"
    assert w.ingest(w.create(A, body)).reason is Reason.NOT_FINAL


def test_witnessed_a_withdraw_waits_for_the_close_to_be_final() -> None:
    w = witnessed_world(certified=False, credit_limit=100)
    for m in (A, B):
        assert w.ledger.ingest_certificate(certify(w.join(m)), w.now).ok
    camp = campaign(w, goal=50)
    pb = pledge(w, B, camp, 20)
    for e in (camp, pb):
        assert w.ledger.ingest_certificate(certify(e), w.now).ok
    closed = close(w, camp, pb)  # 20 < 50: failed
    body = Withdraw(pledge=pb.ref, close=closed.ref)
    with pytest.raises(RefusedError) as info:
        w.ledger.prepare(B, w.community, body, w.now)
    assert info.value.reason == "not_final"
    entry = w.create(B, body)
    assert w.ingest(entry).missing_final == (closed.ref,)
    released = w.ledger.ingest_certificate(certify(closed), w.now).released
    assert released == (entry,)
    assert w.ledger.ingest_certificate(certify(entry), w.now).ok
    assert w.balances() == {A.public: 0, B.public: 0}


def test_a_statement_bundle_shows_a_lapse_the_close_undid(w: World) -> None:
    """The pledger's bundle carries the close that beat its lapse, so the
    verifier counts the lapse as undone, as every node does (§9.2, §10.5)."""
    _, _, _, spend, _ = _race(w)
    verified = verify_bundle(build_bundle(w.ledger, B, w.community, spend.ref, 1, w.now), w.now)
    assert verified.undone == 40
    assert verified.statement.closing - verified.not_counted - verified.undone == w.balance(B)
