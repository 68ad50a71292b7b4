"""Two nodes with --mdns and no bootstrap find each other and converge."""

from __future__ import annotations

import socket
from pathlib import Path

import trio
from libp2p.peer.id import ID
from multiaddr import Multiaddr

from tests.network.test_witnessed import eventually
from troc.crypto.sign import SigningKey
from troc.node.node import NodeConfig, open_node


def _config(home: Path) -> NodeConfig:
    return NodeConfig(
        home=home, mdns=True, sync_interval=0.5, control_socket=False, remember_peers=False
    )


async def test_mdns_peers_connect_and_sync(tmp_path: Path) -> None:
    async with (
        open_node(_config(tmp_path / "a"), SigningKey.generate()) as a,
        open_node(_config(tmp_path / "b"), SigningKey.generate()) as b,
    ):
        community = a.local.create_community("Street", "h", 5)
        b.local.join(a.local.community(community).genesis)
        async with b.subscribe() as stored:
            offer = a.local.offer(community, "Ladder to lend")
            with trio.fail_after(20):
                async for entry in stored:
                    if entry.id == offer.id:
                        break
        assert a.peer_id in b.host.connected_peers()


async def test_a_discovered_peer_is_reached_through_its_second_address(tmp_path: Path) -> None:
    """mDNS may list first an address this node cannot reach (a peer on a LAN
    and a container bridge): the node tries the next ones. py-libp2p's
    connect dials only the first, so such a peer was never reached."""
    config = {"sync_interval": 60.0, "control_socket": False, "remember_peers": False}
    async with (
        open_node(NodeConfig(home=tmp_path / "a", **config), SigningKey.generate()) as a,
        open_node(NodeConfig(home=tmp_path / "b", **config), SigningKey.generate()) as b,
    ):
        with socket.socket() as s:  # a port nobody listens on: refused at once
            s.bind(("127.0.0.1", 0))
            dead = f"/ip4/127.0.0.1/tcp/{s.getsockname()[1]}"
        (live,) = [addr.rsplit("/p2p/", 1)[0] for addr in b.host.listen_addrs()]
        pid = ID.from_base58(b.peer_id)
        store = a.host.libp2p.get_peerstore()
        store.add_addrs(pid, [Multiaddr(dead), Multiaddr(live)], 120)
        assert [str(m) for m in store.addrs(pid)] == [dead, live]  # the dead one first
        a.peering._dial_discovered(set())
        await eventually(lambda: b.peer_id in a.host.connected_peers())
