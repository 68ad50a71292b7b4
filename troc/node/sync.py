"""Anti-entropy over streams: the I/O half of :mod:`troc.protocol.sync`.

Theory of operation
-------------------
:mod:`troc.protocol.sync` decides what two stores say to each other to
become equal; this module carries it over ``/troc/sync/3`` streams (or
``/troc/sync/2`` with a peer that speaks only that), as
:mod:`troc.node.witness` does for :mod:`troc.protocol.witness`.

:meth:`Syncer.run` starts sessions: with each newly connected peer, with
each peer named on the sync requests channel (a new connection, a gossiped
entry that waits for another, a redial), and every ``interval`` seconds with a
random peer. Each peer's sessions run one at a time in a task of their own.
:meth:`Syncer.handle_stream` answers the sessions peers start, at most
``MAX_INBOUND_PER_PEER`` per peer at once.

Every frame has a deadline (FRAME_TIMEOUT) and every session one
(SESSION_TIMEOUT); what a peer sends is charged to its quota, and a peer that
sends malformed frames or entries is banned (:meth:`troc.node.peers.Peers.ban`).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import trio

from troc.crypto.ids import encode_id
from troc.crypto.sign import MemberId
from troc.errors import RemoteProtocolError
from troc.net.p2p import (
    DialError,
    FrameError,
    FrameReader,
    P2PHost,
    close_stream,
    write_frames,
)
from troc.node._store_cache import Cache
from troc.node._store_commit import committed
from troc.node.local import LocalNode
from troc.node.metrics import Counters
from troc.node.peers import Peers
from troc.node.verifier import Prepared, Verifier
from troc.node.walsync import own_durable
from troc.protocol.entry import Accept, CommunityId, Entry, Ref, Transfer, names_no_expiry
from troc.protocol.ledger import CertificateOutcome, Outcome
from troc.protocol.sync import (
    Streamed,
    SyncSession,
    SyncStats,
    certificate_for,
    race_certificate_of,
    race_certificates_between,
)
from troc.protocol.sync_wire import (
    MAX_BATCH,
    MAX_CERTS,
    MAX_FRAME,
    VERSIONS,
    Heads,
    decode_message,
    encode_message,
)
from troc.protocol.vote import Certificate, WitnessRules

__all__ = ["SyncProgress", "Syncer"]

logger = logging.getLogger(__name__)

#: A whole sync session may not take longer (a 100k-entry catch-up takes ~20 s).
SESSION_TIMEOUT = 600.0
#: One frame must arrive within this.
FRAME_TIMEOUT = 30.0
#: Inbound sync sessions one peer may have open at once.
MAX_INBOUND_PER_PEER = 2
#: Frame errors only a broken or hostile peer causes (a timeout, a reset or
#: an EOF may be the network's doing).
MALFORMED_FRAME = frozenset({"too_large", "bad_varint"})


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

    def describe(self) -> dict[str, Any]:
        """As ``sync`` in ``troc status``."""
        return {
            "sessions": self.sessions,
            "failed": self.failed,
            "fetched": self.fetched,
            "peer": self.current_peer,
            "expected": self.current_expected,
            "received": self.current_received,
            "last_ms": self.last_ms,
        }


class _StoreView:
    """:class:`~troc.protocol.sync.SyncView` over the node's store, for the
    sessions of one community (it takes no other community's entries)."""

    def __init__(
        self, local: LocalNode, community: CommunityId | None = None, peer: str | None = None
    ) -> None:
        self.local = local
        self.community = community
        self.peer = peer  # the session's peer: what it parks counts against it
        # Entries and certificates of the frames being handled, decoded and
        # their signatures checked ahead by the Verifier, by their bytes
        # (Syncer._session_loop fills them).
        self.prepared: dict[bytes, Entry] = {}
        self.prepared_certificates: dict[bytes, Certificate] = {}
        # Transfers naming no expiry that this session streamed (held here),
        # the most recent ones: see race_certificate.
        self._lasting: Cache[Ref, bool] = Cache(STREAMED_LASTING)

    def heads(self, community: CommunityId) -> Heads:
        return {a: (h.seq, h.id) for a, h in self.local.store.heads(community)}

    def entries_after(
        self, community: CommunityId, author: Any, after_seq: int, limit: int
    ) -> list[tuple[int, bytes]]:
        return self.local.store.timed_entries_since(community, author, after_seq, limit)

    def wire_of(self, community: CommunityId, ref: Ref) -> bytes | None:
        # Parked entries too: a peer's accept may need a transfer parked
        # here (docs/witness.md §6.1).
        return self.local.ledger.held_wire(community, ref)

    def is_stored(self, community: CommunityId, ref: Ref) -> bool:
        return self.local.store.entry(community, ref.author, ref.seq, ref.id) is not None

    def forks(self, community: CommunityId) -> list[tuple[MemberId, int, bytes, bytes]]:
        return self.local.store.forks(community)

    def ingest_batch(self, wires: list[bytes]) -> list[Outcome]:
        prepared = self.prepared
        items: list[bytes | Entry] = [prepared.get(w, w) for w in wires] if prepared else [*wires]
        return self.local.ingest_many(
            items, community=self.community, sources=[self.peer] * len(wires)
        )

    def finals(self, community: CommunityId) -> dict[MemberId, tuple[int, bytes]]:
        return {a: (seq, cert) for a, seq, cert in self.local.store.finals(community)}

    def certificate_of(self, community: CommunityId, ref: Ref) -> bytes | None:
        return certificate_for(self.local.ledger, community, ref)

    def ingest_certificates(self, datas: list[bytes]) -> list[CertificateOutcome]:
        prepared = self.prepared_certificates
        return self.local.ingest_certificates([prepared.get(d, d) for d in datas])

    def tips_waiting(self, community: CommunityId) -> list[Ref]:
        return self.local.ledger.tips_waiting(community)

    def transfers_wanted(self, community: CommunityId) -> list[Ref]:
        # Also the transfers to this node's member held parked without their
        # own certificate: with it, the member can accept before the payer's
        # history is here, so a lost gossip message is mended by the next
        # session (docs/sync.md; bounded: MAX_CERTS_WANTED_TO).
        ledger = self.local.ledger
        own = ledger.parked_to(
            community, self.local.member, certified=False, limit=MAX_CERTS_WANTED_TO
        )
        return ledger.transfers_wanted(community) + [e.ref for e in own]

    def race_certificates(
        self, community: CommunityId, author: MemberId, low: int, high: int
    ) -> list[bytes]:
        return race_certificates_between(self.local.ledger, community, author, low, high)

    def race_certificate(self, community: CommunityId, entry: Entry) -> bytes | None:
        # The session streams the entries it asks about from this store, so
        # a transfer among them is held (stored ones stay): if it names no
        # expiry and the rules give it none, an accept of it streamed later
        # cannot race (troc.protocol.witness.raceable), and whether it can
        # need not be asked of the ledger, which reads and decodes the
        # transfer (a fifth of a server's thread serving a catch-up).
        body = entry.body
        if isinstance(body, Transfer):
            if names_no_expiry(entry):
                self._lasting.put(entry.ref, True)
            return None  # never races
        ledger = self.local.ledger
        raceable = None
        if isinstance(body, Accept) and self._lasting.get(body.transfer):
            rules = ledger.rules(community)  # cached: no read
            raceable = rules is not None and rules.transfer_expiry_ms is not None
        return race_certificate_of(ledger, community, entry, raceable=raceable)


#: Transfers a session remembers having streamed (:meth:`_StoreView.race_certificate`):
#: in two generations, 8,192 to 16,384 (~250 bytes each). An accept streamed
#: further from its transfer is asked of the ledger, as before.
STREAMED_LASTING = 8_192

#: Parked transfers to this node's member whose certificates a session's
#: end asks for, at most (docs/sync.md).
MAX_CERTS_WANTED_TO = 64

#: Frames read (and their entries handed to the verifier) ahead of the store:
#: two batches' worth (COMBINE_ENTRIES / MAX_BATCH frames each), so while the
#: node's thread stores one batch, and reads nothing, the verifier has the
#: next. With one batch's worth, the store took every frame read and the
#: verify workers had nothing to check until it was done (bench/ingest.py:
#: the store's thread then slept 14-18 % of the time waiting for checks,
#: 5-6 % with two). At most 16 frames of MAX_FRAME, and their entries decoded.
AHEAD_FRAMES = 16
#: Entries of consecutive frames stored in one batch (one commit), at most.
COMBINE_ENTRIES = 4096

#: What the read-ahead task hands the session loop: a frame, its message and,
#: for an ``entries`` (``certs``) message, its entries (certificates) being
#: prepared by the Verifier; or the error that ended reading.
_Ahead = tuple[bytes, dict[str, Any], Prepared[Any] | None] | Exception
#: The messages whose items the Verifier prepares: what their list is under
#: and how many it may hold (the session checks the rest).
_PREPARED = {"entries": ("e", MAX_BATCH), "certs": ("k", MAX_CERTS)}


def _items(msg: dict[str, Any]) -> list[bytes] | None:
    """The entries (certificates) of a well-formed ``entries`` (``certs``)
    message, else None (the session then says what is wrong with it)."""
    kind = msg.get("t")
    if kind not in _PREPARED:
        return None
    key, most = _PREPARED[kind]
    items = msg.get(key)
    if isinstance(items, list) and len(items) <= most and all(isinstance(i, bytes) for i in items):
        return items
    return None


def _sync_version(stream: Any) -> int:
    """The sync version a stream negotiated (``/troc/sync/2`` if unsaid)."""
    protocol = stream.get_protocol()
    return next((v for v, p in VERSIONS.items() if p == protocol), 2)


def misbehaved(exc: Exception) -> bool:
    """Whether a session's error proves the peer broken or hostile."""
    if isinstance(exc, FrameError):
        return exc.reason in MALFORMED_FRAME
    return isinstance(exc, RemoteProtocolError)


class Syncer:
    """Sync sessions of one node, both ways (see the module's docstring).

    Args:
        local: the member's node, whose store the sessions read and fill.
        host: the node's libp2p host.
        peers: bans, quotas and the peers this node talks to.
        counters: the node's metrics counters (bytes and entries served).
        requests: peers to sync with soon (None wakes the loop only).
        interval: a session with a random peer this often (jittered), seconds.
        serves: whether the node serves a community (others are not synced).
        nursery: the node's nursery, for the per-peer session tasks.
        verifier: decodes and checks received entries on every core while
            the store takes the previous frame's (default: one of its own).
    """

    def __init__(
        self,
        local: LocalNode,
        host: P2PHost,
        peers: Peers,
        counters: Counters,
        requests: trio.MemoryReceiveChannel[str | None],
        *,
        interval: float,
        serves: Callable[[CommunityId], bool],
        nursery: trio.Nursery,
        verifier: Verifier | None = None,
    ) -> None:
        self.local = local
        self.verifier = verifier or Verifier()
        self.host = host
        self.peers = peers
        self.counters = counters
        self.progress = SyncProgress()
        #: Set once the first session with any peer is over, or sooner, once
        #: peers showed this node holds its own logs as they know them (the
        #: restore guard waits for it).
        self.first_sync = trio.Event()
        self._own_known: set[CommunityId] = set()  # communities where that is shown
        self._requests = requests
        self._interval = interval
        self._serves = serves
        self._nursery = nursery
        self._seen: set[str] = set()  # connected peers already synced with on connecting
        self._syncing: set[str] = set()  # outbound sessions in flight
        # (peer, community) pairs a peer would not sync: said once, then at debug.
        self._not_following: set[tuple[str, CommunityId]] = set()
        # The sessions running now per (peer, community), both ways: each
        # skips what another streams to the same peer (SyncSession.streaming).
        self._running: dict[tuple[str, CommunityId], list[SyncSession]] = {}

    async def run(self) -> None:
        """On new peers, on request, and every interval with a random peer.

        Each peer's sessions run in a task of their own, one at a time per
        peer: a peer that answers slowly (a session may last SESSION_TIMEOUT)
        holds up only itself, and requests (a gossip flood can make many)
        do not crowd out the periodic sync with a random peer.
        """
        next_random = trio.current_time()
        while True:
            peer: str | None = None
            with trio.move_on_at(next_random):
                peer = await self._requests.receive()
            connected = self.peers.usable()
            # A peer that went away and came back is new again: sync with it.
            self._seen.intersection_update(connected)
            new = [p for p in connected if p not in self._seen]
            self._seen.update(new)
            targets = set(new)
            if peer is not None and peer in connected:
                targets.add(peer)
            if trio.current_time() >= next_random:
                next_random = trio.current_time() + self._interval * random.uniform(0.5, 1.5)
                idle = [p for p in connected if p not in self._syncing]
                if idle:
                    targets.add(random.choice(idle))
            for target in targets - self._syncing:
                self._syncing.add(target)
                self._nursery.start_soon(self._sync_task, target)

    async def _sync_task(self, peer: str) -> None:
        try:
            await self.sync_with(peer)
        finally:
            self._syncing.discard(peer)
        # Asked once (even a peer that shares no community with us, or
        # whose sessions failed): the restore guard holds signing no longer.
        self.first_sync.set()

    async def sync_with(self, peer: str) -> list[SyncStats]:
        """Run one sync session per community with ``peer``; returns their stats."""
        results = []
        for info in self.local.communities():
            if not self._serves(info.id):
                continue
            stats = await self.sync_one(peer, info.id)
            if stats is not None:
                results.append(stats)
        return results

    async def sync_one(self, peer: str, community: CommunityId) -> SyncStats | None:
        """One session with ``peer`` for ``community``; None if it failed or
        the peer does not sync that community (logged, never raised)."""
        try:
            # The newest version the peer serves (docs/sync.md, "Negotiation").
            stream = await self.host.open_stream(peer, list(VERSIONS.values()))
        except DialError as exc:
            logger.debug("sync with %s: %s", peer, exc)
            self.progress.failed += 1
            return None
        version = _sync_version(stream)
        view = _StoreView(self.local, community, peer)
        session = self._session(view, peer, community, initiator=True, version=version)
        self.progress.current_peer = peer
        try:
            with trio.fail_after(SESSION_TIMEOUT), self._registered(peer, community, session):
                await own_durable(self.local)  # (see _session_loop)
                await self._run_session(stream, peer, session, session.start())
        except (FrameError, RemoteProtocolError, trio.TooSlowError) as exc:
            if isinstance(exc, FrameError) and exc.reason == "eof" and not session.answered:
                # The peer follows other communities, not this one: not a failure,
                # and said once (at info) rather than every sync interval.
                key = (peer, community)
                level = logging.DEBUG if key in self._not_following else logging.INFO
                self._not_following.add(key)
                logger.log(level, "%s does not sync %s with us", peer, encode_id("c", community))
                await close_stream(stream, reset=True)
                return None
            self.progress.failed += 1
            logger.info("sync with %s failed: %s", peer, exc)
            if misbehaved(exc):
                self.peers.ban(peer, str(exc))
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

    async def handle_stream(self, stream: Any, peer: str, version: int = 2) -> None:
        """Answer a session ``peer`` started (the handler of ``/troc/sync/<version>``)."""
        if self.peers.is_banned(peer):
            return
        table = self.peers.table
        if not table.enter_inbound(peer, MAX_INBOUND_PER_PEER):
            return
        try:
            reader = FrameReader(stream, max_size=MAX_FRAME, frame_timeout=FRAME_TIMEOUT)
            with trio.fail_after(SESSION_TIMEOUT):
                hello = decode_message(await reader.read_frame())
                community = hello.get("c")
                if hello.get("t") != "hello" or not isinstance(community, bytes):
                    raise RemoteProtocolError("a sync session starts with hello")
                if self.local.store.genesis(CommunityId(community)) is None or not self._serves(
                    CommunityId(community)
                ):
                    return  # not a community we follow (or serve): close
                c = CommunityId(community)
                view = _StoreView(self.local, c, peer)
                session = self._session(view, peer, c, initiator=False, version=version)
                with self._registered(peer, c, session):
                    await own_durable(self.local)  # (see _session_loop)
                    first = list(session.receive(hello))
                    await self._run_session(stream, peer, session, first, reader)
        except (RemoteProtocolError, trio.TooSlowError) as exc:
            if misbehaved(exc):
                self.peers.ban(peer, str(exc))
            else:
                logger.info("inbound sync from %s ended: %s", peer, exc)
        finally:
            table.leave_inbound(peer)

    def _session(
        self, view: _StoreView, peer: str, community: CommunityId, **kwargs: Any
    ) -> SyncSession:
        """A session with ``peer`` that skips what the others with it stream."""
        key = (peer, community)

        def elsewhere() -> list[Streamed]:
            return [s.streaming for s in self._running.get(key, ()) if s is not session]

        session = SyncSession(view, community, elsewhere=elsewhere, **kwargs)
        return session

    @contextlib.contextmanager
    def _registered(
        self, peer: str, community: CommunityId, session: SyncSession
    ) -> Iterator[None]:
        """``session`` counts as running with ``peer`` for the block."""
        key = (peer, community)
        self._running.setdefault(key, []).append(session)
        try:
            yield
        finally:
            running = self._running[key]
            running.remove(session)
            if not running:
                del self._running[key]

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
        # (which escaped sync_one and stopped the node).
        await write_frames(stream, [encode_message(m) for m in first], frame_timeout=FRAME_TIMEOUT)
        view = session.view
        # Frames are read, and their entries decoded and checked on the other
        # cores, up to AHEAD_FRAMES ahead of the session: the store takes a
        # run of frames on this thread while the workers check the next.
        ahead_send, ahead = trio.open_memory_channel[_Ahead](AHEAD_FRAMES)
        error: Exception | None = None
        async with trio.open_nursery() as nursery:
            # A witnessed community's certificates are checked ahead too.
            rules = self.local.ledger.witness_rules(session.community)
            nursery.start_soon(self._read_ahead, reader, ahead_send, rules)
            try:
                await self._session_loop(stream, peer, session, view, ahead)
            except Exception as exc:  # raised below, as itself rather than in a group
                error = exc
            nursery.cancel_scope.cancel()
        if error is not None:
            raise error
        self.progress.last_ms = int(time.time() * 1000)
        if session.stats.accepted:
            logger.info(
                "synced with %s: %d entries in, %d out",
                peer,
                session.stats.accepted,
                session.stats.sent,
            )

    async def _read_ahead(
        self,
        reader: FrameReader,
        out: trio.MemorySendChannel[_Ahead],
        rules: WitnessRules | None,
    ) -> None:
        """Read frames and decode them; hand each on with its entries (its
        certificates, under ``rules``, a witnessed community's) handed to
        the verifier, or the error that ended the reading (the session loop
        raises it)."""
        async with out:
            while True:
                try:
                    frame = await reader.read_frame()
                    msg = decode_message(frame)
                    items = _items(msg)
                    prepared: Prepared[Any] | None = None
                    if items is not None and msg["t"] == "entries":
                        prepared = self.verifier.submit(items)
                    elif items is not None and rules is not None:
                        prepared = self.verifier.submit_certificates(items, rules)
                except Exception as exc:  # the session loop raises it
                    await out.send(exc)
                    return
                await out.send((frame, msg, prepared))

    async def _next_run(
        self, ahead: trio.MemoryReceiveChannel[_Ahead], held: list[_Ahead]
    ) -> list[tuple[bytes, dict[str, Any], Prepared[Any] | None]]:
        """The next message, or the ``entries`` and ``certs`` messages
        already read in a row (up to COMBINE_ENTRIES entries): one store
        batch. What ends a run is kept in ``held`` for the next call."""
        first = held.pop() if held else await ahead.receive()
        if isinstance(first, Exception):
            raise first
        run = [first]
        if first[2] is None:
            return run
        count = len(first[1].get("e", ()))
        while count < COMBINE_ENTRIES:
            try:
                item = ahead.receive_nowait()
            except trio.WouldBlock:
                break
            if isinstance(item, Exception) or item[2] is None:
                held.append(item)
                break
            run.append(item)
            count += len(item[1].get("e", ()))
        return run

    async def _session_loop(
        self,
        stream: Any,
        peer: str,
        session: SyncSession,
        view: Any,
        ahead: trio.MemoryReceiveChannel[_Ahead],
    ) -> None:
        held: list[_Ahead] = []
        while not session.done:
            run = await self._next_run(ahead, held)
            prepared: dict[bytes, Entry] = {}
            certificates: dict[bytes, Certificate] = {}
            for frame, msg, items in run:
                entries = msg.get("e")
                over = self.peers.quota.charge(
                    peer,
                    nbytes=len(frame),
                    entries=len(entries) if isinstance(entries, list) else 0,
                )
                if over > 0:  # slow this peer down to its budget; others' sessions go on
                    await trio.sleep(min(over, FRAME_TIMEOUT / 2))
                self.counters.bytes_in += len(frame)
                if items is not None:
                    for data, item in zip(_items(msg) or (), await items.result(), strict=True):
                        if isinstance(item, Entry):
                            prepared[data] = item
                        elif isinstance(item, Certificate):
                            certificates[data] = item
            if isinstance(view, _StoreView):
                view.prepared = prepared
                view.prepared_certificates = certificates
            sent_before = session.stats.sent
            before = session.stats.accepted
            out: list[bytes] = []
            size = 0
            msgs = [msg for _frame, msg, _items in run]
            # The session reads the store as it handles them (lazily, for
            # one message of another kind): never while own entries are
            # committed but not on disk (troc.node.walsync).
            await own_durable(self.local)
            error: RemoteProtocolError | None = None
            if run[0][2] is None:  # one message of another kind, its replies as they come
                replies: Iterable[dict[str, Any]] = session.receive(msgs[0])
            else:
                replies, error = await self._take_run(session, msgs)
            for reply in replies:
                data = encode_message(reply)
                out.append(data)
                size += len(data)
                if size >= MAX_FRAME // 2:
                    await write_frames(stream, out, frame_timeout=FRAME_TIMEOUT)
                    out, size = [], 0
                    await own_durable(self.local)
            if out:
                await write_frames(stream, out, frame_timeout=FRAME_TIMEOUT)
            self.counters.entries_served += session.stats.sent - sent_before
            self.counters.bytes_out += size
            self.progress.fetched += session.stats.accepted - before
            self.progress.current_expected = session.stats.expected
            self.progress.current_received = session.stats.received
            if isinstance(view, _StoreView):
                view.prepared, view.prepared_certificates = {}, {}
            if error is not None:
                raise error
            if session.misbehaviour:
                raise RemoteProtocolError(session.misbehaviour)
            if not self.first_sync.is_set() and session.answered:
                self._own_log_known(session)

    async def _take_run(
        self, session: SyncSession, msgs: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], RemoteProtocolError | None]:
        """The replies to a run of ``entries`` and ``certs`` messages, each
        handled in order as alone (the ``entries`` ones in a row as one
        batch: :meth:`SyncSession.receive_entries`), all in one store
        transaction: a stream's certificates and the entries they come
        ahead of, one commit. As when each was a run of its own, the
        messages after one that proves the peer faulty are not handled,
        and what came before it is kept: the error is returned, to raise
        once the replies so far are sent.

        The transaction's ``COMMIT`` runs on a worker thread, while this
        thread reads and decodes the next frames (:mod:`troc.node._store_commit`);
        nothing is announced, and no reply sent, before it has returned."""
        # Another session's commit still running: awaited, not waited for
        # on this thread by the transaction below (it would stop the node).
        await committed(self.local.store)
        replies: list[dict[str, Any]] = []
        error: RemoteProtocolError | None = None
        with self.local.ingesting_apart() as job:
            i = 0
            while i < len(msgs) and session.misbehaviour is None:
                j = i + 1
                if msgs[i].get("t") == "entries":
                    while j < len(msgs) and msgs[j].get("t") == "entries":
                        j += 1
                    handled = session.receive_entries(msgs[i:j])
                else:
                    handled = session.receive(msgs[i])
                try:
                    replies += handled
                except RemoteProtocolError as exc:
                    error = exc
                    break
                i = j
        # Shielded: once begun, the commit is seen through (a cancelled
        # session's run is kept, as when the commit ran on this thread).
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(job.commit)
        job.finish()
        return replies, error

    def _own_log_known(self, session: SyncSession) -> None:
        """Release the restore guard once, in every community the node syncs,
        a peer's heads show nothing of the member's own log that this node
        lacks: what the guard waits for (a home restored from an old backup
        learns its own newer entries before it signs). The rest of a first
        session, a newcomer's whole catch-up, need not hold its payments."""
        c = session.community
        theirs = session.peer_head(self.local.member)
        held = self.local.store.head(c, self.local.member)
        if theirs is not None and (held is None or held.seq < theirs[0]):
            return  # our newer entries are on their way
        self._own_known.add(c)
        if all(i.id in self._own_known for i in self.local.communities() if self._serves(i.id)):
            self.first_sync.set()
