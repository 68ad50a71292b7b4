"""What the ledger needs from storage, and an in-memory implementation.

The ledger's rules (:mod:`troc.protocol.ledger`) are pure: they read and
write through this narrow interface and never touch a file or a socket. The
node's SQLite store implements it for real; :class:`MemoryBackend` implements
it with dicts for property tests and the many-node simulator. Both must give
the same answers, which the test suite checks.

A backend stores, per community:

* the genesis entry;
* every accepted entry with the log state after it (nominal balance and
  credit limit): :class:`Stored`; several entries may share an
  (author, seq) once the author has forked;
* one :class:`Head` per author (its first-seen branch, and what was frozen);
* :class:`RefRow` s: which entry answers, closes or reclaims which other one,
  so "accepted before?" and "who credited a frozen transfer?" are lookups;
* fork proofs, and entries waiting for a missing dependency: bounded by
  :class:`WaitLimits` (two pools, per author, per peer, a lifetime), so
  entries nobody can complete never crowd out those that will be;
* in a witnessed community, each log's *final chain*: the (seq, id) of every
  entry at or below its final tip on the tip's chain, written when the tip
  moves (in the certificate's or the entry's transaction), so "is this entry
  final?" is one lookup, not a walk back from the tip (a forked log may hold
  thousands of entries on several branches above its fork point).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from troc.crypto.sign import MemberId
from troc.protocol._frozen import fast_init
from troc.protocol.entry import CommunityId, Entry, EntryId, Kind, Ref, names_no_expiry

__all__ = [
    "Backend",
    "Head",
    "MemoryBackend",
    "Parking",
    "RefRow",
    "Stored",
    "WaitKey",
    "WaitLimits",
    "final_key",
    "parking_time",
    "room_to_park",
]


@fast_init
@dataclass(frozen=True, slots=True)
class Stored:
    """An accepted entry and its author's log state right after it."""

    entry: Entry
    balance: int  # nominal: every entry of the log counted
    limit: int  # credit limit: the balance may not go below -limit


@fast_init
@dataclass(frozen=True, slots=True)
class Head:
    """An author's log at a glance.

    ``seq``/``id``/``balance``/``limit`` follow the first-seen branch. Once a
    fork is known at ``frozen_at``, only entries below it count: the counted
    balance is then ``cut_balance`` (the nominal balance at seq
    ``frozen_at - 1``). ``frozen_credit`` sums credits in the counted part of
    this log that came from transfers in someone's frozen part: they never
    count.

    In a witnessed community (docs/witness.md §6.1) ``final_seq`` is set (0
    before any certified entry): ``final_seq``/``final_id`` is the log's
    *final tip*, the highest entry held with a certificate, and
    ``final_balance`` the nominal balance after it. There the counted
    balance is the final balance, and the fork fields change nothing: the
    certified entries of a log lie on one chain.
    """

    seq: int
    id: EntryId
    balance: int
    limit: int
    frozen_at: int | None = None
    cut_balance: int = 0
    frozen_credit: int = 0
    final_seq: int | None = None
    final_id: EntryId | None = None
    final_balance: int = 0
    #: Optimistic communities (docs/protocol.md §4.11): the amounts of this
    #: log's counted take-backs whose transfer its payee's counted accept
    #: took after all. The accept wins: they do not count.
    undone: int = 0

    @property
    def witnessed(self) -> bool:
        return self.final_seq is not None

    def counts(self, seq: int) -> bool:
        """True if this log's entry at ``seq`` counts (is below any fork)."""
        return self.frozen_at is None or seq < self.frozen_at

    @property
    def counted_balance(self) -> int:
        """The balance everyone agrees on: frozen parts and credits from them
        excluded; in a witnessed community, the final balance."""
        if self.final_seq is not None:
            return self.final_balance
        base = self.balance if self.frozen_at is None else self.cut_balance
        return base - self.frozen_credit - self.undone


