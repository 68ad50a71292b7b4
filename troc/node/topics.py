"""Gossip topics: what a node publishes, what it forwards, what it takes in.

Theory of operation
-------------------
Each community served has a gossipsub topic (:func:`topic_of`); a witnessed
one has a second for certificates (:func:`final_topic_of`). Gossip is lossy
(:mod:`troc.node.sync` makes convergence certain); it only makes things fast.

* Publishing: own entries, the moment they are durable, go through an
  outbox to :meth:`Topics.publisher`; certificates the certifier gathers go
  to :meth:`Topics.certificate_publisher`. A full outbox drops: sync carries
  what gossip does not.
* Forwarding: a validator runs on every message before gossipsub forwards it.
  It drops what banned or over-budget peers send, what does not decode or
  verify, and what this node holds already (a replay under a fresh message id
  is not amplified). An entry of an author whose join this node has not seen
  is taken but not forwarded: it costs nothing to make and may dangle forever.
* Taking in: what arrived since the last batch is stored in one transaction
  (:meth:`Topics.ingest`), each entry charged to the neighbour that relayed it.
  An entry parked for a missing dependency makes the node sync with that
  neighbour (:meth:`Topics.fetch_for`), hop by hop back to the origin.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import trio

from troc.crypto.sign import MemberId
from troc.errors import TrocError
from troc.net.channels import take_ready
from troc.net.p2p import P2PHost
from troc.node.local import LocalNode
from troc.node.peers import Peers
from troc.protocol.entry import CommunityId, Entry, Join
from troc.protocol.gossip_wire import (
    MAX_RUN,
    MAX_RUN_BYTES,
    decode_run,
    encode_run,
    follows,
    is_run,
    run_wires,
)
from troc.protocol.ledger import Outcome, Status
from troc.protocol.witness import decode_any_certificate

__all__ = ["Topics", "final_topic_of", "gossip_messages", "topic_of"]

logger = logging.getLogger(__name__)

#: Parked gossip entries whose dependencies are being fetched at once, at most.
MAX_FETCHES = 256
#: Seconds a parked gossip entry waits before each sync with its forwarder
#: (again while it stays parked). The first wait gives gossip the time to
#: bring what it waits for: a run gossiped out of order (several witnesses
#: forward each one) is mostly followed within a fraction of a second by
#: the run it builds on, and a sync at once (the first wait was 0) carried
#: the entries gossip was about to bring, in a session each time.
FETCH_DELAYS = (0.5, 0.5, 1.0, 2.0)
#: Gossiped entries stored in one transaction, at most (those already arrived).
GOSSIP_BATCH = 256
#: Entries decoded by the gossip validator kept for ingest, per community, at most.
GOSSIP_DECODED = 2048
#: Gossiped entries of unknown authors (not forwarded) queued for ingest, at most.
GOSSIP_IGNORED = 256
#: Own entries and certificates waiting to be published, at most.
OUTBOX = 10_000
#: Entry ids remembered as seen on a community's topic (passed the validator), at most.
GOSSIP_SEEN = 16_384
#: A held entry is still forwarded on its first sighting on gossip if its
#: author signed it less than this long ago (ms, either way of our clock):
#: it came here first by another way (a vote request, a sync) while its
#: publish was on its way, and the node's neighbours may not have it yet.
FRESH_MS = 30_000


def gossip_messages(entries: list[Entry]) -> list[tuple[CommunityId, bytes]]:
    """What to publish for own ``entries`` (in the order they were stored):
    each run of consecutive entries of one log as one message (a run,
    :mod:`troc.protocol.gossip_wire`), an entry alone as itself."""
    out: list[tuple[CommunityId, bytes]] = []
    run: list[Entry] = []

    def flush() -> None:
        if run and run[0].community is not None:
            wires = [e.wire for e in run]
            out.append((run[0].community, wires[0] if len(wires) == 1 else encode_run(wires)))
        run.clear()

    for entry in entries:
        if run and not (
            follows(run[-1], entry)
            and len(run) < MAX_RUN
            # (each wire also costs a few bytes of msgpack framing in the run)
            and sum(len(e.wire) for e in run) + len(entry.wire) <= MAX_RUN_BYTES - 1024
        ):
            flush()
        run.append(entry)
    flush()
    return out


def _wires(data: bytes) -> list[bytes]:
    """The entries' wire bytes a message holds (a run's, or the message
    itself), for the ledger to judge each."""
    if not is_run(data):
        return [data]
    try:
        return run_wires(data)
    except TrocError:
        return []


def topic_of(community: CommunityId) -> str:
    """The gossip topic of a community's entries."""
    return f"/troc/community/{community.hex()}"


def final_topic_of(community: CommunityId) -> str:
    """The gossip topic of a witnessed community's certificates."""
    return topic_of(community) + "/final"


