"""Community servers as DHT providers: find a community's servers by its id.

Theory of operation
-------------------
A community server announces itself as a *provider* of each community it
serves; any node (member or server) asks the DHT for the providers of a
community and gets back dialable multiaddrs ending in ``/p2p/<peer id>``.

The DHT is Kademlia as libp2p specifies it (the ``/ipfs/kad/1.0.0`` protobuf
``Message``: ``FIND_NODE``, ``ADD_PROVIDER``, ``GET_PROVIDERS``), spoken under
troc's own protocol id :data:`PROTOCOL` so troc servers form their own DHT
and never mix with the public IPFS one. Only the protobuf classes come from
py-libp2p: its ``KadDHT`` (0.8.1) runs under trio, but is not fit to serve on
a community server: its inbound handler has no read deadline (12 idle streams
make it refuse every peer, for ever), its provider store has no total bound,
its lookups have no overall time bound, and it cannot leave the IPFS protocol
id. The measured list is in ``docs/dht.md``.

Key: :func:`community_key` = the sha2-256 multihash (``0x12 0x20`` + digest)
of ``sha256(b"troc/community/v1" + community_id)``, a valid content key for
any libp2p Kademlia.

Roles: ``server=True`` answers queries and stores provider records (community
servers); ``server=False`` only asks (members). The routing table holds only
peers that answered one of our queries (so clients never enter it); an
inbound peer is added after a successful probe query.

Everything is bounded (:class:`DHTParams`): records per key, per provider
peer and in total; routing-table size (k per bucket); inbound streams in all
and per peer, requests per stream, bytes per message, the life of an inbound
stream; outbound queries at once, RPCs per lookup, seconds per RPC and per
lookup. Records expire after ``record_ttl``; a provider re-announces every
``republish_interval``.

Provider records are hints, not trust: anyone can claim to provide any
community under its own peer id (Noise authenticates only the id). Callers
must check a server at the application level before relying on it.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import multiaddr
import trio
from google.protobuf.message import DecodeError
from libp2p.abc import INetStream
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.peer.id import ID

from troc.errors import LocalProtocolError
from troc.net.dht_tables import (
    DHTParams,
    ProviderStore,
    RoutingTable,
    _bare,
    _distance,
    _full_addrs,
    _peer_of,
)
from troc.net.p2p import (
    DialError,
    FrameError,
    P2PHost,
    close_stream,
    read_frame,
    write_frame,
)

__all__ = [
    "DHT",
    "KEY_DOMAIN",
    "PROTOCOL",
    "DHTParams",
    "ProviderStore",
    "RoutingTable",
    "community_key",
    "open_dht",
]

logger = logging.getLogger(__name__)

#: troc's DHT: the libp2p Kademlia wire format under troc's own protocol id.
PROTOCOL = "/troc/kad/1.0.0"
#: Domain separation for community keys.
KEY_DOMAIN = b"troc/community/v1"
_SHA256_MULTIHASH = b"\x12\x20"
_MAX_KEY = 80  # bytes; the spec's bound for provider keys
_DEFAULT_PARAMS = DHTParams()


def community_key(community_id: bytes) -> bytes:
    """The DHT key of a community: the sha2-256 multihash of the domain-separated id."""
    return _SHA256_MULTIHASH + hashlib.sha256(KEY_DOMAIN + community_id).digest()


# --- the DHT ------------------------------------------------------------------


class DHT:
    """A running DHT node. Obtain it from :func:`open_dht`; do not construct."""

    def __init__(
        self,
        host: P2PHost,
        *,
        server: bool,
        bootstrap: Sequence[str],
        announce: Sequence[str] | None,
        params: DHTParams,
    ) -> None:
        self.host = host
        self.server = server
        self.params = params
        self._bootstrap = list(bootstrap)
        self._announce = list(announce) if announce is not None else None
        self._self = host.peer_id
        self.routing = RoutingTable(self._self, params.k)
        self.store = ProviderStore(params)
        self._providing: dict[bytes, bytes] = {}  # key -> community id
        self._queries = trio.CapacityLimiter(params.max_concurrent_queries)
        self._inbound: dict[str, int] = {}
        self._inbound_total = 0
        self._probed: OrderedDict[str, float] = OrderedDict()
        self._probe_send, self._probe_recv = trio.open_memory_channel[str](
            params.max_probes_pending
        )
        self._bootstrapped = trio.Event()
        self.stats: dict[str, int] = {
            "inbound_requests": 0,
            "inbound_refused": 0,
            "records_refused": 0,
            "rpcs": 0,
            "rpc_failures": 0,
        }

    # --- public API

    async def provide(self, community_id: bytes) -> int:
        """Announce this node as a provider of the community, and keep announcing.

        The record is sent to the ``k`` servers closest to the key (and kept
        here if this node is a server); it is re-sent every
        ``republish_interval`` until :meth:`stop_providing` or the end of the
        block. Returns the number of servers that acknowledged now (0 if none
        was reachable: the periodic re-announcement retries).
        """
        key = community_key(community_id)
        if key not in self._providing and len(self._providing) >= self.params.max_provided:
            raise LocalProtocolError(f"already providing {self.params.max_provided} communities")
        self._providing[key] = community_id
        return await self._announce_key(key)

    def stop_providing(self, community_id: bytes) -> None:
        """Stop re-announcing; remote records lapse after ``record_ttl``."""
        key = community_key(community_id)
        self._providing.pop(key, None)
        self.store.remove(key, self._self)

    def providing(self) -> list[bytes]:
        return list(self._providing.values())

    async def find_providers(self, community_id: bytes, limit: int = 20) -> list[str]:
        """Full multiaddrs (``…/p2p/<id>``) of up to ``limit`` providers, not this node.

        Takes at most ``query_timeout`` seconds and returns what was found by
        then; never raises for network trouble (an empty list: none found).
        """
        limit = max(0, min(limit, 100))
        key = community_key(community_id)
        found: dict[str, list[str]] = {}

        def collect(peer: str, addrs: Sequence[str]) -> None:
            if peer != self._self and peer not in found and len(found) < limit and addrs:
                found[peer] = list(addrs)

        for peer, addrs in self.store.get(key):
            collect(peer, addrs)
        if len(found) < limit:
            async with self._queries:
                with trio.move_on_after(self.params.query_timeout):
                    await self._wait_bootstrapped()
                    await self._lookup(key, providers=collect, enough=lambda: len(found) >= limit)
        return [a for addrs in found.values() for a in addrs]

    def info(self) -> dict[str, int]:
        """Counters and sizes, for metrics."""
        return {
            **self.stats,
            "routing_peers": len(self.routing),
            "records": len(self.store),
            "record_keys": self.store.keys(),
            "providing": len(self._providing),
            "inbound_streams": self._inbound_total,
        }

    # --- announcing

    def _announce_addrs(self) -> list[str]:
        addrs = self._announce if self._announce is not None else self.host.listen_addrs()
        return addrs[: self.params.max_addrs]

    async def _announce_key(self, key: bytes) -> int:
        addrs = self._announce_addrs()
        if self.server:
            self.store.add(key, self._self, addrs)
        msg = Message(type=Message.MessageType.ADD_PROVIDER, key=key)
        msg.providerPeers.add(
            id=ID.from_base58(self._self).to_bytes(), addrs=[_bare(a) for a in addrs]
        )
        acked = 0
        async with self._queries:
            with trio.move_on_after(self.params.query_timeout):
                await self._wait_bootstrapped()
                closest = await self._lookup(key)

                async def send(peer: str) -> None:
                    nonlocal acked
                    if await self._rpc(peer, msg) is not None:
                        acked += 1

                limiter = trio.Semaphore(self.params.alpha)
                async with trio.open_nursery() as nursery:
                    for peer in closest[: self.params.k]:
                        await limiter.acquire()
                        nursery.start_soon(_release_after, limiter, send, peer)
        return acked

    async def _republish_loop(self) -> None:
        while True:
            await trio.sleep(self.params.republish_interval)
            for key in list(self._providing):
                if key in self._providing:
                    await self._announce_key(key)
            self.store.expire()

    # --- lookups

    async def _lookup(
        self,
        key: bytes,
        *,
        providers: Callable[[str, Sequence[str]], None] | None = None,
        enough: Callable[[], bool] = lambda: False,
    ) -> list[str]:
        """Iterative Kademlia lookup: the ``k`` closest servers that answered.

        With ``providers``, asks GET_PROVIDERS (which also returns closer
        peers) and hands every provider found to it; stops early when
        ``enough()``. Bounded by ``max_lookup_rpcs``; the caller bounds time.
        """
        p = self.params
        kind = Message.MessageType.GET_PROVIDERS if providers else Message.MessageType.FIND_NODE
        request = Message(type=kind, key=key)
        candidates: set[str] = set(self.routing.closest(key, p.k, exclude=self._self))
        queried: set[str] = set()
        answered: set[str] = set()
        rpcs = 0
        while rpcs < p.max_lookup_rpcs and not enough():
            ranked = sorted(candidates | answered, key=lambda q: _distance(key, q))[: p.k]
            batch = [q for q in ranked if q not in queried][
                : min(p.alpha, p.max_lookup_rpcs - rpcs)
            ]
            if not batch:
                break
            queried.update(batch)
            rpcs += len(batch)
            replies: dict[str, Message] = {}

            async def ask(peer: str, replies: dict[str, Message] = replies) -> None:
                reply = await self._rpc(peer, request)
                if reply is not None:
                    replies[peer] = reply

            async with trio.open_nursery() as nursery:
                for peer in batch:
                    nursery.start_soon(ask, peer)
            for peer, reply in replies.items():
                answered.add(peer)
                if providers is not None:
                    for pp in reply.providerPeers[: p.max_providers_per_key]:
                        pid = _peer_of(pp.id)
                        if pid is not None:
                            providers(pid, _full_addrs(pid, list(pp.addrs), p.max_addrs))
                for cp in reply.closerPeers[: p.k]:
                    pid = _peer_of(cp.id)
                    if pid is None or pid == self._self or pid in queried:
                        continue
                    if self._learn_addrs(pid, list(cp.addrs)):
                        candidates.add(pid)
            # Keep the candidate set small: only the closest can matter.
            candidates = set(
                sorted(candidates - queried, key=lambda q: _distance(key, q))[: 2 * p.k]
            )
        return sorted(answered, key=lambda q: _distance(key, q))[: p.k]

    def _learn_addrs(self, peer: str, raw: list[bytes]) -> bool:
        """Remember where a peer named in a response listens, if we do not know already."""
        pid = ID.from_base58(peer)
        store = self.host.libp2p.get_peerstore()
        try:
            if store.addrs(pid):
                return True
        except Exception:  # py-libp2p raises PeerStoreError for an unknown peer
            pass
        addrs = _full_addrs(peer, raw, self.params.max_addrs)
        if not addrs:
            return False
        bare = [multiaddr.Multiaddr(_bare(a)) for a in addrs if "/p2p-circuit" not in a]
        if not bare:
            return False
        # Short TTL: addresses learnt from third parties are only for this lookup.
        store.add_addrs(pid, bare, max(60, int(self.params.query_timeout * 2)))
        return True

    async def _rpc(self, peer: str, request: Message) -> Message | None:
        """One request, one answer; None on any failure (the peer leaves the routing table)."""
        self.stats["rpcs"] += 1
        stream: INetStream | None = None
        reply: Message | None = None
        with trio.move_on_after(self.params.rpc_timeout):
            try:
                stream = await self.host.open_stream(peer, PROTOCOL)
                await write_frame(
                    stream, request.SerializeToString(), frame_timeout=self.params.rpc_timeout
                )
                data = await read_frame(
                    stream, self.params.max_response_bytes, frame_timeout=self.params.rpc_timeout
                )
                parsed = Message()
                parsed.ParseFromString(data)
                if parsed.type == request.type:
                    reply = parsed
            except (DialError, FrameError, DecodeError, ValueError):
                pass
        if stream is not None:
            await close_stream(stream, reset=reply is None)
        if reply is None:
            self.stats["rpc_failures"] += 1
            self.routing.remove(peer)
        else:
            self.routing.add(peer)  # it answered our protocol: it is a server
        return reply

    # --- bootstrap and refresh

    async def _wait_bootstrapped(self) -> None:
        await self._bootstrapped.wait()

    async def _do_bootstrap(self) -> None:
        own = ID.from_base58(self._self).to_bytes()
        async with self._queries:
            with trio.move_on_after(self.params.query_timeout):
                if self._bootstrap and len(self.routing) == 0:
                    async with trio.open_nursery() as nursery:
                        for addr in self._bootstrap:
                            nursery.start_soon(self._bootstrap_one, addr, own)
                await self._lookup(own)

    async def _bootstrap_one(self, addr: str, own: bytes) -> None:
        try:
            peer = await self.host.connect(addr)
        except (DialError, LocalProtocolError) as exc:
            logger.info("DHT bootstrap peer %s unreachable: %s", addr, exc)
            return
        await self._rpc(peer, Message(type=Message.MessageType.FIND_NODE, key=own))

    async def _maintain(self) -> None:
        try:
            await self._do_bootstrap()
        finally:
            self._bootstrapped.set()
        # Refresh soon and then less and less often: peers that joined after
        # us are learnt within seconds, not at the next full interval.
        delay = min(1.0, self.params.refresh_interval)
        while True:
            await trio.sleep(delay)
            delay = min(2 * delay, self.params.refresh_interval)
            await self._do_bootstrap()
            self.store.expire()

    # --- serving

    async def _probe_loop(self) -> None:
        own = ID.from_base58(self._self).to_bytes()
        async for peer in self._probe_recv:
            if peer not in self.routing:
                await self._rpc(peer, Message(type=Message.MessageType.FIND_NODE, key=own))

    def _maybe_probe(self, peer: str) -> None:
        """Queue a probe of an inbound peer: it enters the table only if it serves the DHT."""
        if peer in self.routing or not self._may_serve(peer):
            return
        now = trio.current_time()
        last = self._probed.get(peer)
        if last is not None and now - last < self.params.probe_interval:
            return
        self._probed[peer] = now
        self._probed.move_to_end(peer)
        while len(self._probed) > self.params.probe_memory:
            self._probed.popitem(last=False)
        try:
            self._probe_send.send_nowait(peer)
        except trio.WouldBlock:
            del self._probed[peer]  # try again on its next request

    def _may_serve(self, peer: str) -> bool:
        """False if identify told us the peer does not speak :data:`PROTOCOL` (a client)."""
        try:
            protocols = self.host.libp2p.get_peerstore().get_protocols(ID.from_base58(peer))
        except Exception:  # unknown peer, or identify has not run yet
            return True
        return not protocols or PROTOCOL in protocols

    async def _serve(self, stream: INetStream, peer: str) -> None:
        p = self.params
        if (
            self._inbound_total >= p.max_inbound_streams
            or self._inbound.get(peer, 0) >= p.max_inbound_per_peer
        ):
            self.stats["inbound_refused"] += 1
            await close_stream(stream, reset=True)
            return
        self._inbound_total += 1
        self._inbound[peer] = self._inbound.get(peer, 0) + 1
        try:
            with trio.move_on_after(p.inbound_stream_seconds):
                for _ in range(p.max_requests_per_stream):
                    try:
                        data = await read_frame(
                            stream, p.max_request_bytes, frame_timeout=p.rpc_timeout
                        )
                    except FrameError:
                        return
                    request = Message()
                    try:
                        request.ParseFromString(data)
                    except DecodeError:
                        await close_stream(stream, reset=True)
                        return
                    self.stats["inbound_requests"] += 1
                    reply = self._answer(request, peer)
                    if reply is None:
                        await close_stream(stream, reset=True)
                        return
                    try:
                        await write_frame(
                            stream, reply.SerializeToString(), frame_timeout=p.rpc_timeout
                        )
                    except FrameError:
                        return
                    self._maybe_probe(peer)
        finally:
            self._inbound_total -= 1
            left = self._inbound[peer] - 1
            if left:
                self._inbound[peer] = left
            else:
                del self._inbound[peer]

    def _answer(self, request: Message, peer: str) -> Message | None:
        """The reply to one request, or None to reset the stream."""
        key = request.key
        if not 0 < len(key) <= _MAX_KEY:
            return None
        t = request.type
        if t == Message.MessageType.FIND_NODE:
            reply = Message(type=t, key=key)
        elif t == Message.MessageType.GET_PROVIDERS:
            reply = Message(type=t, key=key)
            for pid, addrs in self.store.get(key)[: self.params.max_providers_per_key]:
                reply.providerPeers.add(
                    id=ID.from_base58(pid).to_bytes(), addrs=[_bare(a) for a in addrs]
                )
        elif t == Message.MessageType.ADD_PROVIDER:
            for pp in request.providerPeers[:4]:
                if _peer_of(pp.id) != peer:
                    continue  # a peer may announce only itself
                claimed = _full_addrs(peer, list(pp.addrs), self.params.max_addrs)
                if not self.store.add(key, peer, claimed):
                    self.stats["records_refused"] += 1
                break
            return Message(type=t, key=key)
        elif t == Message.MessageType.PING:
            return Message(type=t)
        else:
            return None  # PUT_VALUE / GET_VALUE: troc stores no values
        self._add_closer(reply, key, exclude=peer)
        return reply

    def _add_closer(self, reply: Message, key: bytes, exclude: str) -> None:
        store = self.host.libp2p.get_peerstore()
        for pid in self.routing.closest(key, self.params.k, exclude=exclude):
            addrs = [bytes(a.to_bytes()) for a in store.addrs(ID.from_base58(pid))][
                : self.params.max_addrs
            ]
            if addrs:
                reply.closerPeers.add(id=ID.from_base58(pid).to_bytes(), addrs=addrs)


async def _release_after(
    limiter: trio.Semaphore, fn: Callable[[str], Awaitable[None]], peer: str
) -> None:
    try:
        await fn(peer)
    finally:
        limiter.release()


@asynccontextmanager
async def open_dht(
    host: P2PHost,
    *,
    server: bool,
    bootstrap: Sequence[str] = (),
    announce: Sequence[str] | None = None,
    params: DHTParams = _DEFAULT_PARAMS,
) -> AsyncIterator[DHT]:
    """Run the DHT on ``host`` for the length of the ``async with`` block.

    Args:
        host: from :func:`troc.net.p2p.open_host`.
        server: answer queries and store provider records (community
            servers); ``False``: only ask (members).
        bootstrap: full multiaddrs (``…/p2p/<id>``) of DHT servers to start
            from; dialed in the background, again whenever the routing table
            is empty at a refresh.
        announce: the addresses put in our provider records; default: the
            host's listen addresses (useless if it listens on 0.0.0.0).
        params: bounds and timings (:class:`DHTParams`).

    The block starts at once; ``provide`` and ``find_providers`` wait for the
    first bootstrap (within their own deadline).
    """
    if not math.isfinite(params.record_ttl) or params.republish_interval >= params.record_ttl:
        raise LocalProtocolError("republish_interval must be shorter than record_ttl")
    dht = DHT(host, server=server, bootstrap=bootstrap, announce=announce, params=params)
    async with trio.open_nursery() as nursery:
        if server:
            host.set_stream_handler(PROTOCOL, dht._serve)
            nursery.start_soon(dht._probe_loop)
        nursery.start_soon(dht._maintain)
        nursery.start_soon(dht._republish_loop)
        try:
            yield dht
        finally:
            if server:
                host.remove_stream_handler(PROTOCOL)
            nursery.cancel_scope.cancel()
