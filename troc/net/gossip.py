"""GossipSub for troc: publish, subscribe and validate, over py-libp2p 0.8.1.

Gossip carries announcements and small entries; bulk data goes over streams
and anti-entropy repairs whatever gossip loses. :func:`troc.net.p2p.open_host`
creates one :class:`Gossip` per host and runs it for the host's lifetime.

py-libp2p behaviours that shape this wrapper (see FACTS.md):

- the heartbeat defaults to 120 s where the spec and go/js use 1 s;
- "adaptive gossip" (on by default) recomputes a health score every 30 s that
  counts a mesh below ``degree`` and zero peer scores (troc sets no score
  weights) as unhealthy, then sets the heartbeat to 30 or 60 s: measured on
  every node of a 10-host sparse graph after 30 s. We turn it off;
- a node whose mesh exceeds ``degree_high`` prunes it to ``degree``, and a
  pruned peer sits in a 60 s backoff during which py-libp2p neither forwards
  to it nor sends it IHAVE (the IHAVE target choice skips peers in backoff);
  the pruned peer equally ignores us. A peer whose only link is a busy node
  (everyone dialled the inviter) hears nothing for a minute at a time:
  20 hosts in a star delivered 276 of 1900 messages. troc never prunes for
  size (see :class:`GossipParams`);
- two copies of one message arriving together from two peers both pass the
  seen-cache, which is marked only after validation, so both are delivered
  and both forwarded (5-35 % of deliveries were duplicates in a 10-host
  sparse graph). The validator wrapper rejects the later copy;
- a node receives its own published messages back on its subscription;
- each subscription queue holds 32 messages and drops the rest silently.
  :class:`Subscription` drains that queue at once into a larger one and counts
  what it still has to drop, so losses are visible in ``dropped``;
- each peer's outbound queue holds 32 RPCs and drops the rest silently, and
  a spam cap stops forwarding messages over a rate per forwarding peer
  (ourselves included; they are still delivered locally). Publish fewer,
  larger messages: batch entries;
- each peer's sender task writes one RPC per write, and ``send_rpc`` copies
  an RPC for every peer and scores every mesh peer per message: what a
  community server pays ~100 times per payment. troc writes what is queued
  for a peer in one write, holds forwarded messages ``forward_window`` so
  more of them share it, queues one shared RPC for all peers, and turns
  scoring off (docs/relay.md, "A server's cost per payment"). The messages
  of one RPC are handled in tasks trio runs in any order, so RPCs are
  batched as separate frames, never merged: order is kept.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio
from google.protobuf.message import DecodeError
from libp2p.abc import IHost, INetStream
from libp2p.exceptions import ParseError
from libp2p.network.stream.exceptions import StreamClosed, StreamReset
from libp2p.peer.id import ID
from libp2p.pubsub import gossipsub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import RpcQueue
from libp2p.utils.varint import encode_varint_prefixed

from troc.errors import LocalProtocolError
from troc.net.channels import take_ready

__all__ = ["Gossip", "GossipMessage", "GossipParams", "Subscription", "Validator"]

logger = logging.getLogger("troc.gossip")

_UNSUBSCRIBE_TIMEOUT = 5.0
#: Duplicates arrive within milliseconds of the first copy; later ones meet
#: py-libp2p's own seen-cache (120 s).
_ACCEPTED_IDS = 8192
#: RPCs written to a peer in one write, at most.
_BATCH_RPCS = 64


@dataclass(frozen=True, slots=True)
class GossipParams:
    """GossipSub settings. Defaults follow the spec and go/js, not py-libp2p,
    except ``degree_high``.

    ``degree_high`` is effectively unbounded: py-libp2p 0.8.1 cuts a pruned
    peer off completely for a minute (module docstring), so a mesh keeps every
    subscribed peer that grafted it and forwards to all of them, as floodsub
    would. At troc's message rates (human payments, small entries) that costs
    little; the mesh grows past ``degree`` only on peers with many
    connections. ``degree`` and ``degree_low`` still choose whom to graft.

    ``max_messages_per_second`` is py-libp2p's spam cap per forwarding peer and
    topic (10 by default there). It counts our own publishes too, and a relay
    forwards many members' messages, so troc raises it. ``queue_size`` is the
    per-subscription queue behind py-libp2p's 32-slot one.

    ``forward_window`` (seconds): an RPC that forwards others' messages
    waits this long in its peer's queue, so that the messages forwarded
    meanwhile leave in the same write (``Gossip._send_merged``). A server
    writes each message to every member, and a write costs the same for one
    message as for several: at 20 payments/s and 100 members this halved
    the server's CPU per payment, for 0.1 s more latency. Our own messages
    and control RPCs do not wait.
    """

    degree: int = 6
    degree_low: int = 4
    degree_high: int = 1_000_000
    heartbeat_interval: int = 1
    max_messages_per_second: float = 100.0
    queue_size: int = 1024
    forward_window: float = 0.1


@dataclass(frozen=True, slots=True)
class GossipMessage:
    """A message on a topic. ``origin`` is the publisher's peer id (base58),
    vouched for by py-libp2p's strict message signing, not by troc.

    ``forwarder`` is the peer that relayed this copy to us (base58): a
    connected neighbour that holds the message, so the one to ask for what
    the message depends on (the origin is rarely a neighbour in a sparse
    graph). ``None`` when no validator is installed for the topic.
    """

    topic: str
    data: bytes
    origin: str
    seqno: bytes
    forwarder: str | None = None


Validator = Callable[[GossipMessage], "bool | Awaitable[bool]"]
"""Returns (or awaits) False to reject: the message is neither delivered nor forwarded."""


def _message(topic: str, msg: rpc_pb2.Message, forwarder: ID | None) -> GossipMessage:
    return GossipMessage(
        topic,
        bytes(msg.data),
        _base58(msg.from_id),
        bytes(msg.seqno),
        None if forwarder is None else forwarder.to_base58(),
    )


#: Origins' peer ids in base58, by their bytes: a message carries its origin
#: as bytes, and encoding them afresh (pure Python, 10-30 µs) for the
#: validator and again for the subscriber cost a witness 2 % of its CPU in
#: bench/finality.py. Origins are few; bounded all the same (any key may
#: publish).
_BASE58: dict[bytes, str] = {}
_BASE58_MAX = 4096


def _base58(peer: bytes) -> str:
    text = _BASE58.get(peer)
    if text is None:
        if len(_BASE58) >= _BASE58_MAX:
            _BASE58.clear()
        text = _BASE58[bytes(peer)] = ID(peer).to_base58()
    return text


class Subscription:
    """Messages from other peers on one topic, in arrival order (``async for``).

    ``dropped`` counts messages lost because this queue was full.
    """

    def __init__(self, topic: str, receive: trio.MemoryReceiveChannel[GossipMessage]) -> None:
        self.topic = topic
        self.dropped = 0
        self._receive = receive

    def __aiter__(self) -> AsyncIterator[GossipMessage]:
        return self._receive.__aiter__()

    async def receive(self) -> GossipMessage:
        """Wait for the next message."""
        return await self._receive.receive()

    async def receive_batch(self, limit: int) -> list[GossipMessage]:
        """Wait for the next message, then take whatever else has already
        arrived, ``limit`` messages in all at most, in arrival order: a
        consumer that stores each message does it in one transaction per
        batch, not one per message."""
        batch = [await self._receive.receive()]
        take_ready(self._receive, batch, limit)
        return batch


class Gossip:
    """GossipSub on one host. Obtain it as :attr:`troc.net.p2p.P2PHost.gossip`."""

    def __init__(self, host: IHost, params: GossipParams) -> None:
        self._params = params
        self._my_id = host.get_id().to_bytes()
        self.router = gossipsub.GossipSub(
            # Not 1.2: py-libp2p then sends an IDONTWANT with every message,
            # even our own and tiny ones, which takes a second slot in the
            # 32-RPC peer queue: a burst of 30 publishes delivered 17, not 30.
            # 1.3+ are py-libp2p's own extensions. go and js speak 1.1.
            protocols=[gossipsub.PROTOCOL_ID_V11, gossipsub.PROTOCOL_ID],
            degree=params.degree,
            degree_low=params.degree_low,
            degree_high=params.degree_high,
            heartbeat_interval=params.heartbeat_interval,
            max_messages_per_topic_per_second=params.max_messages_per_second,
            # Otherwise the heartbeat becomes 30-60 s after 30 s on any node
            # whose mesh is below `degree` (module docstring).
            adaptive_gossip_enabled=False,
        )
        # Ids of messages our validator accepted (or is checking), most recent
        # last, each with the peer that relayed that copy: a copy that raced
        # the first past py-libp2p's seen-cache is rejected.
        self._accepted: OrderedDict[bytes, ID] = OrderedDict()
        # Must exist before the host's first connection: pubsub learns of
        # peers only from connect notifications.
        self.pubsub = Pubsub(host, self.router)
        # Each peer's sender task, as py-libp2p's but writing what is queued
        # for the peer in one write (see _send_merged).
        self.pubsub.handle_sending_messages = self._send_merged  # type: ignore[method-assign]
        # Peer scoring off: troc sets no score weights and py-libp2p's
        # thresholds default to -inf, so its scorer never refuses anything,
        # yet it computed two scores per mesh peer for every message
        # forwarded (a fifth of a server's forwarding time in bench/relay.py).
        self.router.scorer = None
        self._send_rpc = self.router.send_rpc
        self.router.send_rpc = self._send_rpc_shared  # type: ignore[method-assign]
        # One writer at a time per pubsub stream, and a peer's bad RPC drops
        # that peer, not the node (module docstring).
        self._write_locks: weakref.WeakKeyDictionary[Any, trio.Lock] = weakref.WeakKeyDictionary()
        self._write_msg = self.pubsub.write_msg
        self.pubsub.write_msg = self._write_msg_locked  # type: ignore[method-assign]
        self._read_stream = self.pubsub.continuously_read_stream
        self.pubsub.continuously_read_stream = self._read_rpcs  # type: ignore[method-assign]

    def _write_lock(self, stream: Any) -> trio.Lock:
        lock = self._write_locks.get(stream)
        if lock is None:
            lock = self._write_locks[stream] = trio.Lock()
        return lock

    async def _write_msg_locked(self, stream: INetStream, rpc_msg: rpc_pb2.RPC) -> bool:
        """py-libp2p's ``write_msg``, once no other task writes to ``stream``."""
        async with self._write_lock(stream):
            return await self._write_msg(stream, rpc_msg)

    async def _read_rpcs(self, stream: INetStream) -> None:
        """py-libp2p's read loop on a peer's pubsub stream, with an RPC that
        does not parse raised as the ``ParseError`` its caller handles (the
        stream is reset, the peer dropped from pubsub) instead of escaping."""
        try:
            await self._read_stream(stream)
        except DecodeError as exc:
            peer = stream.muxed_conn.peer_id
            logger.warning("gossip: %s sent an RPC that does not parse (%s): dropped", peer, exc)
            raise ParseError(f"malformed pubsub RPC: {exc}") from exc

    def _send_rpc_shared(self, peer_id: ID, rpc: rpc_pb2.RPC, priority: bool = False) -> None:
        """Queue ``rpc`` for one peer. py-libp2p copies the RPC for each peer
        (to attach control retries due to that peer) and splits it to the
        size limit; a message forwarded to 100 members was copied 100 times.
        An RPC without control, to a peer with none waiting, that fits, is
        queued as it is, the same object for every peer: nothing changes a
        queued RPC (:meth:`_send_merged` only serializes it)."""
        queue = self.pubsub.peer_queues.get(peer_id)
        if (
            priority
            or queue is None
            or rpc.HasField("control")
            or peer_id in self.router._pending_control
            or rpc.ByteSize() > queue.max_message_size
        ):
            self._send_rpc(peer_id, rpc, priority)
        elif not queue.push(rpc):
            self.router._handle_dropped_rpc(peer_id, rpc, "queue_full")

    async def _send_merged(self, peer_id: ID, stream: Any, queue: RpcQueue) -> None:
        """Write the RPCs queued for one peer, all those already queued in one
        write (py-libp2p writes each on its own).

        Each write costs a Yamux frame, a Noise encryption and a socket
        send, whatever its size; a server forwards every message to each
        member, so when messages arrive faster than they are written, this
        is what a copy costs: batched, the writes fall with the backlog
        instead of the backlog growing (and the 32-RPC peer queue
        overflowing, which drops messages). The RPCs stay separate, each
        length-prefixed as on its own, so the peer reads and handles them
        one by one, in order (one merged RPC would have its messages handled
        in tasks that trio runs in any order). Forwarded messages first wait
        ``forward_window`` for more to join them.
        """
        window = self._params.forward_window
        try:
            while True:
                rpc = await queue.pop()
                if rpc is None:  # closed: the peer went away
                    return
                if window and any(m.from_id != self._my_id for m in rpc.publish):
                    await trio.sleep(window)  # others' messages: gather what follows
                batch = [rpc]
                while len(batch) < _BATCH_RPCS and (more := queue._queue.pop()) is not None:
                    batch.append(more)
                if not await self._write_batch(stream, batch):
                    return
        except Exception:  # as py-libp2p's own loop: the peer is dropped
            logger.debug("sending to %s failed", peer_id, exc_info=True)
            self.pubsub._handle_dead_peer(peer_id)

    async def _write_batch(self, stream: Any, batch: list[rpc_pb2.RPC]) -> bool:
        """Write length-prefixed RPCs in one write; False if the stream is gone
        (as py-libp2p's ``write_msg``)."""
        data = b"".join(encode_varint_prefixed(rpc.SerializeToString()) for rpc in batch)
        try:
            async with self._write_lock(stream):
                await stream.write(data)
        except (StreamClosed, StreamReset):
            return False
        return True

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish ``data`` on ``topic``, subscribed or not.

        Our own validator for the topic runs first; if it rejects, nothing is
        sent and no error is raised (py-libp2p gives no verdict back).
        Messages beyond ``max_messages_per_second``, or beyond 32 RPCs queued
        for one peer, are dropped without a word: gossip is best effort.
        """
        await self.pubsub.publish(topic, data)
        # py-libp2p's publish need not yield; without a checkpoint a burst of
        # publishes starves the tasks that drain subscription and peer queues.
        await trio.lowlevel.checkpoint()

    def set_validator(self, topic: str, validator: Validator) -> None:
        """Install the one validator for ``topic``, replacing any earlier one.

        It runs on every message before delivery or forwarding, our own
        publishes included. Raising counts as rejecting, and so does taking
        over 5 s for a coroutine function. With a validator installed each
        message is delivered and forwarded once: a copy of a message already
        accepted is rejected unseen by ``validator`` (py-libp2p counts that
        against the forwarder's score, whose weights troc leaves at zero).
        """

        def claim(forwarder: ID, msg: rpc_pb2.Message) -> bytes | None:
            mid = self.pubsub.get_message_id(msg)
            if mid in self._accepted:
                return None  # a duplicate that raced the first copy
            # Claimed before an async validator yields; same id means same
            # signed content, so a copy gets the first one's verdict anyway.
            self._accepted[mid] = forwarder
            if len(self._accepted) > _ACCEPTED_IDS:
                self._accepted.popitem(last=False)
            return mid

        if not inspect.iscoroutinefunction(validator):
            # A plain function runs inline: py-libp2p runs an async validator
            # in a nursery of its own under a timeout, per message, which cost
            # ~5 % of a member's CPU in bench/relay.py. An exception escaping
            # a sync validator would stop the whole Pubsub service (and the
            # host with it), so it is caught here and counts as rejecting.
            def check_sync(forwarder: ID, msg: rpc_pb2.Message) -> bool:
                mid = claim(forwarder, msg)
                if mid is None:
                    return False
                ok = False
                try:
                    verdict = validator(_message(topic, msg, forwarder))
                    if inspect.isawaitable(verdict):  # not a coroutine function after all
                        close = getattr(verdict, "close", None)
                        if close is not None:
                            close()
                        raise LocalProtocolError("a sync validator returned an awaitable")
                    ok = bool(verdict)
                except Exception:
                    logger.exception("gossip validator for %s failed", topic)
                finally:
                    if not ok:
                        self._accepted.pop(mid, None)
                return ok

            self.pubsub.set_topic_validator(topic, check_sync, is_async_validator=False)
            return

        async def check(forwarder: ID, msg: rpc_pb2.Message) -> bool:
            mid = claim(forwarder, msg)
            if mid is None:
                return False
            ok = False
            try:
                verdict = validator(_message(topic, msg, forwarder))
                if inspect.isawaitable(verdict):
                    verdict = await verdict
                ok = bool(verdict)
            finally:
                if not ok:
                    self._accepted.pop(mid, None)
            return ok

        # py-libp2p applies its timeout to an async validator and turns an
        # exception into a rejection.
        self.pubsub.set_topic_validator(topic, check, is_async_validator=True)

    def remove_validator(self, topic: str) -> None:
        self.pubsub.remove_topic_validator(topic)

    @asynccontextmanager
    async def subscribe(self, topic: str) -> AsyncIterator[Subscription]:
        """Subscribe for the length of the ``async with`` block.

        Our own publishes are filtered out. Raises :class:`LocalProtocolError`
        if this host is already subscribed to ``topic``.
        """
        if topic in self.pubsub.topic_ids:
            raise LocalProtocolError(f"already subscribed to {topic!r}")
        send, receive = trio.open_memory_channel[GossipMessage](self._params.queue_size)
        sub = Subscription(topic, receive)
        inner = await self.pubsub.subscribe(topic)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, inner, send, sub)
                try:
                    yield sub
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            with trio.move_on_after(_UNSUBSCRIBE_TIMEOUT) as scope:
                scope.shield = True  # unsubscribe even when cancelled
                await self.pubsub.unsubscribe(topic)

    async def _pump(
        self, inner: Any, send: trio.MemorySendChannel[GossipMessage], sub: Subscription
    ) -> None:
        async with send:
            async for msg in inner:
                if msg.from_id == self._my_id:
                    continue
                forwarder = self._accepted.get(self.pubsub.get_message_id(msg))
                try:
                    send.send_nowait(_message(sub.topic, msg, forwarder))
                except trio.WouldBlock:
                    sub.dropped += 1

    async def wait_for_mesh(self, peer_id: str, topic: str) -> None:
        """Wait until ``peer_id`` is in our mesh for ``topic``; bound it with
        ``trio.fail_after``."""
        await self.pubsub.wait_for_mesh(ID.from_base58(peer_id), topic, timeout=float("inf"))

    def topic_peers(self, topic: str) -> list[str]:
        """Peers known to be subscribed to ``topic``."""
        return [p.to_base58() for p in self.pubsub.peer_topics.get(topic, ())]
