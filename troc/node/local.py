"""One member's node over its own store, without the network.

:class:`LocalNode` is the library API for everything a member does in a
community: found or join one, publish offers and wants, pay, accept, decline,
reclaim, vouch, and read balances, pending transfers, history and offers. It
takes entries from other nodes as bytes (:meth:`LocalNode.ingest`); the
networked node (:mod:`troc.node.node`) feeds it what gossip and sync bring.

Own entries are the one thing a node must never lose: one lost to a power cut
would be signed again, differently, at the same seq, which is a fork of the
member's own log. So each own entry is prepared, checked, signed and stored
in one durable (fsynced) transaction, under a lock, before the call returns
and before anything can send it. Two appends can never take the same seq.

The store alone cannot tell that it lost entries (emptied, deleted, restored
from an old backup): an empty store looks like a fresh start, and signing
from it forks the member's log for good. So the home keeps, beside the store,
the last own entry signed per community (``signed.json``, written after each
own entry is durable and before it leaves the node), and nothing is signed
while the store holds less of the member's log than that mark: the node
first gets its log back from a peer (or the store from a backup)
(:mod:`troc.node.marks`).

This module is one concept, the member's API (acting, taking in, reading),
and reads best whole; what it returns is in
:mod:`troc.node.views`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from troc.crypto.sign import MemberId, SigningKey
from troc.errors import CodecError, LocalProtocolError, RefusedError
from troc.node._store_commit import PendingCommit
from troc.node.marks import SignedMarks, StagedMarks
from troc.node.parked import newly_acceptable
from troc.node.store import Store
from troc.node.views import (
    BalanceInfo,
    CommunityInfo,
    OfferInfo,
    TransferInfo,
    matching,
    resolve,
)
from troc.protocol.entry import (
    Accept,
    AnyBody,
    CommunityId,
    Decline,
    Entry,
    Genesis,
    Join,
    Kind,
    Offer,
    OfferClose,
    Profile,
    Reclaim,
    Ref,
    Refusal,
    Request,
    TakeBack,
    Transfer,
    Vouch,
    expiry_of,
)
from troc.protocol.ledger import CertificateOutcome, Ledger, Outcome, Reason, Status
from troc.protocol.witness import (
    Certificate,
    check_quorum,
    max_faults,
    min_quorum,
)

__all__ = [
    "AppendBatch",
    "BalanceInfo",
    "CommunityInfo",
    "IngestApart",
    "LocalNode",
    "OfferInfo",
    "TransferInfo",
    "now_ms",
    "open_local_node",
]


logger = logging.getLogger(__name__)


def now_ms() -> int:
    """The wall clock in milliseconds (entries carry it; it orders nothing)."""
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class AppendBatch:
    """Own entries appended in one :meth:`LocalNode.appending` block."""

    entries: list[Entry] = field(default_factory=list)
    #: An append failed after it began writing: the block must not commit.
    broken: bool = False
    #: The transaction committed (durably): its entries are kept, whatever follows.
    committed: bool = False
    #: Committed but not on disk yet (``appending(durable=False)``): hand it
    #: to :meth:`LocalNode.finish_own` once the store's log is fsynced.
    pending: PendingOwn | None = None


@dataclass(slots=True)
class PendingOwn:
    """Own entries committed but not yet on disk (``appending(durable=False)``):
    not marked, not announced, and not to be sent by anything (sync waits,
    :func:`troc.node.walsync.own_durable`) until :meth:`LocalNode.finish_own`."""

    entries: list[Entry]
    staged: StagedMarks | None
    finished: bool = False
    #: Called once it is finished.
    waiters: list[Callable[[], None]] = field(default_factory=list)


class LocalNode:
    """A member's node over an open :class:`Store`. Thread-safe for appends."""

    def __init__(
        self,
        store: Store,
        key: SigningKey | None,
        clock: Callable[[], int] = now_ms,
        *,
        member: MemberId | None = None,
        home: Path | None = None,
    ) -> None:
        """``key`` may be None for a read-only node (then ``member`` names whose
        node it is): reading balances needs no passphrase, signing does.
        With ``home``, what the key signed is marked there and signing is
        refused while the store is behind the mark (see the module doc)."""
        self.store = store
        self.key = key
        if key is not None:
            member = key.public
        if member is None:
            raise ValueError("a node needs its member key or at least its member id")
        self.member: MemberId = member
        self.ledger = Ledger(store)
        self._clock = clock
        self._lock = threading.RLock()
        self._marks = None if home is None else SignedMarks(home, store, member)
        #: Called as ``listener(entry, own)`` after each entry is committed.
        self.listeners: list[Callable[[Entry, bool], None]] = []
        #: Called as ``listener(entry)`` for a transfer to this member held
        #: parked that became acceptable (its own certificate held,
        #: docs/witness.md §6.1): not stored, so ``listeners`` never see it.
        self.acceptable_listeners: list[Callable[[Entry], None]] = []
        self._batch: AppendBatch | None = None  # open by appending(): group commit
        # Open by ingesting(): what its ingests stored and made acceptable,
        # announced once it commits.
        self._notes: list[tuple[list[Entry], list[Entry]]] | None = None
        #: Own entries committed and not yet on disk: at most one batch, and
        #: none while any other own entry is signed (see :meth:`_own_commit`).
        self.pending_own: PendingOwn | None = None

    # -- communities ------------------------------------------------------

    def create_community(
        self,
        name: str,
        unit: str,
        credit_limit: int,
        *,
        admission: str = "open",
        finality: str = "optimistic",
        witnesses: tuple[MemberId, ...] = (),
        faults: int = 0,
        quorum: int | None = None,
        ceiling: int | None = None,
        member_name: str | None = None,
        transfer_expiry_ms: int | None = None,
    ) -> CommunityId:
        """Found a community (this member is the founder) and join it."""
        if finality == "witnessed":
            n = len(set(witnesses))
            if n and faults > max_faults(n):
                raise LocalProtocolError(
                    f"{n} witnesses tolerate at most {max_faults(n)} faulty (n >= 3f+1):"
                    f" name at least {3 * faults + 1} witnesses for {faults} faults"
                )
            if quorum is None and n:
                quorum = min_quorum(n, faults)  # the smallest safe one: 2f+1 when n = 3f+1
            check_quorum(n, faults, quorum or 0)  # one sentence saying why not
        rules = Genesis(
            name=name,
            unit=unit,
            credit_limit=credit_limit,
            admission=admission,
            finality=finality,
            witnesses=tuple(sorted(witnesses)),
            faults=faults,
            quorum=quorum or 0,
            ceiling=ceiling,
            transfer_expiry_ms=transfer_expiry_ms,
        )
        genesis = self._sign_genesis(rules)
        with self._lock, self.store.transaction(durable=True):
            self._ingest_checked(genesis)
        # (A genesis starts a new community, not a log: nothing to mark.)
        self._notify([genesis], own=True)
        community = CommunityId(genesis.id)
        self._append(community, Join(name=member_name))
        return community

    def _signer(self) -> SigningKey:
        if self.key is None:
            raise LocalProtocolError("this needs the member key, which is not loaded")
        self.check_can_sign()
        return self.key

    # -- what the key signed (the mark beside the store) ------------------

    def behind(self) -> list[tuple[CommunityId, int, int | None]]:
        """Communities where the store holds less of the member's own log than
        the key signed: ``(community, last seq signed, stored head seq or
        None)``. Empty without a home or a key.

        Raises LocalProtocolError if the home's ``signed.json`` is damaged.
        """
        if self._marks is None or self.key is None:
            return []
        return self._marks.behind()

    def follow_marked(self) -> None:
        """Follow again the communities the key signed in that the store
        lost (from the genesis kept with the mark), so that sync can bring
        the member's log back. Signs nothing."""
        if self._marks is None or self.key is None:
            return
        for c, genesis in self._marks.lost():
            outcome = self.ingest(genesis)
            if outcome.entry is None or outcome.entry.id != c:
                logger.warning("the genesis kept for community %s is not valid", c.hex()[:8])

    def check_can_sign(self) -> None:
        """Raise StoreError (one line: what happened, what to do) while the
        store is behind what the key signed: signing would fork the log."""
        if self._marks is not None and self.key is not None:
            self._marks.check()

    @contextmanager
    def _own_commit(
        self, entries: list[Entry], *, durable: bool = True
    ) -> Iterator[PendingOwn | None]:
        """One durable transaction storing own ``entries`` (the block fills
        the list), marked once it has committed and before they can leave
        the node (a mark ahead of the store would block for good).

        The mark's file is written and fsynced while the store's commit is
        fsynced (SignedMarks.stage: a worker thread), and put in place only
        after the commit returned: one wait for two fsyncs, not two in a
        row, on the node's one thread. Call it under the lock.

        With ``durable=False`` the commit is not fsynced: the block's
        PendingOwn (yielded, filled once the commit returned) is left in
        :attr:`pending_own` for the caller to make durable off this thread
        and then :meth:`finish_own`. An own commit pending that way is
        finished first, here, on this thread: marks and announcements keep
        the order of the log.
        """
        self._finish_pending()
        staged = None
        pending = PendingOwn(entries, None)
        try:
            with self.store.transaction(durable=durable):
                yield pending if not durable else None
                if self._marks is not None:
                    staged = self._marks.stage(entries)
        except BaseException:
            if staged is not None and staged.write is not None:
                staged.write.abandon()
            raise
        if not durable:
            pending.staged = staged
            self.pending_own = pending
            return
        if self._marks is not None:
            self._marks.settle(staged)

    def _finish_pending(self) -> None:
        """Make an own commit left pending durable now, on this thread, and finish it."""
        pending = self.pending_own
        if pending is not None:
            self.store.sync_log()  # StoreError: nothing is signed meanwhile
            self.finish_own(pending)

    def finish_own(self, pending: PendingOwn) -> None:
        """Once ``pending``'s commit is on disk (the store's log fsynced after
        it): mark its entries, announce them, wake what waits. Idempotent."""
        with self._lock:  # another thread's append may be finishing it too
            if pending.finished:
                return
            pending.finished = True
            if self.pending_own is pending:
                self.pending_own = None
            if self._marks is not None:
                self._marks.settle(pending.staged)
        try:
            self._notify(pending.entries, own=True)
        finally:
            for wake in pending.waiters:
                wake()

    def _sign_genesis(self, rules: Genesis) -> Entry:
        try:
            return Entry.create(
                self._signer(),
                community=None,
                seq=0,
                prev=None,
                timestamp_ms=self._clock(),
                body=rules,
            )
        except CodecError as exc:
            raise LocalProtocolError(f"invalid community rules: {exc}") from None

    def join(
        self, genesis: bytes, *, name: str | None = None, vouch: Ref | None = None
    ) -> CommunityId:
        """Join the community founded by the genesis entry ``genesis`` (wire bytes).

        Idempotent: joining a community already joined returns its id. All or
        nothing: if the join is refused, the community is not followed either.
        """
        key = self._signer()
        stored: list[Entry] = []
        with self._lock, self._own_commit(stored):
            now = self._clock()
            outcome = self.ledger.ingest(genesis, now)
            if (
                outcome.entry is None
                or not outcome.ok
                or not isinstance(outcome.entry.body, Genesis)
            ):
                raise LocalProtocolError("that is not a valid community genesis")
            stored += self._stored([outcome])
            community = CommunityId(outcome.entry.id)
            if self.store.head(community, self.member) is None:
                entry = self.ledger.prepare(key, community, Join(name=name, vouch=vouch), now)
                self._ingest_checked(entry)
                stored.append(entry)
        self._notify(stored, own=True)
        return community

    def communities(self) -> list[CommunityInfo]:
        return [self._info(g) for g in self.store.communities()]

    def community(self, community: CommunityId) -> CommunityInfo:
        g = self.store.genesis(community)
        if g is None:
            raise LocalProtocolError("this node does not follow that community")
        return self._info(g)

    @staticmethod
    def _info(g: Entry) -> CommunityInfo:
        r = g.body
        assert isinstance(r, Genesis)
        return CommunityInfo(
            CommunityId(g.id),
            r.name,
            r.unit,
            r.credit_limit,
            r.admission,
            r.finality,
            g.author,
            r.witnesses,
            r.quorum,
            r.faults,
            r.ceiling,
            g.wire,
        )

    # -- acting -----------------------------------------------------------

    def offer(
        self,
        community: CommunityId,
        title: str,
        *,
        side: str = "offer",
        description: str = "",
        tags: tuple[str, ...] = (),
        price: int | None = None,
        expires_ms: int | None = None,
    ) -> Entry:
        """Publish an offer (``side="offer"``) or a want (``side="want"``)."""
        body = Offer(
            side=side,
            title=title,
            description=description,
            tags=tuple(sorted(set(tags))),
            price=price,
            expires_ms=expires_ms,
        )
        return self._append(community, body)

    def close_offer(self, community: CommunityId, offer: Ref) -> Entry:
        return self._append(community, OfferClose(offer=offer))

    def pay(
        self,
        community: CommunityId,
        to: MemberId,
        amount: int,
        *,
        memo: str = "",
        offer: Ref | None = None,
        expires_ms: int | None = None,
    ) -> Entry:
        """Pay ``amount`` (smallest unit) to ``to``. Raises RefusedError on overdraft."""
        if to == self.member:
            raise RefusedError("self_payment", "a member cannot pay itself")
        body = Transfer(to=to, amount=amount, memo=memo, offer=offer, expires_ms=expires_ms)
        return self._append(community, body)

    def accept(self, community: CommunityId, transfer: Ref) -> Entry:
        return self._append(community, Accept(transfer=transfer))

    def decline(self, community: CommunityId, transfer: Ref, *, reason: str = "") -> Entry:
        return self._append(community, Decline(transfer=transfer, reason=reason))

    def reclaim(self, community: CommunityId, transfer: Ref) -> Entry:
        """Take back a transfer its payee declined."""
        decline = self.decline_of(community, transfer)
        if decline is None:
            raise RefusedError("not_declined", "that transfer has not been declined by its payee")
        return self._append(community, Reclaim(decline=decline))

    def reclaimed_transfer(self, community: CommunityId, reclaim: Reclaim) -> Ref | None:
        """The transfer a reclaim took back (its body names only the payee's
        decline), if this node holds that decline."""
        d = reclaim.decline
        decline = self.store.entry(community, d.author, d.seq, d.id)
        if decline is None or not isinstance(decline.entry.body, Decline):
            return None
        return decline.entry.body.transfer

    def decline_of(self, community: CommunityId, transfer: Ref) -> Ref | None:
        """The payee's decline of ``transfer``, if this node holds one."""
        stored = self.store.entry(community, transfer.author, transfer.seq, transfer.id)
        if stored is None or not isinstance(stored.entry.body, Transfer):
            return None
        payee = stored.entry.body.to
        for row in self.store.refs_by(community, payee, Kind.DECLINE, transfer.id):
            return Ref(row.by_author, row.by_seq, row.by_id)
        return None

    def vouch(self, community: CommunityId, member: MemberId, *, limit: int | None = None) -> Entry:
        return self._append(community, Vouch(member=member, limit=limit))

    def set_profile(self, community: CommunityId, profile: Profile) -> Entry:
        """Sign a new profile: public, and the latest by seq is the member's
        profile (docs/protocol.md §4.4)."""
        return self._append(community, profile)

    def append(self, community: CommunityId, body: AnyBody) -> Entry:
        """Sign, store and announce the member's next entry: ``body``, which
        the ledger must find valid (RefusedError with its reason if not).
        For operations kept in modules of their own (campaigns)."""
        return self._append(community, body)

    def signing_key(self) -> SigningKey:
        """The member key, for what the node signs besides entries (a
        statement bundle, docs/protocol.md §9)."""
        return self._signer()

    def now(self) -> int:
        """The node's clock, ms."""
        return self._clock()

    def take_back(self, community: CommunityId, transfer: Ref) -> Entry:
        """Take back an expired transfer of this member's (docs/protocol.md §4.11)."""
        return self._append(community, TakeBack(transfer=transfer))

    def expiry(self, community: CommunityId, transfer: Ref | Entry) -> int | None:
        """When ``transfer`` (held here: stored, or parked with its own
        certificate, docs/witness.md §6.1) expires, or None if never.
        ``transfer``: its ref, or the transfer itself if the caller holds it
        (no read: a balance goes over every unanswered payment)."""
        if isinstance(transfer, Ref):
            held = self.ledger.held_transfer(community, transfer)
        else:
            held = transfer
        genesis = self.store.genesis(community)
        if held is None or genesis is None:
            return None
        return expiry_of(held, genesis.body)  # type: ignore[arg-type]

    def expired(self, community: CommunityId, transfer: Ref | Entry) -> bool:
        """True if ``transfer`` (as :meth:`expiry` takes it) has expired by
        this node's clock."""
        expiry = self.expiry(community, transfer)
        return expiry is not None and expiry < self._clock()

    def request(self, community: CommunityId, body: Request) -> Entry:
        """Ask ``body.to`` for a payment (docs/protocol.md §4.10)."""
        return self._append(community, body)

    def refuse(self, community: CommunityId, request: Ref, *, reason: str = "") -> Entry:
        """Refuse a payment request made to this member."""
        return self._append(community, Refusal(request=request, reason=reason))

    def pay_request(self, community: CommunityId, request: Entry) -> Entry:
        """Pay a request with a transfer that carries it (held here or not)."""
        return self._append(community, Transfer.paying(request))

    @contextmanager
    def appending(self, *, durable: bool = True) -> Iterator[AppendBatch]:
        """Group commit: own entries appended in the block share one durable
        transaction, and are marked and announced once it has committed.
        With ``durable=False`` the commit is not fsynced and nothing is
        marked or announced: ``batch.pending`` (if it stored anything) waits
        for the caller to fsync the store's log and call :meth:`finish_own`.

        Each append inside is checked and signed as alone, on the store as
        the earlier ones left it. One refused before it wrote anything
        (``prepare``'s RefusedError, the usual case) leaves the others be;
        one that failed after it began writing sets ``broken``, and the
        caller must then raise out of the block: nothing of it is kept.
        Nothing is announced (sent) before the commit returns, as for a
        single append. Transactions do not nest: nothing else may open one
        in the block.
        """
        batch = AppendBatch()
        with self._lock, self._own_commit(batch.entries, durable=durable) as pending:
            self._batch = batch
            try:
                yield batch
            finally:
                self._batch = None
        batch.committed = True
        if pending is not None:
            batch.pending = pending
            if not batch.entries:  # nothing stored: nothing to wait for
                self.finish_own(pending)
            return
        self._notify(batch.entries, own=True)

    def _append(self, community: CommunityId, body: AnyBody) -> Entry:
        if self._batch is not None:  # inside appending(): its transaction
            return self._append_to(self._batch, community, body)
        own: list[Entry] = []
        with self._lock, self._own_commit(own):
            if self.store.genesis(community) is None:
                raise LocalProtocolError("this node does not follow that community")
            entry = self.ledger.prepare(self._signer(), community, body, self._clock())
            self._ingest_checked(entry)
            own.append(entry)
        self._notify([entry], own=True)
        return entry

    def _append_to(self, batch: AppendBatch, community: CommunityId, body: AnyBody) -> Entry:
        if self.store.genesis(community) is None:
            raise LocalProtocolError("this node does not follow that community")
        entry = self.ledger.prepare(self._signer(), community, body, self._clock())
        try:
            self._ingest_checked(entry)
        except BaseException:
            batch.broken = True  # it may have written part of it
            raise
        batch.entries.append(entry)
        return entry

    def _notify(self, entries: list[Entry], *, own: bool, acceptable: Sequence[Entry] = ()) -> None:
        for entry in entries:
            for listener in self.listeners:
                listener(entry, own)
        for entry in acceptable:
            for tell in self.acceptable_listeners:
                tell(entry)

    def _acceptable(self, outcomes: Sequence[Outcome | CertificateOutcome]) -> list[Entry]:
        """Of these outcomes, transfers to this member now parked with their
        own certificate (:func:`troc.node.parked.newly_acceptable`)."""
        if not self.acceptable_listeners:
            return []
        return newly_acceptable(self.ledger, self.member, outcomes)

    def _stored(self, outcomes: Sequence[Outcome | CertificateOutcome]) -> list[Entry]:
        """Entries these outcomes stored; parked ones they dropped are logged."""
        out: list[Entry] = []
        for o in outcomes:
            if isinstance(o, Outcome) and o.status is Status.ACCEPTED and o.entry is not None:
                out.append(o.entry)
            out.extend(o.released)
            for d in o.dropped:
                logger.info(
                    "parked entry %s dropped: %s (%s)",
                    d.entry and d.entry.ref,
                    d.reason and d.reason.value,
                    d.detail,
                )
        return out

    def _ingest_checked(self, entry: Entry) -> None:
        outcome = self.ledger.ingest_entry(entry, self._clock())
        if not outcome.ok:  # pragma: no cover - prepare checked the same rules
            raise RefusedError(outcome.reason or "refused", outcome.detail)

    @property
    def lock(self) -> threading.RLock:
        """Held for every store transaction of this node (the witness role
        takes it to run its own)."""
        return self._lock

    # -- from others ------------------------------------------------------

    def ingest_certificate(self, data: bytes) -> CertificateOutcome:
        """Check and keep a certificate (witnessed communities); entries
        that waited for it are stored and announced."""
        return self.ingest_certificates([data])[0]

    def is_final(self, community: CommunityId, ref: Ref) -> bool:
        return self.ledger.is_final(community, ref)

    @contextmanager
    def ingesting(self) -> Iterator[None]:
        """The ingests of the block (:meth:`ingest`, :meth:`ingest_many`,
        :meth:`ingest_certificates`) share one transaction, committed at its
        end, and what they stored is announced then (nothing if it rolls
        back). Sync takes a run of frames so: a ``certs`` frame and the
        entries after it in one commit. Inside a block of the same thread,
        a block joins it. The block must not wait on anything (trio
        included): it holds the store's one connection in a transaction."""
        with self._lock:
            if self._notes is not None:
                yield
                return
            notes: list[tuple[list[Entry], list[Entry]]] = []
            self._notes = notes
            try:
                with self.store.transaction():
                    yield
            finally:
                self._notes = None
        for stored, acceptable in notes:
            self._notify(stored, own=False, acceptable=acceptable)

    @contextmanager
    def ingesting_apart(self) -> Iterator[IngestApart]:
        """As :meth:`ingesting`, but the block's ``COMMIT`` is not run when
        it ends: the caller runs the handle's :meth:`~IngestApart.commit` on
        another thread (sync does, while its own thread reads and decodes
        the next frames: :mod:`troc.node._store_commit`), then calls its
        :meth:`~IngestApart.finish`, which announces what the block stored.
        Until the commit has run, the store's next transaction runs it
        first. Not inside another ingesting block."""
        with self._lock:
            if self._notes is not None:
                raise LocalProtocolError("ingesting_apart inside another ingesting block")
            job = IngestApart(self)
            self._notes = job.notes
            try:
                with self.store.transaction_apart() as pending:
                    yield job
                job.pending = pending  # the block ended well: its COMMIT to run
            finally:
                self._notes = None

    def _ingested(self, outcomes: Sequence[Outcome | CertificateOutcome]) -> None:
        """Note, inside :meth:`ingesting`, what ``outcomes`` stored and made
        acceptable: announced once the block commits."""
        assert self._notes is not None
        self._notes.append((self._stored(outcomes), self._acceptable(outcomes)))

    def ingest(
        self, wire: bytes, *, community: CommunityId | None = None, source: str | None = None
    ) -> Outcome:
        """Check and store an entry from another node (not fsynced: it can be
        fetched again). With ``community``, take only that community's entries;
        ``source`` is the peer it came from, if known (its parking bound)."""
        with self.ingesting():
            outcome = self.ledger.ingest(wire, self._clock(), community=community, source=source)
            self._ingested([outcome])
        return outcome

    def ingest_many(
        self,
        wires: Sequence[bytes | Entry],
        *,
        community: CommunityId | None = None,
        sources: Sequence[str | None] | None = None,
    ) -> list[Outcome]:
        """Ingest a batch in one transaction (what sync does, and gossip per
        batch of messages). Each item is wire bytes, or an :class:`Entry`
        already decoded with its signature checked (``Entry.decode``), which
        is then not decoded and checked again; the verdicts are the same.
        ``sources``, one per item, name the peer each came from where known
        (what they park counts against that peer's bound)."""
        with self.ingesting():
            now = self._clock()
            if sources is None:
                sources = [None] * len(wires)
            outcomes = [
                self._ingest_one(w, now, community, source)
                for w, source in zip(wires, sources, strict=True)
            ]
            self._ingested(outcomes)
        return outcomes

    def _ingest_one(
        self, item: bytes | Entry, now: int, community: CommunityId | None, source: str | None
    ) -> Outcome:
        if not isinstance(item, Entry):
            return self.ledger.ingest(item, now, community=community, source=source)
        if community is not None and item.community != community:  # as Ledger.ingest
            return Outcome(
                Status.REJECTED,
                item,
                Reason.UNKNOWN_COMMUNITY,
                "not an entry of the community this channel carries",
            )
        return self.ledger.ingest_entry(item, now, source=source)

    def ingest_certificates(self, datas: Sequence[bytes | Certificate]) -> list[CertificateOutcome]:
        """Ingest certificates in one transaction (what sync does); entries
        that waited for them are stored and announced. Each item is a
        certificate's bytes, or a :class:`Certificate` already decoded with
        every signature found valid (:meth:`troc.node.verifier.Verifier.submit_certificates`),
        whose signatures are then not checked again; the verdicts are the
        same. One for an entry that is certified already is a duplicate,
        its signatures unchecked (:meth:`Ledger.ingest_certificate`'s
        ``replay_unchecked``)."""
        with self.ingesting():
            now = self._clock()
            outcomes = [
                self.ledger.ingest_certificate(d, now, replay_unchecked=True) for d in datas
            ]
            self._ingested(outcomes)
        return outcomes

    def holds_certificate(self, cert: Certificate) -> bool:
        """True if a certificate of exactly ``cert``'s entry is held: then
        ``cert`` adds nothing (any valid certificate of an entry is as good
        as another), and is dropped without checking its q signatures, as a
        held entry is (replays under new gossip ids cost nothing)."""
        held = self.store.certificate(cert.community, cert.author, cert.seq)
        return held is not None and held[0] == cert.id

    # -- reading ----------------------------------------------------------

    def balance(self, community: CommunityId, member: MemberId | None = None) -> BalanceInfo:
        member = self.member if member is None else member
        head = self.store.head(community, member)
        pending_in, pending_out = self.store.pending_sums(community, member)
        if head is None:
            rules = self.community(community)
            return BalanceInfo(
                member,
                0,
                rules.credit_limit,
                pending_in,
                pending_out,
                False,
                None,
                witnessed=rules.finality == "witnessed",
            )
        final_in, parked_in = pending_in, 0
        if head.witnessed:  # of the incoming transfers, those that can be accepted now
            final_in = sum(
                TransferInfo.of(e).amount
                for e in self.store.pending_in(community, member)
                if self.ledger.is_final(community, e.ref)
            )
            # And those held parked with their own certificate: acceptable
            # now, the payer's history still being fetched (docs/witness.md §6.1).
            parked_in = sum(
                TransferInfo.of(e).amount for e in self.certified_parked_in(community, member)
            )
        return BalanceInfo(
            member,
            head.counted_balance,
            head.limit,
            pending_in + parked_in,
            pending_out,
            True,
            head.frozen_at,
            witnessed=head.witnessed,
            unconfirmed=head.balance - head.final_balance if head.witnessed else 0,
            pending_in_final=final_in + parked_in,
            pending_in_parked=parked_in,
        )

    def balances(self, community: CommunityId) -> dict[MemberId, int]:
        return dict(self.ledger.balances(community))

    def pending(self, community: CommunityId, member: MemberId | None = None) -> list[TransferInfo]:
        """Transfers to ``member`` (default: this node's member) awaiting an answer."""
        member = self.member if member is None else member
        return [TransferInfo.of(e) for e in self.store.pending_in(community, member)]

    def pending_out(self, community: CommunityId) -> list[TransferInfo]:
        return [TransferInfo.of(e) for e in self.store.pending_out(community, self.member)]

    def history(
        self,
        community: CommunityId,
        member: MemberId | None = None,
        *,
        before_ms: int | None = None,
        limit: int = 50,
    ) -> list[Entry]:
        member = self.member if member is None else member
        return self.store.history(community, member, before_ts=before_ms, limit=limit)

    def offers(
        self,
        community: CommunityId,
        text: str | None = None,
        *,
        tag: str | None = None,
        side: str | None = None,
        author: MemberId | None = None,
        include_closed: bool = False,
        limit: int = 50,
    ) -> list[OfferInfo]:
        rows = self.store.offers(
            community,
            text=text,
            tag=tag,
            side=side,
            author=author,
            include_closed=include_closed,
            limit=limit,
        )
        return [OfferInfo.of(e, closed) for e, closed in rows]

    def forks(self, community: CommunityId) -> list[tuple[MemberId, int, bytes, bytes]]:
        return self.store.forks(community)

    def find_transfer(
        self, community: CommunityId, text_or_prefix: str, *, taken_back: bool = False
    ) -> Ref:
        """Resolve a transfer named by a (prefix of an) entry id among those
        pending for or from this member (and, with ``taken_back``, those to
        this member that their payer took back after expiry, which an accept
        may still win). Raises RefusedError (``already_answered``) if it names
        a transfer this member already accepted or declined, else
        LocalProtocolError if none or several match."""
        refs = [t.ref for t in self.pending(community) + self.pending_out(community)]
        if not matching(text_or_prefix, "transfer", refs):
            refs += [e.ref for e in self.certified_parked_in(community)]
        if taken_back and not matching(text_or_prefix, "transfer", refs):
            answered = self._answers(community)
            back = (e.ref for e in self.store.taken_back_in(community, self.member))
            refs += [r for r in back if r not in answered]
        if not matching(text_or_prefix, "transfer", refs):
            # Not waiting for an answer: say so if this member already gave one
            # (a second `accept` is refused by the ledger, not a typo).
            answered = self._answers(community)
            found = matching(text_or_prefix, "transfer", list(answered))
            if len(found) == 1:
                state = answered[found[0]]
                reason = (
                    Reason.ALREADY_RECLAIMED if state == "reclaimed" else Reason.ALREADY_ANSWERED
                )
                raise RefusedError(
                    reason.value, f"transfer {text_or_prefix.strip()} is already {state}"
                )
        return resolve(text_or_prefix, "transfer", refs)

    def certified_parked_in(
        self, community: CommunityId, member: MemberId | None = None
    ) -> list[Entry]:
        """Transfers to ``member`` (default: this node's member) held parked
        here (their payer's earlier entries not stored yet) with their own
        certificate, not answered: in a witnessed community they can be
        accepted now (docs/witness.md §6.1). Reads the waiting set (bounded,
        docs/protocol.md §4.3); at most ``Ledger.MAX_PARKED_TO`` of them."""
        member = self.member if member is None else member
        parked = self.ledger.parked_to(community, member, certified=True)
        if not parked:
            return []
        answered = self._answers(community, member)
        return [e for e in parked if e.ref not in answered]

    def _answers(self, community: CommunityId, member: MemberId | None = None) -> dict[Ref, str]:
        """Transfers ``member`` (default: this node's member) answered (as
        payee: "accepted" or "declined") or took back (as payer: "reclaimed")."""
        out: dict[Ref, str] = {}
        after = 0
        member = self.member if member is None else member
        while wires := self.store.entries_since(community, member, after):
            for wire in wires:
                entry = Entry.decode(wire, check_signature=False)
                after = entry.seq
                if isinstance(entry.body, Accept):
                    out[entry.body.transfer] = "accepted"
                elif isinstance(entry.body, Decline):
                    out[entry.body.transfer] = "declined"
                elif isinstance(entry.body, Reclaim):
                    taken_back = self.reclaimed_transfer(community, entry.body)
                    if taken_back is not None:
                        out[taken_back] = "reclaimed"
        return out

    def find_offer(self, community: CommunityId, text_or_prefix: str) -> Ref:
        return resolve(
            text_or_prefix,
            "offer",
            [o.ref for o in self.offers(community, include_closed=True, limit=10_000)],
        )


