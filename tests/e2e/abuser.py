"""An abusive peer against a `troc relay` server, for tests/e2e/test_abuse.py.

    python -m tests.e2e.abuser --server ADDR --community cID --seconds 20

For ``--seconds`` (then it stops, whatever it is doing), concurrently and
from many libp2p identities (``open_host``; a banned identity is replaced by
a fresh one, up to a bounded number):

* ``gossip``: floods the community's gossip topic with well-formed junk
  (validly signed joins and offers of made-up members, which an open
  community admits) and with garbage bytes;
* ``sync``: sync sessions that push junk entries, garbage frames, and frames
  announcing far more than MAX_FRAME bytes;
* ``streams``: opens many streams (sync and HOP) and keeps them open, idle;
* ``slow``: starts sync sessions that ask for everything, then never read;
* ``reserve``: tries to take every relay reservation, one per identity,
  holding each it gets until the end.

It prints one JSON line of counts per attack on stdout when done. Every
loop is bounded in count as well as by the deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import trio

from troc.crypto.ids import decode_id
from troc.crypto.sign import SigningKey
from troc.net.gossip import GossipParams
from troc.net.p2p import DialError, FrameError, FrameReader, P2PHost, encode_frame, open_host
from troc.net.relay import HOP_PROTOCOL, RelayRefused, reserve
from troc.node.local import now_ms
from troc.node.node import topic_of
from troc.protocol.entry import CommunityId, Entry, EntryId, Join, Offer
from troc.protocol.sync_wire import MAX_FRAME, decode_message, encode_message
from troc.protocol.sync_wire import PROTOCOL_ID as SYNC

#: Identities each attack may use in all (a banned one is replaced).
MAX_IDENTITIES = 60
#: Reservation attempts (one identity each).
RESERVE_IDENTITIES = 12
#: Streams the stream flood opens per protocol.
FLOOD_STREAMS = 200
#: Junk entries made up front (signing is the costly part) and reused.
JUNK_LOGS = 150

stats: dict[str, Counter[str]] = {}


def frame(msg: dict[str, Any]) -> bytes:
    return encode_frame(encode_message(msg))


def hello(community: CommunityId) -> bytes:
    """A hello whose digest matches nobody's: the server answers with its heads."""
    return frame({"t": "hello", "c": community, "d": bytes(32), "n": 0})


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def junk_logs(community: CommunityId, count: int) -> list[list[bytes]]:
    """Logs of made-up members: a join and two offers each, validly signed."""
    logs = []
    for i in range(count):
        key = SigningKey.generate()
        prev: EntryId | None = None
        wires = []
        bodies = [Join(name=f"junk {i}"), Offer("offer", f"junk {i} a"), Offer("want", f"{i} b")]
        for seq, body in enumerate(bodies, start=1):
            e = Entry.create(
                key, community=community, seq=seq, prev=prev, timestamp_ms=now_ms(), body=body
            )
            wires.append(e.wire)
            prev = e.id
        logs.append(wires)
    return logs


async def quietly(stream: Any) -> None:
    with trio.move_on_after(2):
        try:
            await stream.reset()
        except Exception:
            pass


async def as_new_identity(
    name: str,
    server: str,
    attack: Callable[[P2PHost], Awaitable[None]],
    gossip: GossipParams | None = None,
) -> None:
    """Run ``attack`` from fresh identities, one after the other (bounded)."""
    count = stats.setdefault(name, Counter())
    for _ in range(MAX_IDENTITIES):
        count["identities"] += 1
        try:
            async with open_host(gossip=gossip) as host:
                with trio.fail_after(10):
                    await host.connect(server)
                await attack(host)
        except (DialError, FrameError, trio.TooSlowError) as exc:
            count[f"error {type(exc).__name__}"] += 1
        except Exception as exc:  # libp2p's zoo: a reset stream, a closed connection
            count[f"error {type(exc).__name__}"] += 1
            print(f"{name}: {exc!r}"[:500], file=sys.stderr)
        await trio.sleep(0.05)


# --- the attacks -------------------------------------------------------------------


async def gossip_flood(server: str, server_id: str, community: CommunityId, junk: list[bytes]):
    count = stats.setdefault("gossip", Counter())
    topic = topic_of(community)

    async def attack(host: P2PHost) -> None:
        gossip = host.gossip
        async with gossip.subscribe(topic):
            for _ in range(200):  # the server's subscription reaches us (10 s at most)
                if server_id in gossip.topic_peers(topic):
                    break
                await trio.sleep(0.05)
            for i in range(200_000):
                data = junk[i % len(junk)] if i % 4 else os.urandom(120)
                await gossip.publish(topic, data)
                count["published"] += 1
                if i % 10 == 0:
                    await trio.sleep(0.01)

    params = GossipParams(max_messages_per_second=1_000_000)
    async with trio.open_nursery() as nursery:
        for _ in range(3):  # three identities at once: three quota buckets
            nursery.start_soon(as_new_identity, "gossip", server, attack, params)


