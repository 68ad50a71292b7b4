"""The node as a relay server, and a member reachable only through it.

In-process hosts on 127.0.0.1: server S runs the circuit relay service
(NodeConfig.relay); member A holds a reservation on S (NodeConfig.relays)
and advertises its /p2p-circuit address; member B dials A at that address
and the two sync over the circuit (tests/network/test_circuit_relay.py has
the relay itself, and a network-namespace version).
"""

from __future__ import annotations

from pathlib import Path

import trio

from troc.crypto.sign import SigningKey
from troc.node.config import RelayOptions
from troc.node.local import open_local_node
from troc.node.node import NodeConfig, open_node


def _config(home: Path, **kw: object) -> NodeConfig:
    return NodeConfig(
        home=home, sync_interval=600, control_socket=False, remember_peers=False, **kw
    )  # type: ignore[arg-type]


async def test_a_member_behind_a_relay_is_reached_through_its_circuit_address(
    tmp_path: Path,
) -> None:
    ks, ka, kb = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    with open_local_node(tmp_path / "a", ka) as a_local:
        community = a_local.create_community("Behind NAT", "h", 10)
        genesis = a_local.community(community).genesis
    with open_local_node(tmp_path / "b", kb) as b_local:
        b_local.join(genesis)
    async with open_node(_config(tmp_path / "s", relay=RelayOptions()), ks) as s:
        relay_addr = s.addrs()[0]
        async with open_node(
            _config(tmp_path / "a", relays=(relay_addr,), bootstrap=(relay_addr,)), ka
        ) as a:
            with trio.fail_after(10):
                await a.relay_client.wait_reserved()
            circuit = [x for x in a.addrs() if "/p2p-circuit" in x]
            assert circuit, a.addrs()
            assert s.status()["relay"]["reservations"] == 1
            async with open_node(_config(tmp_path / "b"), kb) as b:
                peer = await b.connect(circuit[0])
                assert peer == a.peer_id
                offer = a.local.offer(community, "Bread, through the relay")
                await b.sync_with(peer)
                assert b.local.store.entry(community, ka.public, offer.seq, offer.id)
                assert s.status()["relay"]["circuits"] >= 1
