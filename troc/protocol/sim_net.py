"""The simulator's world (:mod:`troc.protocol.sim`): what a run is told
(:class:`SimConfig`, :class:`Partition`), what it reports (:class:`Report`),
its nodes (:class:`SimNode`) and the seeded virtual :class:`Network` that
decides when each message arrives, and whether it does. Pure: no I/O.
"""

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from troc.crypto.sign import MemberId, SigningKey
from troc.protocol.entry import (
    EntryId,
    Ref,
)
from troc.protocol.ledger import Ledger
from troc.protocol.sync import (
    SyncSession,
)
from troc.protocol.sync_pair import MemoryView

__all__ = ["BASE_TIME_MS", "Network", "Partition", "Report", "SimConfig", "SimNode"]

#: Virtual time starts here (2023-11-14), so timestamps look like real ones.
BASE_TIME_MS = 1_700_000_000_000

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
