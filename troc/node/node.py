"""The networked node: a :class:`LocalNode` joined to its peers.

Theory of operation
-------------------
One trio program owns, for the length of ``async with open_node(config)``:

* the store and the member's :class:`~troc.node.local.LocalNode`;
* a libp2p host (TCP, Noise only, Yamux; :mod:`troc.net.p2p`);
* per community, a gossipsub topic: every own entry is published there the
  moment it is durable; every node validates (decodes and checks the
  signature of) a message before forwarding it, so invalid data dies at the
  first hop. Gossip is lossy, so it only makes things fast;
* anti-entropy: on every new connection and every ``sync_interval`` seconds
  with a random peer, a sync session per community (``/troc/sync/3``, or
  ``/troc/sync/2`` with a peer that serves only that)
  (:mod:`troc.protocol.sync`) makes the two stores equal. That makes
  convergence certain;
* the control socket (``control.sock`` in the home, owner-only), through
  which the ``troc`` command talks to the running node;
* witnessed communities (:mod:`troc.node.witness`): every own entry is sent
  to the witnesses for a certificate, certificates travel on a second topic
  per community (``…/final``) and in sync, and with ``witness=True`` the
  node answers ``/troc/witness/1`` for the communities it witnesses.

Peers that send malformed frames or entries with bad signatures are cut off
and banned for a while. Every read has a deadline; every batch, frame and
per-peer stream count is bounded.

Restore guard: a node connected to any peer syncs with one before it signs
anything (bounded wait), so a node restored from an old backup first learns
its own newer entries instead of signing new ones at the same seq.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
import socket as _stdlib_socket
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from troc.crypto.ids import decode_id
from troc.crypto.sign import MemberId, SigningKey
from troc.errors import RemoteProtocolError, TrocError
from troc.net.liveness import Liveness
from troc.net.p2p import (
    DialError,
    FrameError,
    FrameReader,
    P2PHost,
    close_stream,
    open_host,
    write_frames,
)
from troc.net.quota import PeerQuota
from troc.node import homefiles, invites
from troc.node.config import NodeConfig
from troc.node.control import serve_control
from troc.node.local import LocalNode, now_ms, open_local_node
from troc.node.metrics import Counters
from troc.node.opdata import NotFoundError, cid, mid
from troc.node.operations import run_online
from troc.node.options import relay_limits
from troc.node.witness import PROTOCOL_ID as WITNESS_PROTOCOL
from troc.node.witness import Certifier, Progress, WitnessService, member_peer_id
from troc.protocol.entry import CommunityId, Entry, Join, Ref
from troc.protocol.ledger import CertificateOutcome, Outcome, Status
from troc.protocol.sync import (
    MAX_FRAME,
    Heads,
    SyncSession,
    SyncStats,
    certificate_for,
    decode_message,
    encode_message,
)
from troc.protocol.sync import (
    VERSIONS as SYNC_VERSIONS,
)
from troc.protocol.witness import Certificate

__all__ = ["Node", "NodeConfig", "open_node"]

logger = logging.getLogger("troc.node")

#: A whole sync session may not take longer (a 100k-entry catch-up takes ~20 s).
SESSION_TIMEOUT = 600.0
#: One frame must arrive within this.
FRAME_TIMEOUT = 30.0
#: Lost bootstrap peers are redialled: checked this often, backing off to REDIAL_MAX.
REDIAL_TICK = 5.0
#: A peer lost a short while ago (troc.net.liveness.RECENT), remembered or
#: not, is redialled this often instead, so that a healed link is used again
#: within seconds whatever the cut's length (each try costs one SYN).
REDIAL_RECENT = 2.0
#: How often the DHT loop looks for newly followed communities (or, as a
#: client with no peer, for servers).
DHT_TICK = 5.0
#: Each community's servers are looked up this often (and at start), and at
#: most this many new ones are connected to.
DHT_LOOKUP_INTERVAL = 600.0
DHT_CONNECT = 3
REDIAL_MAX = 300.0
MAX_REDIAL = 64
#: Inbound sync sessions one peer may have open at once.
MAX_INBOUND_PER_PEER = 2
#: Per-peer budgets when the configuration names none (generous: a member
#: catching up streams ~6,000 entries/s; quotas are for servers).
DEFAULT_BYTES_PER_S = 8_000_000
DEFAULT_ENTRIES_PER_S = 20_000
DEFAULT_STREAMS_PER_PEER = 16
#: Parked gossip entries whose dependencies are being fetched at once, at most.
MAX_FETCHES = 256
#: Gossiped entries stored in one transaction, at most (those already arrived).
GOSSIP_BATCH = 256
#: Entries decoded by the gossip validator kept for ingest, per community, at most.
GOSSIP_DECODED = 2048
#: Gossiped entries of unknown authors (not forwarded) queued for ingest, at most.
GOSSIP_IGNORED = 256
#: Addresses per witness that an invitation carries, at most.
WITNESS_ADDRS_EACH = 4
#: A payment to a member not seen joining: how long to sync with peers to learn of the join.
PAYEE_SYNC_WAIT = 5.0
PAYEE_SYNC_PAUSE = 0.5
#: ``wait`` on a signing operation: how long it waits for finality by default.
FINALITY_WAIT = 30.0
#: Frame errors only a broken or hostile peer causes (a timeout, a reset or
#: an EOF may be the network's doing).
MALFORMED_FRAME = frozenset({"too_large", "bad_varint"})


def final_topic_of(community: CommunityId) -> str:
    """The gossip topic of a witnessed community's certificates."""
    return topic_of(community) + "/final"


def topic_of(community: CommunityId) -> str:
    return f"/troc/community/{community.hex()}"


