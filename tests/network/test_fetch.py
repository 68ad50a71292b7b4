"""A gossiped entry that arrives before what it depends on is fetched from
the neighbour that relayed it, without waiting for the periodic sync."""

from __future__ import annotations

from pathlib import Path

import trio

from troc.crypto.sign import SigningKey
from troc.node.local import open_local_node
from troc.node.node import NodeConfig, open_node


def _config(home: Path, *bootstrap: str) -> NodeConfig:
    # Periodic sync effectively off: only connects and fetches sync.
    return NodeConfig(
        home=home,
        bootstrap=bootstrap,
        sync_interval=600,
        control_socket=False,
        remember_peers=False,
    )


async def test_parked_gossip_entry_is_fetched_through_the_relaying_neighbour(
    tmp_path: Path,
) -> None:
    kb, kc, kx = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    with open_local_node(tmp_path / "b", kb) as b_local:
        community = b_local.create_community("Line", "h", 5)
        genesis = b_local.community(community).genesis
    for home, key in ((tmp_path / "c", kc), (tmp_path / "x", kx)):
        with open_local_node(home, key) as local:
            local.join(genesis)  # x's join is made while its node is down: never gossiped
    async with (
        open_node(_config(tmp_path / "b"), kb) as b,
        open_node(_config(tmp_path / "c", b.addrs()[0]), kc) as c,
        open_node(_config(tmp_path / "x", b.addrs()[0]), kx) as x,
    ):
        with trio.fail_after(10):  # b learns x's join when they connect
            while b.local.store.head(community, x.member) is None:  # noqa: ASYNC110 - polls a node
                await trio.sleep(0.05)
        await trio.sleep(2)  # gossip meshes form on the 1 s heartbeat
        assert c.local.store.head(community, x.member) is None
        async with c.subscribe() as stored:
            offer = x.local.offer(community, "Spare bicycle")
            with trio.fail_after(8):
                async for entry in stored:
                    if entry.id == offer.id:
                        break
        assert c.local.balance(community, x.member).joined
