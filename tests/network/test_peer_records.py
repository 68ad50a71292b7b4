"""A gossip peer's signed peer record is checked once, not with every RPC
(troc.net.peer_records); a changed record is checked again. Real hosts on
127.0.0.1."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import trio
from libp2p.pubsub import utils as pubsub_utils

from troc.net import peer_records
from troc.net.p2p import open_host

TOPIC = "troc/test/records"


async def test_a_peers_record_is_verified_once_for_many_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: Counter[bytes] = Counter()
    consume = pubsub_utils.consume_envelope

    def counting(data: bytes, domain: str) -> Any:
        opened[data] += 1
        return consume(data, domain)

    monkeypatch.setattr(pubsub_utils, "consume_envelope", counting)
    async with open_host() as a, open_host() as b:
        await a.connect(b.listen_addrs()[0])
        async with a.gossip.subscribe(TOPIC), b.gossip.subscribe(TOPIC) as sub:
            with trio.fail_after(10):
                await a.gossip.wait_for_mesh(b.peer_id, TOPIC)
            sent = [f"m{i}".encode() for i in range(30)]
            for data in sent:
                await a.gossip.publish(TOPIC, data)
                await trio.sleep(0.01)  # one RPC each, not one merged write
            got = []
            with trio.fail_after(10):
                while len(got) < len(sent):
                    got.append((await sub.receive()).data)
            first = dict(opened)
            # A record not seen lately (here: forgotten) is checked again.
            peer_records._consumed.clear()
            await a.gossip.publish(TOPIC, b"again")
            with trio.fail_after(10):
                last = (await sub.receive()).data
    assert got == sent
    # Each host's record (the same bytes in every RPC it sends) is verified
    # by the other once: before, once per RPC (30 and more).
    assert len(first) == 2
    assert max(first.values()) == 1
    assert last == b"again"
    assert max(opened.values()) == 2
