"""A deterministic simulator of many troc nodes on a virtual network.

Theory of operation
-------------------
Everything here is pure: no sockets, no threads, no disk, no clock. N nodes
(one member each, one community) hold a real :class:`~troc.protocol.ledger.Ledger`
over a :class:`~troc.protocol.backend.MemoryBackend` and talk through the real
:class:`~troc.protocol.sync.SyncSession` (frames encoded and decoded with the
real codec), while a :class:`Network` decides, with one ``random.Random(seed)``,
when each message arrives and whether it arrives at all. Time is a virtual
millisecond counter that only the event queue moves; entries are stamped with
it, so the ledger's future-timestamp guard never fires spuriously.

What is modelled (see :class:`SimConfig`):

* own entries: each node appends join, then pay / accept / decline /
  reclaim / offer / offer_close, checked with :meth:`Ledger.prepare` and
  stored before anything is sent (an acknowledged entry);
* gossip: a new entry is pushed to ``fanout`` random peers, forwarded for
  ``gossip_hops`` hops, with seeded loss, duplication and random delays (so
  reordering);
* anti-entropy: every node starts a sync session with a random peer every
  ``sync_interval_ms`` (jittered). The session's stream is reliable and
  ordered (never duplicated or reordered) but any frame may be lost or the
  stream cut; then both sides drop the session, as a timeout would;
* partitions: nodes split into groups; every message across groups is lost;
* crash-restart: a crashed node keeps everything it stored (a durable store)
  but loses its sessions and, with ``crash_loses_queue``, the gossip that was
  on its way to it;
* a fork (``fork_at``): a copy of one member's store comes up as a second
  node with the same key (a restored backup, a "twin"); the two sign
  different entries at the same seq (a payment each, if they can), then
  each goes on (the member's node as usual, the twin with ``twin_ops``
  payments) until it learns of the fork and stops. Other members may
  accept transfers from either branch. The twin takes part in gossip and
  sync like any node.

:meth:`Simulator.heal_and_converge` then lifts every fault and runs rounds of
random pairwise syncs until all nodes have one digest, or raises
:class:`SimulationError`; :meth:`Simulator.check` then checks the invariants
(with a fork: every node knows it and freezes the author at its seq, the
entries that count and the balances are the same everywhere, while the
forker's entries beyond the fork point may differ from node to node: they
are fetched only when something references them). Every failure message
names the seed: the same seed replays the same run exactly (iteration never
depends on hash order).
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

from troc.crypto.sign import MemberId, SigningKey
from troc.errors import CodecError, RefusedError, RemoteProtocolError
from troc.protocol.backend import MemoryBackend, Stored
from troc.protocol.entry import (
    Accept,
    AnyBody,
    CommunityId,
    Decline,
    Entry,
    EntryId,
    Genesis,
    Join,
    Offer,
    OfferClose,
    Reclaim,
    Ref,
    Transfer,
)
from troc.protocol.ledger import CertificateOutcome, Ledger, Outcome, Reason, Status
from troc.protocol.sync import (
    MAX_BATCH,
    MAX_FRAME,
    VERSIONS,
    Finals,
    Heads,
    SyncSession,
    certificate_for,
    decode_message,
    encode_message,
    view_digest,
)

__all__ = [
    "BASE_TIME_MS",
    "MemoryView",
    "Network",
    "PairResult",
    "Partition",
    "Report",
    "SimConfig",
    "SimNode",
    "SimulationError",
    "Simulator",
    "run",
    "sync_pair",
]

#: Virtual time starts here (2023-11-14), so timestamps look like real ones.
BASE_TIME_MS = 1_700_000_000_000


class SimulationError(AssertionError):
    """A simulated run broke an invariant. The message names the seed."""


# -- one node's store, seen by a sync session ---------------------------------


class MemoryView:
    """A :class:`~troc.protocol.sync.SyncView` over a ledger, for one community.

    ``clock`` gives the ``now_ms`` that ingestion is checked against.
    ``decoded`` may be shared by the views of one simulation: decoding and
    signature checking are pure functions of the bytes, so one decode per
    distinct wire is enough (it is most of the simulator's cost otherwise).
    Bytes that do not decode are never cached; the ledger words their rejection.
    """

    def __init__(
        self,
        ledger: Ledger,
        community: CommunityId,
        clock: Callable[[], int],
        decoded: dict[bytes, Entry] | None = None,
    ) -> None:
        self.ledger = ledger
        self.community = community
        self.clock = clock
        self._decoded: dict[bytes, Entry] = {} if decoded is None else decoded

    # -- SyncView ----------------------------------------------------------

    def heads(self, community: CommunityId) -> Heads:
        """(seq, id) of each author's first-seen branch head."""
        return {a: (h.seq, h.id) for a, h in self.ledger.backend.heads(community)}

    def entries_after(
        self, community: CommunityId, author: MemberId, after_seq: int, limit: int
    ) -> list[tuple[int, bytes]]:
        return [
            (s.entry.timestamp_ms, s.entry.wire)
            for s in self.chain(author, after_seq, limit, community=community)
        ]

    def wire_of(self, community: CommunityId, ref: Ref) -> bytes | None:
        stored = self.ledger.backend.entry(community, ref.author, ref.seq, ref.id)
        return None if stored is None else stored.entry.wire

    def forks(self, community: CommunityId) -> list[tuple[MemberId, int, bytes, bytes]]:
        backend = self.ledger.backend
        assert isinstance(backend, MemoryBackend)
        return [
            (author, seq, first, second)
            for (c, author, seq), (first, second) in sorted(backend.forks.items())
            if c == community
        ]

    def ingest_batch(self, wires: list[bytes]) -> list[Outcome]:
        return [self.ingest(w) for w in wires]

    def finals(self, community: CommunityId) -> Finals:
        """Per author with a final tip: its seq and the certificate of it."""
        backend = self.ledger.backend
        out: Finals = {}
        for author, head in backend.heads(community):
            if head.final_seq and head.final_id is not None:
                held = backend.certificate(community, author, head.final_seq)
                if held is not None and held[0] == head.final_id:
                    out[author] = (head.final_seq, held[1])
        return out

    def certificate_of(self, community: CommunityId, ref: Ref) -> bytes | None:
        return certificate_for(self.ledger, community, ref)

    def ingest_certificates(self, datas: list[bytes]) -> list[CertificateOutcome]:
        return [self.ledger.ingest_certificate(d, self.clock()) for d in datas]

    # -- helpers -----------------------------------------------------------

    def ingest(self, wire: bytes) -> Outcome:
        """Offer one entry to the ledger, as a node does for gossip and sync.

        Entries of another community (a genesis included) are refused: a
        session or topic is about one community, and a peer must not make
        this node follow others.
        """
        entry = self._decoded.get(wire)
        if entry is None:
            try:
                entry = Entry.decode(wire)
            except CodecError:
                return self.ledger.ingest(wire, self.clock())
            self._decoded[wire] = entry
        if entry.community != self.community:
            return Outcome(
                Status.REJECTED, entry, Reason.UNKNOWN_COMMUNITY, "not this view's community"
            )
        return self.ledger.ingest_entry(entry, self.clock())

    def chain(
        self,
        author: MemberId,
        after_seq: int = 0,
        limit: int | None = None,
        *,
        community: CommunityId | None = None,
    ) -> list[Stored]:
        """``author``'s entries on its first-seen branch with seq > ``after_seq``,
        oldest first, at most ``limit``."""
        c = self.community if community is None else community
        backend = self.ledger.backend
        head = backend.head(c, author)
        if head is None or head.seq <= after_seq:
            return []
        hi = head.seq if limit is None else min(head.seq, after_seq + limit)
        out: list[Stored] = []
        if head.frozen_at is None:
            # No fork known, so one entry per seq: walk up by seq.
            for seq in range(after_seq + 1, hi + 1):
                ids = backend.ids_at(c, author, seq)
                stored = backend.entry(c, author, seq, ids[0])
                assert stored is not None
                out.append(stored)
            return out
        # A forked log: follow prev links down from the first-seen head.
        seq, eid = head.seq, head.id
        while seq > after_seq:
            stored = backend.entry(c, author, seq, eid)
            assert stored is not None
            if seq <= hi:
                out.append(stored)
            if stored.entry.prev is None:
                break
            seq, eid = seq - 1, stored.entry.prev
        out.reverse()
        return out

    def holds(self, ref: Ref) -> bool:
        return self.ledger.backend.entry(self.community, ref.author, ref.seq, ref.id) is not None

    def digest(self) -> bytes:
        """The digest a sync session compares (:func:`troc.protocol.sync.view_digest`)."""
        return view_digest(self, self.community)

    def content_digest(self, *, counted: bool = False) -> bytes:
        """A fingerprint of every entry id held, on every branch: equal
        digests mean equal stores (waiting entries aside). With ``counted``,
        only the entries that count (below their author's fork point)."""
        h = hashlib.sha256(b"troc/sim/content")
        backend = self.ledger.backend
        for author, head in backend.heads(self.community):
            seq = 1
            # Every branch is contiguous from seq 1, so the first empty seq
            # past the head ends the log.
            while (not counted or head.counts(seq)) and (
                ids := backend.ids_at(self.community, author, seq)
            ):
                for eid in sorted(ids):
                    h.update(author + seq.to_bytes(8, "big") + eid)
                seq += 1
            assert counted or seq > head.seq
        return h.digest()

    def entries(self) -> Iterator[Entry]:
        """Every entry on every author's first-seen branch."""
        for author, _head in self.ledger.backend.heads(self.community):
            for stored in self.chain(author):
                yield stored.entry

    def balances(self) -> dict[MemberId, int]:
        return dict(self.ledger.balances(self.community))

    def in_flight(self) -> int:
        """Units debited by counted transfers and not (yet) credited back to
        anyone: neither accepted nor reclaimed. With balances it sums to 0."""
        backend = self.ledger.backend
        transfers: dict[EntryId, int] = {}
        settled: set[EntryId] = set()
        for author, head in backend.heads(self.community):
            for stored in self.chain(author):
                e = stored.entry
                if not head.counts(e.seq):
                    continue
                body = e.body
                if isinstance(body, Transfer):
                    transfers[e.id] = body.amount
                elif isinstance(body, Accept):
                    settled.add(body.transfer.id)
                elif isinstance(body, Reclaim):
                    d = body.decline
                    decline = backend.entry(self.community, d.author, d.seq, d.id)
                    assert decline is not None
                    assert isinstance(decline.entry.body, Decline)
                    settled.add(decline.entry.body.transfer.id)
        return sum(amount for eid, amount in transfers.items() if eid not in settled)


# -- a session between two views, in memory (h11's ConnectionPair) -------------


@dataclass(slots=True)
class PairResult:
    """What :func:`sync_pair` did: both sessions and every frame, in order
    (``True`` for a frame the initiator sent)."""

    initiator: SyncSession
    responder: SyncSession
    frames: list[tuple[bool, bytes]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.initiator.done and self.responder.done

    @property
    def bytes_exchanged(self) -> int:
        return sum(len(f) for _, f in self.frames)

    def kinds(self) -> list[str]:
        """The message types, in the order they were delivered."""
        return [str(decode_message(f)["t"]) for _, f in self.frames]

    @property
    def flights(self) -> int:
        """Runs of frames in one direction: with ``lockstep`` delivery, each
        is one one-way trip, so a session costs ``ceil(flights / 2)`` round
        trips of latency."""
        return sum(
            1 for i, (d, _f) in enumerate(self.frames) if i == 0 or d != self.frames[i - 1][0]
        )


def sync_pair(
    initiator: MemoryView,
    responder: MemoryView,
    community: CommunityId | None = None,
    *,
    cut_after: int | None = None,
    max_frames: int = 100_000,
    batch_entries: int = MAX_BATCH,
    batch_bytes: int = MAX_FRAME // 2,
    lockstep: bool = False,
    version: int = 2,
) -> PairResult:
    """Run one sync session between two views over a reliable in-memory stream.

    Frames are encoded and decoded with the real codec and delivered one at
    a time, alternating directions; with ``lockstep``, every frame in flight
    one way is delivered before any the other way (as over a link whose
    latency dwarfs the work: :attr:`PairResult.flights` then counts one-way
    trips). ``version`` is the sync protocol's (both sides speak it).
    ``cut_after`` stops delivery after that
    many frames (a dropped connection). Raises RemoteProtocolError if a side
    refuses a frame, SimulationError if a frame reaches a side that has
    finished, or past ``max_frames`` (a livelock).
    """
    c = initiator.community if community is None else community
    sizes = {"batch_entries": batch_entries, "batch_bytes": batch_bytes, "version": version}
    ini = SyncSession(initiator, c, initiator=True, **sizes)
    res = SyncSession(responder, c, initiator=False, **sizes)
    result = PairResult(ini, res)
    # queues[0] flows to the responder, queues[1] to the initiator.
    queues: tuple[deque[bytes], deque[bytes]] = (deque(), deque())
    queues[0].extend(encode_message(m) for m in ini.start())
    turn = 0
    while queues[0] or queues[1]:
        if not queues[turn]:
            turn = 1 - turn
        data = queues[turn].popleft()
        result.frames.append((turn == 0, data))
        if cut_after is not None and len(result.frames) >= cut_after:
            return result
        if len(result.frames) > max_frames:
            raise SimulationError(f"a sync session went past {max_frames} frames")
        side = res if turn == 0 else ini
        if side.done:
            raise SimulationError(f"a frame reached a finished session: {data[:40]!r}")
        for out in side.receive(decode_message(data)):
            queues[1 - turn].append(encode_message(out))
        if not lockstep or not queues[turn]:
            turn = 1 - turn
    return result


# -- configuration and report ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Partition:
    """From ``start`` to ``end`` (fractions of the run) the nodes are split
    into ``groups`` random non-empty groups."""

    start: float
    end: float
    groups: int = 2


@dataclass(frozen=True, slots=True)
class SimConfig:
    """The shape of one simulated run. Probabilities are per message."""

    nodes: int = 30
    ops: int = 200  # own entries attempted after the joins
    op_gap_ms: int = 100  # mean virtual time between two own entries (any node)
    credit_limit: int = 100
    fanout: int = 3
    gossip_hops: int = 2
    gossip_delay_ms: int = 500
    loss: float = 0.05  # gossip frames and session frames alike
    dup: float = 0.05  # gossip only: streams never duplicate
    interrupt: float = 0.005  # a session's stream is cut at this frame
    link_latency_ms: int = 40
    sync_interval_ms: int = 3_000
    partitions: tuple[Partition, ...] = ()
    crashes: tuple[float, ...] = ()  # when (fraction of the run) a random node crashes
    crash_down_ms: int = 2_000  # mean downtime
    crash_loses_queue: bool = True
    fork_at: float | None = None  # when (fraction of the run) a member's twin appears
    twin_ops: int = 5  # entries the twin attempts after its first
    max_heal_rounds: int | None = None  # default: grows with log2(nodes)
    #: Nodes (the last ones, twin aside) that speak only ``/troc/sync/2``; the
    #: others speak 3 and 2, and a session uses the newest both speak.
    v2_nodes: int = 0

    @property
    def duration_ms(self) -> int:
        return max(1_000, self.ops * self.op_gap_ms)


@dataclass(slots=True)
class Report:
    """What a run did. Two runs of one seed and config give equal reports."""

    seed: int
    nodes: int
    appended: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    skipped_crashed: int = 0
    gossip_sent: int = 0
    gossip_lost: int = 0
    gossip_duplicated: int = 0
    gossip_outcomes: dict[str, int] = field(default_factory=dict)
    sessions_started: int = 0
    sessions_done: int = 0
    sessions_same: int = 0
    sessions_aborted: dict[str, int] = field(default_factory=dict)
    sync_frames: int = 0
    sync_bytes: int = 0
    sync_entries_sent: int = 0
    crashes: int = 0
    partitions: int = 0
    virtual_ms: int = 0
    heal_rounds: int | None = None
    heal_sessions: int = 0
    heal_bytes: int = 0
    entries: int = 0  # entries each node holds at the end
    digest: bytes | None = None  # the common digest at the end
    forker: int | None = None  # the node whose member forked (its twin is the last node)
    fork_seq: int | None = None  # the seq both signed an entry at
    gossip_rejected: int = 0  # the forker's, refused as bad_prev (not parked) by a ledger

    @property
    def acknowledged(self) -> int:
        return sum(self.appended.values())


def _bump(counter: dict[str, int], key: str, n: int = 1) -> None:
    counter[key] = counter.get(key, 0) + n


# -- nodes and network ------------------------------------------------------------


@dataclass(eq=False, slots=True)
class SimNode:
    """One member's node. Its ledger is its durable store: a crash keeps it."""

    index: int
    key: SigningKey
    view: MemoryView
    crashed: bool = False
    #: Bumped at each crash: gossip queued for the node before it is then lost.
    epoch: int = 0
    own: list[Ref] = field(default_factory=list)
    # Derived from the node's own (durable) log, so they survive crashes too.
    answered: set[EntryId] = field(default_factory=set)
    reclaimed: set[EntryId] = field(default_factory=set)
    open_offers: list[Ref] = field(default_factory=list)

    @property
    def member(self) -> MemberId:
        return self.key.public

    @property
    def ledger(self) -> Ledger:
        return self.view.ledger

    @property
    def joined(self) -> bool:
        return bool(self.own)


class Network:
    """The virtual clock, the event queue and the fault model.

    Events are callbacks run at a virtual time; ties run in scheduling order.
    """

    def __init__(self, rng: random.Random, config: SimConfig) -> None:
        self.rng = rng
        self.config = config
        self.now_ms = BASE_TIME_MS
        self._queue: list[tuple[int, int, Callable[[], None]]] = []
        self._tie = 0
        #: Group of each node while partitioned, else None.
        self.groups: list[int] | None = None
        self.faults = True

    def at(self, when_ms: int, action: Callable[[], None]) -> None:
        self._tie += 1
        heapq.heappush(self._queue, (max(when_ms, self.now_ms), self._tie, action))

    def after(self, delay_ms: int, action: Callable[[], None]) -> None:
        self.at(self.now_ms + delay_ms, action)

    def step(self, until_ms: int) -> bool:
        """Run the next event due by ``until_ms``; False if there is none."""
        if not self._queue or self._queue[0][0] > until_ms:
            return False
        when, _tie, action = heapq.heappop(self._queue)
        self.now_ms = when
        action()
        return True

    def clear(self) -> int:
        """Drop every pending event (messages in flight are lost)."""
        n = len(self._queue)
        self._queue.clear()
        return n

    def partition(self, n_nodes: int, groups: int) -> None:
        order = list(range(n_nodes))
        self.rng.shuffle(order)
        groups = max(1, min(groups, n_nodes))
        cuts = sorted(self.rng.sample(range(1, n_nodes), groups - 1))
        self.groups = [0] * n_nodes
        for g, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, n_nodes], strict=True)):
            for i in order[lo:hi]:
                self.groups[i] = g

    def separated(self, a: int, b: int) -> bool:
        return self.groups is not None and self.groups[a] != self.groups[b]

    def lost(self, src: int, dst: int) -> bool:
        """Whether a message from ``src`` to ``dst`` sent now is lost."""
        if not self.faults:
            return False
        return self.separated(src, dst) or self.rng.random() < self.config.loss


