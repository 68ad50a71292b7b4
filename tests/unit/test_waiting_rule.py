"""The waiting set's one decision (troc.protocol.backend.room_to_park and
parking_time), which MemoryBackend and the SQLite Store both call."""

from __future__ import annotations

from troc.crypto.sign import MemberId
from troc.protocol.backend import Parking, WaitLimits, parking_time, room_to_park
from troc.protocol.entry import CommunityId

LIMITS = WaitLimits(members=3, strangers=2, per_author=4, per_peer=5, lifetime_ms=1000)


def _parking(*, member: bool, source: str | None = "peer") -> Parking:
    return Parking(CommunityId(b"c" * 32), MemberId(b"a" * 32), member, source, 10_000)


def test_room_in_the_pool_evicts_nothing() -> None:
    assert room_to_park(LIMITS, _parking(member=True), by_author=0, by_peer=0, in_pool=2) == 0


def test_a_full_pool_evicts_its_oldest_and_the_pools_differ() -> None:
    assert room_to_park(LIMITS, _parking(member=True), by_author=0, by_peer=0, in_pool=3) == 1
    assert room_to_park(LIMITS, _parking(member=False), by_author=0, by_peer=0, in_pool=3) == 2
    assert room_to_park(LIMITS, _parking(member=False), by_author=0, by_peer=0, in_pool=1) == 0


def test_an_author_or_peer_with_its_share_is_refused() -> None:
    member = _parking(member=True)
    assert room_to_park(LIMITS, member, by_author=4, by_peer=0, in_pool=0) is None
    assert room_to_park(LIMITS, member, by_author=3, by_peer=5, in_pool=0) is None
    # No source (a local or unknown one): the per-peer share does not apply.
    local = _parking(member=True, source=None)
    assert room_to_park(LIMITS, local, by_author=0, by_peer=99, in_pool=0) == 0


def test_a_pool_of_no_room_refuses() -> None:
    no_strangers = WaitLimits(strangers=0)
    assert (
        room_to_park(no_strangers, _parking(member=False), by_author=0, by_peer=0, in_pool=0)
        is None
    )


def test_parking_time_never_goes_back() -> None:
    assert parking_time(LIMITS, 5_000, None) == (5_000, 4_000)
    assert parking_time(LIMITS, 5_000, 7_000) == (7_000, 6_000)  # the clock went back
    assert parking_time(LIMITS, 9_000, 7_000) == (9_000, 8_000)
