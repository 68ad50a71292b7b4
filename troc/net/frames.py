"""Length-prefixed frames on libp2p streams, and the errors of the net layer.

A frame is an unsigned varint length, then that many bytes. The length is
checked against the reader's limit before a single body byte is read, so a
peer cannot make us buffer more than we agreed to. Every read and write runs
under a deadline: a peer that stalls mid-frame costs a timeout, not a task.
All stream trouble surfaces as :class:`FrameError`, which the per-peer
boundary catches.

This module knows streams, not hosts: :mod:`troc.net.p2p` (the host) and
:mod:`troc.net.relay_client` (dialing through a relay, which the host does
for relayed addresses) both build on it, so neither imports the other in a
circle. :mod:`troc.net.p2p` re-exports its names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamEOF, StreamError

from troc.errors import NetworkError, RemoteProtocolError

__all__ = [
    "DEFAULT_IO_TIMEOUT",
    "DialError",
    "FrameError",
    "FrameReader",
    "close_stream",
    "encode_frame",
    "read_frame",
    "remote_peer_id",
    "write_frame",
    "write_frames",
]

DEFAULT_IO_TIMEOUT = 10.0
#: How long shutdown may take before it is cut short.
_CLOSE_TIMEOUT = 5.0
#: A frame length needs at most 10 varint bytes (64 bits); any limit we accept is far below.
_MAX_VARINT_BYTES = 10
_READ_CHUNK = 64 * 1024  # Yamux's own frame size: one read per muxer frame.

_Take = Callable[[int], Awaitable[bytes]]  # n bytes, fewer only at EOF


class FrameError(RemoteProtocolError):
    """A frame could not be read or written: the stream is no longer usable.

    ``reason`` is one of ``too_large`` (announced length over the limit, body
    not read), ``bad_varint``, ``truncated`` (EOF inside a frame), ``eof``
    (clean EOF before a frame began: the peer is done, not wrong),
    ``timeout`` and ``reset``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DialError(NetworkError):
    """A peer could not be reached, or would not open a stream for the protocol."""


def remote_peer_id(stream: INetStream) -> str:
    """The base58 id of the peer at the other end of ``stream``."""
    return str(stream.muxed_conn.peer_id.to_base58())


# --- frames -----------------------------------------------------------------


def encode_frame(data: bytes) -> bytes:
    """Return ``data`` with its unsigned-varint length prefix.

    Concatenate several encoded frames and write them at once: py-libp2p's
    cost is per write, not per byte.
    """
    n = len(data)
    prefix = bytearray()
    while n >= 0x80:
        prefix.append((n & 0x7F) | 0x80)
        n >>= 7
    prefix.append(n)
    return bytes(prefix) + data


async def write_frame(
    stream: INetStream, data: bytes, *, frame_timeout: float = DEFAULT_IO_TIMEOUT
) -> None:
    """Write one frame. Raises :class:`FrameError` (``timeout``/``reset``)."""
    await _write(stream, encode_frame(data), frame_timeout)


async def write_frames(
    stream: INetStream, frames: Iterable[bytes], *, frame_timeout: float = DEFAULT_IO_TIMEOUT
) -> None:
    """Write several frames in a single stream write."""
    await _write(stream, b"".join(encode_frame(f) for f in frames), frame_timeout)


async def _write(stream: INetStream, payload: bytes, frame_timeout: float) -> None:
    try:
        # A peer that stops reading fills Yamux's window and blocks us forever.
        with trio.fail_after(frame_timeout):
            await stream.write(payload)
    except trio.TooSlowError as exc:
        raise FrameError("timeout", f"write of {len(payload)} bytes timed out") from exc
    except StreamError as exc:
        raise FrameError("reset", f"stream closed while writing: {exc!r}") from exc


class FrameReader:
    """Reads frames from one stream through a buffer.

    Fewer, larger reads than :func:`read_frame` (which must not read past its
    frame); use one reader per stream for the stream's whole life, since bytes
    of the next frame may already sit in its buffer.
    """

    def __init__(
        self, stream: INetStream, *, max_size: int, frame_timeout: float = DEFAULT_IO_TIMEOUT
    ) -> None:
        self._stream = stream
        self._max_size = max_size
        self._frame_timeout = frame_timeout
        self._buf = bytearray()

    async def read_frame(self) -> bytes:
        """Read the next frame; the whole frame must arrive within ``frame_timeout``."""
        return await _read_frame(self._take, self._max_size, self._frame_timeout)

    async def _take(self, n: int) -> bytes:
        # Never wait for more than n bytes: an empty frame must not block.
        while len(self._buf) < n:
            chunk = await _read_some(self._stream, max(n, _READ_CHUNK))
            if not chunk:
                break
            self._buf += chunk
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


async def read_frame(
    stream: INetStream, max_size: int, *, frame_timeout: float = DEFAULT_IO_TIMEOUT
) -> bytes:
    """Read one frame of at most ``max_size`` bytes, and not one byte more.

    Raises :class:`FrameError`: ``too_large`` is raised as soon as the length
    prefix exceeds ``max_size``, before any body byte is read; ``timeout`` when
    the whole frame, counting the wait for its first byte, has not arrived
    within ``frame_timeout`` seconds.
    """

    async def take(n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = await _read_some(stream, n - len(out))
            if not chunk:
                break
            out += chunk
        return bytes(out)

    return await _read_frame(take, max_size, frame_timeout)


async def _read_some(stream: INetStream, n: int) -> bytes:
    """Up to ``n`` bytes; ``b""`` at EOF."""
    try:
        return await stream.read(n)
    except StreamEOF:
        return b""
    except StreamError as exc:  # reset, or the connection went away
        raise FrameError("reset", f"stream reset while reading: {exc!r}") from exc


async def _read_frame(take: _Take, max_size: int, frame_timeout: float) -> bytes:
    try:
        # One deadline per frame, not per read: a peer dripping a byte at a
        # time must not hold the stream open forever.
        with trio.fail_after(frame_timeout):
            length = await _read_length(take, max_size)
            body = await take(length)
    except trio.TooSlowError as exc:
        raise FrameError("timeout", f"frame not received within {frame_timeout} s") from exc
    if len(body) != length:
        raise FrameError("truncated", f"stream ended after {len(body)} of {length} bytes")
    return body


async def _read_length(take: _Take, max_size: int) -> int:
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        byte = await take(1)
        if not byte:
            if i == 0:
                raise FrameError("eof", "stream ended between frames")
            raise FrameError("truncated", "stream ended inside a length prefix")
        b = byte[0]
        if i > 0 and b == 0:
            raise FrameError("bad_varint", "length prefix is not minimally encoded")
        value |= (b & 0x7F) << (7 * i)
        if value > max_size:
            raise FrameError("too_large", f"frame announces over {max_size} bytes")
        if not b & 0x80:
            return value
    raise FrameError("bad_varint", "length prefix too long")


async def close_stream(stream: INetStream, *, reset: bool) -> None:
    """Close (or reset) ``stream``, best effort and bounded in time: never raises."""
    with trio.move_on_after(_CLOSE_TIMEOUT):
        try:
            await (stream.reset() if reset else stream.close())
        except Exception:  # the peer is gone already; nothing left to release
            pass
