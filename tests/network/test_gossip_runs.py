"""A node that signs a burst of entries at once (group commit) gossips them
as runs, one message per log instead of one per entry, and its peer stores
every one. Real libp2p hosts on 127.0.0.1, in one process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers import founded_homes
from tests.network.test_gossip_fanout import _config
from troc.node import ops
from troc.node.local import open_local_node
from troc.node.node import open_node, topic_of

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)

PAYMENTS = 8  # the credit limit is 10


async def test_a_burst_of_own_entries_travels_as_runs_and_all_arrive(tmp_path: Path) -> None:
    ks, ka, community, _genesis = founded_homes(tmp_path)
    with open_local_node(tmp_path / "a", ka) as a, open_local_node(tmp_path / "s", ks) as s:
        for stored in a.store.log(community, ka.public, after_seq=0, limit=10):
            s.ingest(stored.entry.wire)  # s knows a joined: a's entries are forwarded
    params = {"community": ops.cid(community), "to": ops.mid(ks.public), "amount": "1"}
    params["to_unknown"] = True  # a has not seen s's join
    async with (
        open_node(_config(tmp_path / "s"), ks) as server,
        open_node(_config(tmp_path / "a", server.addrs()[0]), ka) as node,
    ):
        with trio.fail_after(15):
            await node.host.gossip.wait_for_mesh(server.peer_id, topic_of(community))
        published: list[bytes] = []
        publish = node.host.gossip.publish

        async def counting(topic: str, data: bytes) -> Any:
            published.append(data)
            return await publish(topic, data)

        node.host.gossip.publish = counting  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            for _ in range(PAYMENTS):
                nursery.start_soon(node.run_op, "pay", params)
        with trio.fail_after(15):
            while server.local.store.head(community, ka.public).seq < 1 + PAYMENTS:  # type: ignore[union-attr]  # noqa: ASYNC110 - polls node state
                await trio.sleep(0.05)
        batches = node.status()["group_commit"]["batches"]
    # As many messages as group commits (each commit's entries queued
    # together), fewer than entries: the burst was not one message per entry.
    assert len(published) <= batches < PAYMENTS