@dataclass(eq=False, slots=True)
class _Link:
    """A sync session in flight between two nodes: sides[0] initiated it."""

    id: int
    ends: tuple[int, int]
    sides: tuple[SyncSession, SyncSession]
    arrival: list[int]  # the last scheduled arrival at each side (streams are FIFO)
    in_flight: int = 0
    alive: bool = True


# -- the simulator ----------------------------------------------------------------


class Simulator:
    """N nodes in one community on a :class:`Network`, all driven by ``seed``."""

    def __init__(self, seed: int, config: SimConfig | None = None) -> None:
        self.seed = seed
        self.config = config = SimConfig() if config is None else config
        if config.nodes < 2:
            raise ValueError("a simulation needs at least two nodes")
        self.rng = random.Random(seed)
        self.net = Network(self.rng, config)
        self.report = Report(seed=seed, nodes=config.nodes)
        self._decoded: dict[bytes, Entry] = {}
        keys = [SigningKey(self.rng.randbytes(32)) for _ in range(config.nodes)]
        genesis = Entry.create(
            keys[0],
            community=None,
            seq=0,
            prev=None,
            timestamp_ms=BASE_TIME_MS,
            body=Genesis(name="sim", unit="hour", credit_limit=config.credit_limit),
        )
        self.genesis = genesis
        self.community = CommunityId(genesis.id)
        self.nodes: list[SimNode] = []
        for i, key in enumerate(keys):
            ledger = Ledger(MemoryBackend())
            if not ledger.ingest(genesis.wire, self.net.now_ms).ok:  # pragma: no cover
                raise SimulationError("the genesis was refused")
            view = MemoryView(ledger, self.community, self._now, self._decoded)
            self.nodes.append(SimNode(i, key, view))
        self.members = [k.public for k in keys]
        #: The node whose member forks (``config.fork_at``), once its twin exists.
        self.forker: SimNode | None = None
        self.fork_seq: int | None = None
        # What was appended, for choosing the next own entries.
        self._transfers_to: dict[MemberId, list[Entry]] = {m: [] for m in self.members}
        self._declines_of: dict[MemberId, list[Entry]] = {m: [] for m in self.members}
        self._offers: list[Entry] = []
        #: Every entry acknowledged (stored) by its author's node.
        self.acknowledged: list[Ref] = []
        self._links: dict[int, _Link] = {}
        self._next_link = 0
        self._ran = False

    def _now(self) -> int:
        return self.net.now_ms

    def fail(self, what: str) -> SimulationError:
        return SimulationError(
            f"seed={self.seed}: {what} (replay: Simulator({self.seed}, {self.config!r}))"
        )

    # -- the run ------------------------------------------------------------

    def run(self) -> Report:
        """Run the faulty phase: joins, own entries, gossip, syncs, crashes,
        partitions, for ``config.duration_ms`` of virtual time."""
        if self._ran:
            raise RuntimeError("a Simulator runs once")
        self._ran = True
        cfg, rng, net = self.config, self.rng, self.net
        start, duration = net.now_ms, cfg.duration_ms
        end = start + duration
        join_window = max(100, duration // 10)
        for node in self.nodes:
            net.at(start + rng.randrange(join_window), partial(self._append, node))
        for _ in range(cfg.ops):
            node = self.nodes[rng.randrange(cfg.nodes)]
            net.at(start + rng.randrange(duration), partial(self._append, node))
        for node in self.nodes:
            net.at(start + rng.randrange(cfg.sync_interval_ms), partial(self._sync_tick, node))
        for p in cfg.partitions:
            net.at(start + int(p.start * duration), partial(self._partition, p.groups))
            net.at(start + int(p.end * duration), self._unpartition)
        for when in cfg.crashes:
            net.at(start + int(when * duration), self._crash_random)
        if cfg.fork_at is not None:
            net.at(start + int(cfg.fork_at * duration), partial(self._spawn_twin, end))
        while net.step(end):
            pass
        self.report.virtual_ms = net.now_ms - start
        return self.report

    # -- own entries --------------------------------------------------------

    def _append(self, node: SimNode) -> None:
        """``node`` appends an entry of its choice (an event)."""
        self._sign(node)

    def _sign(self, node: SimNode, body: AnyBody | None = None) -> Entry | None:
        """``node`` appends an entry (``body``, else a random one); a given
        body is appended even on a crashed node (signed offline), unsent.
        Returns the entry, or None if it was refused or not attempted."""
        if node.crashed and body is None:
            self.report.skipped_crashed += 1
            return None
        if body is None:
            body = self._choose_body(node)
        now = self.net.now_ms
        try:
            entry = node.ledger.prepare(node.key, self.community, body, now)
        except RefusedError as exc:
            _bump(self.report.refused, exc.reason)
            return None
        # Stored before it is sent: from here on it is acknowledged.
        outcome = node.ledger.ingest_entry(entry, now)
        if outcome.status is not Status.ACCEPTED:
            raise self.fail(f"node {node.index} refused its own entry: {outcome}")
        self._record(node, entry)
        if not node.crashed:
            self._gossip(node.index, entry.wire, self.config.gossip_hops)
        return entry

    def _choose_body(self, node: SimNode) -> AnyBody:
        if not node.joined:
            return Join(name=f"member {node.index}")
        rng, view = self.rng, node.view
        r = rng.random()
        if r < 0.40:
            pending = [
                t
                for t in self._transfers_to[node.member]
                if t.id not in node.answered and view.holds(t.ref)
            ]
            if pending:
                t = rng.choice(pending)
                if rng.random() < 0.2:
                    return Decline(transfer=t.ref, reason="not now")
                return Accept(transfer=t.ref)
        elif r < 0.50:
            declined = [
                d
                for d in self._declines_of[node.member]
                if isinstance(d.body, Decline)
                and d.body.transfer.id not in node.reclaimed
                and view.holds(d.ref)
            ]
            if declined:
                return Reclaim(decline=rng.choice(declined).ref)
        elif r < 0.60:
            if node.open_offers and rng.random() < 0.3:
                return OfferClose(offer=node.open_offers.pop(rng.randrange(len(node.open_offers))))
            return Offer(
                side=rng.choice(("offer", "want")),
                title=f"thing {rng.randrange(1000)}",
                tags=("sim",),
                price=rng.randint(1, 20),
            )
        to = self.members[rng.randrange(len(self.members) - 1)]
        if to == node.member:
            to = self.members[-1]
        offer = None
        if rng.random() < 0.3:
            theirs = [o.ref for o in self._offers if o.author == to and view.holds(o.ref)]
            if theirs:
                offer = rng.choice(theirs)
        return Transfer(to=to, amount=rng.randint(1, 30), memo="sim", offer=offer)

    def _record(self, node: SimNode, entry: Entry) -> None:
        node.own.append(entry.ref)
        self.acknowledged.append(entry.ref)
        _bump(self.report.appended, entry.kind.value)
        body = entry.body
        if isinstance(body, Transfer):
            self._transfers_to[body.to].append(entry)
        elif isinstance(body, Accept):
            node.answered.add(body.transfer.id)
        elif isinstance(body, Decline):
            node.answered.add(body.transfer.id)
            self._declines_of[body.transfer.author].append(entry)
        elif isinstance(body, Reclaim):
            d = node.ledger.backend.entry(
                self.community, body.decline.author, body.decline.seq, body.decline.id
            )
            assert d is not None
            assert isinstance(d.entry.body, Decline)
            node.reclaimed.add(d.entry.body.transfer.id)
        elif isinstance(body, Offer):
            self._offers.append(entry)
            node.open_offers.append(entry.ref)

    def _spawn_twin(self, end_ms: int) -> None:
        """A copy of a random member's store comes up as a second node with
        its key; both sign an entry at the same seq, then go on."""
        rng, net = self.rng, self.net
        forker = self.nodes[rng.randrange(self.config.nodes)]
        now = net.now_ms
        ledger = Ledger(MemoryBackend())
        ledger.ingest(self.genesis.wire, now)
        held = sorted(forker.view.entries(), key=lambda e: (e.timestamp_ms, e.author, e.seq))
        for entry in held:  # parked ones are released as their dependencies arrive
            ledger.ingest_entry(entry, now)
        view = MemoryView(ledger, self.community, self._now, self._decoded)
        if view.content_digest() != forker.view.content_digest():  # pragma: no cover
            raise self.fail("the twin's copy of the store differs")
        twin = SimNode(
            len(self.nodes),
            forker.key,
            view,
            own=list(forker.own),
            answered=set(forker.answered),
            reclaimed=set(forker.reclaimed),
            open_offers=list(forker.open_offers),
        )
        self.nodes.append(twin)
        if net.groups is not None:  # it comes up somewhere in the partition
            net.groups.append(rng.choice(net.groups))
        self.forker = forker
        self.fork_seq = len(forker.own) + 1
        self.report.forker = forker.index
        self.report.fork_seq = self.fork_seq
        # Each signs an entry at the same seq: a payment if it can (spending
        # the same credit twice), else an offer; a join if not joined yet.
        for node, branch in ((forker, "a"), (twin, "b")):
            if not node.joined:
                name = f"member {forker.index}" + (" (twin)" if node is twin else "")
                self._sign(node, Join(name=name))
            # Distinct memos: the two would otherwise sign the very same entry
            # (same payee, amount and virtual time) one time in ~60, and no
            # fork would exist (found by bench/sim.py, schedule 1:3395).
            elif self._sign(node, self._payment(node, memo=f"branch {branch}")) is None:
                self._sign(node, Offer(side="offer", title=f"branch {branch}", tags=("sim",)))
        for _ in range(self.config.twin_ops):
            net.at(now + 1 + rng.randrange(max(1, end_ms - now)), partial(self._twin_pays, twin))
        net.after(rng.randrange(self.config.sync_interval_ms), partial(self._sync_tick, twin))

    def _payment(self, node: SimNode, memo: str = "again") -> Transfer:
        to = self.members[self.rng.randrange(len(self.members) - 1)]
        if to == node.member:
            to = self.members[-1]
        return Transfer(to=to, amount=self.rng.randint(1, 30), memo=memo)

    def _twin_pays(self, twin: SimNode) -> None:
        """The twin spends again (it joined, or signed, when it appeared)."""
        if twin.crashed:
            self.report.skipped_crashed += 1
        else:
            self._sign(twin, self._payment(twin))

    # -- gossip -------------------------------------------------------------

    def _gossip(self, src: int, wire: bytes, hops: int) -> None:
        cfg, rng, net = self.config, self.rng, self.net
        peers = [i for i in range(len(self.nodes)) if i != src]
        for dst in rng.sample(peers, min(cfg.fanout, len(peers))):
            copies = 1
            if net.faults and rng.random() < cfg.dup:
                copies = 2
                self.report.gossip_duplicated += 1
            for _ in range(copies):
                self.report.gossip_sent += 1
                if net.lost(src, dst):
                    self.report.gossip_lost += 1
                    continue
                epoch = self.nodes[dst].epoch
                net.after(
                    rng.randint(1, cfg.gossip_delay_ms),
                    partial(self._gossip_arrives, dst, wire, hops - 1, epoch),
                )

    def _gossip_arrives(self, dst: int, wire: bytes, hops: int, epoch: int) -> None:
        node = self.nodes[dst]
        if node.crashed or (self.config.crash_loses_queue and node.epoch != epoch):
            self.report.gossip_lost += 1
            return
        outcome = node.view.ingest(wire)
        _bump(self.report.gossip_outcomes, outcome.status.value)
        if outcome.status is Status.REJECTED:
            # A ledger may refuse, rather than park, an entry of a forked log
            # whose prev is on the branch it lacks.
            e = outcome.entry
            forker = None if self.forker is None else self.forker.member
            if e is None or e.author != forker or outcome.reason is not Reason.BAD_PREV:
                raise self.fail(f"node {dst} rejected gossip from honest nodes: {outcome}")
            self.report.gossip_rejected += 1
        if outcome.status is Status.ACCEPTED and hops > 0:
            self._gossip(dst, wire, hops)

    # -- sync sessions ------------------------------------------------------

    def _sync_tick(self, node: SimNode) -> None:
        cfg, rng = self.config, self.rng
        interval = cfg.sync_interval_ms
        self.net.after(interval // 2 + rng.randrange(interval), lambda: self._sync_tick(node))
        if node.crashed:
            return
        peer = rng.randrange(len(self.nodes) - 1)
        peer += peer >= node.index
        self._start_session(node.index, peer)

    def _version(self, index: int) -> int:
        """The newest sync version node ``index`` speaks (a twin: its member's)."""
        n = self.config.nodes
        member = index if index < n else (self.forker.index if self.forker else index)
        return 2 if member >= n - self.config.v2_nodes else max(VERSIONS)

    def _start_session(self, a: int, b: int) -> None:
        c = self.community
        version = min(self._version(a), self._version(b))
        sides = (
            SyncSession(self.nodes[a].view, c, initiator=True, version=version),
            SyncSession(self.nodes[b].view, c, initiator=False, version=version),
        )
        self._next_link += 1
        link = _Link(self._next_link, (a, b), sides, [0, 0])
        self._links[link.id] = link
        self.report.sessions_started += 1
        for msg in sides[0].start():
            self._send(link, 0, msg)

    def _send(self, link: _Link, side: int, msg: dict[str, object]) -> None:
        if not link.alive:
            return
        data = encode_message(msg)
        self.report.sync_frames += 1
        self.report.sync_bytes += len(data)
        if msg.get("t") == "entries" and isinstance(msg.get("e"), list):
            self.report.sync_entries_sent += len(msg["e"])  # type: ignore[arg-type]
        dst = 1 - side
        if self.net.lost(link.ends[side], link.ends[dst]):
            self._abort(link, "lost")
            return
        if self.net.faults and self.rng.random() < self.config.interrupt:
            self._abort(link, "interrupted")
            return
        # A stream delivers in order: never before the frame sent ahead of it.
        when = max(
            self.net.now_ms + self.rng.randint(1, self.config.link_latency_ms), link.arrival[dst]
        )
        link.arrival[dst] = when
        link.in_flight += 1
        self.net.at(when, lambda: self._arrive(link, dst, data))

    def _arrive(self, link: _Link, side: int, data: bytes) -> None:
        link.in_flight -= 1
        if not link.alive:
            return
        node = self.nodes[link.ends[side]]
        if node.crashed:  # pragma: no cover - a crash aborts the node's links at once
            self._abort(link, "crash")
            return
        session = link.sides[side]
        if session.done:
            raise self.fail(f"session {link.id}: a frame reached a finished side")
        try:
            out = list(session.receive(decode_message(data)))
        except RemoteProtocolError as exc:
            raise self.fail(f"session {link.id}: honest nodes broke the protocol: {exc}") from exc
        if session.misbehaviour is not None:
            raise self.fail(f"session {link.id}: honest peer flagged: {session.misbehaviour}")
        for msg in out:
            self._send(link, side, msg)
        if not link.alive:
            return
        if link.sides[0].done and link.sides[1].done:
            link.alive = False
            del self._links[link.id]
            self.report.sessions_done += 1
            self.report.sessions_same += link.sides[0].stats.same
        elif link.in_flight == 0:
            raise self.fail(f"session {link.id} stalled: nothing in flight and not finished")

    def _abort(self, link: _Link, why: str) -> None:
        """Both sides drop the session, as their timeouts would."""
        if link.alive:
            link.alive = False
            del self._links[link.id]
            _bump(self.report.sessions_aborted, why)

    # -- partitions and crashes ---------------------------------------------

    def _partition(self, groups: int) -> None:
        self.net.partition(len(self.nodes), groups)
        self.report.partitions += 1

    def _unpartition(self) -> None:
        self.net.groups = None

    def _crash_random(self) -> None:
        up = [n for n in self.nodes if not n.crashed]
        if not up:  # pragma: no cover - crashes are far fewer than nodes
            return
        node = self.rng.choice(up)
        node.crashed = True
        node.epoch += 1
        self.report.crashes += 1
        for link in [lk for lk in self._links.values() if node.index in lk.ends]:
            self._abort(link, "crash")
        down = self.config.crash_down_ms
        self.net.after(down // 2 + self.rng.randrange(down), lambda: self._restart(node))

    def _restart(self, node: SimNode) -> None:
        node.crashed = False

    # -- healing ------------------------------------------------------------

    def default_heal_rounds(self) -> int:
        return 8 + 4 * math.ceil(math.log2(self.config.nodes))

    def heal_and_converge(self, max_rounds: int | None = None) -> int:
        """Lift every fault, then run rounds of random pairwise syncs (each
        node initiates one per round) until every node has the same digest.

        Returns the number of rounds it took. Raises SimulationError after
        ``max_rounds`` rounds (default ``config.max_heal_rounds``, else
        :meth:`default_heal_rounds`).
        """
        net, rng, n = self.net, self.rng, len(self.nodes)
        net.clear()
        for link in list(self._links.values()):
            self._abort(link, "heal")
        net.groups = None
        net.faults = False
        for node in self.nodes:
            node.crashed = False
        bound = max_rounds
        if bound is None:
            bound = self.config.max_heal_rounds or self.default_heal_rounds()
        for rnd in range(bound + 1):
            digests = {node.view.digest() for node in self.nodes}
            if len(digests) == 1:
                self.report.heal_rounds = rnd
                self.report.digest = digests.pop()
                self.report.entries = sum(1 for _ in self.nodes[0].view.entries())
                return rnd
            if rnd == bound:
                break
            net.now_ms += 1_000
            order = list(range(n))
            rng.shuffle(order)
            for a in order:
                b = rng.randrange(n - 1)
                b += b >= a
                version = min(self._version(a), self._version(b))
                result = sync_pair(
                    self.nodes[a].view, self.nodes[b].view, self.community, version=version
                )
                self.report.heal_sessions += 1
                self.report.heal_bytes += result.bytes_exchanged
                if not result.done:
                    raise self.fail(f"heal round {rnd}: session {a}->{b} did not finish")
                for s in (result.initiator, result.responder):
                    if s.misbehaviour is not None:
                        raise self.fail(f"heal round {rnd}: honest peer flagged: {s.misbehaviour}")
        raise self.fail(
            f"no convergence after {bound} rounds of pairwise sync: "
            f"{len(digests)} distinct digests across {n} nodes"
        )

    # -- invariants ---------------------------------------------------------

    def check(self) -> None:
        """After :meth:`heal_and_converge`: every node holds the same entries
        that count and computes the same balances, balances plus in-flight
        sum to 0, no acknowledged entry that counts is lost. Without a fork:
        every node holds the same entries, nothing waits, no fork is known.
        With one: every node knows it and freezes the forker at its seq, and
        only the forker's entries beyond it (which nobody needs) may wait.
        Raises SimulationError."""
        c = self.community
        forker = None if self.forker is None else self.forker.member
        fork_seq = self.fork_seq

        def counts(author: MemberId, seq: int) -> bool:
            return author != forker or fork_seq is None or seq < fork_seq

        first = self.nodes[0].view
        content, counted = first.content_digest(), first.content_digest(counted=True)
        balances = first.balances()
        for node in self.nodes:
            view = node.view
            if view.content_digest(counted=True) != counted:
                raise self.fail(f"node {node.index} holds other counted entries than node 0")
            if forker is None and view.content_digest() != content:
                raise self.fail(f"node {node.index} holds other entries than node 0")
            if view.balances() != balances:
                raise self.fail(f"node {node.index} computes other balances than node 0")
            backend = node.ledger.backend
            assert isinstance(backend, MemoryBackend)
            points = sorted((a, seq) for (cc, a, seq) in backend.forks if cc == c)
            if forker is None:
                if points:
                    raise self.fail(f"node {node.index} saw a fork among honest nodes")
                if backend.waiting_count():
                    raise self.fail(
                        f"node {node.index} still has {backend.waiting_count()} waiting"
                    )
            else:
                head = backend.head(c, forker)
                if (
                    {a for a, _seq in points} != {forker}
                    or min(seq for _a, seq in points) != fork_seq
                    or head is None
                    or head.frozen_at != fork_seq
                ):
                    raise self.fail(
                        f"node {node.index} knows forks at {[s for _a, s in points]}, "
                        f"frozen at {head and head.frozen_at}, not the fork at {fork_seq}"
                    )
                for wire in backend.waiting_wires():
                    e = Entry.decode(wire, check_signature=False)
                    if counts(e.author, e.seq):
                        raise self.fail(f"node {node.index} still has {e.ref} waiting")
            lost = [
                r
                for r in self.acknowledged
                if counts(r.author, r.seq) and backend.entry(c, r.author, r.seq, r.id) is None
            ]
            if lost:
                raise self.fail(f"node {node.index} lacks {len(lost)} acknowledged entries")
        total = sum(balances.values()) + first.in_flight()
        if total != 0:
            raise self.fail(f"balances plus in-flight sum to {total}, not 0")


def run(seed: int, config: SimConfig | None = None, *, heal: bool = True) -> Report:
    """Simulate one run; with ``heal``, converge and check the invariants.

    Returns the report; raises SimulationError (naming the seed) if the nodes
    do not converge or an invariant breaks.
    """
    sim = Simulator(seed, config)
    sim.run()
    if heal:
        sim.heal_and_converge()
        sim.check()
    return sim.report
