"""Gossip does not carry strangers' dangling entries (docs/protocol.md §4.3).

A node forwards an entry only if it holds its author's join, or the entry is
a join at seq 1 (a new member's first entry), or that join passed its
validator lately. Anything else is taken, in the strangers' own bounded pool,
but not forwarded: a key that never joined cannot make every member park its
junk. A member whose join the node lacks still converges, through sync.

Real nodes on 127.0.0.1 and a raw libp2p host X, as in test_hostile.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.network.test_hostile import HONEST_WAIT, chain, open_net, until
from troc.crypto.sign import SigningKey
from troc.net.gossip import GossipParams
from troc.node.local import now_ms
from troc.node.node import topic_of
from troc.protocol.entry import Entry, EntryId, Join, Offer


def _parked(store: Any, entry: Entry) -> bool:
    row = store._conn.execute("SELECT 1 FROM waiting WHERE wire = ?", (entry.wire,)).fetchone()
    return row is not None


async def test_an_unknown_authors_entry_is_taken_but_not_forwarded(tmp_path: Path) -> None:
    async with open_net(tmp_path) as net:
        topic = topic_of(net.community)
        seen_by_b: list[bytes] = []  # what A forwarded to B
        check = net.b._over_quota

        def record(msg: Any) -> bool:
            # X may come to know B too (libp2p dials peers it hears of): only
            # copies A relayed count.
            if msg.forwarder == net.a.peer_id:
                seen_by_b.append(msg.data)
            return check(msg)

        net.b._over_quota = record  # type: ignore[method-assign]
        stranger = SigningKey.generate()
        dangling = Entry.create(
            stranger,
            community=net.community,
            seq=2,
            prev=EntryId(os.urandom(32)),
            timestamp_ms=now_ms(),
            body=Offer("offer", "never joined"),
        )
        # D joined, but neither A nor B holds its join yet.
        d_join, d_offer = chain(SigningKey.generate(), net.community, [Join(), Offer("offer", "d")])
        async with net.attacker(gossip=GossipParams()) as x:
            await until("X knows A's topic", lambda: net.a.peer_id in x.gossip.topic_peers(topic))
            await x.gossip.publish(topic, dangling.wire)
            await x.gossip.publish(topic, d_offer.wire)
            # A new member's join is forwarded: once B has it, the others had their chance.
            newcomer = chain(SigningKey.generate(), net.community, [Join()])[0]
            await x.gossip.publish(topic, newcomer.wire)
            await until("A forwards the join to B", lambda: newcomer.wire in seen_by_b, HONEST_WAIT)
            assert dangling.wire not in seen_by_b
            assert d_offer.wire not in seen_by_b
            # A took them all the same, in its strangers' pool.
            store = net.a.local.store
            await until("A parks both", lambda: all(_parked(store, e) for e in (dangling, d_offer)))
            # D's entry converges at A: once B holds D's join (B does not
            # gossip it), sync brings it to A, and what waited for it is stored.
            net.b.local.ingest_many([d_join.wire], community=net.community)
            await net.wait_for(net.a, d_offer)
            await net.honest_ok()
