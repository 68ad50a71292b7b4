"""What is queued for one gossip peer leaves in one write (troc.net.gossip,
``Gossip._send_merged``): a server that falls behind forwarding writes fewer,
larger RPCs instead of one per message per member. Real hosts on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

import trio

from troc.net.p2p import open_host

TOPIC = "troc/test/merge"


async def test_a_backlog_for_a_peer_leaves_in_few_writes_and_all_arrives() -> None:
    async with open_host() as a, open_host() as b:
        await a.connect(b.listen_addrs()[0])
        writes: list[int] = []
        write_msg = a.gossip.pubsub.write_msg

        async def slow_write(stream: Any, rpc: Any) -> bool:
            """A slow link: each write takes 50 ms, so RPCs queue up behind it."""
            writes.append(len(rpc.publish))
            await trio.sleep(0.05)
            return bool(await write_msg(stream, rpc))

        async with a.gossip.subscribe(TOPIC), b.gossip.subscribe(TOPIC) as sub:
            with trio.fail_after(10):
                await a.gossip.wait_for_mesh(b.peer_id, TOPIC)
            a.gossip.pubsub.write_msg = slow_write  # type: ignore[method-assign]
            sent = [f"m{i}".encode() for i in range(20)]
            for data in sent:
                await a.gossip.publish(TOPIC, data)
            got = []
            with trio.fail_after(10):
                while len(got) < len(sent):
                    got.append((await sub.receive()).data)
        assert sorted(got) == sorted(sent)  # none lost, none twice
        published = [n for n in writes if n]
        assert sum(published) == len(sent)
        assert len(published) <= 5, f"{len(published)} writes for {len(sent)} messages"
