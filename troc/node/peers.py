"""The node's peers: whom it dials, whom it refuses, what each may cost.

Theory of operation
-------------------
A node finds peers four ways, all here: the addresses it was given and
remembered (``bootstrap``, ``peers.json``), dialled at start and redialled
with a backoff when lost (:meth:`Peers.redial_loop`); peers mDNS put in the
peer store (:meth:`Peers.mdns_loop`); servers the DHT names for a community
(:meth:`Peers.dht_loop`); and any address the member gives
(:meth:`Peers.connect`). Each new connection is announced on the sync
requests channel, so the sync service (:mod:`troc.node.sync`) runs a session
with the peer at once.

It refuses a peer for a while once the peer proves broken or hostile
(:meth:`Peers.ban`), and for the node's whole life if the operator's list
names it. What a peer may cost is bounded here too: bytes and entries per
second (:class:`~troc.net.quota.PeerQuota`, charged by sync, gossip and the
witness service) and inbound streams open at once (:meth:`Peers.limit_streams`).

This module knows peers and addresses; what is said to them is the business
of :mod:`troc.node.sync`, :mod:`troc.node.topics` and :mod:`troc.node.witness`.
"""

from __future__ import annotations

import logging
import math
import random
import socket as _stdlib_socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import trio
from libp2p.peer.id import ID

from troc.errors import TrocError
from troc.net.dht import DHT
from troc.net.liveness import Liveness
from troc.net.p2p import DialError, P2PHost
from troc.net.quota import PeerQuota
from troc.node import homefiles
from troc.node.local import LocalNode
from troc.protocol.entry import CommunityId

__all__ = ["PeerSettings", "PeerTable", "Peers", "dialable", "peer_quota"]

logger = logging.getLogger(__name__)

#: Lost bootstrap peers are redialled: checked this often, backing off to REDIAL_MAX.
REDIAL_TICK = 5.0
#: A peer lost a short while ago (troc.net.liveness.RECENT), remembered or
#: not, is redialled this often instead, so that a healed link is used again
#: within seconds whatever the cut's length (each try costs one SYN).
REDIAL_RECENT = 2.0
REDIAL_MAX = 300.0
MAX_REDIAL = 64
#: How often the DHT loop looks for newly followed communities (or, as a
#: client with no peer, for servers).
DHT_TICK = 5.0
#: Each community's servers are looked up this often (and at start), and at
#: most this many new ones are connected to.
DHT_LOOKUP_INTERVAL = 600.0
DHT_CONNECT = 3
#: A peer mDNS found is dialled at most once in this many seconds, and at
#: most MDNS_DIALS of them each round.
MDNS_REDIAL = 60.0
MDNS_DIALS = 4
#: At most this many of a discovered peer's addresses are tried, one after another.
MDNS_ADDRS = 4
#: Per-peer budgets when the configuration names none (generous: a member
#: catching up streams ~6,000 entries/s; quotas are for servers).
DEFAULT_BYTES_PER_S = 8_000_000
DEFAULT_ENTRIES_PER_S = 20_000
DEFAULT_STREAMS_PER_PEER = 16


class PeerSettings(Protocol):
    """What :class:`Peers` reads of the node's configuration
    (:class:`~troc.node.node.NodeConfig` has all of it)."""

    @property
    def home(self) -> Path: ...
    @property
    def bootstrap(self) -> tuple[str, ...]: ...
    @property
    def remember_peers(self) -> bool: ...
    @property
    def ban_seconds(self) -> float: ...
    @property
    def banned(self) -> tuple[str, ...]: ...
    @property
    def mdns(self) -> bool: ...
    @property
    def sync_interval(self) -> float: ...
    @property
    def dht(self) -> str: ...


def peer_quota(quotas: Any) -> tuple[PeerQuota, int]:
    """The per-peer budgets of ``quotas`` (troc.node.config.PeerQuotas; None:
    the defaults above): the byte and entry quota, and the inbound streams a
    peer may hold open at once."""
    if quotas is None:
        return PeerQuota(DEFAULT_BYTES_PER_S, DEFAULT_ENTRIES_PER_S), DEFAULT_STREAMS_PER_PEER
    return PeerQuota(quotas.bytes_per_s, quotas.entries_per_s), quotas.streams


