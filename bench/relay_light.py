"""Light members for bench/relay.py: libp2p peers that receive and count.

A light member is a real libp2p host (TCP + Noise + Yamux on 127.0.0.1, its
peer id from the member's key seed, as a node's) that speaks just enough
GossipSub to the server to be in its mesh: on its own stream it sends the
community topic's subscription and a GRAFT, and on the server's stream it
reads RPCs. For each message it decodes the entry frame (no signature
check, no store) and notes the entry id and the arrival time (wall clock).
A light member that pays signs a transfer after its last entry (it knows
its chain's head) and publishes it as a strictly signed pubsub message, as
a node would.

What it skips (a node's validator, store, sync, py-libp2p's pubsub
machinery and its per-message signature checks) is what makes 100 members
cost the bench process far less than the server, so that the bench
measures the server.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import trio
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.pubsub.pb import rpc_pb2

from troc.crypto.sign import SigningKey
from troc.net.p2p import DialError, P2PHost, open_host
from troc.protocol.entry import CommunityId, Entry, EntryId, Transfer
from troc.protocol.gossip_wire import is_run, run_wires

__all__ = ["MESHSUB", "LightMember"]

#: The GossipSub protocols a node's router speaks (troc.net.gossip).
MESHSUB = ["/meshsub/1.1.0", "/meshsub/1.0.0"]
_SIGNING_PREFIX = b"libp2p-pubsub:"
#: Largest RPC read from the server (py-libp2p's own default cap is 1 MiB).
_MAX_RPC = 1 << 20
#: What a write or read on a connection the server dropped raises.
_GONE = (BaseLibp2pError, OSError, trio.BrokenResourceError, trio.ClosedResourceError)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class LightMember:
    """One member, light (see the module docstring). ``arrivals`` maps each
    entry id received to its first arrival time; ``received`` counts
    messages (copies included)."""

    def __init__(
        self,
        key: SigningKey,
        community: CommunityId,
        topic: str,
        head: tuple[int, EntryId],
    ) -> None:
        self.key = key
        self.community = community
        self.topic = topic
        self.seq, self.prev = head
        self.arrivals: dict[bytes, float] = {}
        self.received = 0
        self.rejoined = 0
        self.failed = 0
        self._server = ""
        self.host: P2PHost | None = None
        self._out: Any = None  # our stream to the server
        self._seqno = itertools.count(1)
        self._paying = trio.Lock()

    async def run(self, server: str, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, join the server's mesh, and read until cancelled."""
        async with open_host(
            key_seed=self.key.seed, listen=["/ip4/127.0.0.1/tcp/0"], gossip=None
        ) as host:
            self.host = host
            for protocol in MESHSUB:  # the server's router opens its stream to us
                host.set_stream_handler(protocol, self._read)
            self._server = server
            for attempt in range(5):  # a busy server may be slow to answer at first
                try:
                    await self._join()
                    break
                except DialError:
                    if attempt == 4:
                        raise
                    await trio.sleep(1)
            task_status.started()
            await trio.sleep_forever()

    async def _join(self) -> None:
        """Connect to the server (again), subscribe and graft."""
        assert self.host is not None
        peer = await self.host.connect(self._server)
        self._out = await self.host.open_stream(peer, MESHSUB)
        hello = rpc_pb2.RPC(
            subscriptions=[rpc_pb2.RPC.SubOpts(subscribe=True, topicid=self.topic)],
            control=rpc_pb2.ControlMessage(graft=[rpc_pb2.ControlGraft(topicID=self.topic)]),
        )
        await self._write(hello, rejoin=False)

    async def _write(self, rpc: rpc_pb2.RPC, *, rejoin: bool = True) -> bool:
        """Write an RPC on our stream; if the server dropped us, join again
        (once, within 10 s) as a node would redial, counted in ``rejoined``.
        False if that failed too (counted in ``failed``)."""
        data = rpc.SerializeToString()
        try:
            await self._out.write(_varint(len(data)) + data)
            return True
        except _GONE:
            if not rejoin:
                raise
        self.rejoined += 1
        try:
            with trio.fail_after(10):
                await self._join()
                await self._out.write(_varint(len(data)) + data)
            return True
        except (trio.TooSlowError, DialError, *_GONE):
            self.failed += 1
            return False

    async def _read(self, stream: Any, _peer: str) -> None:
        """Read the server's RPCs: each published message's entry is noted."""
        buf = b""
        while True:
            try:
                chunk = await stream.read(1 << 16)
            except _GONE:
                return  # the server dropped us: we join again on our next write
            if not chunk:
                return
            buf += chunk
            while buf:
                size, shift, i = 0, 0, 0
                while i < len(buf) and i < 10:
                    size |= (buf[i] & 0x7F) << shift
                    shift += 7
                    i += 1
                    if not buf[i - 1] & 0x80:
                        break
                else:
                    break  # the varint is not all here yet
                if size > _MAX_RPC:
                    return
                if len(buf) < i + size:
                    break
                rpc = rpc_pb2.RPC.FromString(buf[i : i + size])
                buf = buf[i + size :]
                if rpc.publish:
                    now = time.time()
                    for msg in rpc.publish:
                        self.received += 1
                        # One entry, or a run of a full node's (troc.protocol.gossip_wire).
                        wires = run_wires(msg.data) if is_run(msg.data) else [msg.data]
                        for wire in wires:
                            entry = Entry.decode(wire, check_signature=False)
                            self.arrivals.setdefault(entry.id, now)

    async def pay(self, to: bytes, amount: int = 1) -> Entry | None:
        """Sign a transfer after our last entry and publish it (strict signing);
        None if it could not be sent (our log then goes on without it).
        One at a time: each goes after the last one sent."""
        async with self._paying:
            return await self._pay(to, amount)

    async def _pay(self, to: bytes, amount: int) -> Entry | None:
        assert self.host is not None
        entry = Entry.create(
            self.key,
            community=self.community,
            seq=self.seq + 1,
            prev=self.prev,
            timestamp_ms=int(time.time() * 1000),
            body=Transfer(to=to, amount=amount),  # type: ignore[arg-type]
        )
        libp2p = self.host.libp2p
        msg = rpc_pb2.Message(
            data=entry.wire,
            topicIDs=[self.topic],
            from_id=libp2p.get_id().to_bytes(),
            seqno=next(self._seqno).to_bytes(8, "big"),
        )
        msg.signature = libp2p.get_private_key().sign(_SIGNING_PREFIX + msg.SerializeToString())
        msg.key = libp2p.get_public_key().serialize()
        # As a node's py-libp2p does, the RPC carries our signed peer record.
        record, _ = env_to_send_in_RPC(libp2p)
        if not await self._write(rpc_pb2.RPC(publish=[msg], senderRecord=record)):
            return None
        self.seq, self.prev = entry.seq, entry.id
        return entry
