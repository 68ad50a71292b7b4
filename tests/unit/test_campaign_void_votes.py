"""Void votes for a lapse or a close that lost its race (docs/witness.md
§3.5, §3.6): a pledger's lapse and the author's close counting that pledge
race; the loser gets a void vote only from a witness holding a certificate
of its rival, is never voted for afterwards, spends nothing, and its
author's log goes on."""

from __future__ import annotations

from tests.property.test_witness import WitnessNode, below, certify, voted
from tests.property.test_witness_campaigns import AUTHOR, B, _setup, _sorted, _witness
from troc.protocol.entry import Campaign, CampaignClose, Entry, Pledge, Withdraw
from troc.protocol.witness import (
    NOT_RACEABLE,
    VOID_OVERDRAFT,
    VOIDED,
    Answer,
    Certificate,
    Refused,
    VoidVote,
    Voted,
    VoteRequest,
    Waiting,
)


def ask_void(w: WitnessNode, entry: Entry, deps: list[Entry], certs: list[Certificate]) -> Answer:
    request = VoteRequest(
        entry.wire, tuple(d.wire for d in deps), tuple(c.encode() for c in certs), void=True
    )
    return w.state.handle(request)


def void_voted(answer: Answer) -> VoidVote:
    assert isinstance(answer, Voted), answer
    assert isinstance(answer.vote, VoidVote)
    assert answer.vote.verify()
    return answer.vote


def test_a_lapse_that_lost_to_the_close_is_voided_and_spends_nothing() -> None:
    world, rules, _camp, pb, pc, lapse, close = _setup()
    c = world.community
    certs = [certify(rules, pb), certify(rules, pc)]
    deps = [*below(world, close), close]
    w = _witness(world, rules, 0, [world.now])
    voted(w.ask(lapse, deps=below(world, lapse)))  # this witness voted the lapse
    # The close is not certified: no void vote for the lapse, nothing marked.
    assert ask_void(w, lapse, deps, certs) == Waiting(certificates=(close.ref,))
    assert w.votes.voids(c, B.public) == {}
    vote = void_voted(ask_void(w, lapse, deps, [*certs, certify(rules, close)]))
    assert vote.ref == lapse.ref
    assert w.votes.voids(c, B.public) == {lapse.seq: lapse.id}
    answer = w.ask(lapse)
    assert isinstance(answer, Refused)
    assert answer.reason == VOIDED
    # A witness that never saw the race: the lapse's position locked void.
    fresh = _witness(world, rules, 1, [world.now])
    void_voted(ask_void(fresh, lapse, deps, [*certs, certify(rules, close)]))
    assert fresh.votes.get(c, B.public, lapse.seq) == lapse.id
    # B's lapse returned 40 on its log; the pledge is paid, so B cannot spend them.
    world.now += 1_000
    spend = world.pay(B, AUTHOR, 100)  # nominal -100: at the limit; -140 without the 40
    answer = w.ask(spend, deps=[spend])
    assert isinstance(answer, Refused), answer
    assert answer.reason == VOID_OVERDRAFT
    world2, rules2, _c, pb2, pc2, lapse2, close2 = _setup()
    fine = world2.pay(B, AUTHOR, 60)  # -60 - 40 = -100: within the limit
    certs2 = [certify(rules2, pb2), certify(rules2, pc2), certify(rules2, close2)]
    w2 = _witness(world2, rules2, 0, [world2.now])
    void_voted(ask_void(w2, lapse2, [*below(world2, close2), close2], certs2))
    voted(w2.ask(fine, deps=[fine]))


def test_a_close_that_lost_to_a_lapse_is_voided_and_spends_nothing() -> None:
    world, rules, _camp, pb, pc, lapse, close = _setup()
    c = world.community
    certs = [certify(rules, pb), certify(rules, pc)]
    deps = below(world, close)
    w = _witness(world, rules, 0, [world.now])
    voted(w.ask(close, deps=deps, certs=certs))  # this witness voted the close
    assert ask_void(w, close, deps, certs) == Waiting(certificates=(lapse.ref,))
    vote = void_voted(ask_void(w, close, deps, [*certs, certify(rules, lapse)]))
    assert vote.ref == close.ref
    assert w.votes.voids(c, AUTHOR.public) == {close.seq: close.id}
    answer = w.ask(close)
    assert isinstance(answer, Refused)
    assert answer.reason == VOIDED
    # The witness that voted the lapse gives a void vote for the close too.
    other = _witness(world, rules, 1, [world.now])
    voted(other.ask(lapse, deps=below(world, lapse)))
    void_voted(ask_void(other, close, deps, [*certs, certify(rules, lapse)]))
    # The close credited the author 60 on its log: a payment needing them is refused.
    world.now += 1_000
    spend = world.pay(AUTHOR, B, 150)  # nominal -90; -150 without the void 60
    answer = w.ask(spend, deps=[spend])
    assert isinstance(answer, Refused), answer
    assert answer.reason == VOID_OVERDRAFT
    world2, rules2, _c, pb2, pc2, lapse2, close2 = _setup()
    ok = world2.pay(AUTHOR, B, 90)  # -30 nominal, -90 without the void 60
    w2 = _witness(world2, rules2, 0, [world2.now])
    certs2 = [certify(rules2, pb2), certify(rules2, pc2), certify(rules2, lapse2)]
    void_voted(ask_void(w2, close2, below(world2, close2), certs2))
    voted(w2.ask(ok, deps=[ok]))


def test_only_an_entry_in_a_race_can_be_void() -> None:
    """A failed close counts no pledge and has no rival; a withdraw naming a
    close is no lapse: neither gets a void vote."""
    world, rules, camp, pb, pc, lapse, _close = _setup()
    certs = [certify(rules, e) for e in (pb, pc, lapse)]
    w = _witness(world, rules, 0, [world.now])
    second = world.add(AUTHOR, Campaign(title="Small", goal=50, deadline_ms=world.now + 10))
    small = world.add(B, Pledge(campaign=second.ref, amount=10))
    world.now += 1_000
    failed = world.add(AUTHOR, CampaignClose(campaign=second.ref, pledges=_sorted(small)))
    withdraw = world.add(B, Withdraw(pledge=small.ref, close=failed.ref))
    more = [*certs, certify(rules, small)]
    for entry in (failed, withdraw, camp):
        answer = ask_void(w, entry, below(world, withdraw), more)
        assert isinstance(answer, Refused), (entry, answer)
        assert answer.reason == NOT_RACEABLE
