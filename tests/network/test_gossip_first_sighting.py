"""A held entry's first sighting on gossip is forwarded; a replay is not;
a held entry's signature is not checked again.

A witness stores an author's entries from the author's vote request, which
races the author's publish of them: the validator dropped that publish as
held, so the witness did not relay it, and members that hear the author
only through witnesses (bench/finality.py's payers) waited for sync. Now a held entry
that never passed the node's validator and was signed lately is forwarded
once; the same entry again (a fresh message id) is not, nor an old held entry.

Real nodes on 127.0.0.1 and a raw libp2p host X, as in test_hostile.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.network.test_hostile import HONEST_WAIT, Net, chain, forged, open_net, until
from troc.crypto.sign import SigningKey, verify
from troc.net.gossip import GossipParams
from troc.node.local import now_ms
from troc.node.node import topic_of
from troc.node.topics import FRESH_MS
from troc.protocol import entry as entry_module
from troc.protocol.entry import CommunityId, Entry, EntryId, Join, Offer


def signed_at(key: SigningKey, community: CommunityId, ms: int) -> list[Entry]:
    """A new member's join and offer, both signed as of ``ms``."""
    join = Entry.create(key, community=community, seq=1, prev=None, timestamp_ms=ms, body=Join())
    offer = Entry.create(
        key,
        community=community,
        seq=2,
        prev=EntryId(join.id),
        timestamp_ms=ms,
        body=Offer("offer", "old"),
    )
    return [join, offer]


def relayed_by_a(net: Net) -> list[bytes]:
    """What B receives from A from now on (A's copies only: X, the raw
    host, may come to know B too)."""
    relayed: list[bytes] = []
    check = net.b._over_quota

    def record(msg: Any) -> bool:
        if msg.forwarder == net.a.peer_id:
            relayed.append(msg.data)
        return check(msg)

    net.b._over_quota = record
    return relayed


async def test_a_held_fresh_entry_is_forwarded_once(tmp_path: Path) -> None:
    async with open_net(tmp_path) as net:
        topic = topic_of(net.community)
        relayed = relayed_by_a(net)
        # A holds a new member's entries it got otherwise than by gossip (as a
        # witness does from a vote request): one signed now, one long ago.
        fresh = chain(SigningKey.generate(), net.community, [Join(), Offer("offer", "d")])
        old = signed_at(SigningKey.generate(), net.community, now_ms() - 2 * FRESH_MS)
        outcomes = net.a.local.ingest_many([e.wire for e in fresh + old], community=net.community)
        assert all(o.ok for o in outcomes)
        async with net.attacker(gossip=GossipParams()) as x:
            await until("X knows A's topic", lambda: net.a.peer_id in x.gossip.topic_peers(topic))
            await x.gossip.publish(topic, old[1].wire)
            await x.gossip.publish(topic, fresh[1].wire)
            await until("A forwards the fresh entry", lambda: fresh[1].wire in relayed, HONEST_WAIT)
            # The same entry under a fresh message id: a replay now.
            await x.gossip.publish(topic, fresh[1].wire)
            sentinel = chain(SigningKey.generate(), net.community, [Join()])[0]
            await x.gossip.publish(topic, sentinel.wire)
            await until("A forwards a new entry", lambda: sentinel.wire in relayed, HONEST_WAIT)
    assert relayed.count(fresh[1].wire) == 1
    assert old[1].wire not in relayed


async def test_a_held_entry_is_not_checked_again_but_a_forged_copy_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry gossiped with the very bytes A stored (they were checked
    then; sync's come first under load, checked in the verifier's
    processes) costs A no signature check; the same signed part with
    another signature is checked, refused and not forwarded."""
    checked: list[bytes] = []  # signatures checked (by A or B)

    def counting(domain: Any, key: bytes, signed: bytes, signature: bytes) -> bool:
        checked.append(signature)
        return verify(domain, key, signed, signature)

    async with open_net(tmp_path) as net:
        topic = topic_of(net.community)
        relayed = relayed_by_a(net)
        held = chain(SigningKey.generate(), net.community, [Join(), Offer("offer", "e")])
        for node in (net.a, net.b):  # (B checks nothing it holds either)
            assert all(o.ok for o in node.local.ingest_many([e.wire for e in held]))
        bad = forged(held[1])
        bad_signature = Entry.decode(bad, check_signature=False).signature
        monkeypatch.setattr(entry_module, "verify", counting)
        async with net.attacker(gossip=GossipParams()) as x:
            await until("X knows A's topic", lambda: net.a.peer_id in x.gossip.topic_peers(topic))
            await x.gossip.publish(topic, bad)
            await x.gossip.publish(topic, held[1].wire)
            await until("A forwards the held entry", lambda: held[1].wire in relayed, HONEST_WAIT)
    assert held[1].signature not in checked
    assert bad_signature in checked
    assert bad not in relayed
