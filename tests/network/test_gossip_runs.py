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
from troc.node import ops, topics
from troc.node.local import open_local_node
from troc.node.node import open_node, topic_of
from troc.protocol.entry import Entry
from troc.protocol.gossip_wire import is_run, run_wires

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)

PAYMENTS = 8  # the credit limit is 10


def _record_publishes(node: Any) -> list[bytes]:
    """What ``node`` publishes on gossip from now on, in order."""
    published: list[bytes] = []
    publish = node.host.gossip.publish

    async def recording(topic: str, data: bytes) -> Any:
        published.append(data)
        return await publish(topic, data)

    node.host.gossip.publish = recording
    return published


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
        published = _record_publishes(node)
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


async def test_own_publishes_are_not_decoded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The topic's validator runs on the node's own publishes too: they are
    own entries, signed and stored here, passed as they are (checking each
    one's signature cost a verification per own entry)."""
    _ks, ka, community, _genesis = founded_homes(tmp_path)
    decoded: list[bytes] = []
    real_run, real_entry = topics.decode_run, Entry.decode

    def counting_run(data: bytes) -> Any:
        decoded.append(data)
        return real_run(data)

    def counting_entry(wire: bytes, **kw: Any) -> Entry:
        decoded.append(wire)
        return real_entry(wire, **kw)

    monkeypatch.setattr(topics, "decode_run", counting_run)
    monkeypatch.setattr(Entry, "decode", counting_entry)
    async with open_node(_config(tmp_path / "a"), ka) as node:  # no peer: only its own validator
        published = _record_publishes(node)
        for i in range(3):
            await node.run_op("offer.add", {"community": ops.cid(community), "title": f"o{i}"})
        with trio.fail_after(10):
            # (the three may go as one run: queued before the publisher ran)
            while sum(len(run_wires(d)) if is_run(d) else 1 for d in published) < 3:  # noqa: ASYNC110 - the publisher task runs on its own
                await trio.sleep(0.01)
    assert published
    assert not set(published) & set(decoded)  # the validator ran inside publish
