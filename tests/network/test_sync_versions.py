"""Sync version negotiation between real nodes (docs/sync.md, "Version 3"):
two nodes of this version speak /troc/sync/3; a node still syncs with a peer
that serves only /troc/sync/2 (today's nodes). Real libp2p hosts on
127.0.0.1, the pair of tests/network/test_hostile.py."""

from __future__ import annotations

from pathlib import Path

from tests.network.test_hostile import Net, open_net
from troc.protocol.entry import Entry
from troc.protocol.sync import PROTOCOL_ID, PROTOCOL_ID_V3


def only_at_b(net: Net, title: str) -> Entry:
    """An entry of C's that B holds and nobody gossips: only sync brings it to A."""
    entry = net.c.offer(net.community, title)
    wires = net.c.store.entries_since(net.community, net.c.member, 0, 1000)
    net.b.local.ingest_many(wires, community=net.community)
    assert net.has(net.b, entry)
    return entry


async def test_v3_between_new_nodes_and_v2_with_an_old_one(tmp_path: Path) -> None:
    async with open_net(tmp_path) as net:
        entry = only_at_b(net, "carried by v3")
        stats = await net.a.sync_with(net.b.peer_id)
        assert [s.version for s in stats] == [3]
        await net.wait_for(net.a, entry)
        # B as a node of the version before: it serves /troc/sync/2 only.
        net.b.host.remove_stream_handler(PROTOCOL_ID_V3)
        entry = only_at_b(net, "carried by v2")
        stats = await net.a.sync_with(net.b.peer_id)
        assert [s.version for s in stats] == [2]
        await net.wait_for(net.a, entry)
        # A still serves /troc/sync/2 to an initiator that offers only it.
        stream = await net.b.host.open_stream(net.a.peer_id, [PROTOCOL_ID])
        assert stream.get_protocol() == PROTOCOL_ID
        await stream.reset()