@dataclass(slots=True)
class SyncProgress:
    """The sync in flight and the totals so far (``troc status``)."""

    sessions: int = 0
    failed: int = 0
    fetched: int = 0
    current_peer: str | None = None
    current_expected: int = 0
    current_received: int = 0
    last_ms: int | None = None


class _StoreView:
    """:class:`~troc.protocol.sync.SyncView` over the node's store, for the
    sessions of one community (it takes no other community's entries)."""

    def __init__(
        self, local: LocalNode, community: CommunityId | None = None, peer: str | None = None
    ) -> None:
        self.local = local
        self.community = community
        self.peer = peer  # the session's peer: what it parks counts against it

    def heads(self, community: CommunityId) -> Heads:
        return {a: (h.seq, h.id) for a, h in self.local.store.heads(community)}

    def entries_after(
        self, community: CommunityId, author: Any, after_seq: int, limit: int
    ) -> list[tuple[int, bytes]]:
        return self.local.store.timed_entries_since(community, author, after_seq, limit)

    def wire_of(self, community: CommunityId, ref: Ref) -> bytes | None:
        stored = self.local.store.entry(community, ref.author, ref.seq, ref.id)
        return None if stored is None else stored.entry.wire

    def forks(self, community: CommunityId) -> list[tuple[MemberId, int, bytes, bytes]]:
        return self.local.store.forks(community)

    def ingest_batch(self, wires: list[bytes]) -> list[Outcome]:
        return self.local.ingest_many(
            wires, community=self.community, sources=[self.peer] * len(wires)
        )

    def finals(self, community: CommunityId) -> dict[MemberId, tuple[int, bytes]]:
        return {a: (seq, cert) for a, seq, cert in self.local.store.finals(community)}

    def certificate_of(self, community: CommunityId, ref: Ref) -> bytes | None:
        return certificate_for(self.local.ledger, community, ref)

    def ingest_certificates(self, datas: list[bytes]) -> list[CertificateOutcome]:
        return self.local.ingest_certificates(datas)


def _sync_version(stream: Any) -> int:
    """The sync version a stream negotiated (``/troc/sync/2`` if unsaid)."""
    protocol = stream.get_protocol()
    return next((v for v, p in SYNC_VERSIONS.items() if p == protocol), 2)


def _dialable(addrs: list[str]) -> list[str]:
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
class _Peers:
    banned: dict[str, float] = field(default_factory=dict)
    inbound: dict[str, int] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    syncing: set[str] = field(default_factory=set)  # outbound sessions in flight
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


