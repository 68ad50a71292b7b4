"""Void votes in the byzantine simulation (docs/witness.md §3.6): the loser
of an accept / take-back race asks for void votes once its rival is
certified, and its author's log goes on: every honest entry after the loser
becomes final, no transfer counts both ways, no entry is both certified and
void-certified, and a void entry's rival is always certified; with up to f
byzantine witnesses (which also sign void votes for anything), loss,
duplication, delay and crashes."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.property.test_witness import FinalitySim, SimSpec, _replay
from tests.property.test_witness_expiry import expiry_specs
from troc.protocol.witness import Refused, WitnessState

EXAMPLES = settings().max_examples


#: The expiry simulation's runs, with void votes.
void_specs = expiry_specs().map(lambda spec: replace(spec, void=True))
#: Busy runs with a byzantine witness: races lost both ways.
BUSY = SimSpec(
    n=4, byzantine=1, payments=6, fork="none", expiry_ms=300, take_backs=1.0, skew_ms=200, void=True
)


@settings(
    max_examples=max(EXAMPLES // 8, 4), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(seed=st.integers(0, 2**32 - 1), spec=void_specs)
# A witness that recorded and marked an entry void, and crashed before its
# answer, signs the same void vote again at once (it waited forever for a
# certificate it no longer needed); and a payee whose payer's tip waits for
# that void certificate accepts once it comes (docs/witness.md §6.1).
@example(
    seed=28025,
    spec=SimSpec(
        payments=5, loss=0.0, dup=0.0, put_crash=0.1, expiry_ms=50, take_backs=1.0, void=True
    ),
)
@example(
    seed=0,
    spec=SimSpec(
        loss=0.0,
        dup=0.0,
        max_delay_ms=5,
        payments=5,
        fork="none",
        expiry_ms=50,
        take_backs=0.5,
        void=True,
    ),
)
# A witness that never saw the winning accept lacks its transfer's
# certificate: it parks the accept a void request carries, and waits for
# that certificate rather than refusing `no_certified_rival` (§3.6, step 3).
# (The second: so with 7 witnesses, 2 byzantine, 2 crashes and no loss.)
@example(
    seed=1,
    spec=SimSpec(
        n=7,
        byzantine=2,
        loss=0.0,
        dup=0.0,
        max_delay_ms=5,
        payments=1,
        fork="none",
        crashes=2,
        expiry_ms=1000,
        take_backs=1.0,
        void=True,
    ),
)
@example(
    seed=13963,
    spec=SimSpec(
        byzantine=1,
        dup=0.0,
        max_delay_ms=5,
        payments=4,
        fork="none",
        expiry_ms=1000,
        take_backs=0.5,
        skew_ms=200,
        void=True,
    ),
)
def test_a_lost_race_stops_no_log(seed: int, spec: SimSpec) -> None:
    result = FinalitySim(seed, spec).run()
    assert not result.violations, f"{result.violations}; {_replay(seed, spec)}"


def test_losers_are_voided_and_their_logs_go_on() -> None:
    """Fixed busy runs with a byzantine witness and no split vote: races are
    lost, each loser gets a void certificate, and every entry its author
    signed after it becomes final (a lost race is not excused: without void
    votes these runs report the loser's later entries never final)."""
    voided = after = 0
    for seed in (1, 4):
        result = FinalitySim(seed, BUSY).run()
        assert not result.violations, (seed, result.violations)
        assert result.races_stuck == 0
        voided += result.voided
        after += result.after_void
    assert voided > 0
    assert after > 0


def test_without_void_votes_the_losers_logs_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check has teeth: witnesses that never sign a void vote leave the
    losers' later entries unfinal, and the run says so."""
    monkeypatch.setattr(
        WitnessState, "decide_void", lambda self, entry, **_: Refused("no", "void votes are off")
    )
    result = FinalitySim(1, BUSY).run()
    assert any("never became final" in v for v in result.violations), result.violations
