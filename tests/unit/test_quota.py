"""Per-peer budgets: a peer over its rate is told how long to wait; memory is bounded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from troc.net.quota import PeerQuota


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_within_budget_costs_nothing_and_a_flood_waits() -> None:
    clock = Clock()
    q = PeerQuota(1000, 10, clock=clock)
    assert q.charge("a", nbytes=500, entries=5) == 0
    assert q.charge("a", nbytes=500, entries=5) == 0
    # The next 10 entries are one second over the budget of 10/s.
    assert q.charge("a", entries=10) == 1.0
    # Another peer is not affected by a's flood.
    assert q.charge("b", nbytes=1000, entries=10) == 0
    clock.now = 2.0  # two seconds later a's debt is paid and it may go on
    assert q.charge("a", entries=5) == 0
    assert q.throttled == 1


@given(st.lists(st.tuples(st.integers(0, 50), st.floats(0, 1)), max_size=200))
def test_a_peer_never_gets_more_than_its_rate_plus_burst(sends: list[tuple[int, float]]) -> None:
    """Whatever a peer sends when, what it is let through without waiting
    stays within rate times time plus one second of burst."""
    clock = Clock()
    q = PeerQuota(0, 100, clock=clock)
    allowed = 0
    for n, gap in sends:
        clock.now += gap
        if q.charge("p", entries=n) == 0:
            allowed += n
    assert allowed <= 100 * clock.now + 100


def test_memory_is_bounded() -> None:
    q = PeerQuota(10, 10, max_peers=100)
    for i in range(10_000):
        q.charge(f"peer{i}", nbytes=1)
    assert len(q) == 100
