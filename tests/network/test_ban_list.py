"""The operator's ban list: a listed peer is disconnected and gets nothing."""

from __future__ import annotations

from pathlib import Path

import trio

from troc.crypto.sign import SigningKey
from troc.net.p2p import peer_id_from_seed
from troc.node.local import open_local_node
from troc.node.node import NodeConfig, open_node


async def test_a_banned_peer_is_cut_off_and_learns_nothing(tmp_path: Path) -> None:
    ks, kx = SigningKey.generate(), SigningKey.generate()
    with open_local_node(tmp_path / "s", ks) as s_local:
        community = s_local.create_community("Banned", "h", 10)
        genesis = s_local.community(community).genesis
        offer = s_local.offer(community, "Not for you")
    with open_local_node(tmp_path / "x", kx) as x_local:
        x_local.ingest(genesis)
    banned = peer_id_from_seed(kx.seed)
    common = {"control_socket": False, "remember_peers": False, "sync_interval": 0.2}
    async with open_node(NodeConfig(home=tmp_path / "s", banned=(banned,), **common), ks) as s:
        addr = s.addrs()[0]
        async with open_node(NodeConfig(home=tmp_path / "x", **common), kx) as x:
            await x.connect(addr)
            with trio.fail_after(10):
                while s.peer_id in x.host.connected_peers():  # noqa: ASYNC110
                    await trio.sleep(0.05)
            assert banned in s.status()["banned"]
            assert x.local.store.entry(community, ks.public, offer.seq, offer.id) is None
