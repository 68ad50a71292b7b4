"""Servers announce the communities they serve in the DHT; a member that knows
only some DHT node (not a server of its community) finds and connects to one."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from troc.crypto.sign import SigningKey
from troc.node import peers as node_module
from troc.node.local import open_local_node
from troc.node.node import NodeConfig, open_node

pytestmark = pytest.mark.slow


def _config(home: Path, **kw: object) -> NodeConfig:
    return NodeConfig(
        home=home, sync_interval=600, control_socket=False, remember_peers=False, **kw
    )  # type: ignore[arg-type]


async def test_a_member_finds_its_communitys_server_through_the_dht(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_module, "DHT_TICK", 0.2)
    monkeypatch.setattr(node_module, "DHT_LOOKUP_INTERVAL", 1.0)
    kd, ks, km = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    with open_local_node(tmp_path / "s", ks) as s_local:
        community = s_local.create_community("Found by DHT", "h", 10)
        genesis = s_local.community(community).genesis
        offer = s_local.offer(community, "Honey")
    with open_local_node(tmp_path / "m", km) as m_local:
        m_local.join(genesis)
    # D: a DHT server that follows no community. S: the community's server.
    async with open_node(_config(tmp_path / "d", dht="server"), kd) as d:
        boot = (d.addrs()[0],)
        async with (
            open_node(_config(tmp_path / "s", dht="server", bootstrap=boot), ks) as s,
            open_node(_config(tmp_path / "m", dht="client", bootstrap=boot), km) as m,
        ):
            with trio.fail_after(30):
                while s.peer_id not in m.host.connected_peers():  # noqa: ASYNC110
                    await trio.sleep(0.1)
                await m.sync_with(s.peer_id)
            assert m.local.store.entry(community, ks.public, offer.seq, offer.id)