@fast_init
@dataclass(frozen=True, slots=True)
class RefRow:
    """Entry (by_author, by_seq, by_id) of ``kind`` points at ``target``.

    For accept, decline and take_back the target is the transfer; for a
    transfer that pays a request, the request; for a refusal, the request;
    for reclaim, the transfer that was declined (so one transfer is reclaimed at most once
    whichever decline names it); for offer_close, the offer; for a transfer
    that pays for an offer, nothing is recorded. ``amount`` is the transfer's
    amount (0 for offer_close).
    """

    kind: Kind
    by_author: MemberId
    by_seq: int
    by_id: EntryId
    target_author: MemberId
    target_seq: int
    target_id: EntryId
    amount: int


#: A missing entry that others wait for: (community, author, seq, id). A
#: *negative* seq means "wait until the entry at -seq is final" (witnessed
#: communities: an accept waits for its transfer's certificate); see
#: :func:`final_key`.
WaitKey = tuple[CommunityId, MemberId, int, EntryId]


def final_key(community: CommunityId, author: MemberId, seq: int, eid: EntryId) -> WaitKey:
    """The waiting key of "entry (author, seq, eid) has become final"."""
    return (community, author, -seq, eid)


@dataclass(frozen=True, slots=True)
class WaitLimits:
    """A node's bounds on its waiting set (docs/protocol.md §4.3).

    Entries of authors whose join the node holds (``members``) and of
    authors it does not know (``strangers``) are parked in two pools, so
    that strangers, who cost nothing to make, never crowd out members. A
    full pool drops its oldest entry to take a new one; an author or a peer
    (the one that delivered the entry) with ``per_author`` / ``per_peer``
    entries parked gets no more parked (``waiting_full``). A parked entry is
    dropped ``lifetime_ms`` after it was parked, by the node's clock.
    Dropping one never changes a verdict: it is only waiting again, for
    whoever offers it next (sync does).
    """

    members: int = 10_000
    strangers: int = 1_000
    per_author: int = 1_000
    per_peer: int = 5_000
    lifetime_ms: int = 60 * 60 * 1000


@dataclass(frozen=True, slots=True)
class Parking:
    """Whose entry is parked, for :class:`WaitLimits`: its author, whether
    the author's join is held (``member``), the peer that delivered it
    (``source``, None if not known or local), and the node's clock."""

    community: CommunityId
    author: MemberId
    member: bool
    source: str | None
    now_ms: int


def parking_time(limits: WaitLimits, now_ms: int, newest_ms: int | None) -> tuple[int, int]:
    """When an entry is parked, and what was parked too long before it.

    Returns ``(at, cutoff)``: ``at`` is ``now_ms``, or the newest parking time
    if the clock went back (parking times never decrease, so each pool stays
    oldest first); entries parked before ``cutoff`` have outlived
    ``limits.lifetime_ms`` and go before anything else is decided.
    """
    at = now_ms if newest_ms is None else max(now_ms, newest_ms)
    return at, at - limits.lifetime_ms


def room_to_park(
    limits: WaitLimits, parking: Parking, *, by_author: int, by_peer: int, in_pool: int
) -> int | None:
    """The waiting set's decision for one more entry (both backends call it).

    ``by_author`` entries of the same log, ``by_peer`` from the same source
    (ignored when ``parking.source`` is None) and ``in_pool`` in its pool
    (members' or strangers', by ``parking.member``) are parked already, once
    the expired ones are gone (:func:`parking_time`).

    Returns None if the entry is refused (its author or peer has its share,
    or its pool has no room at all), else how many of the pool's oldest
    entries must leave first to make room (0 if there is room).
    """
    if by_author >= limits.per_author:
        return None
    if parking.source is not None and by_peer >= limits.per_peer:
        return None
    cap = limits.members if parking.member else limits.strangers
    if cap <= 0:
        return None
    return max(0, in_pool - cap + 1)