class Node:
    """A running node. Get one from :func:`open_node`."""

    def __init__(
        self, local: LocalNode, host: P2PHost, config: NodeConfig, nursery: trio.Nursery
    ) -> None:
        self.local = local
        self.host = host
        self.config = config
        self.progress = SyncProgress()
        self._nursery = nursery
        self._view = _StoreView(local)
        self._peers = _Peers()
        for peer in config.banned:
            self._peers.banned[peer] = math.inf
        self._outbox_send, self._outbox = trio.open_memory_channel[Entry](10_000)
        self._sync_soon_send, self._sync_soon = trio.open_memory_channel[str | None](1000)
        self._subscribed: dict[CommunityId, trio.CancelScope] = {}
        self._fetching: set[tuple[CommunityId, bytes]] = set()
        # (peer, community) pairs a peer would not sync: said once, then at debug.
        self._not_following: set[tuple[str, CommunityId]] = set()
        self._listeners: list[trio.MemorySendChannel[Entry]] = []
        self._ready = trio.Event()
        #: Start-up is over: listening, and the first dials to known peers done.
        self.started = False
        self._first_sync = trio.Event()
        self.witness: WitnessService | None = None
        self._certs_send, self._certs_out = trio.open_memory_channel[tuple[CommunityId, bytes]](
            10_000
        )
        self.certifier = Certifier(local, host, self._publish_certificate)
        self.counters = Counters()
        quotas = config.quotas
        self.quota = PeerQuota(
            DEFAULT_BYTES_PER_S if quotas is None else quotas.bytes_per_s,
            DEFAULT_ENTRIES_PER_S if quotas is None else quotas.entries_per_s,
        )
        self.max_streams = DEFAULT_STREAMS_PER_PEER if quotas is None else quotas.streams
        self._streams: dict[str, int] = {}  # inbound witness/invite streams per peer
        self.relay_server: Any = None  # troc.net.relay.RelayServer when relaying
        self.relay_client: Any = None  # troc.net.relay.RelayClient with config.relays
        self.dht: Any = None  # troc.net.dht.DHT unless config.dht == "off"
        self.liveness = Liveness(host)  # pings peers, closes dead links (run by open_node)
        #: Operations of services running beside the node (the web app's ``web.login``).
        self.extra_ops: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        local.listeners.append(self._on_stored)

    def serves(self, community: CommunityId) -> bool:
        """Whether this node serves ``community`` (config.communities; all if empty)."""
        return not self.config.communities or community in self.config.communities

    def _over_quota(self, msg: Any) -> bool:
        """Charge a gossip message to the neighbour that sent it; True to drop it."""
        sender = msg.forwarder or msg.origin
        return sender is not None and self.quota.charge(sender, nbytes=len(msg.data), entries=1) > 0

    def limit_streams(self, handler: Any) -> Any:
        """Wrap a stream handler: at most ``max_streams`` at once per peer, none for banned ones."""

        async def limited(stream: Any, peer: str) -> None:
            if self._peers.is_banned(peer) or self._streams.get(peer, 0) >= self.max_streams:
                return  # closed at once by the caller (p2p.set_stream_handler)
            self._streams[peer] = self._streams.get(peer, 0) + 1
            try:
                await handler(stream, peer)
            finally:
                self._streams[peer] -= 1
                if not self._streams[peer]:
                    del self._streams[peer]

        return limited

    # -- identity -----------------------------------------------------------

    @property
    def member(self) -> bytes:
        return self.local.member

    @property
    def peer_id(self) -> str:
        return self.host.peer_id

    def addrs(self) -> list[str]:
        """Addresses peers can dial (a wildcard listen address is expanded),
        then those through the relays holding a reservation for us."""
        relayed = [] if self.relay_client is None else self.relay_client.circuit_addrs()
        return _dialable(self.host.listen_addrs()) + relayed

    # -- acting ---------------------------------------------------------------

    async def run_op(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run operation ``name`` (:data:`troc.node.operations.OPERATIONS`) on
        this node: the control socket's requests, the web app's. Raises
        TrocError subclasses for the caller's mistakes."""
        if name in self.extra_ops:  # services beside the node (the web app's web.login)
            return self.extra_ops[name](params)
        return await run_online(self, name, params)

    def finality(self, entry: str) -> dict[str, Any]:
        """Where the certification of own entry ``entry`` (its text id) stands,
        as ``finality`` in a signing operation's result (the CLI polls it to
        show progress while it waits)."""
        wanted = decode_id("e", entry)
        for (_community, ref), progress in self.certifier.progress.items():
            if ref.id == wanted:
                return self.certifier.describe(progress)
        raise NotFoundError(f"no own entry {entry[:12]} awaiting witnesses here")

    def witness_addrs(self, community: CommunityId) -> list[str]:
        """Addresses this node knows for the witnesses of a witnessed community
        (its peer store: witnesses it is or was connected to)."""
        rules = self.local.ledger.witness_rules(community)
        if rules is None:
            return []
        out: list[str] = []
        for w in sorted(rules.witnesses):
            if w == self.member:
                continue  # this node's own addresses are in the invitation already
            # Never met: the peer store knows nothing of it, and this is empty.
            out += self.host.peer_addrs(member_peer_id(w))[:WITNESS_ADDRS_EACH]
        return out

    def reach_warnings(self) -> list[str]:
        """What keeps this node from reaching the others, in words (``troc
        status``, and the log at start): no peer and no address to dial, in a
        community it did not found; witnesses its entries cannot reach."""
        out: list[str] = []
        if not self.host.connected_peers() and not self._bootstrap_addrs() and not self.config.mdns:
            joined = [i.name for i in self.local.communities() if i.founder != self.member]
            if joined:
                out.append(
                    f"no way to reach anyone: no peer connected and no address known for"
                    f" {', '.join(repr(n) for n in joined)} (the invitation held none?)."
                    " Ask a member for a new invitation (made while their node runs) and"
                    " join again, or `troc connect ADDR`"
                )
        for witness, why in sorted(self.certifier.unreachable().items()):
            out.append(
                f"cannot reach witness {mid(witness)[:14]}… ({why}): own entries wait"
                " for its vote; `troc connect` an address of it"
            )
        return out

    async def learn_member(self, community: CommunityId, payee: MemberId) -> None:
        """Sync with the connected peers (bounded in time and rounds) until
        this node holds ``payee``'s join in ``community``: a member not seen
        joining may have joined where its peers heard of it first."""

        def known() -> bool:
            return self.local.store.head(community, payee) is not None

        # Rounds, since the join may be on its way to our peers (a member
        # whose node has just started): bounded in time and in count.
        with trio.move_on_after(PAYEE_SYNC_WAIT):
            for _round in range(int(PAYEE_SYNC_WAIT / PAYEE_SYNC_PAUSE) + 1):
                peers = [p for p in self.host.connected_peers() if not self._peers.is_banned(p)]
                if known() or not peers:
                    return
                for peer in peers:
                    await self._sync_one(peer, community)
                    if known():
                        return
                await trio.sleep(PAYEE_SYNC_PAUSE)

    async def wait_final(self, progress: Progress, seconds: Any = None) -> dict[str, Any]:
        """Wait (bounded: ``seconds``, or FINALITY_WAIT for None/True) until
        the certification of an own entry is over."""
        limit = FINALITY_WAIT if seconds in (None, True) else float(seconds)
        with trio.move_on_after(max(0.0, limit)):
            await progress.done.wait()
        return self.certifier.describe(progress)

    async def reach_inviters(self, genesis: bytes, addrs: list[str]) -> None:
        """Follow the community of ``genesis`` and sync with the nodes at
        ``addrs`` (bounded), so a join can name a vouch in the inviter's log."""
        self.local.ingest(genesis)

        async def reach(addr: str) -> None:
            try:
                with trio.fail_after(self.config.restore_guard_seconds):
                    peer = await self.connect(addr)
                    await self.sync_with(peer)
            except (DialError, TrocError, trio.TooSlowError) as exc:
                logger.info("cannot sync with %s before joining: %s", addr, exc)

        # All at once: an invitation names the inviter and the witnesses,
        # and one that is down must not hold up the others.
        async with trio.open_nursery() as nursery:
            for addr in addrs:
                nursery.start_soon(reach, addr)

    async def wait_restore_guard(self) -> None:
        """Before signing: while connected to a peer and not yet synced with
        one since start, wait (bounded by ``restore_guard_seconds``) for that
        first sync, so a home restored from an old backup learns its own newer
        entries before it signs new ones at the same seq.

        Whoever the peer is counts: a bootstrap peer, a remembered one
        (peers.json), an inviter, one found by mDNS or the DHT, one that
        dialed us. With no peer connected there is nobody to learn from and
        nothing is held back (offline use goes on).
        """
        if self._first_sync.is_set():
            return
        if not any(not self._peers.is_banned(p) for p in self.host.connected_peers()):
            return
        with trio.move_on_after(self.config.restore_guard_seconds):
            await self._first_sync.wait()

    def _on_stored(self, entry: Entry, own: bool) -> None:
        """Called by LocalNode after each commit (own entries and others')."""
        if not own:
            self.counters.entries_received += 1
        if own:
            try:
                self._outbox_send.send_nowait(entry)
            except trio.WouldBlock:
                logger.warning("gossip outbox full; sync will carry %s", entry.id.hex()[:8])
            if entry.community is not None and self.local.ledger.witness_rules(entry.community):
                self.certifier.submit(entry, self._nursery.start_soon)
        for listener in list(self._listeners):
            try:
                listener.send_nowait(entry)
            except trio.WouldBlock:
                pass  # a slow subscriber misses events, never blocks the node
            except trio.ClosedResourceError:
                self._listeners.remove(listener)

    @asynccontextmanager
    async def subscribe(self, size: int = 1000) -> AsyncIterator[trio.MemoryReceiveChannel[Entry]]:
        """Entries as they are stored (own and others'), for the ``async with`` block."""
        send, receive = trio.open_memory_channel[Entry](size)
        self._listeners.append(send)
        try:
            yield receive
        finally:
            if send in self._listeners:
                self._listeners.remove(send)
            await send.aclose()

    # -- peers ------------------------------------------------------------------

    async def connect(self, addr: str, *, redial: bool = False) -> str:
        """Connect to ``addr``, remember it, sync with the peer soon.

        ``redial`` forgets a recent failed dial to that peer first (py-libp2p
        refuses for 60 s to dial a peer whose addresses all failed once).
        """
        peer = await self.host.connect(addr, redial=redial)
        self._remember(addr)
        self._sync_soon_send.send_nowait(peer)
        return peer

    async def _connect_quietly(self, addr: str) -> None:
        try:
            await self.connect(addr)
        except (DialError, TrocError) as exc:
            logger.info("cannot reach %s: %s", addr, exc)

    def _remember(self, addr: str) -> None:
        if not self.config.remember_peers or addr in self.config.bootstrap:
            return
        try:
            homefiles.remember_bootstrap(self.config.home, [addr])
        except (OSError, TrocError) as exc:  # a damaged file must not stop the node
            logger.warning("cannot remember %s: %s", addr, exc)

    def _ban(self, peer: str, why: str) -> None:
        logger.warning("banning peer %s for %.0f s: %s", peer, self.config.ban_seconds, why)
        self._peers.banned[peer] = time.monotonic() + self.config.ban_seconds
        self._nursery.start_soon(self._disconnect, peer)

    async def _disconnect(self, peer: str) -> None:
        try:
            await self.host.disconnect(peer)
        except Exception:  # the peer may be gone already
            logger.debug("disconnect %s failed", peer, exc_info=True)

    def status(self) -> dict[str, Any]:
        communities = []
        for info in self.local.communities():
            heads = self._view.heads(info.id)
            communities.append(
                {
                    "community": cid(info.id),
                    "name": info.name,
                    "members": len(heads),
                    "entries": self.local.store.entry_count(info.id),
                    "heads": {mid(a): seq for a, (seq, _i) in sorted(heads.items())},
                }
            )
        p = self.progress
        return {
            "member": mid(self.member),
            "peer_id": self.peer_id,
            "started": self.started,
            "addrs": self.addrs(),
            "peers": sorted(self.host.connected_peers()),
            "communities": communities,
            "sync": {
                "sessions": p.sessions,
                "failed": p.failed,
                "fetched": p.fetched,
                "peer": p.current_peer,
                "expected": p.current_expected,
                "received": p.current_received,
                "last_ms": p.last_ms,
            },
            # is_banned forgets expired bans (they would be listed forever).
            "banned": sorted(p for p in list(self._peers.banned) if self._peers.is_banned(p)),
            "relay": None
            if self.relay_server is None
            else {
                "reservations": len(self.relay_server.reservations()),
                "circuits": self.relay_server.circuit_count(),
            },
            "relayed_addrs": [] if self.relay_client is None else self.relay_client.circuit_addrs(),
            "dht": None if self.dht is None else {"mode": self.config.dht, **self.dht.info()},
            "counters": {
                "entries_served": self.counters.entries_served,
                "entries_received": self.counters.entries_received,
                "bytes_in": self.counters.bytes_in,
                "bytes_out": self.counters.bytes_out,
                "throttled": self.quota.throttled,
            },
            "warnings": self.reach_warnings(),
            "witness": {
                "serving": self.witness is not None,
                "answered": 0 if self.witness is None else self.witness.answered,
                "throttled": 0 if self.witness is None else self.witness.throttled,
                "certifying": sum(
                    1 for p in self.certifier.progress.values() if not p.done.is_set()
                ),
                # Witnesses caught lying to this node's certifier (entries, per witness).
                "lies": {w.hex(): n for w, n in sorted(self.certifier.lies.items())},
            },
        }

    def peers(self) -> dict[str, Any]:
        """Connected peers (``state`` alive, or unresponsive once a ping went
        unanswered) and lost ones (``dead``: closed after unanswered pings,
        or gone), which the node redials."""
        return {"peers": self.liveness.describe()}

    # -- gossip -----------------------------------------------------------------

    def refresh_subscriptions(self) -> None:
        """Subscribe to the topics of communities followed since the last call."""
        for info in self.local.communities():
            if info.id not in self._subscribed and self.serves(info.id):
                scope = trio.CancelScope()
                self._subscribed[info.id] = scope
                self._nursery.start_soon(self._gossip_community, info.id, scope)
                if info.finality == "witnessed":
                    self._nursery.start_soon(self._gossip_certificates, info.id)

    async def _gossip_certificates(self, community: CommunityId) -> None:
        """Certificates on their own topic: the entry topic's validator stays as it is."""
        topic = final_topic_of(community)
        gossip = self.host.gossip
        rules = self.local.ledger.witness_rules(community)
        assert rules is not None

        def validate(msg: Any) -> bool:
            if self._peers.is_banned(msg.origin) or (
                msg.forwarder is not None and self._peers.is_banned(msg.forwarder)
            ):
                return False
            if self._over_quota(msg):
                return False
            try:
                cert = Certificate.decode(msg.data)  # the shape only: no signature checked
            except TrocError:
                return False
            if msg.origin != self.peer_id and self.local.holds_certificate(cert):
                # Held already: dropped before its q signatures are checked,
                # and not forwarded. A peer replaying a public certificate
                # under fresh message ids is not amplified (as for entries).
                return False
            return cert.verify(rules)

        gossip.set_validator(topic, validate)
        async with gossip.subscribe(topic) as sub:
            async for msg in sub:
                try:
                    self.local.ingest_certificate(msg.data)
                except Exception:  # as for entries: drop it, go on
                    logger.exception("could not store a gossiped certificate")

    def _publish_certificate(self, community: CommunityId, data: bytes) -> None:
        try:
            self._certs_send.send_nowait((community, data))
        except trio.WouldBlock:
            logger.warning("certificate outbox full; sync will carry it")

    async def _gossip_community(self, community: CommunityId, scope: trio.CancelScope) -> None:
        topic = topic_of(community)
        gossip = self.host.gossip
        # Entries the validator decoded (signature checked), by wire bytes:
        # ingesting them does not decode and check them again. Bounded; a
        # message not found here (our own publishes are never delivered back
        # and age out) is ingested from its bytes.
        decoded: OrderedDict[bytes, Entry] = OrderedDict()
        # Authors whose join passed the validator lately: their next entries
        # are forwarded though the join may not be stored yet (it waits in a
        # batch): a new member's first payment follows its join closely.
        joining: OrderedDict[MemberId, None] = OrderedDict()
        # Entries of authors not known here, taken but not forwarded.
        ignored_send, ignored = trio.open_memory_channel[tuple[Entry, Any]](GOSSIP_IGNORED)

        def validate(msg: Any) -> bool:
            if self._peers.is_banned(msg.origin) or (
                msg.forwarder is not None and self._peers.is_banned(msg.forwarder)
            ):
                return False  # the ban holds on gossip too
            if self._over_quota(msg):
                return False  # over its budget: dropped (sync carries what is honest)
            try:
                entry = Entry.decode(msg.data)
            except TrocError:
                return False
            if entry.community != community:
                return False
            store = self.local.store
            if msg.origin != self.peer_id and store.entry(
                community, entry.author, entry.seq, entry.id
            ):
                # Held already: not forwarded again. A peer re-sending old
                # entries under fresh message ids is not amplified to every
                # member (they already have it, or sync brings it).
                return False
            if entry.seq == 1 and isinstance(entry.body, Join):
                joining[entry.author] = None
                if len(joining) > GOSSIP_DECODED:
                    joining.popitem(last=False)
            elif entry.author not in joining and store.head(community, entry.author) is None:
                # No join of its author is held: a stranger's entry, which
                # costs nothing to make and may dangle forever. It is not
                # forwarded (IGNORE in gossipsub terms), so it reaches no one
                # through us; it is still taken here, in the strangers' own
                # bounded pool, and what it waits for is fetched from the
                # forwarder: a member whose join we lack still converges.
                with contextlib.suppress(trio.WouldBlock):
                    ignored_send.send_nowait((entry, msg))
                return False
            decoded[msg.data] = entry
            if len(decoded) > GOSSIP_DECODED:
                decoded.popitem(last=False)
            return True

        gossip.set_validator(topic, validate)
        with scope:
            async with gossip.subscribe(topic) as sub, trio.open_nursery() as nursery:
                nursery.start_soon(self._take_ignored, community, ignored)
                while True:
                    # What has arrived since the last batch goes in one
                    # transaction: per message, the commit and its trio
                    # round trips cost more than the entry's own checks.
                    batch = await sub.receive_batch(GOSSIP_BATCH)
                    items: list[bytes | Entry] = []
                    for msg in batch:
                        entry = decoded.pop(msg.data, None)
                        items.append(msg.data if entry is None else entry)
                    self._ingest_gossip(community, batch, items)

    async def _take_ignored(
        self, community: CommunityId, ignored: trio.MemoryReceiveChannel[tuple[Entry, Any]]
    ) -> None:
        """Ingest what the validator took but did not forward, in batches."""
        async for first in ignored:
            pairs = [first]
            while len(pairs) < GOSSIP_BATCH:
                try:
                    pairs.append(ignored.receive_nowait())
                except trio.WouldBlock:
                    break
            self._ingest_gossip(community, [m for _e, m in pairs], [e for e, _m in pairs])

    def _ingest_gossip(
        self, community: CommunityId, batch: list[Any], items: list[bytes | Entry]
    ) -> None:
        """Store gossiped entries in one transaction, each charged to the
        neighbour that relayed it; fetch what the parked ones wait for."""
        sources = [msg.forwarder or msg.origin for msg in batch]
        # Any exception, not only a TrocError: one entry that trips a bug
        # (ours or a library's) is dropped, not the node.
        try:
            outcomes = self.local.ingest_many(items, community=community, sources=sources)
        except Exception:  # one at a time, then: the others still count
            outcomes = []
            for msg, source in zip(batch, sources, strict=True):
                try:
                    outcomes.append(self.local.ingest(msg.data, community=community, source=source))
                except Exception:
                    logger.exception("could not store a gossiped entry")
                    outcomes.append(Outcome(Status.REJECTED))
        for msg, outcome in zip(batch, outcomes, strict=True):
            if outcome.status is Status.WAITING and outcome.entry is not None:
                self._fetch_for(community, outcome.entry, msg)

    def _fetch_for(self, community: CommunityId, entry: Entry, msg: Any) -> None:
        """Fetch what a parked gossiped entry waits for."""
        key = (community, entry.author)
        # One fetch per author at a time, and a bounded number in all: a
        # flood of dangling entries cannot pile up tasks.
        if key not in self._fetching and len(self._fetching) < MAX_FETCHES:
            self._fetching.add(key)
            peers = (msg.forwarder, msg.origin)
            self._nursery.start_soon(self._fetch_missing, community, entry, peers, key)

    async def _fetch_missing(
        self,
        community: CommunityId,
        entry: Entry,
        peers: tuple[str | None, ...],
        key: tuple[CommunityId, bytes],
    ) -> None:
        """Sync with the neighbour that relayed a parked entry (it held it; the
        origin is rarely a neighbour in a sparse graph), and again while it
        stays parked: that neighbour may be fetching the same dependency from
        its own neighbours, hop by hop back to the origin."""
        try:
            for delay in (0.0, 0.25, 0.5, 1.0, 2.0):
                await trio.sleep(delay)
                if self.local.store.entry(community, entry.author, entry.seq, entry.id):
                    return
                for peer in peers:
                    if peer is not None and not self._peers.is_banned(peer):
                        try:
                            self._sync_soon_send.send_nowait(peer)
                        except trio.WouldBlock:
                            pass
        finally:
            self._fetching.discard(key)

    async def _publisher(self) -> None:
        async for entry in self._outbox:
            if entry.community is None:
                continue
            try:
                await self.host.gossip.publish(topic_of(entry.community), entry.wire)
            except Exception:  # gossip is best effort; sync carries what it drops
                logger.debug("publish failed", exc_info=True)

    async def _certificate_publisher(self) -> None:
        async for community, data in self._certs_out:
            try:
                await self.host.gossip.publish(final_topic_of(community), data)
            except Exception:  # best effort, as for entries
                logger.debug("publish failed", exc_info=True)

    # -- sync -------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        """On new peers, on request, and every sync_interval with a random peer.

        Each peer's sessions run in a task of their own, one at a time per
        peer: a peer that answers slowly (a session may last SESSION_TIMEOUT)
        holds up only itself, and requests (a gossip flood can make many)
        do not crowd out the periodic sync with a random peer.
        """
        next_random = trio.current_time()
        while True:
            peer: str | None = None
            with trio.move_on_at(next_random):
                peer = await self._sync_soon.receive()
            connected = []
            for p in self.host.connected_peers():
                if p in self.config.banned:  # the operator's list: cut off at once
                    self._nursery.start_soon(self._disconnect, p)
                elif not self._peers.is_banned(p):
                    connected.append(p)
                # A peer banned for misbehaviour was cut off when banned; if it
                # comes back its streams and gossip are refused until it expires.
            # A peer that went away and came back is new again: sync with it.
            self._peers.seen.intersection_update(connected)
            new = [p for p in connected if p not in self._peers.seen]
            self._peers.seen.update(new)
            targets = set(new)
            if peer is not None and peer in connected:
                targets.add(peer)
            if trio.current_time() >= next_random:
                interval = self.config.sync_interval * random.uniform(0.5, 1.5)
                next_random = trio.current_time() + interval
                if self.config.mdns:
                    self._dial_discovered(set(connected))
                idle = [p for p in connected if p not in self._peers.syncing]
                if idle:
                    targets.add(random.choice(idle))
            for target in targets - self._peers.syncing:
                self._peers.syncing.add(target)
                self._nursery.start_soon(self._sync_task, target)

    def _dial_discovered(self, connected: set[str]) -> None:
        """Connect to peers mDNS put in the peer store (py-libp2p only records
        them). Each is tried at most once a minute, a few at a time."""
        now = trio.current_time()
        me = self.peer_id
        started = 0
        for pid in self.host.libp2p.get_peerstore().peers_with_addrs():
            peer = pid.to_base58()
            if peer == me or peer in connected or self._peers.is_banned(peer):
                continue
            if self._peers.dialed.get(peer, -1e9) > now - 60 or started >= 4:
                continue
            self._peers.dialed[peer] = now
            started += 1
            self._nursery.start_soon(self._dial_peer, pid)

    async def _dial_peer(self, pid: Any) -> None:
        from libp2p.peer.peerinfo import PeerInfo

        addrs = self.host.libp2p.get_peerstore().addrs(pid)
        try:
            with trio.fail_after(10):
                await self.host.libp2p.connect(PeerInfo(pid, addrs))
            self._sync_soon_send.send_nowait(pid.to_base58())
        except Exception as exc:  # unreachable or gone: try again in a minute
            logger.debug("cannot dial discovered peer %s: %s", pid, exc)

    async def _sync_task(self, peer: str) -> None:
        try:
            await self.sync_with(peer)
        finally:
            self._peers.syncing.discard(peer)
        # Asked once (even a peer that shares no community with us, or
        # whose sessions failed): the restore guard holds signing no longer.
        self._first_sync.set()

    async def sync_with(self, peer: str) -> list[SyncStats]:
        """Run one sync session per community with ``peer``; returns their stats."""
        results = []
        for info in self.local.communities():
            if not self.serves(info.id):
                continue
            stats = await self._sync_one(peer, info.id)
            if stats is not None:
                results.append(stats)
        return results

    async def _sync_one(self, peer: str, community: CommunityId) -> SyncStats | None:
        try:
            # The newest version the peer serves (docs/sync.md, "Negotiation").
            stream = await self.host.open_stream(peer, list(SYNC_VERSIONS.values()))
        except DialError as exc:
            logger.debug("sync with %s: %s", peer, exc)
            self.progress.failed += 1
            return None
        version = _sync_version(stream)
        view = _StoreView(self.local, community, peer)
        session = SyncSession(view, community, initiator=True, version=version)
        self.progress.current_peer = peer
        try:
            with trio.fail_after(SESSION_TIMEOUT):
                await self._run_session(stream, peer, session, session.start())
        except (FrameError, RemoteProtocolError, trio.TooSlowError) as exc:
            if isinstance(exc, FrameError) and exc.reason == "eof" and not session.answered:
                # The peer follows other communities, not this one: not a failure,
                # and said once (at info) rather than every sync interval.
                key = (peer, community)
                level = logging.DEBUG if key in self._not_following else logging.INFO
                self._not_following.add(key)
                logger.log(level, "%s does not sync %s with us", peer, cid(community))
                await close_stream(stream, reset=True)
                return None
            self.progress.failed += 1
            logger.info("sync with %s failed: %s", peer, exc)
            if _misbehaved(exc):
                self._ban(peer, str(exc))
            await close_stream(stream, reset=True)
            return None
        except Exception:  # a bug, not proof against the peer: end the session, no ban
            self.progress.failed += 1
            logger.warning("sync with %s stopped by an unexpected error", peer, exc_info=True)
            await close_stream(stream, reset=True)
            return None
        finally:
            self.progress.current_peer = None
        await close_stream(stream, reset=False)
        return session.stats

    async def _handle_sync(self, stream: Any, peer: str, version: int = 2) -> None:
        if self._peers.is_banned(peer):
            return
        if not self._peers.enter_inbound(peer, MAX_INBOUND_PER_PEER):
            return
        try:
            reader = FrameReader(stream, max_size=MAX_FRAME, frame_timeout=FRAME_TIMEOUT)
            with trio.fail_after(SESSION_TIMEOUT):
                hello = decode_message(await reader.read_frame())
                community = hello.get("c")
                if hello.get("t") != "hello" or not isinstance(community, bytes):
                    raise RemoteProtocolError("a sync session starts with hello")
                if self.local.store.genesis(CommunityId(community)) is None or not self.serves(
                    CommunityId(community)
                ):
                    return  # not a community we follow (or serve): close
                view = _StoreView(self.local, CommunityId(community), peer)
                session = SyncSession(
                    view, CommunityId(community), initiator=False, version=version
                )
                await self._run_session(stream, peer, session, list(session.receive(hello)), reader)
        except (RemoteProtocolError, trio.TooSlowError) as exc:
            if _misbehaved(exc):
                self._ban(peer, str(exc))
            else:
                logger.info("inbound sync from %s ended: %s", peer, exc)
        finally:
            self._peers.leave_inbound(peer)

    async def _run_session(
        self,
        stream: Any,
        peer: str,
        session: SyncSession,
        first: list[dict[str, Any]],
        reader: FrameReader | None = None,
    ) -> None:
        reader = reader or FrameReader(stream, max_size=MAX_FRAME, frame_timeout=FRAME_TIMEOUT)
        self.progress.sessions += 1
        # Every write goes through write_frames: it has a deadline (a peer that
        # stops reading fills the flow-control window), and a peer resetting
        # the stream surfaces as a FrameError, not as libp2p's StreamReset
        # (which escaped _sync_one and stopped the node).
        await write_frames(stream, [encode_message(m) for m in first], frame_timeout=FRAME_TIMEOUT)
        while not session.done:
            frame = await reader.read_frame()
            msg = decode_message(frame)
            entries = msg.get("e")
            over = self.quota.charge(
                peer, nbytes=len(frame), entries=len(entries) if isinstance(entries, list) else 0
            )
            if over > 0:  # slow this peer down to its budget; others' sessions go on
                await trio.sleep(min(over, FRAME_TIMEOUT / 2))
            self.counters.bytes_in += len(frame)
            sent_before = session.stats.sent
            before = session.stats.accepted
            out: list[bytes] = []
            size = 0
            for reply in session.receive(msg):
                data = encode_message(reply)
                out.append(data)
                size += len(data)
                if size >= MAX_FRAME // 2:
                    await write_frames(stream, out, frame_timeout=FRAME_TIMEOUT)
                    out, size = [], 0
            if out:
                await write_frames(stream, out, frame_timeout=FRAME_TIMEOUT)
            self.counters.entries_served += session.stats.sent - sent_before
            self.counters.bytes_out += size
            self.progress.fetched += session.stats.accepted - before
            self.progress.current_expected = session.stats.expected
            self.progress.current_received = session.stats.received
            if session.misbehaviour:
                raise RemoteProtocolError(session.misbehaviour)
        self.progress.last_ms = int(time.time() * 1000)
        if session.stats.accepted:
            logger.info(
                "synced with %s: %d entries in, %d out",
                peer,
                session.stats.accepted,
                session.stats.sent,
            )

    # -- start-up ---------------------------------------------------------------

    def _bootstrap_addrs(self) -> list[str]:
        addrs = list(self.config.bootstrap)
        if self.config.remember_peers:
            try:
                addrs += [a for a in homefiles.bootstrap_addrs(self.config.home) if a not in addrs]
            except TrocError as exc:  # a damaged file must not stop the node
                logger.warning("ignoring remembered peers: %s", exc)
        return addrs

    async def _bootstrap(self) -> None:
        async with trio.open_nursery() as nursery:
            for addr in self._bootstrap_addrs():
                nursery.start_soon(self._connect_quietly, addr)
        for warning in self.reach_warnings():
            logger.warning("%s", warning)

    async def _redial_loop(self) -> None:
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
            # that repeated for minutes (tests/e2e/test_partition.py).
            await trio.sleep(min(REDIAL_TICK, REDIAL_RECENT) * random.uniform(0.5, 1.0))
            now = trio.current_time()
            connected = set(self.host.connected_peers())
            recent = self.liveness.recently_lost()
            addrs = self._bootstrap_addrs()[:MAX_REDIAL]
            known = {a.rsplit("/p2p/", 1)[-1] for a in addrs}
            addrs += [a for p, lost in recent.items() if p not in known for a in lost][:MAX_REDIAL]
            for addr in addrs:
                peer = addr.rsplit("/p2p/", 1)[-1]
                if peer in connected or self._peers.is_banned(peer):
                    delay.pop(addr, None)
                    continue
                if due.get(addr, 0.0) > now or addr in dialing:
                    continue
                delay[addr] = min(REDIAL_MAX, delay.get(addr, REDIAL_TICK / 2) * 2)
                wait = min(delay[addr], REDIAL_RECENT) if peer in recent else delay[addr]
                if peer in recent and peer < self.peer_id:
                    wait *= 2  # of two nodes redialling each other, one goes first
                due[addr] = now + wait * random.uniform(0.75, 1.25)
                dialing.add(addr)
                self._nursery.start_soon(self._redial, addr, dialing)

    async def _dht_loop(self) -> None:
        """Server: announce each served community (the DHT re-announces).
        Client (and server): look up servers of each community now and then
        and connect to a few we are not connected to."""
        provided: set[CommunityId] = set()
        looked_up: dict[CommunityId, float] = {}
        while True:
            now = trio.current_time()
            for info in self.local.communities():
                if not self.serves(info.id):
                    continue
                if self.config.dht == "server" and info.id not in provided:
                    provided.add(info.id)
                    self._nursery.start_soon(self.dht.provide, info.id)
                if looked_up.get(info.id, -1e9) + DHT_LOOKUP_INTERVAL <= now:
                    looked_up[info.id] = now
                    self._nursery.start_soon(self._connect_providers, info.id)
            await trio.sleep(DHT_TICK)

    async def _connect_providers(self, community: CommunityId) -> None:
        connected = set(self.host.connected_peers())
        addrs = await self.dht.find_providers(community, limit=8)
        fresh = [a for a in addrs if a.rsplit("/p2p/", 1)[-1] not in connected]
        for addr in fresh[:DHT_CONNECT]:
            await self._connect_quietly(addr)

    async def _redial(self, addr: str, dialing: set[str]) -> None:
        try:
            peer = await self.host.connect(addr, redial=True)
        except (DialError, TrocError) as exc:
            logger.debug("redial %s: %s", addr, exc)
            return
        finally:
            dialing.discard(addr)
        logger.info("reconnected to %s", peer)
        self._sync_soon_send.send_nowait(peer)


def _misbehaved(exc: Exception) -> bool:
    """Whether a session's error proves the peer broken or hostile."""
    if isinstance(exc, FrameError):
        return exc.reason in MALFORMED_FRAME
    return isinstance(exc, RemoteProtocolError)


@asynccontextmanager
async def open_node(
    config: NodeConfig, key: SigningKey, clock: Callable[[], int] | None = None
) -> AsyncIterator[Node]:
    """Run a node for the length of the ``async with`` block.

    Raises:
        StoreError: the store is in use by another process or unusable.
        LocalProtocolError: a bad listen address.
        OSError: the listen address is in use.
    """
    with open_local_node(config.home, key, clock or now_ms) as local:
        async with (
            open_host(key_seed=key.seed, listen=config.listen, enable_mdns=config.mdns) as host,
            trio.open_nursery() as nursery,
            AsyncExitStack() as stack,  # services with nurseries of their own: inside ours
        ):
            node = Node(local, host, config, nursery)
            for version, protocol in SYNC_VERSIONS.items():
                host.set_stream_handler(
                    protocol, functools.partial(node._handle_sync, version=version)
                )
            if invites.serves(config.home):
                invites.attach(node)
            if config.witness:
                node.witness = WitnessService(local, key, clock or now_ms, node.quota)
                node.certifier.service = node.witness
                host.set_stream_handler(
                    WITNESS_PROTOCOL, node.limit_streams(node.witness.handle_stream)
                )
                nursery.start_soon(node.witness.run)
            if config.relay is not None and config.relay.enabled:
                from troc.net.relay import open_relay_server

                limits = relay_limits(config.relay, config.quotas)
                node.relay_server = await stack.enter_async_context(open_relay_server(host, limits))
            if config.dht != "off":
                from troc.net.dht import open_dht

                node.dht = await stack.enter_async_context(
                    open_dht(
                        host,
                        server=config.dht == "server",
                        bootstrap=config.bootstrap,
                        announce=node.addrs() or None,
                    )
                )
                nursery.start_soon(node._dht_loop)
            if config.relays:
                from troc.net.relay import open_relay_client

                node.relay_client = await stack.enter_async_context(
                    open_relay_client(host, config.relays)
                )
            node.refresh_subscriptions()
            nursery.start_soon(node._publisher)
            nursery.start_soon(node._certificate_publisher)
            # Own entries a previous run left uncertified: one driver per log.
            for entry in node.certifier.uncertified():
                node.certifier.submit(entry, nursery.start_soon)
            if config.control_socket:
                await nursery.start(serve_control, config.home, node.run_op)
            await node._bootstrap()
            node.started = True
            nursery.start_soon(node._sync_loop)
            nursery.start_soon(node._redial_loop)
            nursery.start_soon(node.liveness.run)
            try:
                yield node
            finally:
                nursery.cancel_scope.cancel()
