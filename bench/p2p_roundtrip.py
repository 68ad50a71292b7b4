"""Latency and frame throughput between two troc hosts in one process.

    python bench/p2p_roundtrip.py [--quick]

Measures, over real TCP + Noise + Yamux on 127.0.0.1:
- connect + open stream + one frame round trip, fresh hosts each time;
- a frame round trip on an open stream;
- one-way throughput of 256 B and 64 KiB frames, one frame per write and
  (for 256 B) 64 frames per write.
Prints a line per figure, then one JSON line with all of them.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import trio
from libp2p.abc import INetStream

from troc.net.p2p import (
    FrameError,
    FrameReader,
    P2PHost,
    open_host,
    read_frame,
    write_frame,
    write_frames,
)

ECHO = "/troc/bench-echo/1.0.0"
SINK = "/troc/bench-sink/1.0.0"
MAX = 1024 * 1024


async def _echo(stream: INetStream, peer: str) -> None:
    reader = FrameReader(stream, max_size=MAX)
    while True:
        try:
            data = await reader.read_frame()
        except FrameError:  # the client closed the stream
            return
        await write_frame(stream, data)


async def _sink(stream: INetStream, peer: str) -> None:
    """Count frames until an empty one, then answer with the count."""
    reader = FrameReader(stream, max_size=MAX, frame_timeout=60)
    count = 0
    while await reader.read_frame():
        count += 1
    await write_frame(stream, str(count).encode())


def _serve(host: P2PHost) -> None:
    host.set_stream_handler(ECHO, _echo)
    host.set_stream_handler(SINK, _sink)


async def connect_roundtrip_ms(rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        async with open_host(gossip=None) as a, open_host(gossip=None) as b:
            _serve(b)
            start = time.perf_counter()
            await a.connect(b.listen_addrs()[0])
            stream = await a.open_stream(b.peer_id, ECHO)
            await write_frame(stream, b"ping")
            assert await read_frame(stream, 16) == b"ping"
            out.append((time.perf_counter() - start) * 1e3)
            await stream.close()
    return out


async def stream_roundtrip_ms(a: P2PHost, b: P2PHost, rounds: int) -> list[float]:
    stream = await a.open_stream(b.peer_id, ECHO)
    reader = FrameReader(stream, max_size=MAX)
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        await write_frame(stream, b"x" * 256)
        await reader.read_frame()
        out.append((time.perf_counter() - start) * 1e3)
    await stream.close()
    return out


async def throughput(
    a: P2PHost, b: P2PHost, size: int, total: int, per_write: int
) -> dict[str, float]:
    frame = b"\xab" * size
    stream = await a.open_stream(b.peer_id, SINK)
    start = time.perf_counter()
    for _ in range(total // per_write):
        if per_write == 1:
            await write_frame(stream, frame, frame_timeout=60)
        else:
            await write_frames(stream, [frame] * per_write, frame_timeout=60)
    await write_frame(stream, b"")
    count = int(await read_frame(stream, 32, frame_timeout=60))
    elapsed = time.perf_counter() - start
    await stream.close()
    assert count == total, (count, total)
    return {"frames_per_s": total / elapsed, "mb_per_s": total * size / elapsed / 1e6}


async def main(quick: bool) -> dict[str, object]:
    scale = 0.2 if quick else 1.0
    results: dict[str, object] = {}

    cold = await connect_roundtrip_ms(int(20 * scale) or 3)
    results["connect_stream_rtt_ms_p50"] = statistics.median(cold)
    print(
        f"connect + stream + round trip: p50 {statistics.median(cold):.1f} ms, "
        f"max {max(cold):.1f} ms ({len(cold)} runs)"
    )

    async with open_host(gossip=None) as a, open_host(gossip=None) as b:
        _serve(b)
        await a.connect(b.listen_addrs()[0])
        warm = await stream_roundtrip_ms(a, b, int(500 * scale))
        results["stream_rtt_ms_p50"] = statistics.median(warm)
        print(f"round trip on open stream (256 B): p50 {statistics.median(warm):.2f} ms")

        for name, size, total, per_write in [
            ("256B_x1", 256, int(5000 * scale), 1),
            ("256B_x64", 256, int(64_000 * scale) // 64 * 64, 64),
            ("64KiB_x1", 64 * 1024, int(1600 * scale), 1),
        ]:
            r = await throughput(a, b, size, total, per_write)
            results[f"throughput_{name}"] = r
            print(
                f"{size:>6} B frames, {per_write:>2} per write: "
                f"{r['frames_per_s']:>9,.0f} frames/s {r['mb_per_s']:7.1f} MB/s"
            )
    return results


if __name__ == "__main__":
    res = trio.run(main, "--quick" in sys.argv)
    print(json.dumps({"bench": "p2p_roundtrip", **res}, sort_keys=True))