class Topics:
    """The gossip topics of one node (see the module's docstring).

    Args:
        local: the member's node, which stores what arrives.
        host: the node's libp2p host (its gossip).
        peers: bans and quotas: the validators drop what banned or
            over-budget peers send.
        nursery: the node's nursery, for subscriptions and fetches.
        sync_soon: where a peer that holds what a parked entry waits for is
            named, for a sync session.
        serves: whether the node serves a community (others get no topic).
    """

    def __init__(
        self,
        local: LocalNode,
        host: P2PHost,
        peers: Peers,
        nursery: trio.Nursery,
        sync_soon: trio.MemorySendChannel[str | None],
        serves: Callable[[CommunityId], bool],
    ) -> None:
        self.local = local
        self.host = host
        self.peers = peers
        self._nursery = nursery
        self._sync_soon = sync_soon
        self._serves = serves
        self._outbox_send, self._outbox = trio.open_memory_channel[Entry](OUTBOX)
        self._certs_send, self._certs_out = trio.open_memory_channel[tuple[CommunityId, bytes]](
            OUTBOX
        )
        self._subscribed: dict[CommunityId, trio.CancelScope] = {}
        self._fetching: set[tuple[CommunityId, bytes]] = set()

    def refresh(self) -> None:
        """Subscribe to the topics of communities followed since the last call."""
        for info in self.local.communities():
            if info.id not in self._subscribed and self._serves(info.id):
                scope = trio.CancelScope()
                self._subscribed[info.id] = scope
                self._nursery.start_soon(self._gossip_community, info.id, scope)
                if info.finality == "witnessed":
                    self._nursery.start_soon(self._gossip_certificates, info.id)

    def _refused(self, msg: Any) -> bool:
        """Whether a banned or over-budget peer sent or relayed ``msg``."""
        if self.peers.is_banned(msg.origin) or (
            msg.forwarder is not None and self.peers.is_banned(msg.forwarder)
        ):
            return True  # the ban holds on gossip too
        # Over its budget: dropped (sync carries what is honest).
        return self.peers.over_quota(msg)

    # -- publishing ---------------------------------------------------------------

    def publish(self, entry: Entry) -> None:
        """Queue an own entry for its community's topic (never blocks)."""
        try:
            self._outbox_send.send_nowait(entry)
        except trio.WouldBlock:
            logger.warning("gossip outbox full; sync will carry %s", entry.id.hex()[:8])

    def publish_certificate(self, community: CommunityId, data: bytes) -> None:
        """Queue a certificate for the community's ``…/final`` topic (never blocks)."""
        try:
            self._certs_send.send_nowait((community, data))
        except trio.WouldBlock:
            logger.warning("certificate outbox full; sync will carry it")

    async def publisher(self) -> None:
        """Publish queued own entries, for the node's life: those queued
        together (a group commit's), one run per log (troc.protocol.gossip_wire)."""
        async for first in self._outbox:
            queued = [first]
            take_ready(self._outbox, queued, OUTBOX)
            for community, data in gossip_messages(queued):
                try:
                    await self.host.gossip.publish(topic_of(community), data)
                except Exception:  # gossip is best effort; sync carries what it drops
                    logger.debug("publish failed", exc_info=True)

    async def certificate_publisher(self) -> None:
        """Publish queued certificates, for the node's life."""
        async for community, data in self._certs_out:
            try:
                await self.host.gossip.publish(final_topic_of(community), data)
            except Exception:  # best effort, as for entries
                logger.debug("publish failed", exc_info=True)

    def _over_run_quota(self, msg: Any, entries: int) -> bool:
        """Charge the entries of a run beyond its first (``_refused`` charged
        the message as one) to the neighbour that sent it; True to drop it."""
        sender = msg.forwarder or msg.origin
        return sender is not None and self.peers.quota.charge(sender, entries=entries - 1) > 0

    # -- certificates -------------------------------------------------------------

    async def _gossip_certificates(self, community: CommunityId) -> None:
        """Certificates on their own topic: the entry topic's validator stays as it is."""
        topic = final_topic_of(community)
        gossip = self.host.gossip
        rules = self.local.ledger.witness_rules(community)
        assert rules is not None

        def validate(msg: Any) -> bool:
            if self._refused(msg):
                return False
            try:
                # The shape only (either kind, docs/witness.md §3.6): no signature checked.
                cert = decode_any_certificate(msg.data)
            except TrocError:
                return False
            if msg.origin != self.host.peer_id and self.local.holds_certificate(cert):
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

    # -- entries ------------------------------------------------------------------

    async def _gossip_community(self, community: CommunityId, scope: trio.CancelScope) -> None:
        topic = topic_of(community)
        gossip = self.host.gossip
        # Entries the validator decoded (signature checked, or held here
        # with the same bytes), by wire bytes:
        # ingesting them does not decode and check them again. Bounded; a
        # message not found here (our own publishes are never delivered back
        # and age out) is ingested from its bytes.
        decoded: OrderedDict[bytes, list[Entry]] = OrderedDict()
        # Authors whose join passed the validator lately: their next entries
        # are forwarded though the join may not be stored yet (it waits in a
        # batch): a new member's first payment follows its join closely.
        joining: OrderedDict[MemberId, None] = OrderedDict()
        # Entries of authors not known here, taken but not forwarded.
        ignored_send, ignored = trio.open_memory_channel[tuple[Entry, Any]](GOSSIP_IGNORED)
        # Ids of the entries that passed this validator lately: a held
        # entry seen here before is a replay (see first_sighting).
        seen: OrderedDict[bytes, None] = OrderedDict()
        me = self.host.peer_id  # (a base58 encoding each time it is asked)

        def first_sighting(entries: list[Entry]) -> bool:
            """Whether held ``entries`` are still to be forwarded: none of them
            passed this validator before and each is fresh. A witness stores
            an author's entries from its vote request, which races the
            author's publish; dropping the publish as held left members
            that hear the author only through witnesses to wait for sync."""
            now = self.local.now()
            return not any(e.id in seen for e in entries) and all(
                abs(now - e.timestamp_ms) < FRESH_MS for e in entries
            )

        def validate(msg: Any) -> bool:
            if self._refused(msg):
                return False
            if msg.forwarder == me:
                # Our own publish (py-libp2p hands it to us from ourselves;
                # a copy from a peer has that peer as forwarder): own
                # entries, signed and stored here, never checked. Decoding
                # them cost a signature check per own entry, for nothing.
                return True
            try:
                # Signatures below: those of entries held already are not checked.
                if is_run(msg.data):
                    # One author's, in order.
                    entries = decode_run(msg.data, check_signature=False)
                    if self._over_run_quota(msg, len(entries)):
                        return False
                else:
                    entries = [Entry.decode(msg.data, check_signature=False)]
            except TrocError:
                return False
            entry = entries[0]
            if entry.community != community:
                return False
            store = self.local.store
            held = [store.entry(community, e.author, e.seq, e.id) for e in entries]
            if not all(
                (h is not None and h.entry.wire == e.wire) or e.signature_ok()
                for e, h in zip(entries, held, strict=True)
            ):
                # (An entry held with these very bytes had its signature
                # checked when it was stored: sync's entries often come
                # first, checked by the verifier's processes.)
                return False
            if msg.origin != me and all(held) and not first_sighting(entries):
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
                for e in entries:
                    with contextlib.suppress(trio.WouldBlock):
                        ignored_send.send_nowait((e, msg))
                return False
            decoded[msg.data] = entries
            if len(decoded) > GOSSIP_DECODED:
                decoded.popitem(last=False)
            for e in entries:
                seen[e.id] = None
            while len(seen) > GOSSIP_SEEN:
                seen.popitem(last=False)
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
                    carriers = []  # the message each item came in
                    for msg in batch:
                        entries = decoded.pop(msg.data, None)
                        # Not decoded here lately: from its bytes.
                        found = _wires(msg.data) if entries is None else list(entries)
                        items += found
                        carriers += [msg] * len(found)
                    self.ingest(community, carriers, items)

    async def _take_ignored(
        self, community: CommunityId, ignored: trio.MemoryReceiveChannel[tuple[Entry, Any]]
    ) -> None:
        """Ingest what the validator took but did not forward, in batches."""
        async for first in ignored:
            pairs = [first]
            take_ready(ignored, pairs, GOSSIP_BATCH)
            self.ingest(community, [m for _e, m in pairs], [e for e, _m in pairs])

    def ingest(self, community: CommunityId, batch: list[Any], items: list[bytes | Entry]) -> None:
        """Store gossiped entries in one transaction, each charged to the
        neighbour that relayed it (``batch``: the message each came in);
        fetch what the parked ones wait for."""
        sources = [msg.forwarder or msg.origin for msg in batch]
        # Any exception, not only a TrocError: one entry that trips a bug
        # (ours or a library's) is dropped, not the node.
        try:
            outcomes = self.local.ingest_many(items, community=community, sources=sources)
        except Exception:  # one at a time, then: the others still count
            outcomes = []
            for item, source in zip(items, sources, strict=True):
                wire = item if isinstance(item, bytes) else item.wire
                try:
                    outcomes.append(self.local.ingest(wire, community=community, source=source))
                except Exception:
                    logger.exception("could not store a gossiped entry")
                    outcomes.append(Outcome(Status.REJECTED))
        for msg, outcome in zip(batch, outcomes, strict=True):
            if outcome.status is Status.WAITING and outcome.entry is not None:
                self.fetch_for(community, outcome.entry, msg)

    def fetch_for(self, community: CommunityId, entry: Entry, msg: Any) -> None:
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
            for delay in FETCH_DELAYS:
                await trio.sleep(delay)
                if self.local.store.entry(community, entry.author, entry.seq, entry.id):
                    return
                for peer in peers:
                    if peer is not None and not self.peers.is_banned(peer):
                        try:
                            self._sync_soon.send_nowait(peer)
                        except trio.WouldBlock:
                            pass
        finally:
            self._fetching.discard(key)