class Backend(Protocol):
    """Storage for one node's ledgers. Reads return None or [] when absent."""

    def genesis(self, community: CommunityId) -> Entry | None: ...
    def put_genesis(self, entry: Entry) -> None: ...

    def entry(
        self, community: CommunityId, author: MemberId, seq: int, eid: EntryId
    ) -> Stored | None: ...
    def ids_at(self, community: CommunityId, author: MemberId, seq: int) -> list[EntryId]: ...
    def put_entry(self, stored: Stored, refs: Iterable[RefRow]) -> None: ...

    def lasting_transfer(self, community: CommunityId, ref: Ref) -> bool:
        """True if the entry ``ref`` is stored (not only parked) and is a
        transfer that names no expiry of its own (``expires_ms``): where the
        community's rules give transfers none either, it never expires.
        Answers what reading the entry (:meth:`entry`) would tell; a backend
        may keep the answer, since a stored entry stays stored and its body
        never changes."""
        ...

    def latest(
        self, community: CommunityId, author: MemberId, kind: Kind, below: int | None
    ) -> Stored | None:
        """``author``'s entry of ``kind`` at the highest seq < ``below`` (no
        bound if None); ties (entries of a forked log at one seq) by id."""
        ...

    def head(self, community: CommunityId, author: MemberId) -> Head | None: ...
    def put_head(self, community: CommunityId, author: MemberId, head: Head) -> None: ...
    def heads(self, community: CommunityId) -> Iterator[tuple[MemberId, Head]]: ...

    def refs_by(
        self, community: CommunityId, by_author: MemberId, kind: Kind, target_id: EntryId
    ) -> list[RefRow]:
        """``by_author``'s entries of ``kind`` pointing at ``target_id``."""
        ...

    def refs_to(
        self,
        community: CommunityId,
        target_author: MemberId,
        kind: Kind,
        min_seq: int,
        max_seq: int | None,
    ) -> list[RefRow]:
        """Entries of ``kind`` pointing into ``target_author``'s log at
        ``min_seq <= seq < max_seq`` (no upper bound if None)."""
        ...

    def refs_from(
        self,
        community: CommunityId,
        by_author: MemberId,
        kind: Kind,
        max_seq: int | None,
        min_seq: int = 0,
    ) -> list[RefRow]:
        """``by_author``'s entries of ``kind`` with ``min_seq`` <= seq < ``max_seq``."""
        ...

    def put_fork(
        self, community: CommunityId, author: MemberId, seq: int, first: bytes, second: bytes
    ) -> bool:
        """Record a fork proof; False if one is known for this (author, seq)."""
        ...

    def put_waiting(self, keys: Iterable[WaitKey], wire: bytes, parking: Parking) -> bool:
        """Park ``wire`` until every key is stored, within the backend's
        :class:`WaitLimits`: first drop what outlived ``lifetime_ms``, then
        refuse (False) if the author or the source peer is at its bound,
        then drop the oldest of the pool if it is full. Parking times never
        go backwards: an entry is parked at ``max(now_ms, newest parked)``,
        so each pool is oldest first. True if parked (or parked already)."""
        ...

    def take_waiting(self, key: WaitKey) -> list[bytes]:
        """Entries parked on ``key``, removed from the waiting set."""
        ...

    def waiting_count(self) -> int:
        """How many entries are parked (0: nothing to release)."""
        ...

    def parked_on_prev(self, community: CommunityId, ref: Ref) -> bytes | None:
        """The entry ``ref`` if it is parked waiting for its prev (looked up
        by that key: one index read, whatever a peer names); None if it is
        not parked, or parked for another reason. What a sync serves a peer
        that wants it (docs/witness.md §6.1)."""
        ...

    def named_early(self, community: CommunityId, transfer: Ref) -> None:
        """The transfer ``transfer``, just stored, may be named already: its
        own certificate is held, so its payee could accept it while it was
        parked (docs/witness.md §6.1). Derived state that assumed nothing
        names a new entry is put right (the SQLite store's; nothing here)."""
        ...

    def parked(self, community: CommunityId, author: MemberId | None) -> list[bytes]:
        """The parked entries of ``community`` (of ``author`` only, if given),
        oldest first: what a payee may accept with the entry's own
        certificate before it is stored (docs/witness.md §6.1)."""
        ...

    def waiting_finals(self, community: CommunityId, author: MemberId) -> list[WaitKey]:
        """The keys (:func:`final_key`) under which entries wait for an entry
        of ``author``'s log to become final."""
        ...

    def certificate(
        self, community: CommunityId, author: MemberId, seq: int
    ) -> tuple[EntryId, bytes] | None:
        """The certificate held for (author, seq): the id it certifies and its bytes."""
        ...

    def put_certificate(
        self, community: CommunityId, author: MemberId, seq: int, eid: EntryId, data: bytes
    ) -> None:
        """Keep the certificate of (author, seq, eid); the first one per position stays."""
        ...

    def put_witness_fault(
        self, community: CommunityId, author: MemberId, seq: int, first: bytes, second: bytes
    ) -> bool:
        """Two valid certificates for different ids at one position: more than
        f witnesses lied. False if one is known for this position."""
        ...

    def certified_between(
        self, community: CommunityId, author: MemberId, low: int, high: int
    ) -> list[tuple[int, EntryId]]:
        """(seq, id) of the certificates held for ``author`` at
        ``low < seq < high``, by seq."""
        ...

    def final_at(self, community: CommunityId, author: MemberId, seq: int) -> EntryId | None:
        """The id of the entry at ``seq`` on ``author``'s final chain (the
        chain that ends at its final tip), or None if it has none there."""
        ...

    def put_final(
        self, community: CommunityId, author: MemberId, chain: Iterable[tuple[int, EntryId]]
    ) -> None:
        """Add (seq, id) positions to ``author``'s final chain: the entries
        from above the old final tip up to the new one."""
        ...


