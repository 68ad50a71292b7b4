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

The parts: :mod:`troc.protocol.sync_pair` (a node's view and one session
between two views), :mod:`troc.protocol.sim_net` (configuration, report,
nodes and the virtual network) and, here, the :class:`Simulator` that
drives them; this module re-exports the names of both.
"""

from __future__ import annotations

import math
import random
from functools import partial

from troc.crypto.sign import MemberId, SigningKey
from troc.errors import RefusedError, RemoteProtocolError
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import (
    Accept,
    AnyBody,
    CommunityId,
    Decline,
    Entry,
    Genesis,
    Join,
    Offer,
    OfferClose,
    Reclaim,
    Ref,
    Transfer,
)
from troc.protocol.ledger import Ledger, Reason, Status
from troc.protocol.sim_net import (
    BASE_TIME_MS,
    Network,
    Partition,
    Report,
    SimConfig,
    SimNode,
    _bump,
    _Link,
)
from troc.protocol.sync import SyncSession
from troc.protocol.sync_pair import MemoryView, PairResult, SimulationError, sync_pair
from troc.protocol.sync_wire import VERSIONS, decode_message, encode_message

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
