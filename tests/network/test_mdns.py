"""Two nodes with --mdns and no bootstrap find each other and converge."""

from __future__ import annotations

from pathlib import Path

import trio

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
