"""Runs of entries on a community's gossip topic (troc.protocol.gossip_wire):
one author's consecutive entries in one message, each checked as alone, and
told apart from a single entry by their shape; and what a node publishes
for its own entries queued together (troc.node.topics.gossip_messages)."""

from __future__ import annotations

import pytest

from tests.helpers import World, key, resign
from troc.errors import CodecError
from troc.node.topics import gossip_messages
from troc.protocol import codec
from troc.protocol.gossip_wire import MAX_RUN, decode_run, encode_run, is_run


def _world() -> World:
    w = World()
    for n in (1, 2):
        w.join(key(n))
    return w


def test_a_run_carries_one_logs_entries_and_is_told_from_an_entry() -> None:
    w = _world()
    payments = [w.pay(key(1), key(2), 1) for _ in range(3)]
    data = encode_run([e.wire for e in payments])
    assert is_run(data)
    assert not is_run(payments[0].wire)
    assert [e.id for e in decode_run(data)] == [e.id for e in payments]


@pytest.mark.parametrize("fault", ["two_authors", "gap", "reordered", "bad_signature", "one"])
def test_a_run_that_is_not_one_logs_verified_entries_in_order_is_refused(fault: str) -> None:
    w = _world()
    a = [w.pay(key(1), key(2), 1) for _ in range(3)]
    b = w.pay(key(2), key(1), 1)
    wires = {
        "two_authors": [a[2].wire, b.wire],
        "gap": [a[0].wire, a[2].wire],
        "reordered": [a[1].wire, a[0].wire],
        "bad_signature": [a[0].wire, resign(key(2), a[1])],  # signed by another key
        "one": [a[0].wire],
    }[fault]
    data = codec.pack({"e": wires, "t": "run"}, codec.Limits(
        max_size=1 << 20, max_depth=2, max_str=8, max_bin=1 << 16, max_array=100, max_map=2
    ))  # fmt: skip
    with pytest.raises(CodecError):
        decode_run(data)


def test_own_entries_queued_together_leave_as_one_run_per_log() -> None:
    w = _world()
    mine = [w.pay(key(1), key(2), 1) for _ in range(MAX_RUN + 3)]
    theirs = w.pay(key(2), key(1), 1)
    messages = gossip_messages([*mine, theirs])
    # 64, then the 3 left, then the other log's entry alone, as itself.
    assert [c for c, _ in messages] == [w.community] * 3
    assert [len(decode_run(d)) for _, d in messages[:2]] == [MAX_RUN, 3]
    assert messages[2][1] == theirs.wire
    assert gossip_messages([mine[0]]) == [(w.community, mine[0].wire)]  # as before runs