class MemoryBackend:
    """A :class:`Backend` in dicts, for tests and simulation."""

    def __init__(self, limits: WaitLimits | None = None) -> None:
        self._genesis: dict[CommunityId, Entry] = {}
        self._entries: dict[tuple[CommunityId, MemberId, int], dict[EntryId, Stored]] = {}
        self._heads: dict[CommunityId, dict[MemberId, Head]] = {}
        self._refs: list[tuple[CommunityId, RefRow]] = []
        # refs_by's rows by (community, by_author, kind, target_id): every
        # accept, decline and reclaim asks it, and a scan made replaying a
        # long log (a statement bundle's, say) quadratic.
        self._refs_by: dict[tuple[CommunityId, MemberId, Kind, EntryId], list[RefRow]] = {}
        self.forks: dict[tuple[CommunityId, MemberId, int], tuple[bytes, bytes]] = {}
        self._limits = limits or WaitLimits()
        # Per pool (member: True/False), wire -> its parking, oldest first.
        self._pools: dict[bool, OrderedDict[bytes, _Parked]] = {
            True: OrderedDict(),
            False: OrderedDict(),
        }
        self._by_key: dict[WaitKey, list[bytes]] = {}
        self._per_author: Counter[tuple[CommunityId, MemberId]] = Counter()
        self._per_peer: Counter[str] = Counter()
        self._parked_total = 0  # orders entries across pools, as SQLite's rowid does
        self._certificates: dict[tuple[CommunityId, MemberId, int], tuple[EntryId, bytes]] = {}
        self.witness_faults: dict[tuple[CommunityId, MemberId, int], tuple[bytes, bytes]] = {}
        self._final: dict[tuple[CommunityId, MemberId], dict[int, EntryId]] = {}

    def genesis(self, community: CommunityId) -> Entry | None:
        return self._genesis.get(community)

    def put_genesis(self, entry: Entry) -> None:
        self._genesis[CommunityId(entry.id)] = entry

    def entry(
        self, community: CommunityId, author: MemberId, seq: int, eid: EntryId
    ) -> Stored | None:
        return self._entries.get((community, author, seq), {}).get(eid)

    def ids_at(self, community: CommunityId, author: MemberId, seq: int) -> list[EntryId]:
        return list(self._entries.get((community, author, seq), {}))

    def lasting_transfer(self, community: CommunityId, ref: Ref) -> bool:
        stored = self.entry(community, ref.author, ref.seq, ref.id)
        return stored is not None and names_no_expiry(stored.entry)

    def put_entry(self, stored: Stored, refs: Iterable[RefRow]) -> None:
        e = stored.entry
        assert e.community is not None
        self._entries.setdefault((e.community, e.author, e.seq), {})[e.id] = stored
        for r in refs:
            self._refs.append((e.community, r))
            self._refs_by.setdefault((e.community, r.by_author, r.kind, r.target_id), []).append(r)

    def latest(
        self, community: CommunityId, author: MemberId, kind: Kind, below: int | None
    ) -> Stored | None:
        found = [
            s
            for (c, a, seq), at_seq in self._entries.items()
            if c == community and a == author and (below is None or seq < below)
            for s in at_seq.values()
            if s.entry.kind is kind
        ]
        return max(found, key=lambda s: (s.entry.seq, s.entry.id), default=None)

    def head(self, community: CommunityId, author: MemberId) -> Head | None:
        return self._heads.get(community, {}).get(author)

    def put_head(self, community: CommunityId, author: MemberId, head: Head) -> None:
        self._heads.setdefault(community, {})[author] = head  # frozen: no copy needed

    def heads(self, community: CommunityId) -> Iterator[tuple[MemberId, Head]]:
        return iter(sorted(self._heads.get(community, {}).items()))

    def refs_by(
        self, community: CommunityId, by_author: MemberId, kind: Kind, target_id: EntryId
    ) -> list[RefRow]:
        return list(self._refs_by.get((community, by_author, kind, target_id), ()))

    def refs_to(
        self,
        community: CommunityId,
        target_author: MemberId,
        kind: Kind,
        min_seq: int,
        max_seq: int | None,
    ) -> list[RefRow]:
        return [
            r
            for c, r in self._refs
            if c == community
            and r.target_author == target_author
            and r.kind is kind
            and r.target_seq >= min_seq
            and (max_seq is None or r.target_seq < max_seq)
        ]

    def refs_from(
        self,
        community: CommunityId,
        by_author: MemberId,
        kind: Kind,
        max_seq: int | None,
        min_seq: int = 0,
    ) -> list[RefRow]:
        return [
            r
            for c, r in self._refs
            if c == community
            and r.by_author == by_author
            and r.kind is kind
            and (max_seq is None or r.by_seq < max_seq)
            and r.by_seq >= min_seq
        ]

    def put_fork(
        self, community: CommunityId, author: MemberId, seq: int, first: bytes, second: bytes
    ) -> bool:
        key = (community, author, seq)
        if key in self.forks:
            return False
        self.forks[key] = (first, second)
        return True

    def put_waiting(self, keys: Iterable[WaitKey], wire: bytes, parking: Parking) -> bool:
        if wire in self._pools[True] or wire in self._pools[False]:
            return True
        newest = [next(reversed(p.values())).at for p in self._pools.values() if p]
        at, cutoff = parking_time(self._limits, parking.now_ms, max(newest, default=None))
        for pool in self._pools.values():
            while pool and next(iter(pool.values())).at < cutoff:
                self._unpark(next(iter(pool)))
        author = (parking.community, parking.author)
        pool = self._pools[parking.member]
        evict = room_to_park(
            self._limits,
            parking,
            by_author=self._per_author[author],
            by_peer=0 if parking.source is None else self._per_peer[parking.source],
            in_pool=len(pool),
        )
        if evict is None:
            return False
        for _ in range(evict):
            self._unpark(next(iter(pool)))
        self._parked_total += 1
        parked = _Parked(self._parked_total, list(dict.fromkeys(keys)), author, parking.source, at)
        pool[wire] = parked
        for key in parked.keys:
            self._by_key.setdefault(key, []).append(wire)
        self._per_author[author] += 1
        if parking.source is not None:
            self._per_peer[parking.source] += 1
        return True

    def _unpark(self, wire: bytes) -> _Parked:
        parked = self._pools[True].pop(wire, None) or self._pools[False].pop(wire)
        for key in parked.keys:
            wires = self._by_key[key]
            wires.remove(wire)
            if not wires:
                del self._by_key[key]
        self._per_author[parked.author] -= 1
        if not self._per_author[parked.author]:
            del self._per_author[parked.author]
        if parked.source is not None:
            self._per_peer[parked.source] -= 1
            if not self._per_peer[parked.source]:
                del self._per_peer[parked.source]
        return parked

    def take_waiting(self, key: WaitKey) -> list[bytes]:
        found = sorted(self._by_key.get(key, ()), key=lambda w: self._order(w))
        for w in found:
            self._unpark(w)
        return found

    def waiting_finals(self, community: CommunityId, author: MemberId) -> list[WaitKey]:
        return sorted(k for k in self._by_key if k[0] == community and k[1] == author and k[2] < 0)

    def named_early(self, community: CommunityId, transfer: Ref) -> None:
        pass  # refs_by reads the rows themselves

    def parked_on_prev(self, community: CommunityId, ref: Ref) -> bytes | None:
        if ref.seq <= 1:
            return None
        for key, wires in self._by_key.items():
            if key[:3] != (community, ref.author, ref.seq - 1):
                continue
            for wire in wires:
                entry = Entry.decode(wire, check_signature=False)
                if entry.seq == ref.seq and entry.id == ref.id:
                    return wire
        return None

    def parked(self, community: CommunityId, author: MemberId | None) -> list[bytes]:
        found = [
            (p.order, wire)
            for pool in self._pools.values()
            for wire, p in pool.items()
            if p.author[0] == community and (author is None or p.author[1] == author)
        ]
        return [wire for _order, wire in sorted(found)]

    def _order(self, wire: bytes) -> int:
        parked = self._pools[True].get(wire) or self._pools[False][wire]
        return parked.order

    def waiting_count(self) -> int:
        return len(self._pools[True]) + len(self._pools[False])

    def waiting_wires(self) -> list[bytes]:
        """The parked entries (members' pool first), for tests and the simulator."""
        return [*self._pools[True], *self._pools[False]]

    def certificate(
        self, community: CommunityId, author: MemberId, seq: int
    ) -> tuple[EntryId, bytes] | None:
        return self._certificates.get((community, author, seq))

    def put_certificate(
        self, community: CommunityId, author: MemberId, seq: int, eid: EntryId, data: bytes
    ) -> None:
        self._certificates.setdefault((community, author, seq), (eid, data))

    def put_witness_fault(
        self, community: CommunityId, author: MemberId, seq: int, first: bytes, second: bytes
    ) -> bool:
        key = (community, author, seq)
        if key in self.witness_faults:
            return False
        self.witness_faults[key] = (first, second)
        return True

    def certified_between(
        self, community: CommunityId, author: MemberId, low: int, high: int
    ) -> list[tuple[int, EntryId]]:
        out = []
        for seq in range(low + 1, high):
            held = self._certificates.get((community, author, seq))
            if held is not None:
                out.append((seq, held[0]))
        return out

    def final_at(self, community: CommunityId, author: MemberId, seq: int) -> EntryId | None:
        return self._final.get((community, author), {}).get(seq)

    def put_final(
        self, community: CommunityId, author: MemberId, chain: Iterable[tuple[int, EntryId]]
    ) -> None:
        final = self._final.setdefault((community, author), {})
        for seq, eid in chain:
            assert final.setdefault(seq, eid) == eid, "a final chain is never rewritten"


@dataclass(slots=True)
class _Parked:
    order: int
    keys: list[WaitKey]
    author: tuple[CommunityId, MemberId]
    source: str | None
    at: int  # parked at, node clock (ms)
