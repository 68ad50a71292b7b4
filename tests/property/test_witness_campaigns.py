"""Campaigns in a witnessed community (docs/protocol.md §10.6,
docs/witness.md §3.5): an honest witness votes for at most one of "a close
counting pledge P" and "a lapse of P", and for a lapse only once its own
clock is past the campaign's deadline."""

from __future__ import annotations

from tests.helpers import key
from tests.property.test_witness import (
    WKEYS,
    WitnessNode,
    below,
    certify,
    voted,
    witnessed_world,
)
from troc.protocol.campaign_rules import BEFORE_DEADLINE_HERE, VOTED_CLOSE, VOTED_LAPSE
from troc.protocol.entry import Campaign, CampaignClose, Entry, Pledge, Withdraw
from troc.protocol.witness import LedgerView, Refused, WitnessState

AUTHOR, B, C = key(1), key(2), key(3)


def _setup() -> tuple[object, object, Entry, Entry, Entry, Entry, Entry]:
    """A campaign (goal 50) with pledges of 40 by B and 20 by C; after its
    deadline, B's lapse and the author's close counting both pledges."""
    world, rules = witnessed_world()
    for m in (AUTHOR, B, C):
        world.join(m)
    deadline = world.now + 5_000
    camp = world.add(AUTHOR, Campaign(title="Oven", goal=50, deadline_ms=deadline))
    pb = world.add(B, Pledge(campaign=camp.ref, amount=40))
    pc = world.add(C, Pledge(campaign=camp.ref, amount=20))
    world.now = deadline
    lapse = world.add(B, Withdraw(pledge=pb.ref))
    close = world.add(AUTHOR, CampaignClose(campaign=camp.ref, pledges=_sorted(pb, pc)))
    return world, rules, camp, pb, pc, lapse, close


def _sorted(*pledges: Entry) -> tuple:  # type: ignore[type-arg]
    return tuple(sorted((p.ref for p in pledges), key=lambda r: r.author))


def _witness(world: object, rules: object, n: int, clock: list[int]) -> WitnessNode:
    w = WitnessNode(world, rules, WKEYS[n])  # type: ignore[arg-type]
    w.view = LedgerView(w.ledger, lambda: clock[0])
    w.state = WitnessState(w.key, w.rules, w.votes, w.view)
    return w


def test_a_lapse_only_after_the_deadline_by_the_witness_s_clock() -> None:
    world, rules, camp, *_, lapse, _ = _setup()
    assert isinstance(camp.body, Campaign)
    clock = [camp.body.deadline_ms]  # the witness's clock: exactly at the deadline
    w = _witness(world, rules, 0, clock)
    answer = w.ask(lapse, deps=below(world, lapse))
    assert isinstance(answer, Refused)
    assert answer.reason == BEFORE_DEADLINE_HERE
    clock[0] += 1
    voted(w.ask(lapse))


def test_a_witness_votes_for_the_lapse_or_the_close_never_both() -> None:
    world, rules, _camp, pb, pc, lapse, close = _setup()
    clock = [world.now]  # past the deadline
    certs = [certify(rules, pb), certify(rules, pc)]  # a close names final pledges
    first_lapse = _witness(world, rules, 0, clock)
    voted(first_lapse.ask(lapse, deps=below(world, lapse)))
    answer = first_lapse.ask(close, deps=below(world, close), certs=certs)
    assert isinstance(answer, Refused)
    assert answer.reason == VOTED_LAPSE
    first_close = _witness(world, rules, 1, clock)
    voted(first_close.ask(close, deps=below(world, close), certs=certs))
    answer = first_close.ask(lapse, deps=below(world, lapse))
    assert isinstance(answer, Refused)
    assert answer.reason == VOTED_CLOSE
    # Rule 1: once the close is certified (by other witnesses), the witness
    # that voted for the lapse still locks it, so the author's log goes on.
    voted(first_lapse.ask(close, certs=[*certs, certify(rules, close)]))


def test_a_failed_close_or_one_leaving_the_pledge_out_has_no_rival() -> None:
    world, rules = witnessed_world()
    for m in (AUTHOR, B, C):
        world.join(m)
    deadline = world.now + 5_000
    camps = [
        world.add(AUTHOR, Campaign(title=t, goal=50, deadline_ms=deadline)) for t in ("a", "b")
    ]
    pb = [world.add(B, Pledge(campaign=c.ref, amount=40)) for c in camps]
    pc = world.add(C, Pledge(campaign=camps[1].ref, amount=50))
    world.now = deadline
    lapses = [world.add(B, Withdraw(pledge=p.ref)) for p in pb]
    failed = world.add(AUTHOR, CampaignClose(campaign=camps[0].ref, pledges=_sorted(pb[0])))
    without = world.add(AUTHOR, CampaignClose(campaign=camps[1].ref, pledges=_sorted(pc)))
    w = _witness(world, rules, 0, [world.now])
    for lapse in lapses:
        voted(w.ask(lapse, deps=below(world, lapse)))
    certs = [certify(rules, p) for p in (*pb, pc)]
    voted(w.ask(failed, deps=below(world, failed), certs=certs))
    voted(w.ask(without, deps=below(world, without), certs=certs))
