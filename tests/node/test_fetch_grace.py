"""A gossiped entry parked on what it builds on gives gossip a moment to
bring it before syncing with its forwarder (``Topics._fetch_missing``): a
run gossiped out of order is mostly followed at once by the run below it,
and a sync at once carried what gossip was about to bring."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import trio

from troc.node.topics import FETCH_DELAYS, Topics

KEY = (b"c" * 32, b"a" * 32)
ENTRY = SimpleNamespace(author=b"a" * 32, seq=7, id=b"i" * 32)


def _fetching(
    nursery: trio.Nursery, held: list[bool]
) -> tuple[Any, trio.MemoryReceiveChannel[str | None]]:
    """A fetch of ENTRY's dependency started; the topics and the peers it
    asks to sync with. ``held``: empty until the entry is stored."""
    send, receive = trio.open_memory_channel[str | None](10)
    store = SimpleNamespace(entry=lambda *_args: object() if held else None)
    topics = SimpleNamespace(
        local=SimpleNamespace(store=store),
        peers=SimpleNamespace(is_banned=lambda _peer: False),
        _sync_soon=send,
        _fetching={KEY},
    )
    nursery.start_soon(Topics._fetch_missing, topics, KEY[0], ENTRY, ("relay", None), KEY)
    return topics, receive


async def test_what_gossip_brings_within_the_first_wait_costs_no_sync(
    autojump_clock: trio.testing.MockClock,
) -> None:
    held: list[bool] = []
    async with trio.open_nursery() as nursery:
        topics, asked = _fetching(nursery, held)
        await trio.sleep(0.2)
        held.append(True)  # the run below it came by gossip, 0.2 s later
    assert asked.statistics().current_buffer_used == 0
    assert not topics._fetching


async def test_an_entry_still_parked_after_the_wait_is_fetched_from_its_forwarder(
    autojump_clock: trio.testing.MockClock,
) -> None:
    held: list[bool] = []
    async with trio.open_nursery() as nursery:
        topics, asked = _fetching(nursery, held)
        with trio.fail_after(FETCH_DELAYS[0] + 0.01):
            assert await asked.receive() == "relay"
        held.append(True)
    assert not topics._fetching
