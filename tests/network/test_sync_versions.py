"""Sync version negotiation between real nodes (docs/sync.md, "Version 3"):
two nodes of this version speak /troc/sync/3; a node still syncs with a peer
that serves only /troc/sync/2 (today's nodes). Real libp2p hosts on
127.0.0.1, the pair of tests/network/test_hostile.py."""

from __future__ import annotations

import time
from pathlib import Path

from tests.network.test_hostile import Net, open_net, until
from troc.crypto.sign import SigningKey
from troc.protocol.entry import Entry, Join, Offer
from troc.protocol.sync_wire import MAX_BATCH, PROTOCOL_ID, PROTOCOL_ID_V3


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


async def test_a_catch_up_of_many_frames_is_stored_run_by_run(tmp_path: Path) -> None:
    """More entries than one frame carries: A reads frames ahead, has their
    signatures checked on worker threads and stores runs of frames in one
    batch (troc.node.sync); it ends holding all of them, nothing refused."""
    async with open_net(tmp_path) as net:
        d = SigningKey.generate()  # a member only B knows of, with a long log
        now = int(time.time() * 1000)
        log = [
            Entry.create(
                d, community=net.community, seq=1, prev=None, timestamp_ms=now, body=Join(name="d")
            )
        ]
        for i in range(3 * MAX_BATCH + 7):
            body = Offer(side="offer", title=f"offer {i}")
            log.append(
                Entry.create(
                    d,
                    community=net.community,
                    seq=i + 2,
                    prev=log[-1].id,
                    timestamp_ms=now + i,
                    body=body,
                )
            )
        outcomes = net.b.local.ingest_many([e.wire for e in log], community=net.community)
        assert all(o.ok for o in outcomes)
        stats = await net.a.sync_with(net.b.peer_id)
        # (A session of A's own timer may run alongside and store some first.)
        assert sum(s.received for s in stats) > 0
        assert not any(s.rejected for s in stats)
        await until("A holds D's log", lambda: net.has(net.a, log[-1]))
        assert net.a.local.store.waiting_count() == 0