async def sync_flood(server: str, server_id: str, community: CommunityId, logs: list[list[bytes]]):
    """Per identity: two sessions pushing junk logs (valid entries of made-up
    members), then one malformed write (garbage, or a frame announcing 64 MiB),
    which gets it banned; the next identity carries on."""
    count = stats.setdefault("sync", Counter())
    identity = iter(range(MAX_IDENTITIES))

    async def attack(host: P2PHost) -> None:
        i = next(identity, 0)
        for j in range(2):
            stream = await host.open_stream(server_id, SYNC)
            try:
                reader = FrameReader(stream, max_size=MAX_FRAME, frame_timeout=5)
                await stream.write(hello(community))
                await reader.read_frame()
                start = (i * 2 + j) * 20 % len(logs)
                wires = [w for log in logs[start : start + 20] for w in log]
                await stream.write(
                    frame({"t": "heads", "h": []})
                    + frame({"t": "entries", "e": wires})
                    + frame({"t": "end"})
                )
                count["junk sessions"] += 1
                count["junk entries"] += len(wires)
                with trio.move_on_after(2):
                    for _ in range(100):  # the server's entries, then its fin
                        if decode_message(await reader.read_frame()).get("t") == "fin":
                            await stream.write(frame({"t": "fin"}))
                            break
            except FrameError:
                pass
            finally:
                await quietly(stream)
        stream = await host.open_stream(server_id, SYNC)
        try:
            if i % 2:
                await stream.write(b"\xff" * 64 + os.urandom(256))
                count["garbage"] += 1
            else:
                await stream.write(varint(64 * MAX_FRAME) + os.urandom(64 * 1024))
                count["oversized"] += 1
            await trio.sleep(0.2)
        finally:
            await quietly(stream)

    await as_new_identity("sync", server, attack)


async def stream_flood(server: str, server_id: str, community: CommunityId) -> None:
    count = stats.setdefault("streams", Counter())

    async def attack(host: P2PHost) -> None:
        held = []
        try:
            for i in range(FLOOD_STREAMS * 2):
                protocol = SYNC if i % 2 else HOP_PROTOCOL
                try:
                    with trio.fail_after(5):
                        stream = await host.open_stream(server_id, protocol)
                except (DialError, trio.TooSlowError):
                    count["refused"] += 1
                    continue
                if protocol == SYNC:
                    await stream.write(hello(community)[:3])  # a frame begun, never finished
                held.append(stream)
                count["opened"] += 1
            await trio.sleep_forever()
        finally:
            for stream in held:
                await quietly(stream)

    await as_new_identity("streams", server, attack)


async def slow_reader(server: str, server_id: str, community: CommunityId) -> None:
    """Sessions that claim to hold nothing (so the server sends everything) and never read."""
    count = stats.setdefault("slow", Counter())

    async def one_identity(host: P2PHost) -> None:
        held = []
        try:
            for _ in range(4):  # twice MAX_INBOUND_PER_PEER: the excess is refused
                stream = await host.open_stream(server_id, SYNC)
                await stream.write(hello(community) + frame({"t": "heads", "h": []}))
                held.append(stream)
                count["sessions"] += 1
            await trio.sleep_forever()
        finally:
            for stream in held:
                await quietly(stream)

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(as_new_identity, "slow", server, one_identity)
            await trio.sleep(0.1)


async def reservation_grab(server: str) -> None:
    count = stats.setdefault("reserve", Counter())
    async with AsyncExitStack() as stack:
        for _ in range(RESERVE_IDENTITIES):
            host = await stack.enter_async_context(open_host(gossip=None))
            count["identities"] += 1
            try:
                with trio.fail_after(10):
                    await reserve(host, server)
                count["granted"] += 1
            except RelayRefused as exc:
                count[f"refused {exc.status}"] += 1
            except (DialError, trio.TooSlowError) as exc:
                count[f"error {type(exc).__name__}"] += 1
            # A HOP message far over MAX_MESSAGE, on the same connection.
            try:
                stream = await host.open_stream(server.split("/p2p/")[-1], HOP_PROTOCOL)
                await stream.write(varint(1 << 20) + os.urandom(4096))
                await quietly(stream)
                count["oversized hop"] += 1
            except Exception as exc:
                count[f"hop error {type(exc).__name__}"] += 1
        await trio.sleep_forever()  # hold every slot granted until the deadline


async def main(server: str, community: CommunityId, seconds: float) -> None:
    server_id = server.split("/p2p/")[-1]
    logs = junk_logs(community, JUNK_LOGS)
    junk = [w for log in logs for w in log]
    print(json.dumps({"ready": True}), flush=True)
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            # The cheap, one-off attacks first: the floods then eat this process's CPU.
            nursery.start_soon(reservation_grab, server)
            nursery.start_soon(stream_flood, server, server_id, community)
            nursery.start_soon(slow_reader, server, server_id, community)
            await trio.sleep(min(3.0, seconds / 4))
            nursery.start_soon(gossip_flood, server, server_id, community, junk)
            nursery.start_soon(sync_flood, server, server_id, community, logs)
    print(json.dumps({k: dict(v) for k, v in stats.items()}, sort_keys=True), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", required=True, help="the server's full multiaddr")
    parser.add_argument("--community", required=True, help="the community id (c…)")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    community = CommunityId(decode_id("c", args.community))
    trio.run(main, args.server, community, args.seconds)
    sys.exit(0)