def dialable(addrs: list[str]) -> list[str]:
    """Replace a wildcard listen address by this host's addresses."""
    out: list[str] = []
    for addr in addrs:
        if "/ip4/0.0.0.0/" not in addr:
            out.append(addr)
            continue
        ips = ["127.0.0.1"]
        try:
            host_ips = _stdlib_socket.gethostbyname_ex(_stdlib_socket.gethostname())[2]
            ips += [ip for ip in host_ips if not ip.startswith("127.")]
        except OSError:
            pass
        out += [addr.replace("/ip4/0.0.0.0/", f"/ip4/{ip}/") for ip in ips]
    return out


@dataclass(slots=True)
class PeerTable:
    """Bans and per-peer counts, shared by the services that talk to peers."""

    banned: dict[str, float] = field(default_factory=dict)
    inbound: dict[str, int] = field(default_factory=dict)
    dialed: dict[str, float] = field(default_factory=dict)  # mDNS peers: last dial (trio time)

    def enter_inbound(self, peer: str, most: int) -> bool:
        """Count an inbound session of ``peer``; False (not counted) if it has ``most``."""
        if self.inbound.get(peer, 0) >= most:
            return False
        self.inbound[peer] = self.inbound.get(peer, 0) + 1
        return True

    def leave_inbound(self, peer: str) -> None:
        """End one of ``peer``'s inbound sessions; a peer with none is forgotten,
        so the dict holds only peers with a session open."""
        left = self.inbound.pop(peer) - 1
        if left:
            self.inbound[peer] = left

    def is_banned(self, peer: str) -> bool:
        until = self.banned.get(peer)
        if until is None:
            return False
        if until < time.monotonic():
            del self.banned[peer]
            return False
        return True


