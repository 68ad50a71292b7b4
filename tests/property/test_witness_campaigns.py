"""Campaigns in a witnessed community (docs/protocol.md §10.6,
docs/witness.md §3.5): an honest witness votes for at most one of "a close
counting pledge P" and "a lapse of P", and for a lapse only once its own
clock is past the campaign's deadline."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import key
from tests.property.test_witness import (
    WKEYS,
    FinalitySim,
    SimResult,
    SimSpec,
    SimWitness,
    Task,
    WitnessNode,
    below,
    certify,
    voted,
    witnessed_world,
)
from troc.crypto.sign import MemberId, SigningKey
from troc.protocol import witness as witness_module
from troc.protocol.campaign_rules import BEFORE_DEADLINE_HERE, VOTED_CLOSE, VOTED_LAPSE
from troc.protocol.entry import (
    Accept,
    Campaign,
    CampaignClose,
    Entry,
    EntryId,
    Pledge,
    Ref,
    TakeBack,
    Transfer,
    Withdraw,
)
from troc.protocol.witness import (
    MAX_CERTIFICATES,
    MAX_DEPS,
    Certificate,
    LedgerView,
    Refused,
    WitnessState,
    certificate_needed,
    decode_request,
    encode_request,
    max_faults,
)

EXAMPLES = settings().max_examples
#: The simulated campaign's goal: two pledges of at most 8 often reach it.
GOAL = 6

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
    voted(w.ask(lapses[0], deps=below(world, lapses[0])))
    # A lapse can race: a witness locks one below another vote only once it
    # holds its certificate (docs/witness.md §3.6), as for a take-back.
    first = [certify(rules, lapses[0])]
    voted(w.ask(lapses[1], deps=below(world, lapses[1]), certs=first))
    certs = [certify(rules, p) for p in (*pb, pc)]
    voted(w.ask(failed, deps=below(world, failed), certs=certs))
    voted(w.ask(without, deps=below(world, without), certs=certs))


# -- the byzantine simulation: a campaign whose close, pledges and lapses race --------


class CampaignSim(FinalitySim):
    """:class:`FinalitySim` (payments, a forker, byzantine witnesses, loss,
    crashes, skewed clocks) with a campaign: its author opens it, three
    members pledge around its deadline (some after it), each pledger may let
    its pledge lapse just after the deadline without holding the close, and
    the author closes near the deadline naming the pledges it holds final.
    Byzantine witnesses vote for anything, the close and the lapses that
    exclude it included, and hand honest witnesses forged certificates of
    the close when asked about a lapse (a lie that the close won).

    Checked beyond FinalitySim's invariants: at most one close certified; no
    pledge both counted by a certified close and taken back by a certified
    lapse or withdraw; final balances plus transfers and pledges in flight
    sum to 0; and every honest node (each honest witness's ledger, and fresh
    nodes) holding every published entry and certificate, in any order,
    shows the same balances and the same campaign outcome."""

    def __init__(
        self, seed: int, spec: SimSpec, *, deadline_ms: int, lapses: float, close_ms: int
    ) -> None:
        super().__init__(seed, spec)
        self.deadline = self.now + deadline_ms
        self.lapses, self.close_ms = lapses, close_ms
        self.author = self.payees[0]
        self.pledgers = [*self.payers, self.payees[1]]
        self.campaign: Entry | None = None
        self.close: Entry | None = None
        self.pledges: dict[MemberId, Entry] = {}
        self.lapsed: list[Entry] = []

    def run(self) -> SimResult:
        start = self.now
        self.at(start + 250, self.open_campaign)
        for k in self.pledgers:
            when = start + 300 + self.rng.randrange(self.deadline - start)
            self.at(when, partial(self.pledge, k))
            if self.rng.random() < self.lapses:
                self.at(self.deadline + 1 + self.rng.randrange(1_200), partial(self.lapse, k))
        self.at(self.deadline + self.close_ms, self.close_it)
        return super().run()

    def open_campaign(self) -> None:
        body = Campaign(title="Oven", goal=GOAL, deadline_ms=self.deadline)
        self.campaign = self.sign(self.author, body)
        assert self.campaign is not None
        # Every member's node has seen it (gossip): a pledge in a payer's
        # log then never keeps a payee from taking the payer's transfers.
        for k in [*self.payers, *self.payees]:
            ledger = self.nodes.setdefault(k.public, self._ledger())
            for e in [*self.chain(self.campaign), self.campaign]:
                ledger.ingest_entry(e, self.now)
        self.start(self.campaign, honest=True)

    def pledge(self, k: SigningKey) -> None:
        if self.campaign is None:  # pragma: no cover - opened at +250, pledges from +300
            return
        entry = self.sign(k, Pledge(campaign=self.campaign.ref, amount=self.rng.randint(1, 8)))
        if entry is not None:  # else refused (its payments used the capacity)
            self.pledges[k.public] = entry
            self.start(entry, honest=True)

    def lapse(self, k: SigningKey) -> None:
        """The pledger, holding no close, takes its pledge back after the deadline."""
        pledge = self.pledges.get(k.public)
        if pledge is None:
            return
        entry = self.sign(k, Withdraw(pledge=pledge.ref))
        assert entry is not None, "an honest pledger could not lapse its pledge"
        self.lapsed.append(entry)
        self.start(entry, honest=True, race=pledge.id)

    def close_it(self) -> None:
        """The author syncs, then closes naming each pledge it holds final
        whose lapse it does not hold (what its node does,
        troc/node/campaigns.py). Lapses not final yet have not reached it:
        they race the close."""
        assert self.campaign is not None
        ledger = self.nodes[self.author.public]
        for e in sorted(self.store.values(), key=lambda e: e.seq):
            if not isinstance(e.body, Withdraw) or self.final(e):
                ledger.ingest_entry(e, self.now)
        for cert in list(self.certs.values()):
            ledger.ingest_certificate(cert.encode(), self.now)
        lapsed = {e.body.pledge for e in self.lapsed if self.final(e)}  # type: ignore[union-attr]
        named = [
            p.ref
            for p in self.pledges.values()
            if ledger.is_final(self.community, p.ref) and p.ref not in lapsed
        ]
        refs = tuple(sorted(named, key=lambda r: r.author))
        self.close = self.sign(self.author, CampaignClose(campaign=self.campaign.ref, pledges=refs))
        assert self.close is not None, "an honest author could not close"
        self.start(self.close, honest=True, race=self.campaign.id)

    def final(self, e: Entry) -> bool:
        return (self.community, e.author, e.seq) in self.certs

    def request_bytes(self, task: Task) -> bytes:
        """FinalitySim's request, and with its entries (once a witness asked
        for them): a close's pledges with their chains and certificates (it
        needs them final), and the certificates of the closes and lapses
        below the entry (locked with it only if certified: rule 1)."""
        data = super().request_bytes(task)
        entry = task.entry
        if not task.with_deps and not task.void:
            return data
        request = decode_request(data)
        below = self.chain(entry)
        wanted: list[Ref] = [e.ref for e in below if isinstance(e.body, CampaignClose | Withdraw)]
        # A void request carries the winning rival: a close needs its pledges.
        rivals = self.rivals(entry) if task.void else []
        for e in [*below, entry, *rivals]:
            if isinstance(e.body, CampaignClose):
                wanted += e.body.pledges
            # A pledge names its campaign: the node's Certifier sends what an
            # entry names (docs/witness.md §5); a witness that was down when
            # the campaign was gossiped waited for it forever (seed 22).
            if isinstance(e.body, Pledge):
                wanted.append(e.body.campaign)
        # What an accept needs final: its transfer, whose chain may pass a
        # lapse or a close (the tip passes one only with its own certificate).
        for e in [*below, entry]:
            need = certificate_needed(e)
            if need is not None and need.id in self.store:
                chain = self.chain(self.store[need.id])
                wanted += [d.ref for d in chain if isinstance(d.body, CampaignClose | Withdraw)]
        deps = [d.wire for r in wanted for d in [*self.chain(self.store[r.id]), self.store[r.id]]]
        certs = [
            held[(self.community, r.author, r.seq)].encode()
            for r in wanted
            for held in (self.certs, self.void_certs)
            if (self.community, r.author, r.seq) in held
        ]
        return encode_request(
            replace(
                request,
                deps=tuple(dict.fromkeys([*deps, *request.deps]))[-MAX_DEPS:],
                certificates=tuple(dict.fromkeys([*certs, *request.certificates]))[
                    -MAX_CERTIFICATES:
                ],
            )
        )

    def accept(self, transfer: Entry, cert: Certificate) -> None:
        """FinalitySim's payee, also given the pledges a close on the payer's
        chain names (a void close's author pays after it: its node's
        close needs them final)."""
        assert isinstance(transfer.body, Transfer)
        ledger = self.nodes.setdefault(transfer.body.to, self._ledger())
        for e in self.chain(transfer):
            if isinstance(e.body, CampaignClose):
                for r in e.body.pledges:
                    for d in [*self.chain(self.store[r.id]), self.store[r.id]]:
                        ledger.ingest_entry(d, self.now)
        super().accept(transfer, cert)

    def rivals(self, entry: Entry) -> list[Entry]:
        """The entries that exclude ``entry`` (the model's own reading of
        docs/witness.md §3.5): for a lapse, the successful closes naming its
        pledge; for a successful close, the lapses of its pledges."""
        body = entry.body
        if isinstance(body, Withdraw):
            return [
                e
                for e in self.store.values()
                if isinstance(e.body, CampaignClose)
                and body.pledge in e.body.pledges
                and self.succeeded(e)
            ]
        if isinstance(body, CampaignClose):
            if not self.succeeded(entry):
                return []
            return [
                e
                for e in self.store.values()
                if isinstance(e.body, Withdraw) and e.body.lapse and e.body.pledge in body.pledges
            ]
        return super().rivals(entry)

    def succeeded(self, close: Entry) -> bool:
        assert isinstance(close.body, CampaignClose)
        amounts = [self.store[r.id].body.amount for r in close.body.pledges]  # type: ignore[union-attr]
        return sum(amounts) >= GOAL

    def byzantine_answers(self, w: SimWitness, data: bytes) -> list[bytes]:
        entry = Entry.decode(decode_request(data).entry)
        if isinstance(entry.body, Withdraw) and self.close is not None:
            self.push_forged_certificate(w, self.close)  # "the close won already"
        return super().byzantine_answers(w, data)

    # -- invariants ------------------------------------------------------------

    def check(self) -> None:
        super().check()
        v = self.result.violations
        q = self.rules.quorum
        final = {eid for ids in self.pool.values() for eid, ws in ids.items() if len(ws) >= q}
        finals = [self.store[e] for e in final if e in self.store]
        closes = [e for e in finals if isinstance(e.body, CampaignClose)]
        if len(closes) > 1:
            v.append("two closes of one campaign certified")
        counted = set()
        for c in closes:
            assert isinstance(c.body, CampaignClose)
            amounts = [self.store[r.id].body.amount for r in c.body.pledges]  # type: ignore[union-attr]
            if sum(amounts) >= GOAL:
                counted |= {r.id for r in c.body.pledges}
        back = {e.body.pledge.id for e in finals if isinstance(e.body, Withdraw)}
        if counted & back:
            v.append("a pledge both counted by a certified close and taken back")
        self.result.lapses = len(self.lapsed)  # type: ignore[attr-defined]
        self.result.lapses_won = sum(1 for e in self.lapsed if e.id in final)  # type: ignore[attr-defined]
        self.result.close_won = self.close is not None and self.close.id in final  # type: ignore[attr-defined]
        self.check_nodes_agree(final)

    def check_nodes_agree(self, final: set[EntryId]) -> None:
        """Every honest node holding everything shows the same balances, the
        final-chain balances, and the same campaign outcome."""
        v = self.result.violations
        certs = [c.encode() for c in [*self.certs.values(), *self.void_certs.values()]]
        items: list[bytes | Entry] = [*self.store.values(), *certs]
        nodes = [w.view.ledger for w in self.witnesses if not w.byzantine]
        nodes += [self._ledger(), self._ledger()]
        seen = []
        for ledger in nodes:
            order = list(items)
            self.rng.shuffle(order)
            for item in order:
                if isinstance(item, Entry):
                    ledger.ingest_entry(item, self.now)
                else:
                    ledger.ingest_certificate(item, self.now)
            balances = {m: b for m, b in ledger.balances(self.community) if b}
            c = self.community
            outcome = sorted(
                (e.id, ledger.is_final(c, e.ref), ledger.is_void(c, e.ref))
                for e in [*self.lapsed, *([self.close] if self.close else [])]
            )
            seen.append((balances, outcome))
        if any(s != seen[0] for s in seen):
            v.append("honest nodes holding the same entries disagree")
        balances, _ = seen[0]
        # Final as the nodes hold it: certificates the members collected
        # (``final`` above also counts quorums only an adversary could
        # assemble from the votes that were sent, never handed to nodes).
        # A void entry is final as a position only: it credits nothing (§3.6).
        held = {
            e.id
            for e in self.store.values()
            if nodes[0].is_final(self.community, e.ref)
            and not nodes[0].is_void(self.community, e.ref)
        }
        in_flight = self.in_flight(held)
        if sum(balances.values()) + in_flight != 0:
            v.append(f"final balances plus in flight sum to {sum(balances.values()) + in_flight}")

    def in_flight(self, final: set[EntryId]) -> int:
        """Final transfers and pledges not credited by a final entry; a
        pledge credited twice is a violation."""
        finals = [self.store[e] for e in final if e in self.store]
        out: dict[EntryId, int] = {}
        credited: list[EntryId] = []
        for e in finals:
            b = e.body
            if isinstance(b, Transfer | Pledge):
                out[e.id] = b.amount
            elif isinstance(b, Accept | TakeBack):
                credited.append(b.transfer.id)
            elif isinstance(b, Withdraw):
                credited.append(b.pledge.id)
            elif isinstance(b, CampaignClose):
                amounts = [self.store[r.id].body.amount for r in b.pledges]  # type: ignore[union-attr]
                if sum(amounts) >= GOAL:
                    credited += [r.id for r in b.pledges]
        if len(credited) != len(set(credited)):
            self.result.violations.append("a transfer or pledge credited twice")
        return sum(a for eid, a in out.items() if eid not in credited)


@st.composite
def campaign_specs(draw: st.DrawFn) -> tuple[SimSpec, int, float, int]:
    n = draw(st.sampled_from([4, 7]))
    spec = SimSpec(
        n=n,
        byzantine=draw(st.integers(0, max_faults(n))),
        loss=draw(st.sampled_from([0.0, 0.1, 0.3])),
        dup=draw(st.sampled_from([0.0, 0.2])),
        max_delay_ms=draw(st.sampled_from([5, 300])),
        payments=draw(st.integers(0, 4)),
        fork=draw(st.sampled_from(["none", "same_seq"])),
        crashes=draw(st.integers(0, 2)),
        put_crash=draw(st.sampled_from([0.0, 0.1])),
        skew_ms=draw(st.sampled_from([0, 200])),
    )
    deadline = draw(st.sampled_from([800, 1_500, 3_000]))
    lapses = draw(st.sampled_from([0.5, 1.0]))
    close_ms = draw(st.sampled_from([-200, 0, 150, 400, 1_000]))
    return spec, deadline, lapses, close_ms


def _campaign_replay(seed: int, spec: SimSpec, deadline: int, lapses: float, close: int) -> str:
    return (
        f"replay: CampaignSim({seed}, {spec!r}, deadline_ms={deadline}, lapses={lapses},"
        f" close_ms={close}).run()"
    )


# A run takes ~0.2-0.4 s: a sixth of the profile's count keeps CI near 5 s.
@settings(
    max_examples=max(EXAMPLES // 6, 4), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(seed=st.integers(0, 2**32 - 1), params=campaign_specs())
def test_a_close_and_a_lapse_are_never_both_certified_and_nodes_agree(
    seed: int, params: tuple[SimSpec, int, float, int]
) -> None:
    spec, deadline, lapses, close_ms = params
    sim = CampaignSim(seed, spec, deadline_ms=deadline, lapses=lapses, close_ms=close_ms)
    result = sim.run()
    assert not result.violations, (
        f"{result.violations}; {_campaign_replay(seed, spec, deadline, lapses, close_ms)}"
    )


def test_the_campaign_races_go_both_ways() -> None:
    """Fixed busy runs with a byzantine witness and skewed clocks: lapses
    are asked for, some win (the close that counted their pledge never is
    certified, or leaves them out), some lose; nothing counted twice."""
    won = lost = closes = 0
    for seed in range(4):
        spec = SimSpec(n=4, byzantine=1, payments=2, fork="none", skew_ms=200)
        sim = CampaignSim(seed, spec, deadline_ms=1_500, lapses=1.0, close_ms=0)
        result = sim.run()
        assert not result.violations, (seed, result.violations)
        won += result.lapses_won  # type: ignore[attr-defined]
        lost += result.lapses - result.lapses_won  # type: ignore[attr-defined]
        closes += result.close_won  # type: ignore[attr-defined]
    assert won > 0
    assert lost > 0
    assert closes > 0


def test_without_the_campaign_rule_a_pledge_is_credited_twice() -> None:
    """The check has teeth: witnesses that ignore the lapse / close race
    certify both, and a pledge is counted by the close and taken back."""
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(witness_module, "campaign_race", lambda entry, view, c: None)
        found = False
        for seed in range(6):
            spec = SimSpec(n=4, payments=0, fork="none", loss=0.0, dup=0.0)
            sim = CampaignSim(seed, spec, deadline_ms=1_500, lapses=1.0, close_ms=150)
            found = found or any("both counted" in x for x in sim.run().violations)
        assert found
    finally:
        mp.undo()


# -- void votes (docs/witness.md §3.6): the loser of a lapse / close race --------

#: Busy runs with a byzantine witness and skewed clocks, void votes on.
VOID_BUSY = SimSpec(n=4, byzantine=1, payments=2, fork="none", skew_ms=200, void=True)


@settings(
    max_examples=max(EXAMPLES // 8, 4), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(seed=st.integers(0, 2**32 - 1), params=campaign_specs())
def test_a_lost_campaign_race_stops_no_log(
    seed: int, params: tuple[SimSpec, int, float, int]
) -> None:
    """With void votes, every honest entry after a lapse or a close that
    lost its race becomes final (FinalitySim excuses only a split vote)."""
    spec, deadline, lapses, close_ms = params
    spec = replace(spec, void=True)
    sim = CampaignSim(seed, spec, deadline_ms=deadline, lapses=lapses, close_ms=close_ms)
    result = sim.run()
    assert not result.violations, (
        f"{result.violations}; {_campaign_replay(seed, spec, deadline, lapses, close_ms)}"
    )


def test_lost_lapses_and_closes_are_voided_and_their_logs_go_on() -> None:
    """Fixed runs: lapses lose to the close and a close loses to a lapse;
    each loser gets a void certificate, and the entry its author signs
    after it becomes final (without void votes for a lapse or a close,
    these runs report those entries never final)."""
    void_lapses = void_closes = 0
    after = 0
    for seed in (0, 2, 5):
        sim = CampaignSim(seed, VOID_BUSY, deadline_ms=1_500, lapses=1.0, close_ms=0)
        result = sim.run()
        assert not result.violations, (seed, result.violations)
        assert result.races_stuck == 0
        voided = [t.entry for t in sim.tasks if t.voided]
        void_lapses += sum(isinstance(e.body, Withdraw) for e in voided)
        void_closes += sum(isinstance(e.body, CampaignClose) for e in voided)
        after += result.after_void
    assert void_lapses > 0
    assert void_closes > 0
    assert after > 0


def test_a_witness_down_when_the_campaign_was_gossiped_still_certifies_pledges() -> None:
    """Found by the property test above: a witness that crashed while the
    campaign was gossiped waited for it forever, since the requests of
    pledges did not carry the campaign they name (the node's Certifier
    sends what an entry names). With a byzantine witness, two honest votes
    were all the pledges ever had."""
    spec = SimSpec(
        n=4,
        byzantine=1,
        loss=0.0,
        dup=0.0,
        max_delay_ms=5,
        payments=0,
        fork="none",
        crashes=1,
        put_crash=0.0,
        skew_ms=200,
    )
    sim = CampaignSim(22, spec, deadline_ms=800, lapses=0.5, close_ms=-200)
    result = sim.run()
    assert not result.violations, result.violations
    assert result.honest_done == result.honest_tasks == 5
