"""Garbage on every protocol a node serves costs the sender, never the node.

A crash in any of the node's tasks ends it: py-libp2p let a pubsub RPC that
does not parse escape its read loop, and a node under bench/finality.py's
load exited so (tests/network/test_gossip_bad_rpc.py). This test asks the
victim's host which protocols it serves, so one added later is covered too,
and writes bytes that are no valid message of any of them on a fresh stream
of each; A must then still answer, sync and gossip with the honest B.
Real nodes on 127.0.0.1 (tests/network/test_hostile.py's harness).
"""

from __future__ import annotations

import random
from pathlib import Path

import trio

from tests.network.test_hostile import CUT_WAIT, open_net, varint
from tests.network.test_witnessed import Cluster, pay
from troc.crypto.sign import SigningKey
from troc.net.p2p import P2PHost, open_host
from troc.node.config import RelayOptions
from troc.node.node import Node, NodeConfig, open_node
from troc.node.witness import PROTOCOL_ID as WITNESS_PROTOCOL

#: Bytes no protocol here reads as a message: a varint that never ends, a
#: protobuf field of wire type 7 behind a valid length, and a length far
#: beyond any limit followed by noise.
GARBAGE = [
    b"\xff" * 12,
    varint(2) + b"\x0f\x01",
    varint(1 << 40) + random.Random(16).randbytes(300),
]


async def _write_then_drain(x: P2PHost, peer: str, protocol: str, data: bytes) -> None:
    """Open ``protocol`` to ``peer``, write ``data``, read until A ends the
    stream or the wait runs out (a protocol may wait for more bytes)."""
    try:
        stream = await x.open_stream(peer, protocol)
    except Exception:  # refused: nothing was sent, nothing to survive
        return
    try:
        await stream.write(data)
        with trio.move_on_after(CUT_WAIT / 3):
            while await stream.read(1 << 16):
                pass
    except Exception:  # reset or closed by A: the expected ends
        pass
    finally:
        try:
            await stream.reset()
        except Exception:
            pass


def _served(node: Node) -> set[str]:
    """The protocols ``node``'s host serves."""
    return {str(p) for p in node.host.libp2p.get_mux().handlers}


async def _attack_every_protocol(node: Node) -> None:
    """Garbage on a fresh stream of every protocol ``node`` serves, each
    from a fresh attacker (a ban or a dropped link from the last attempt
    must not hide what this one does)."""
    for protocol in sorted(_served(node)):
        for data in GARBAGE:
            async with open_host(gossip=None) as x:
                with trio.fail_after(CUT_WAIT):
                    await x.connect(node.addrs()[0])
                await _write_then_drain(x, node.peer_id, protocol, data)


async def test_garbage_on_every_protocol_leaves_the_node_up(tmp_path: Path) -> None:
    async with open_net(tmp_path) as net:
        # What a member's node serves today; a protocol added later is attacked too.
        assert {"/ipfs/id/push/1.0.0", "/meshsub/1.1.0", "/troc/sync/3"} <= _served(net.a)
        await _attack_every_protocol(net.a)
        # (A task of A's that crashed would have ended open_net's block.)
        await net.honest_ok()


async def test_garbage_on_every_protocol_leaves_a_witness_voting(tmp_path: Path) -> None:
    """A witness serves one protocol more (its votes), and three of four
    must answer for any payment to become final: garbage on each of its
    protocols must not stop it. Four witnesses (f = 1, q = 3); witness 0
    is attacked, then one more witness is stopped, so the payment becomes
    final only if witness 0 still votes."""
    cl = Cluster(tmp_path)
    async with trio.open_nursery() as nursery:
        for i in range(4):
            await cl.start_witness(nursery, i)
        victim, _ = cl.witnesses[0]
        assert WITNESS_PROTOCOL in _served(victim)
        await _attack_every_protocol(victim)
        cl.stop_witness(3)
        async with cl.member("a", cl.a) as a:
            result = await pay(a, cl.community, cl.b.public, 10, wait=20)
            assert result["finality"]["final"], result
        nursery.cancel_scope.cancel()


async def test_garbage_on_every_protocol_leaves_a_server_up(tmp_path: Path) -> None:
    """A community server serves the relay's and the DHT's protocols too."""
    config = NodeConfig(
        home=tmp_path / "s",
        listen=("/ip4/127.0.0.1/tcp/0",),
        control_socket=False,
        remember_peers=False,
        relay=RelayOptions(),
        dht="server",
    )
    async with open_node(config, SigningKey.generate()) as server:
        # A member's, and the relay's and the DHT's.
        assert {"/libp2p/circuit/relay/0.2.0/hop", "/troc/kad/1.0.0"} <= _served(server)
        await _attack_every_protocol(server)
        # Still up: a new peer connects and gets a ping answered.
        async with open_host(gossip=None) as y:
            with trio.fail_after(CUT_WAIT):
                await y.connect(server.addrs()[0])
            await y.ping(server.peer_id, within=CUT_WAIT)
        assert server.status()["peer_id"] == server.peer_id
