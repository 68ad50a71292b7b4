"""A node reconnects by itself to a bootstrap peer that went away and came back."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.helpers import founded_homes
from troc.node import peers as node_module
from troc.node.local import open_local_node
from troc.node.node import NodeConfig, open_node


def config(home: Path, **kw: object) -> NodeConfig:
    return NodeConfig(
        home=home, sync_interval=600, control_socket=False, remember_peers=False, **kw
    )  # type: ignore[arg-type]


async def test_a_restarted_server_is_redialled_and_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_module, "REDIAL_TICK", 0.3)
    ks, ka, community, _genesis = founded_homes(tmp_path)

    async with open_node(config(tmp_path / "s"), ks) as s:
        addr = s.addrs()[0]
    listen = (addr.split("/p2p/")[0],)
    async with open_node(config(tmp_path / "a", bootstrap=(addr,)), ka) as a:
        # The server is down when the member starts; it comes up later.
        assert s.peer_id not in a.host.connected_peers()
        with open_local_node(tmp_path / "s", ks) as s_local:
            offer = s_local.offer(community, "Made while the member was away")
        async with open_node(config(tmp_path / "s", listen=listen), ks):
            with trio.fail_after(15):
                while a.local.store.entry(community, ks.public, offer.seq, offer.id) is None:  # noqa: ASYNC110
                    await trio.sleep(0.1)


async def test_troc_connect_reaches_a_peer_whose_dial_failed_a_moment_ago(tmp_path: Path) -> None:
    """py-libp2p refuses for 60 s to dial a peer whose addresses all failed
    once; a member who asks to connect (``troc connect``) means now."""
    ks, ka, _community, _genesis = founded_homes(tmp_path)

    async with open_node(config(tmp_path / "s"), ks) as s:
        addr = s.addrs()[0]
    listen = (addr.split("/p2p/")[0],)
    async with open_node(config(tmp_path / "a"), ka) as a:
        with pytest.raises(Exception, match="cannot connect"):
            await a.run_op("connect", {"addr": addr})  # the server is down
        async with open_node(config(tmp_path / "s", listen=listen), ks):
            with trio.fail_after(15):
                result = await a.run_op("connect", {"addr": addr})
            assert result["peer_id"] == s.peer_id
