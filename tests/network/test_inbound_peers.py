"""A node counts each peer's open inbound sync sessions (at most
MAX_INBOUND_PER_PEER each) and forgets a peer when its last one ends: the
count once kept every peer id ever seen, at zero, for the node's lifetime."""

from __future__ import annotations

from pathlib import Path

from tests.network.test_hostile import open_net, until
from troc.node.peers import PeerTable as _Peers
from troc.node.sync import MAX_INBOUND_PER_PEER


def test_a_peer_is_forgotten_when_its_last_inbound_session_ends() -> None:
    peers = _Peers()
    assert [peers.enter_inbound("p", MAX_INBOUND_PER_PEER) for _ in range(3)] == [True, True, False]
    peers.leave_inbound("p")
    assert peers.inbound == {"p": 1}
    peers.leave_inbound("p")
    assert peers.inbound == {}


async def test_inbound_sessions_leave_no_trace(tmp_path: Path) -> None:
    async with open_net(tmp_path) as net:
        for _ in range(3):
            await net.b.sync_with(net.a.peer_id)
            await net.a.sync_with(net.b.peer_id)
        await until("A's sessions from B are over", lambda: not net.a._peers.inbound)
        await until("B's sessions from A are over", lambda: not net.b._peers.inbound)