class Peers:
    """Dials, bans and per-peer limits of one node (see the module's docstring).

    Args:
        host: the node's libp2p host.
        local: the member's node (the DHT loop reads the communities it follows).
        settings: the node's configuration.
        liveness: says which peers were lost lately (the redial loop dials them).
        nursery: the node's nursery, for dials and disconnects started here.
        sync_soon: where each new connection is announced, for a sync session.
        serves: whether the node serves a community (the DHT loop's filter).
    """

    def __init__(
        self,
        host: P2PHost,
        local: LocalNode,
        settings: PeerSettings,
        liveness: Liveness,
        nursery: trio.Nursery,
        sync_soon: trio.MemorySendChannel[str | None],
        serves: Callable[[CommunityId], bool],
        quotas: Any = None,
    ) -> None:
        self.host = host
        self.local = local
        self.settings = settings
        self.liveness = liveness
        self.table = PeerTable()
        for peer in settings.banned:
            self.table.banned[peer] = math.inf
        self.quota, self.max_streams = peer_quota(quotas)
        self._nursery = nursery
        self._sync_soon = sync_soon
        self._serves = serves
        self._streams: dict[str, int] = {}  # inbound witness/invite streams per peer

    def is_banned(self, peer: str) -> bool:
        return self.table.is_banned(peer)

    def over_quota(self, msg: Any) -> bool:
        """Charge a gossip message to the neighbour that sent it; True to drop it."""
        sender = msg.forwarder or msg.origin
        return sender is not None and self.quota.charge(sender, nbytes=len(msg.data), entries=1) > 0

    def limit_streams(
        self, handler: Callable[[Any, str], Awaitable[None]]
    ) -> Callable[[Any, str], Awaitable[None]]:
        """Wrap a stream handler: at most ``max_streams`` at once per peer, none for banned ones."""

        async def limited(stream: Any, peer: str) -> None:
            if self.is_banned(peer) or self._streams.get(peer, 0) >= self.max_streams:
                return  # closed at once by the caller (p2p.set_stream_handler)
            self._streams[peer] = self._streams.get(peer, 0) + 1
            try:
                await handler(stream, peer)
            finally:
                self._streams[peer] -= 1
                if not self._streams[peer]:
                    del self._streams[peer]

        return limited

    def usable(self) -> list[str]:
        """Connected peers this node talks to. One the operator's list names
        is cut off here, at once; one banned for misbehaviour was cut off when
        banned, and if it comes back its streams and gossip are refused until
        the ban expires."""
        connected = []
        for p in self.host.connected_peers():
            if p in self.settings.banned:
                self._nursery.start_soon(self._disconnect, p)
            elif not self.is_banned(p):
                connected.append(p)
        return connected

    def ban(self, peer: str, why: str) -> None:
        """Refuse ``peer`` for ``ban_seconds`` and cut it off now."""
        seconds = self.settings.ban_seconds
        logger.warning("banning peer %s for %.0f s: %s", peer, seconds, why)
        self.table.banned[peer] = time.monotonic() + seconds
        self._nursery.start_soon(self._disconnect, peer)

    def banned(self) -> list[str]:
        """Peers banned now (``is_banned`` forgets expired bans, which would be listed forever)."""
        return sorted(p for p in list(self.table.banned) if self.is_banned(p))

    async def _disconnect(self, peer: str) -> None:
        try:
            await self.host.disconnect(peer)
        except Exception:  # the peer may be gone already
            logger.debug("disconnect %s failed", peer, exc_info=True)

    # -- connecting ---------------------------------------------------------------

    async def connect(self, addr: str, *, redial: bool = False) -> str:
        """Connect to ``addr``, remember it, sync with the peer soon.

        ``redial`` forgets a recent failed dial to that peer first (py-libp2p
        refuses for 60 s to dial a peer whose addresses all failed once).
        """
        peer = await self.host.connect(addr, redial=redial)
        self._remember(addr)
        self._sync_soon.send_nowait(peer)
        return peer

    async def _connect_quietly(self, addr: str) -> None:
        try:
            await self.connect(addr)
        except (DialError, TrocError) as exc:
            logger.info("cannot reach %s: %s", addr, exc)

    def _remember(self, addr: str) -> None:
        settings = self.settings
        if not settings.remember_peers or addr in settings.bootstrap:
            return
        try:
            homefiles.remember_bootstrap(settings.home, [addr])
        except (OSError, TrocError) as exc:  # a damaged file must not stop the node
            logger.warning("cannot remember %s: %s", addr, exc)

    def bootstrap_addrs(self) -> list[str]:
        """The configured bootstrap addresses, then the remembered ones."""
        settings = self.settings
        addrs = list(settings.bootstrap)
        if settings.remember_peers:
            try:
                addrs += [a for a in homefiles.bootstrap_addrs(settings.home) if a not in addrs]
            except TrocError as exc:  # a damaged file must not stop the node
                logger.warning("ignoring remembered peers: %s", exc)
        return addrs

    async def bootstrap(self) -> None:
        """Dial every bootstrap and remembered address, all at once; returns
        when each dial is over (failures are logged)."""
        async with trio.open_nursery() as nursery:
            for addr in self.bootstrap_addrs():
                nursery.start_soon(self._connect_quietly, addr)

    async def redial_loop(self) -> None:
        """Reconnect to bootstrap and remembered peers that went away (a
        server restarting, a network change), each with its own backoff:
        5 s doubling to 5 minutes, back to 5 s once connected. Any peer lost
        recently (closed as dead by the liveness pings, or gone), whoever
        dialed whom, is tried every REDIAL_RECENT seconds meanwhile."""
        delay: dict[str, float] = {}
        due: dict[str, float] = {}
        dialing: set[str] = set()  # one dial per address at a time (a dead link's hangs)
        while True:
            # Jittered: two nodes that lost each other redial each other, and
            # when both dials land together each side's py-libp2p keeps one
            # connection and closes the other, not always the same one, so
            # both go. In lock-step (both on 2 s ticks from the same heal)
            # that could repeat (docs/sync.md, "Dead links and partitions").
            await trio.sleep(min(REDIAL_TICK, REDIAL_RECENT) * random.uniform(0.5, 1.0))
            now = trio.current_time()
            connected = set(self.host.connected_peers())
            recent = self.liveness.recently_lost()
            addrs = self.bootstrap_addrs()[:MAX_REDIAL]
            known = {a.rsplit("/p2p/", 1)[-1] for a in addrs}
            addrs += [a for p, lost in recent.items() if p not in known for a in lost][:MAX_REDIAL]
            for addr in addrs:
                peer = addr.rsplit("/p2p/", 1)[-1]
                if peer in connected or self.is_banned(peer):
                    delay.pop(addr, None)
                    continue
                if due.get(addr, 0.0) > now or addr in dialing:
                    continue
                delay[addr] = min(REDIAL_MAX, delay.get(addr, REDIAL_TICK / 2) * 2)
                wait = min(delay[addr], REDIAL_RECENT) if peer in recent else delay[addr]
                if peer in recent and peer < self.host.peer_id:
                    wait *= 2  # of two nodes redialling each other, one goes first
                due[addr] = now + wait * random.uniform(0.75, 1.25)
                dialing.add(addr)
                self._nursery.start_soon(self._redial, addr, dialing)

    async def _redial(self, addr: str, dialing: set[str]) -> None:
        try:
            peer = await self.host.connect(addr, redial=True)
        except (DialError, TrocError) as exc:
            logger.debug("redial %s: %s", addr, exc)
            return
        finally:
            dialing.discard(addr)
        logger.info("reconnected to %s", peer)
        self._sync_soon.send_nowait(peer)

    async def dht_loop(self, dht: DHT) -> None:
        """Server: announce each served community (the DHT re-announces).
        Client (and server): look up servers of each community now and then
        and connect to a few we are not connected to."""
        provided: set[CommunityId] = set()
        looked_up: dict[CommunityId, float] = {}
        while True:
            now = trio.current_time()
            for info in self.local.communities():
                if not self._serves(info.id):
                    continue
                if self.settings.dht == "server" and info.id not in provided:
                    provided.add(info.id)
                    self._nursery.start_soon(dht.provide, info.id)
                if looked_up.get(info.id, -1e9) + DHT_LOOKUP_INTERVAL <= now:
                    looked_up[info.id] = now
                    self._nursery.start_soon(self._connect_providers, dht, info.id)
            await trio.sleep(DHT_TICK)

    async def _connect_providers(self, dht: DHT, community: CommunityId) -> None:
        connected = set(self.host.connected_peers())
        addrs = await dht.find_providers(community, limit=8)
        fresh = [a for a in addrs if a.rsplit("/p2p/", 1)[-1] not in connected]
        for addr in fresh[:DHT_CONNECT]:
            await self._connect_quietly(addr)

    async def mdns_loop(self) -> None:
        """Every ``sync_interval`` (jittered), dial the peers mDNS found."""
        while True:
            self._dial_discovered(set(self.host.connected_peers()))
            await trio.sleep(self.settings.sync_interval * random.uniform(0.5, 1.5))

    def _dial_discovered(self, connected: set[str]) -> None:
        """Connect to peers mDNS put in the peer store (py-libp2p only records
        them). Each is tried at most once a minute, a few at a time."""
        now = trio.current_time()
        me = self.host.peer_id
        started = 0
        for pid in self.host.libp2p.get_peerstore().peers_with_addrs():
            peer = pid.to_base58()
            if peer == me or peer in connected or self.is_banned(peer):
                continue
            if self.table.dialed.get(peer, -1e9) > now - MDNS_REDIAL or started >= MDNS_DIALS:
                continue
            self.table.dialed[peer] = now
            started += 1
            self._nursery.start_soon(self._dial_peer, pid)

    async def _dial_peer(self, pid: ID) -> None:
        """Dial a discovered peer through each address mDNS gave, in turn,
        until one works. py-libp2p's own connect tries only the first (per
        transport), and a peer on two links (a LAN and a container bridge)
        may list first one this node has no route to: such a peer was then
        never reached, however often it was dialled."""
        peer = pid.to_base58()
        for addr in self.host.libp2p.get_peerstore().addrs(pid)[:MDNS_ADDRS]:
            try:
                await self.host.connect(f"{addr}/p2p/{peer}", redial=True)
            except (DialError, TrocError) as exc:  # the next address, if any
                logger.debug("cannot dial discovered peer %s at %s: %s", peer, addr, exc)
                continue
            self._sync_soon.send_nowait(peer)
            return
        # Unreachable or gone: mdns_loop tries again in a minute.
