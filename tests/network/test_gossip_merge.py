"""What is queued for one gossip peer leaves in one write (troc.net.gossip,
``Gossip._send_merged``): a server that falls behind forwarding writes fewer,
larger RPCs instead of one per message per member. Real hosts on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

import trio

from tests.helpers import publish_and_receive
from troc.net.p2p import open_host

TOPIC = "troc/test/merge"


async def test_a_backlog_for_a_peer_leaves_in_few_writes_and_all_arrives() -> None:
    async with open_host() as a, open_host() as b:
        await a.connect(b.listen_addrs()[0])
        writes: list[int] = []
        write_batch = a.gossip._write_batch

        async def slow_write(stream: Any, batch: list[Any]) -> bool:
            """A slow link: each write takes 50 ms, so RPCs queue up behind it."""
            writes.append(sum(len(rpc.publish) for rpc in batch))
            await trio.sleep(0.05)
            return await write_batch(stream, batch)

        async with a.gossip.subscribe(TOPIC), b.gossip.subscribe(TOPIC) as sub:
            with trio.fail_after(10):
                await a.gossip.wait_for_mesh(b.peer_id, TOPIC)
            a.gossip._write_batch = slow_write  # type: ignore[method-assign]
            sent = [f"m{i}".encode() for i in range(20)]
            got = await publish_and_receive(a, TOPIC, sub, sent)
        assert got == sent  # in order, none lost, none twice
        published = [n for n in writes if n]
        assert sum(published) == len(sent)
        assert len(published) <= 5, f"{len(published)} writes for {len(sent)} messages"


async def test_a_hub_forwards_a_burst_in_few_writes() -> None:
    """A hub (a community server) holds what it forwards for
    ``forward_window`` (0.1 s) so that messages arriving 20 ms apart leave in
    a few writes per member, not one each."""
    async with open_host() as a, open_host() as hub, open_host() as b:
        await a.connect(hub.listen_addrs()[0])
        await b.connect(hub.listen_addrs()[0])
        writes: list[int] = []
        write_batch = hub.gossip._write_batch

        async def counting(stream: Any, batch: list[Any]) -> bool:
            if stream.muxed_conn.peer_id.to_base58() == b.peer_id:
                writes.append(sum(len(rpc.publish) for rpc in batch))
            return await write_batch(stream, batch)

        hub.gossip._write_batch = counting  # type: ignore[method-assign]
        async with (
            a.gossip.subscribe(TOPIC),
            hub.gossip.subscribe(TOPIC),
            b.gossip.subscribe(TOPIC) as sub,
        ):
            with trio.fail_after(10):
                await hub.gossip.wait_for_mesh(a.peer_id, TOPIC)
                await hub.gossip.wait_for_mesh(b.peer_id, TOPIC)
            sent = [f"m{i}".encode() for i in range(10)]
            for data in sent:  # 10 messages over ~0.2 s
                await a.gossip.publish(TOPIC, data)
                await trio.sleep(0.02)
            got = []
            with trio.fail_after(10):
                while len(got) < len(sent):
                    got.append((await sub.receive()).data)
        assert got == sent
        published = [n for n in writes if n]
        assert sum(published) == len(sent)
        assert len(published) <= 4, f"{len(published)} writes for {len(sent)} messages"
