"""The networked node: a :class:`LocalNode` joined to its peers.

Theory of operation
-------------------
One trio program owns, for the length of ``async with open_node(config)``:

* the store and the member's :class:`~troc.node.local.LocalNode`;
* a libp2p host (TCP, Noise only, Yamux; :mod:`troc.net.p2p`);
* per community, a gossipsub topic (:mod:`troc.node.topics`): every own
  entry is published there the moment it is durable; every node validates
  (decodes and checks the signature of) a message before forwarding it, so
  invalid data dies at the first hop. Gossip is lossy, so it only makes
  things fast;
* anti-entropy (:mod:`troc.node.sync`): on every new connection and every
  ``sync_interval`` seconds with a random peer, a sync session per community
  (``/troc/sync/3``, or ``/troc/sync/2`` with a peer that serves only that;
  :mod:`troc.protocol.sync`) makes the two stores equal. That makes
  convergence certain;
* its peers (:mod:`troc.node.peers`): bootstrap and remembered addresses,
  redials, mDNS and the DHT; bans, quotas and stream limits;
* the control socket (``control.sock`` in the home, owner-only), through
  which the ``troc`` command talks to the running node;
* witnessed communities (:mod:`troc.node.witness`): every own entry is sent
  to the witnesses for a certificate, certificates travel on a second topic
  per community (``…/final``) and in sync, and with ``witness=True`` the
  node answers ``/troc/witness/1`` for the communities it witnesses.

:func:`open_node` builds these services in one block, handing each its
collaborators (none of them imports this module); :class:`Node` holds them,
runs the member's operations on them, and fans out each stored entry
(:meth:`Node._on_stored`): to gossip, to the certifier, to subscribers.

Peers that send malformed frames or entries with bad signatures are cut off
and banned for a while. Every read has a deadline; every batch, frame and
per-peer stream count is bounded.

Restore guard: a node connected to any peer syncs with one before it signs
anything (bounded wait), so a node restored from an old backup first learns
its own newer entries instead of signing new ones at the same seq.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio

from troc.crypto.ids import decode_id
from troc.crypto.sign import MemberId, SigningKey
from troc.errors import TrocError
from troc.net.dht import DHT, open_dht
from troc.net.liveness import Liveness
from troc.net.p2p import DialError, P2PHost, open_host
from troc.net.relay import RelayClient, RelayServer, open_relay_client, open_relay_server
from troc.node import invites
from troc.node._store_commit import committed
from troc.node.config import NodeConfig
from troc.node.control import serve_control
from troc.node.groupcommit import GroupCommit
from troc.node.local import LocalNode, now_ms, open_local_node
from troc.node.metrics import Counters
from troc.node.opdata import NotFoundError, cid, mid
from troc.node.operations import run_online
from troc.node.options import relay_limits
from troc.node.peers import Peers, dialable
from troc.node.sync import MAX_INBOUND_PER_PEER, Syncer, SyncProgress
from troc.node.topics import Topics, final_topic_of, topic_of
from troc.node.witness import PROTOCOL_ID as WITNESS_PROTOCOL
from troc.node.witness import Certifier, Progress, WitnessService, member_peer_id
from troc.protocol.entry import CommunityId, Entry
from troc.protocol.sync import SyncStats
from troc.protocol.sync_wire import VERSIONS as SYNC_VERSIONS

# topic_of, final_topic_of and MAX_INBOUND_PER_PEER live in the services'
# modules; they stay importable from here, where tools and tests found them.
__all__ = [
    "MAX_INBOUND_PER_PEER",
    "Node",
    "NodeConfig",
    "final_topic_of",
    "open_node",
    "topic_of",
]

logger = logging.getLogger("troc.node")

#: Addresses per witness that an invitation carries, at most.
WITNESS_ADDRS_EACH = 4
#: A payment to a member not seen joining: how long to sync with peers to learn of the join.
PAYEE_SYNC_WAIT = 5.0
PAYEE_SYNC_PAUSE = 0.5
#: ``wait`` on a signing operation: how long it waits for finality by default.
FINALITY_WAIT = 30.0
#: Own entries announced to sync soon, queued at most (peers to sync with).
SYNC_REQUESTS = 1000


def _serves(config: NodeConfig, community: CommunityId) -> bool:
    return not config.communities or community in config.communities


class Node:
    """A running node. Get one from :func:`open_node`, which builds the
    services it holds: ``peering`` (:class:`~troc.node.peers.Peers`),
    ``sync`` (:class:`~troc.node.sync.Syncer`), ``topics``
    (:class:`~troc.node.topics.Topics`), ``certifier`` and, when configured,
    ``witness``, ``relay_server``, ``relay_client`` and ``dht``."""

    def __init__(
        self,
        local: LocalNode,
        host: P2PHost,
        config: NodeConfig,
        nursery: trio.Nursery,
        *,
        peering: Peers,
        sync: Syncer,
        topics: Topics,
        certifier: Certifier,
        liveness: Liveness,
        counters: Counters,
        witness: WitnessService | None = None,
        relay_server: RelayServer | None = None,
        relay_client: RelayClient | None = None,
        dht: DHT | None = None,
    ) -> None:
        self.local = local
        self.host = host
        self.config = config
        self.peering = peering
        self.sync = sync
        self.topics = topics
        self.certifier = certifier
        self.liveness = liveness  # pings peers, closes dead links (run by open_node)
        self.counters = counters
        self.witness = witness
        self.relay_server = relay_server
        self.relay_client = relay_client  # holds reservations with config.relays
        self.dht = dht  # unless config.dht == "off"
        self.progress: SyncProgress = sync.progress
        self.quota = peering.quota
        self._peers = peering.table  # bans and inbound session counts
        self._nursery = nursery
        self._listeners: list[trio.MemorySendChannel[Entry]] = []
        #: Start-up is over: listening, and the first dials to known peers done.
        self.started = False
        #: Operations of services running beside the node (the web app's ``web.login``).
        self.extra_ops: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        #: Own entries of concurrent requests in one durable transaction
        #: (run by open_node).
        self.group_commit = GroupCommit(local)
        local.listeners.append(self._on_stored)
        local.acceptable_listeners.append(self._tell_subscribers)

    def serves(self, community: CommunityId) -> bool:
        """Whether this node serves ``community`` (config.communities; all if empty)."""
        return _serves(self.config, community)

    @property
    def _over_quota(self) -> Callable[[Any], bool]:
        """What the gossip validators call to charge a message to its sender
        (:meth:`Peers.over_quota`); tests replace it to watch what arrives."""
        return self.peering.over_quota

    @_over_quota.setter
    def _over_quota(self, check: Callable[[Any], bool]) -> None:
        self.peering.over_quota = check  # type: ignore[method-assign,assignment]

    def limit_streams(self, handler: Any) -> Any:
        """Wrap a stream handler: at most ``max_streams`` at once per peer, none for banned ones."""
        return self.peering.limit_streams(handler)

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
        return dialable(self.host.listen_addrs()) + relayed

    # -- acting ---------------------------------------------------------------

    async def run_op(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run operation ``name`` (:data:`troc.node.operations.OPERATIONS`) on
        this node: the control socket's requests, the web app's. Raises
        TrocError subclasses for the caller's mistakes."""
        if name in self.extra_ops:  # services beside the node (the web app's web.login)
            return self.extra_ops[name](params)
        # A catch-up's commit running on its worker thread: awaited there,
        # not waited for by this request's first read (which would stop
        # every task of the node until it ends).
        await committed(self.local.store)
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
        reachable = self.host.connected_peers() or self.peering.bootstrap_addrs()
        if not reachable and not self.config.mdns:
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
                peers = [p for p in self.host.connected_peers() if not self.peering.is_banned(p)]
                if known() or not peers:
                    return
                for peer in peers:
                    await self.sync.sync_one(peer, community)
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
        first sync (:attr:`Syncer.first_sync`: set sooner once peers' heads show
        the member's own logs held), so a home restored from an old backup
        learns its own newer entries before it signs new ones at the same seq.

        Whoever the peer is counts: a bootstrap peer, a remembered one
        (peers.json), an inviter, one found by mDNS or the DHT, one that
        dialed us. With no peer connected there is nobody to learn from and
        nothing is held back (offline use goes on).
        """
        if self.sync.first_sync.is_set():
            return
        if not any(not self.peering.is_banned(p) for p in self.host.connected_peers()):
            return
        with trio.move_on_after(self.config.restore_guard_seconds):
            await self.sync.first_sync.wait()

    def _on_stored(self, entry: Entry, own: bool) -> None:
        """Called by LocalNode after each commit (own entries and others')."""
        if not own:
            self.counters.entries_received += 1
        if own:
            self.topics.publish(entry)
            if entry.community is not None and self.local.ledger.witness_rules(entry.community):
                self.certifier.submit(entry, self._nursery.start_soon)
        self._tell_subscribers(entry)

    def _tell_subscribers(self, entry: Entry) -> None:
        """Hand ``entry`` to :meth:`subscribe`'s channels: one stored, or a
        transfer to the member held parked that became acceptable
        (docs/witness.md §6.1; the web app's pages then show it)."""
        for listener in list(self._listeners):
            try:
                listener.send_nowait(entry)
            except trio.WouldBlock:
                pass  # a slow subscriber misses events, never blocks the node
            except trio.ClosedResourceError:
                self._listeners.remove(listener)

    @asynccontextmanager
    async def subscribe(self, size: int = 1000) -> AsyncIterator[trio.MemoryReceiveChannel[Entry]]:
        """Entries as they are stored (own and others'), and transfers to the
        member held parked as they become acceptable (docs/witness.md §6.1),
        for the ``async with`` block."""
        send, receive = trio.open_memory_channel[Entry](size)
        self._listeners.append(send)
        try:
            yield receive
        finally:
            if send in self._listeners:
                self._listeners.remove(send)
            await send.aclose()

    async def connect(self, addr: str, *, redial: bool = False) -> str:
        """Connect to ``addr``, remember it, sync with the peer soon.

        ``redial`` forgets a recent failed dial to that peer first (py-libp2p
        refuses for 60 s to dial a peer whose addresses all failed once).
        """
        return await self.peering.connect(addr, redial=redial)

    async def sync_with(self, peer: str) -> list[SyncStats]:
        """Run one sync session per community with ``peer``; returns their stats."""
        return await self.sync.sync_with(peer)

    def refresh_subscriptions(self) -> None:
        """Subscribe to the topics of communities followed since the last call."""
        self.topics.refresh()

    def status(self) -> dict[str, Any]:
        communities = []
        for info in self.local.communities():
            heads = {a: h.seq for a, h in self.local.store.heads(info.id)}
            communities.append(
                {
                    "community": cid(info.id),
                    "name": info.name,
                    "members": len(heads),
                    "entries": self.local.store.entry_count(info.id),
                    "heads": {mid(a): seq for a, seq in sorted(heads.items())},
                }
            )
        return {
            "member": mid(self.member),
            "peer_id": self.peer_id,
            "started": self.started,
            "addrs": self.addrs(),
            "peers": sorted(self.host.connected_peers()),
            "communities": communities,
            "sync": self.progress.describe(),
            "banned": self.peering.banned(),
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
            # Group commit of requests' own entries: durable transactions, steps in them.
            "group_commit": {
                "batches": self.group_commit.batches,
                "steps": self.group_commit.steps,
            },
        }

    def peers(self) -> dict[str, Any]:
        """Connected peers (``state`` alive, or unresponsive once a ping went
        unanswered) and lost ones (``dead``: closed after unanswered pings,
        or gone), which the node redials."""
        return {"peers": self.liveness.describe()}


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
    clock = clock or now_ms
    with open_local_node(config.home, key, clock) as local:
        async with (
            open_host(key_seed=key.seed, listen=config.listen, enable_mdns=config.mdns) as host,
            trio.open_nursery() as nursery,
            AsyncExitStack() as stack,  # services with nurseries of their own: inside ours
        ):
            # The services, each handed its collaborators (none knows Node).
            serves = functools.partial(_serves, config)
            counters = Counters()
            liveness = Liveness(host)
            # Peers to sync with soon: new connections, holders of what a
            # gossiped entry waits for. Peers and topics send, sync receives.
            sync_soon, sync_requests = trio.open_memory_channel[str | None](SYNC_REQUESTS)
            peering = Peers(
                host, local, config, liveness, nursery, sync_soon, serves, config.quotas
            )
            syncer = Syncer(
                local,
                host,
                peering,
                counters,
                sync_requests,
                interval=config.sync_interval,
                serves=serves,
                nursery=nursery,
            )
            stack.callback(syncer.verifier.close)  # its threads and worker processes
            for version, protocol in SYNC_VERSIONS.items():
                answer = functools.partial(syncer.handle_stream, version=version)
                host.set_stream_handler(protocol, answer)
            topics = Topics(local, host, peering, nursery, sync_soon, serves)
            certifier = Certifier(local, host, topics.publish_certificate)
            witness = None
            if config.witness:
                witness = WitnessService(local, key, clock, peering.quota)
                certifier.service = witness
                handler = peering.limit_streams(witness.handle_stream)
                host.set_stream_handler(WITNESS_PROTOCOL, handler)
            relay_server = None
            if config.relay is not None and config.relay.enabled:
                limits = relay_limits(config.relay, config.quotas)
                relay_server = await stack.enter_async_context(open_relay_server(host, limits))
            dht = None
            if config.dht != "off":
                dht = await stack.enter_async_context(
                    open_dht(
                        host,
                        server=config.dht == "server",
                        bootstrap=config.bootstrap,
                        announce=dialable(host.listen_addrs()) or None,
                    )
                )
            relay_client = None
            if config.relays:
                relay_client = await stack.enter_async_context(
                    open_relay_client(host, config.relays)
                )
            node = Node(
                local,
                host,
                config,
                nursery,
                peering=peering,
                sync=syncer,
                topics=topics,
                certifier=certifier,
                liveness=liveness,
                counters=counters,
                witness=witness,
                relay_server=relay_server,
                relay_client=relay_client,
                dht=dht,
            )
            if invites.serves(config.home):  # answers /troc/invite/1 once it issued codes
                invites.attach(node)

            # Running them.
            if witness is not None:
                nursery.start_soon(witness.run)
            if dht is not None:
                nursery.start_soon(peering.dht_loop, dht)
            topics.refresh()
            nursery.start_soon(topics.publisher)
            nursery.start_soon(topics.certificate_publisher)
            nursery.start_soon(node.group_commit.serve)
            # Own entries a previous run left uncertified: one driver per log.
            for entry in certifier.uncertified():
                certifier.submit(entry, nursery.start_soon)
            if config.control_socket:
                await nursery.start(serve_control, config.home, node.run_op)
            await peering.bootstrap()
            for warning in node.reach_warnings():
                logger.warning("%s", warning)
            node.started = True
            nursery.start_soon(syncer.run)
            if config.mdns:
                nursery.start_soon(peering.mdns_loop)
            nursery.start_soon(peering.redial_loop)
            nursery.start_soon(liveness.run)
            try:
                yield node
            finally:
                host.closing()  # what is stuck on a stalled link need not hold the stop
                nursery.cancel_scope.cancel()
