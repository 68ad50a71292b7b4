"""Yamux window updates as go-yamux sends them: once half the window is consumed.

py-libp2p 0.8.1's ``YamuxStream`` answers nearly every read with a
WINDOW_UPDATE frame: its "release on read" branch (on unless the
``PY_YAMUX_RELEASE_ON_READ`` variable says 0) and, with that off, its
"partial slack" branch both credit back whatever was just read. Measured
with two troc hosts on 127.0.0.1: 300 writes of 200 bytes drew 330 window
updates (181 with the variable at 0). Gossip makes this costly where it
hurts: a community server writes each message to every member, and each
member's stream answers each copy with a frame the server must decrypt,
parse and schedule a task for, as many frames back as it sent.

go-yamux (``sendWindowUpdate``) sends an update only when the window can
grow by at least half its size (``delta < max/2`` returns early), and so
does this replacement: the peer still always has at least half a window
(128 KiB at first) of credit, so a bulk transfer never stalls on it, and
py-libp2p's auto-tuning (the target window doubling when updates come
within four round trips) still runs with each update sent.

:func:`install` replaces the method on py-libp2p's class, for every host of
the process (a Yamux connection builds its streams from that class by name,
so a subclass could not be passed in).
"""

from __future__ import annotations

import libp2p.stream_muxer.yamux.yamux as _yamux
from libp2p.stream_muxer.yamux.yamux import YamuxStream

__all__ = ["MAX_RECV_WINDOW", "install"]

#: The most a stream's receive window grows to. py-libp2p's auto-tuning
#: doubles it, up to 16 MiB, while the reader keeps up; what the window lets
#: the peer send beyond what the reader has taken sits in this process's
#: memory. A newcomer catching up from a fast server held ~50 MB more so at
#: 1,000,000 entries (bench/join.py --witnessed: peak RSS 303 MB, 254 MB
#: with this bound, and it caught up sooner). 2 MiB still lets a stream
#: carry 20 MB/s over a path of 100 ms round trip.
MAX_RECV_WINDOW = 2 * 1024 * 1024


async def _window_update_at_half(self: YamuxStream, *, bytes_read: int = 0) -> None:
    """Credit the peer back once at least half the target window is consumed."""
    del bytes_read  # what was read shows in the window itself
    async with self.window_lock:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        delta = self.target_recv_window - (self.recv_window + buffered)
        if delta <= 0 or delta < self.target_recv_window // 2:
            return
        increment = self._grow_to_delta(buffered) + self._apply_autotune_epoch(buffered)
        self._pending_recv_release = 0
    if increment > 0:
        await self.send_window_update(increment, skip_lock=True)


def install() -> None:
    """Use :func:`_window_update_at_half` for every Yamux stream, and bound
    every stream's receive window to :data:`MAX_RECV_WINDOW` (idempotent)."""
    _yamux.MAX_WINDOW_SIZE = MAX_RECV_WINDOW  # read at each auto-tuning step
    YamuxStream._auto_tune_and_send_window_update = _window_update_at_half  # type: ignore[method-assign]
