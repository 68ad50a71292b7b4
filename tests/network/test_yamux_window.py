"""Yamux window updates once per half window (troc/net/yamux_window.py).

Real hosts on 127.0.0.1. Frames are counted at the receiving stream's
``send_window_update``: with py-libp2p 0.8.1's own method, 300 small writes
drew ~330 updates, one per read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio
from libp2p.stream_muxer.yamux.yamux import YamuxStream

from troc.net.p2p import open_host
from troc.net.yamux_window import MAX_RECV_WINDOW

PROTOCOL = "/troc/test/yamux-window/1"


@contextmanager
def _counting_updates() -> Iterator[list[int]]:
    """Each window update any stream sends, as its increment."""
    sent: list[int] = []
    original = YamuxStream.send_window_update

    async def counting(self: YamuxStream, increment: int, skip_lock: bool = False) -> None:
        sent.append(increment)
        await original(self, increment, skip_lock)

    YamuxStream.send_window_update = counting  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        YamuxStream.send_window_update = original  # type: ignore[method-assign]


async def _transfer(writes: int, size: int, read_size: int, pause: float) -> None:
    """``writes`` writes of ``size`` bytes from one host to another, read
    ``read_size`` at a time; fails unless every byte arrives within 30 s."""
    total = writes * size
    async with (
        open_host(listen=["/ip4/127.0.0.1/tcp/0"], gossip=None) as a,
        open_host(listen=["/ip4/127.0.0.1/tcp/0"], gossip=None) as b,
    ):
        done = trio.Event()
        got = 0

        async def handler(stream: object, _peer: str) -> None:
            nonlocal got
            while got < total:
                data = await stream.read(read_size)  # type: ignore[attr-defined]
                if not data:
                    break
                got += len(data)
            done.set()

        b.set_stream_handler(PROTOCOL, handler)
        with trio.fail_after(30):
            await a.connect(b.listen_addrs()[0])
            stream = await a.open_stream(b.peer_id, PROTOCOL)
            for _ in range(writes):
                await stream.write(b"x" * size)
                if pause:
                    await trio.sleep(pause)
            await done.wait()
        assert got == total


async def test_small_messages_draw_no_window_update_each() -> None:
    """Gossip-sized writes, each read on its own: no frame back per read."""
    with _counting_updates() as sent:
        await _transfer(writes=300, size=200, read_size=65536, pause=0.001)
    assert len(sent) <= 2, f"{len(sent)} window updates for 300 reads"


@pytest.mark.parametrize("read_size", [1000, 65536])
async def test_bulk_transfer_is_credited_by_half_windows(read_size: int) -> None:
    """8 MiB through a 256 KiB window: it completes, with one update per at
    least half a window consumed."""
    with _counting_updates() as sent:
        await _transfer(writes=128, size=65536, read_size=read_size, pause=0)
    assert sent, "the sender was never credited"
    assert min(sent) >= 128 * 1024
    assert len(sent) <= 8 * 1024 // 128


async def test_a_fast_reader_does_not_grow_its_window_past_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """32 MiB read as fast as it comes: py-libp2p's auto-tuning doubles the
    window at each update that comes within four round trips (up to 16 MiB
    by its own bound); here it stops at MAX_RECV_WINDOW, what may sit
    unread in memory. The round trip is taken as 100 ms (py-libp2p's
    assumption until it has measured one), as on a real path."""
    monkeypatch.setenv("PY_YAMUX_ASSUME_RTT_MS", "100")
    targets: list[int] = []
    original = YamuxStream.send_window_update

    async def recording(self: YamuxStream, increment: int, skip_lock: bool = False) -> None:
        targets.append(self.target_recv_window)
        await original(self, increment, skip_lock)

    YamuxStream.send_window_update = recording  # type: ignore[method-assign]
    try:
        await _transfer(writes=512, size=65536, read_size=65536, pause=0)
    finally:
        YamuxStream.send_window_update = original  # type: ignore[method-assign]
    assert max(targets) > 256 * 1024  # it did grow
    assert max(targets) <= MAX_RECV_WINDOW
