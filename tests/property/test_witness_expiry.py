"""Take-backs in a witnessed community (docs/witness.md §3.5), in the
byzantine simulation of tests/property/test_witness.py: every payment may
expire and be taken back by its payer while its payee accepts it; honest
witnesses vote for at most one of the two, each judging expiry by its own
clock, so at most one is ever certified, with up to f byzantine witnesses,
loss, duplication, delay and crashes."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.property.test_witness import FinalitySim, SimSpec, _replay
from troc.protocol.entry import TakeBack
from troc.protocol.witness import WitnessState, max_faults

EXAMPLES = settings().max_examples


@st.composite
def expiry_specs(draw: st.DrawFn) -> SimSpec:
    n = draw(st.sampled_from([4, 7]))
    return SimSpec(
        n=n,
        byzantine=draw(st.integers(0, max_faults(n))),
        loss=draw(st.sampled_from([0.0, 0.1, 0.3])),
        dup=draw(st.sampled_from([0.0, 0.2])),
        max_delay_ms=draw(st.sampled_from([5, 300])),
        payments=draw(st.integers(1, 8)),
        fork=draw(st.sampled_from(["none", "same_seq"])),
        crashes=draw(st.integers(0, 2)),
        put_crash=draw(st.sampled_from([0.0, 0.1])),
        # Expiry from "about when the accept comes" to "well after it".
        expiry_ms=draw(st.sampled_from([50, 300, 1_000, 3_000])),
        take_backs=draw(st.sampled_from([0.5, 1.0])),
        skew_ms=draw(st.sampled_from([0, 200])),
    )


# A run takes ~1 s: an eighth of the profile's count keeps CI near 12 s.
@settings(
    max_examples=max(EXAMPLES // 8, 4), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(seed=st.integers(0, 2**32 - 1), spec=expiry_specs())
def test_an_accept_and_a_take_back_are_never_both_certified(seed: int, spec: SimSpec) -> None:
    result = FinalitySim(seed, spec).run()
    assert not result.violations, f"{result.violations}; {_replay(seed, spec)}"


def test_the_races_happen_and_go_both_ways() -> None:
    """Fixed busy runs: take-backs are asked for, some win (their accept is
    never certified), some lose; nothing is certified twice."""
    won = lost = 0
    for seed in range(3):
        spec = SimSpec(
            n=4, byzantine=1, payments=6, fork="none", expiry_ms=1000, take_backs=1.0, skew_ms=200
        )
        result = FinalitySim(seed, spec).run()
        assert not result.violations, (seed, result.violations)
        assert result.take_backs > 0
        won += result.take_backs_won
        lost += result.take_backs - result.take_backs_won
    assert won > 0
    assert lost > 0


def test_without_the_rule_both_are_certified(monkeypatch: object) -> None:
    """The check has teeth: witnesses that vote for both an accept and a
    take-back of one transfer (the rule switched off) certify both."""
    import pytest

    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(WitnessState, "_exclusive", lambda self, entry: None)
        found = False
        for seed in range(6):
            spec = SimSpec(
                n=4, payments=6, fork="none", loss=0.0, dup=0.0, expiry_ms=50, take_backs=1.0
            )
            result = FinalitySim(seed, spec).run()
            found = found or any("both certified" in x for x in result.violations)
        assert found
    finally:
        mp.undo()


def test_a_certified_take_backs_time_is_past_its_expiry_and_within_the_honest_clocks() -> None:
    """docs/witness.md §3.5: witnesses' clocks skewed by up to 300 ms either
    way, a liar attesting any time (before the expiry, just after, far in
    the future): every certified take-back's certificate carries a time of
    each voter, all past the transfer's expiry, and its certified time lies
    between the smallest and the largest time of the honest voters."""
    checked = 0
    for seed in range(4):
        spec = SimSpec(
            n=4, byzantine=1, payments=6, fork="none", expiry_ms=300, take_backs=1.0, skew_ms=300
        )
        sim = FinalitySim(seed, spec)
        result = sim.run()
        assert not result.violations, (seed, result.violations)
        honest = {w.key.public for w in sim.witnesses if not w.byzantine}
        for cert in sim.certs.values():
            entry = sim.store[cert.id]
            if not isinstance(entry.body, TakeBack):
                assert sim.timed_deadline(entry) is None
                continue
            deadline = sim.timed_deadline(entry)
            assert deadline is not None
            assert cert.problem(sim.rules) is None
            assert cert.time_problem(deadline, sim.rules) is None, seed
            mine = [t for w, t, _sig in cert.times if w in honest]
            assert len(mine) >= sim.rules.quorum - sim.rules.faults
            certified = cert.certified_time(sim.rules)
            assert certified is not None
            assert deadline < certified
            assert min(mine) <= certified <= max(mine), (seed, cert.times)
            checked += 1
    assert checked > 0
