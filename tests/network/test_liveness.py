"""Dead links are found by pinging (troc.net.liveness): a connected peer
that stops answering is closed and listed as dead, with the addresses to
redial; one that answers stays alive. (The real partition, with packets
dropped in network namespaces, is tests/e2e/test_partition.py.)"""

from __future__ import annotations

import trio

from troc.net.liveness import Liveness
from troc.net.p2p import PING_PROTOCOL, open_host


async def test_a_peer_that_stops_answering_pings_is_closed_and_listed_dead() -> None:
    async with open_host() as a, open_host() as b, open_host() as c:
        await a.connect(b.listen_addrs()[0])
        await a.connect(c.listen_addrs()[0])
        liveness = Liveness(a, interval=0.1, timeout=1.0, misses=2)
        await liveness.check()
        states = {p["peer_id"]: p["state"] for p in liveness.describe()}
        assert states == {b.peer_id: "alive", c.peer_id: "alive"}
        assert all(p["rtt_ms"] is not None for p in liveness.describe())

        c.remove_stream_handler(PING_PROTOCOL)  # c goes silent; b still answers
        await liveness.check()
        states = {p["peer_id"]: p["state"] for p in liveness.describe()}
        assert states == {b.peer_id: "alive", c.peer_id: "unresponsive"}
        with trio.fail_after(5):
            await liveness.check()  # the second miss: closed
        assert c.peer_id not in a.connected_peers()
        assert b.peer_id in a.connected_peers()
        dead = {p["peer_id"]: p for p in liveness.describe() if p["state"] == "dead"}
        assert list(dead) == [c.peer_id]
        assert liveness.recently_lost() == {c.peer_id: (c.listen_addrs()[0],)}

        await a.connect(c.listen_addrs()[0])  # connected again: no longer dead
        await liveness.check()  # (and still silent: one miss so far)
        states = {p["peer_id"]: p["state"] for p in liveness.describe()}
        assert states == {b.peer_id: "alive", c.peer_id: "unresponsive"}
        assert liveness.recently_lost() == {}


async def test_a_round_pings_at_most_max_pings_peers_longest_unpinged_first() -> None:
    """A server with many peers pings a bounded number per round, in turn;
    a silent peer is still found and closed."""
    async with open_host() as a, open_host() as b, open_host() as c, open_host() as d:
        for peer in (b, c, d):
            await a.connect(peer.listen_addrs()[0])
        liveness = Liveness(a, interval=0.1, timeout=1.0, misses=2, max_pings=2)
        await liveness.check()
        answered = {p["peer_id"] for p in liveness.describe() if p["rtt_ms"] is not None}
        assert len(answered) == 2
        await liveness.check()  # the one left out comes first
        answered = {p["peer_id"] for p in liveness.describe() if p["rtt_ms"] is not None}
        assert answered == {b.peer_id, c.peer_id, d.peer_id}

        d.remove_stream_handler(PING_PROTOCOL)
        with trio.fail_after(10):
            for _ in range(6):  # d is pinged in at least 2 of any 3 rounds
                await liveness.check()
        assert d.peer_id not in a.connected_peers()
        assert {b.peer_id, c.peer_id} <= set(a.connected_peers())
