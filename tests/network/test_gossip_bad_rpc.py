"""A pubsub RPC that does not parse must cost its sender the link, never the
node; and py-libp2p's several writers to one peer's pubsub stream must not
interleave their bytes (troc.net.gossip, module docstring).

Found by bench/finality.py: under load a node exited with "troc: unexpected
DecodeError: Error parsing message with type 'pubsub.pb.RPC'", raised in
py-libp2p's pubsub read loop, which ended the host's Swarm service. The RPC
was corrupt because two tasks had written to the same Yamux stream at once.
Real hosts and nodes on 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from libp2p.pubsub import gossipsub
from libp2p.pubsub.pb import rpc_pb2

from tests.network.test_hostile import CUT_WAIT, open_net, until, varint
from troc.net.p2p import open_host


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\xff" * 12, id="endless-varint"),
        pytest.param(b"\x0f\x01", id="wire-type-7"),
        pytest.param(b"\x0a\x7f" + b"x" * 3, id="field-longer-than-rpc"),
    ],
)
async def test_an_rpc_that_does_not_parse_drops_its_sender_not_the_node(
    tmp_path: Path, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_net(tmp_path) as net, net.attacker() as x:
        stream = await x.open_stream(net.a.peer_id, gossipsub.PROTOCOL_ID_V11)
        await stream.write(varint(len(body)) + body)
        with trio.fail_after(CUT_WAIT):
            # A resets the stream: X reads its end, whatever A wrote first.
            while True:
                try:
                    if not await stream.read(1 << 16):
                        break
                except Exception:  # StreamReset
                    break
        await until("the warning", lambda: "does not parse" in caplog.text)
        await net.honest_ok()  # A is up, and syncs and gossips with B


async def test_concurrent_writers_to_one_pubsub_stream_do_not_interleave() -> None:
    """The sender task (a large backlog in one write) and py-libp2p's direct
    ``write_msg`` calls (made when a peer subscribes) write to one stream at
    once; each RPC must reach the peer whole. Each is ~200 KB: several Yamux
    frames, whose writes yield to the other writers between frames."""
    topic, other, marker = "troc/test/bad-rpc", "troc/test/nobody", "troc/test/marker"
    async with open_host() as a, open_host() as b:
        await a.connect(b.listen_addrs()[0])
        async with a.gossip.subscribe(topic), b.gossip.subscribe(topic) as sub:
            with trio.fail_after(10):
                await a.gossip.wait_for_mesh(b.peer_id, topic)
            pubsub = a.gossip.pubsub
            peer = next(p for p in pubsub.peers if p.to_base58() == b.peer_id)
            stream = pubsub.peers[peer]
            big = rpc_pb2.RPC(publish=[rpc_pb2.Message(data=b"z" * 200_000, topicIDs=[other])])
            sent = [bytes([i]) * 150_000 for i in range(4)]
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    for data in sent:
                        nursery.start_soon(a.gossip.publish, topic, data)
                    for _ in range(4):
                        nursery.start_soon(pubsub.write_msg, stream, big)
                subscribe = rpc_pb2.RPC.SubOpts(subscribe=True, topicid=marker)
                await pubsub.write_msg(stream, rpc_pb2.RPC(subscriptions=[subscribe]))
                got = [(await sub.receive()).data for _ in sent]
                # Everything before the marker was read whole, in one piece.
                await until("B reads the marker", lambda: a.peer_id in b.gossip.topic_peers(marker))
            assert sorted(got) == sent
            assert any(p.to_base58() == a.peer_id for p in b.gossip.pubsub.peers)