class IngestApart:
    """A block of :meth:`LocalNode.ingesting_apart`: its commit and announcements."""

    def __init__(self, local: LocalNode) -> None:
        self._local = local
        self.notes: list[tuple[list[Entry], list[Entry]]] = []
        self.pending: PendingCommit | None = None

    def commit(self) -> None:
        """The block's ``COMMIT`` (any thread; raises nothing: see :meth:`finish`)."""
        if self.pending is not None:
            self.pending.run()

    def finish(self) -> None:
        """On the node's thread, once the block has ended: commit if not yet
        done, then announce what it stored. Raises StoreError if the commit
        failed (nothing is announced then)."""
        if self.pending is None:
            return  # the block raised: rolled back, nothing to announce
        self._local.store.settle(self.pending)
        for stored, acceptable in self.notes:
            self._local._notify(stored, own=False, acceptable=acceptable)


@contextmanager
def open_local_node(
    home: Path,
    key: SigningKey | None,
    clock: Callable[[], int] = now_ms,
    *,
    member: MemberId | None = None,
    read_only: bool = False,
) -> Iterator[LocalNode]:
    """Open the store under ``home`` (created if new) for ``key``'s member
    (or, without a key, for ``member``). ``read_only``: the store must exist
    and is only read (see :meth:`Store.open`)."""
    if not read_only:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
    with Store.open(home / "store.sqlite", read_only=read_only) as store:
        node = LocalNode(store, key, clock, member=member, home=home)
        if key is not None and not read_only:
            try:
                # A home from before the marks is marked from its store now;
                # a store that lost communities the key signed in follows them again.
                node.follow_marked()
            except LocalProtocolError as exc:  # a damaged signed.json: signing says so
                logger.warning("%s", exc)
        yield node
