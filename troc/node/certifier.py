"""Witnessed finality in the node, the author's side: certificates for
this member's entries (docs/witness.md §4, §6). The witness's side is
:mod:`troc.node.witness`.

**The author** (:class:`Certifier`): every own entry of a witnessed
community is sent to all witnesses at once, with the author's entries since
its final tip and, for an accept or reclaim, the entry it names and that
entry's certificate. ``wait`` answers are answered with what they name;
witnesses that fail, refuse or time out are asked again with backoff (each
exchange in a task of its own, abandoned when its round ends: one stuck on a
stalled link holds up neither the others nor the next round). The
first q votes make the certificate (:class:`~troc.protocol.witness.Collector`),
which is stored (it makes the entry final) and published. An entry that
became final by a later entry's certificate needs no certificate of its own.
A witness's proof that the member's key signed another entry at that seq
(``conflict`` with both entries, validly signed) is stored like any fork
proof, and the node stops asking. A witness that answers what no honest
witness would (a ``conflict`` that proves no fork, a bad or misplaced vote,
an undecodable answer or a malformed frame; not a stream that ends before the
answer, which is the network's or the witness's own failure) is a liar:
logged, counted (:attr:`Certifier.lies`, ``troc status``), named in the
entry's progress, and not asked again for that entry, while the others are.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.peer.id import ID

from troc.crypto.ids import encode_id
from troc.crypto.sign import MemberId
from troc.errors import RemoteProtocolError, TrocError
from troc.net.p2p import DialError, FrameError, FrameReader, P2PHost, close_stream, write_frame
from troc.node.local import LocalNode
from troc.node.opdata import void_sentence
from troc.protocol.campaign_rules import VOTED_CLOSE, VOTED_LAPSE
from troc.protocol.entry import (
    CommunityId,
    Entry,
    Ref,
)
from troc.protocol.sync import certificate_for
from troc.protocol.witness import (
    LIES,
    MAX_CERTIFICATES,
    MAX_DEPS,
    MESSAGE_LIMITS,
    PROTOCOL_ID,
    VOIDED,
    VOTED_ACCEPT,
    VOTED_TAKE_BACK,
    Answer,
    Collector,
    Conflicting,
    LedgerView,
    Tally,
    VoteRequest,
    Waiting,
    can_be_void,
    certificate_needed,
    decode_answer,
    encode_request,
    is_void_certificate,
    raceable,
    rivals_of,
)
from troc.protocol.witness_time import deadline_of

if TYPE_CHECKING:  # the witness service imports this module
    from troc.node.witness import WitnessService

__all__ = ["ANSWER_TIMEOUT", "Certifier", "Progress", "member_peer_id"]

logger = logging.getLogger("troc.witness")

#: One witness answer must arrive within this.
ANSWER_TIMEOUT = 10.0
#: ``wait`` rounds per request before asking again later.
MAX_WAIT_ROUNDS = 8
#: Backoff between rounds of asking the witnesses that have not voted.
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
#: Own entries followed for ``wait`` answers, at most (finished ones are forgotten first).
MAX_TRACKED = 10_000
#: Entries sent along with a request, or in answer to a ``wait``, at most:
#: as many as a request carries (MAX_DEPS), less room for the entry an
#: accept or reclaim names and a rival. A burst of payments is certified by
#: one request for its newest: with a window smaller than the burst, a
#: witness that lacked the older entries answered ``wait`` and cost a round
#: trip more (32 made every second round of bench/finality.py a pair).
CHAIN_WINDOW = MAX_DEPS - 2


#: Refusals that mean "the rival of this accept, take-back, lapse or close has the votes"
#: (docs/witness.md §3.5, §3.6): the entry is to be voided, not given up.
RACE_LOST = frozenset({VOTED_ACCEPT, VOTED_TAKE_BACK, VOTED_CLOSE, VOTED_LAPSE, VOIDED})
#: How Progress.answers records a witness that could not be asked.
UNREACHABLE = "unreachable: "
#: Frame errors only a broken or lying witness causes (troc.net.frames.FrameError);
#: an EOF, a truncation, a reset or a timeout may be the network's doing, or
#: the witness's own failure (it closes the stream without an answer).
GARBLED_FRAMES = frozenset({"too_large", "bad_varint"})
#: A witness that stays unreachable is logged again after this many seconds.
UNREACHABLE_LOG_EVERY = 60.0


def entry_ref(progress: Progress) -> str:
    e = progress.entry
    return f"{e.author.hex()[:8]}#{e.seq}"


def _unreachable_reason(exc: BaseException) -> str:
    """A short reason for a failed ask: no address known, or the dial's own error."""
    text = str(exc)
    if isinstance(exc, DialError) and "no known addresses" in text.lower():
        return "no address known for it"
    if isinstance(exc, trio.TooSlowError):
        return "no answer in time"
    return text[:200]


def member_peer_id(member: bytes) -> str:
    """The libp2p peer id of the node run with this member's key."""
    return str(ID.from_pubkey(Ed25519PublicKey.from_bytes(member)).to_base58())


@dataclass(slots=True)
class Progress:
    """Where the certification of one own entry stands (``troc pay --wait``)."""

    entry: Entry
    collector: Collector
    done: trio.Event = field(default_factory=trio.Event)
    certificate: bytes | None = None
    final: bool = False
    problem: str | None = None  # why it cannot become final (a fork, a refusal by all)
    answers: dict[str, str] = field(default_factory=dict)  # witness hex → last answer
    faulty: dict[str, str] = field(default_factory=dict)  # witness hex → its lie
    asked: bool = False  # its own certificate was asked for (not only a later entry's)
    #: Its rival's certificate, once the entry lost its race: void votes are
    #: asked for with it (docs/witness.md §3.6).
    rival: tuple[Entry, bytes] | None = None
    #: Set once the entry is void: what the member is told.
    void: str | None = None
    #: A witness named an older own accept or take-back whose race is not
    #: settled here: the driver certifies that one first.
    switch: bool = False

    def unreachable(self) -> dict[MemberId, str]:
        """Witnesses that have not voted and could not be reached when last asked, and why."""
        voted = set(self.collector.votes)
        return {
            MemberId(bytes.fromhex(w)): last[len(UNREACHABLE) :]
            for w, last in self.answers.items()
            if last.startswith(UNREACHABLE) and bytes.fromhex(w) not in voted
        }

    def describe(self) -> dict[str, Any]:
        votes = len(self.collector.votes)
        if self.final and not self.certificate:
            votes = max(votes, self.collector.rules.quorum)  # final by a later entry's certificate
        return {
            "votes": votes,
            "quorum": self.collector.rules.quorum,
            "witnesses": len(self.collector.rules.witnesses),
            "final": self.final,
            "problem": self.problem,
            # An accept or take-back that lost its race: final, with no effect.
            "void": self.void,
            # Witnesses that lied about this entry (ignored; the others are asked).
            "witness_problems": dict(self.faulty),
        }


@dataclass(slots=True)
class _Exchange:
    """One request to a remote witness, run in a task of its own
    (:meth:`Certifier._exchange`): its answer or error once ``done``;
    ``scope`` cancels it."""

    done: trio.Event = field(default_factory=trio.Event)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    answer: Answer | None = None
    error: Exception | None = None


class Certifier:
    """Gathers certificates for this member's entries (see the module docstring).

    One *driver* per log (community, author) at a time: it asks the
    witnesses for the newest own entry that is not final yet, since its
    certificate makes every entry below it final too (the witnesses lock
    the whole chain). A burst of payments then costs one request per
    witness, not one per payment; when the certificate arrives, the driver
    goes on with whatever is newest by then.
    """

    def __init__(
        self,
        local: LocalNode,
        host: P2PHost,
        publish: Callable[[CommunityId, bytes], None],
        service: WitnessService | None = None,
    ) -> None:
        self.local = local
        self.host = host
        self.publish = publish
        self.service = service  # this node's own witness role, asked in-process
        self.progress: dict[tuple[CommunityId, Ref], Progress] = {}
        self._drivers: set[tuple[CommunityId, MemberId]] = set()
        self._idle: dict[MemberId, list[Any]] = {}  # open streams to witnesses, for reuse
        # Requests in flight per witness, at most MAX_IDLE: a witness serves a
        # bounded number of streams per peer (Peers.limit_streams) and closes
        # the rest at once.
        self._slots: dict[MemberId, trio.Semaphore] = {}
        #: Lies caught per witness since the node started (status, metrics).
        self.lies: Counter[MemberId] = Counter()
        self._warned: dict[MemberId, float] = {}  # unreachable witness → when logged (trio time)
        #: Starts a task in the node's nursery (:meth:`submit`'s ``start_soon``):
        #: where exchanges with remote witnesses run (:meth:`_exchange`).
        self._spawn: Callable[..., None] | None = None

    # -- what to certify ----------------------------------------------------

    def uncertified(self) -> list[Entry]:
        """Own entries of witnessed communities above their final tip (what a
        restarted node must still certify), oldest first."""
        out: list[Entry] = []
        store, me = self.local.store, self.local.member
        for info in self.local.communities():
            if info.finality != "witnessed":
                continue
            head = store.head(info.id, me)
            if head is None or head.final_seq is None or head.final_seq >= head.seq:
                continue
            out += [s.entry for s in store.log(info.id, me, after_seq=head.final_seq, limit=1000)]
        return out

    def track(self, entry: Entry) -> Progress | None:
        """Start following ``entry`` (an own entry); None if it needs no certificate."""
        assert entry.community is not None
        rules = self.local.ledger.witness_rules(entry.community)
        if rules is None:
            return None
        key = (entry.community, entry.ref)
        progress = self.progress.get(key)
        if progress is None:
            view = LedgerView(self.local.ledger, self.local.now)
            c = entry.community
            # A take-back's or a lapse's certificate carries the witnesses'
            # times, each past this deadline (docs/witness.md §3.5).
            deadline = deadline_of(entry, lambda r: view.get(c, r), lambda r: view.expiry(c, r))
            collector = Collector.for_entry(rules, entry, deadline_ms=deadline)
            progress = self.progress[key] = Progress(entry, collector)
        return progress

    def submit(self, entry: Entry, start_soon: Callable[..., None]) -> Progress | None:
        """Follow ``entry`` and make sure its log's driver runs (``start_soon``
        starts it in the caller's nursery)."""
        progress = self.track(entry)
        if progress is None:
            return None
        assert entry.community is not None
        self._spawn = start_soon
        key = (entry.community, entry.author)
        if key not in self._drivers:
            self._drivers.add(key)
            start_soon(self._drive, key)
        return progress

    async def _drive(self, key: tuple[CommunityId, MemberId]) -> None:
        c, author = key
        try:
            for _ in range(1_000_000):  # bounded; ends when nothing is left to certify
                self._settle(c, author)
                waiting = [
                    p
                    for (pc, ref), p in self.progress.items()
                    if pc == c and ref.author == author and not p.done.is_set()
                ]
                if not waiting:
                    return
                # An accept or take-back that can race comes first: the
                # witnesses lock nothing above it before it is settled, won
                # or void (docs/witness.md §3.6).
                races = [p for p in waiting if self._raceable(p.entry)]
                target = (
                    min(races, key=lambda p: p.entry.seq)
                    if races
                    else max(waiting, key=lambda p: p.entry.seq)
                )
                target.asked = True
                await self._certify_target(target)
                if target.problem is not None:
                    target.done.set()
        finally:
            self._drivers.discard(key)
            self._settle(c, author)

    def _settle(self, c: CommunityId, author: MemberId) -> None:
        """Mark done every followed entry of the log that is final now, and
        forget those done long enough (the map stays bounded)."""
        for (pc, ref), p in list(self.progress.items()):
            if pc != c or ref.author != author:
                continue
            if not p.done.is_set() and self._settled(c, p.entry):
                p.final = True
                if self.local.ledger.is_void(c, ref):
                    p.void = void_sentence(p.entry)
                p.done.set()
        if len(self.progress) > MAX_TRACKED:
            for k, p in list(self.progress.items())[: len(self.progress) - MAX_TRACKED]:
                if p.done.is_set():
                    del self.progress[k]

    async def _certify_target(self, progress: Progress) -> None:
        """Ask the witnesses until ``progress.entry`` is final or cannot be.

        Each witness is asked in a loop of its own, with its own backoff, so
        a witness that comes back is asked again within seconds whatever the
        others do; the first q votes end all the loops.
        """
        progress.switch = False
        async with trio.open_nursery() as nursery:
            for w in progress.collector.rules.witnesses:
                nursery.start_soon(self._keep_asking, progress, w, nursery.cancel_scope)

    async def _keep_asking(
        self, progress: Progress, witness: MemberId, scope: trio.CancelScope
    ) -> None:
        entry, collector = progress.entry, progress.collector
        c = entry.community
        assert c is not None
        for attempt in range(100_000):  # bounded: ~6 days at the longest delay
            if self._settled(c, entry):
                scope.cancel()  # a certificate from elsewhere (sync, gossip) made it final
                return
            if witness not in collector.pending():
                return  # voted (or caught lying): nothing more to ask it
            await self._ask(progress, witness)
            if progress.switch:  # an older own race first (see _own_races)
                scope.cancel()
                return
            if collector.certificate is not None:
                if progress.certificate is None:
                    self._store(c, collector.certificate.encode(), progress)
                scope.cancel()
                return
            if collector.conflicts:
                self._conflict(collector.conflicts[0], progress)
                scope.cancel()
                return
            rules = collector.rules
            lost = [r for r in collector.refusals.values() if r.reason in RACE_LOST]
            if lost and len(lost) > len(rules.witnesses) - rules.quorum:
                # Its rival has the votes: once its certificate is here, ask
                # for void votes; until then keep asking (sync or gossip
                # bring the rival's certificate, or the rival never wins).
                if self._lost_race(progress):
                    scope.cancel()
                    return
            elif len(collector.refusals) > len(rules.witnesses) - rules.quorum:
                first = next(iter(collector.refusals.values()))
                progress.problem = f"refused by witnesses: {first.reason} {first.detail}"
                logger.warning("%s cannot become final: %s", entry.ref, progress.problem)
                scope.cancel()
                return
            await trio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])

    def _final(self, c: CommunityId, ref: Ref) -> bool:
        return self.local.ledger.is_final(c, ref)

    def _settled(self, c: CommunityId, entry: Entry) -> bool:
        """Final here; for an accept or take-back that can race, also with its
        own certificate, of either kind (the witnesses need it to lock
        anything above it, docs/witness.md §3.6): final through a later
        entry's certificate only, it is asked for again (its witnesses, which
        recorded it, vote at once)."""
        if not self._final(c, entry.ref):
            return False
        return (
            not self._raceable(entry) or self.local.ledger.certificate_of(c, entry.ref) is not None
        )

    def _own_races(self, progress: Progress, waiting: Waiting) -> bool:
        """Follow the older own accepts and take-backs a ``wait`` names whose
        race is not settled here (say, certified before void votes existed,
        through a later entry only); True if there are any: the driver then
        asks for them first."""
        entry, c = progress.entry, progress.entry.community
        assert c is not None
        found = False
        for r in waiting.certificates:
            if r.author != entry.author or r.seq >= entry.seq:
                continue
            stored = self.local.store.entry(c, r.author, r.seq, r.id)
            if stored is not None and not self._settled(c, stored.entry):
                self.track(stored.entry)
                found = True
        return found

    def _raceable(self, entry: Entry) -> bool:
        """An entry that can lose a race (troc.protocol.witness.raceable)."""
        if entry.community is None:
            return False
        return raceable(entry, LedgerView(self.local.ledger, self.local.now), entry.community)

    def _lost_race(self, progress: Progress) -> bool:
        """If a rival of ``progress.entry`` (``rivals_of``: the other side of
        an accept / take-back or a lapse / close race) is certified here,
        switch to asking for void votes (a new collector) and return True."""
        entry = progress.entry
        c = entry.community
        if c is None or not can_be_void(entry) or progress.rival is not None:
            return False
        ledger = self.local.ledger
        for ref in rivals_of(entry, LedgerView(ledger, self.local.now), c) or []:
            cert = ledger.certificate_of(c, ref)
            stored = ledger.backend.entry(c, ref.author, ref.seq, ref.id)
            if cert is not None and stored is not None and not is_void_certificate(cert):
                progress.rival = (stored.entry, cert)
                rules = progress.collector.rules
                progress.collector = Collector.for_entry(rules, entry, void=True)
                logger.info("%s lost its race: %s", entry_ref(progress), void_sentence(entry))
                return True
        return False

    def _store(self, c: CommunityId, cert: bytes, progress: Progress) -> None:
        outcome = self.local.ingest_certificate(cert)
        progress.certificate = cert
        if outcome.ok:
            self.publish(c, cert)
        else:  # pragma: no cover - the collector checked every vote
            logger.error("own certificate refused: %s %s", outcome.reason, outcome.detail)

    def _conflict(self, answer: Conflicting, progress: Progress) -> None:
        proof = answer.fork_proof
        progress.problem = "this member's key signed another entry at that seq (a fork)"
        logger.error("%s: %s", progress.entry.ref, progress.problem)
        if proof is not None:
            for wire in proof:
                try:
                    self.local.ingest(wire, community=progress.entry.community)
                except TrocError:  # pragma: no cover - the proof verified
                    logger.exception("could not store a fork proof")

    # -- one witness --------------------------------------------------------

    async def _ask(self, progress: Progress, witness: MemberId) -> None:
        request = self._request(progress.entry, progress.rival)
        try:
            with trio.fail_after(ANSWER_TIMEOUT):
                for _round in range(MAX_WAIT_ROUNDS):
                    answer = await self._exchange(witness, request)
                    progress.answers[witness.hex()] = type(answer).__name__.lower()
                    logger.debug(
                        "%s: witness %s answered %r", entry_ref(progress), witness.hex()[:8], answer
                    )
                    if not isinstance(answer, Waiting):
                        tally = progress.collector.add_answer(answer, witness)
                        if tally in LIES:
                            self._lied(progress, witness)
                        elif tally not in (Tally.COUNTED, Tally.DUPLICATE, Tally.REFUSED):
                            logger.info("witness %s: %s", witness.hex()[:8], tally.value)
                        return
                    if self._own_races(progress, answer):
                        progress.switch = True
                        return
                    more = self._named(progress.entry, answer, rival=progress.rival)
                    if more is None:
                        return  # it needs what we lack too: later
                    request = more
        except FrameError as exc:
            if exc.reason not in GARBLED_FRAMES:
                # The stream ended, was reset or timed out: the witness was
                # killed, failed on its side or the network cut it. Not a lie:
                # asked again with the others (a quorum may need its vote).
                self._unreachable(progress, witness, exc)
            else:
                self._garbage(progress, witness, exc)
        except RemoteProtocolError as exc:
            self._garbage(progress, witness, exc)
        except (DialError, trio.TooSlowError) as exc:
            self._unreachable(progress, witness, exc)
        else:
            self._warned.pop(witness, None)

    def _garbage(self, progress: Progress, witness: MemberId, exc: Exception) -> None:
        """An answer no honest witness sends (an undecodable message or a
        malformed frame): a lie, held against ``witness`` for this entry."""
        progress.answers[witness.hex()] = f"bad answer: {exc}"[:300]
        if self.service is None or witness != self.service.key.public:
            progress.collector.blame(witness, f"sent garbage: {exc}"[:300])
            self._lied(progress, witness)

    def _unreachable(self, progress: Progress, witness: MemberId, exc: Exception) -> None:
        why = _unreachable_reason(exc)
        progress.answers[witness.hex()] = f"{UNREACHABLE}{why}"
        logger.debug("witness %s: %s", witness.hex()[:8], exc)
        self._log_unreachable(witness, why)

    def _log_unreachable(self, witness: MemberId, why: str) -> None:
        """A warning when a witness becomes unreachable, and again now and then
        while it stays so (each ask is retried within seconds)."""
        now = trio.current_time()
        if now - self._warned.get(witness, -math.inf) < UNREACHABLE_LOG_EVERY:
            return
        self._warned[witness] = now
        logger.warning(
            "cannot reach witness %s (peer %s): %s; own entries wait for its vote",
            encode_id("m", witness)[:14] + "…",
            member_peer_id(witness),
            why,
        )

    def unreachable(self, community: CommunityId | None = None) -> dict[MemberId, str]:
        """Witnesses (of ``community``, or of any) that own entries still
        waiting for a certificate could not reach, and why."""
        out: dict[MemberId, str] = {}
        for (c, _ref), p in self.progress.items():
            if not p.done.is_set() and community in (None, c):
                out.update(p.unreachable())
        return out

    def describe(self, progress: Progress) -> dict[str, Any]:
        """:meth:`Progress.describe`, and the witnesses that could not be
        reached (the log's driver may be asking for an older or newer entry
        of the same log: its certificate would make this one final too)."""
        out = progress.describe()
        c = progress.entry.community
        missing = {} if progress.final or c is None else self.unreachable(c)
        out["unreachable"] = {encode_id("m", w): why for w, why in sorted(missing.items())}
        return out

    def _lied(self, progress: Progress, witness: MemberId) -> None:
        """Report a witness caught lying about ``progress.entry`` (once per entry)."""
        what = progress.collector.faulty.get(witness)
        if what is None or witness.hex() in progress.faulty:
            return
        progress.faulty[witness.hex()] = what
        self.lies[witness] += 1
        logger.warning(
            "witness %s misbehaves (%s: %s); asking the others",
            witness.hex()[:16],
            entry_ref(progress),
            what,
        )

    async def _exchange(self, witness: MemberId, request: VoteRequest) -> Answer:
        if self.service is not None and witness == self.service.key.public:
            answer = await self.service.ask(request)
            if answer is None:
                raise RemoteProtocolError("this node's witness role failed to decide")
            return answer
        if self._spawn is None:  # not started by a driver: in this task
            return await self._exchange_slotted(witness, request)
        # In a task of its own, abandoned (cancelled, not awaited) once this
        # one is cancelled or times out: py-libp2p 0.8.1 resets a stream whose
        # negotiation is cancelled in a shielded scope with no deadline, and
        # that reset waits for the connection's write lock, forever on a link
        # that stalled (a frozen witness, a dead route). Awaited here, it kept
        # the round's nursery open and the log's driver stopped asking for
        # good (docs/witness.md §6.3). Abandoned, it holds one of the
        # witness's MAX_IDLE slots until the link is closed, so at most that
        # many per witness; the next asks to it then time out waiting for a
        # slot ("unreachable"), and the other witnesses are asked as ever.
        pending = _Exchange()
        self._spawn(self._exchange_apart, witness, request, pending)
        try:
            await pending.done.wait()
        finally:
            pending.scope.cancel()
        if pending.error is not None:
            raise pending.error
        if pending.answer is None:  # cancelled from outside: the node is stopping
            raise trio.TooSlowError
        return pending.answer

    async def _exchange_apart(
        self, witness: MemberId, request: VoteRequest, pending: _Exchange
    ) -> None:
        with pending.scope:
            try:
                pending.answer = await self._exchange_slotted(witness, request)
            except Exception as exc:  # the asker's to handle (_ask)
                pending.error = exc
            finally:
                pending.done.set()

    async def _exchange_slotted(self, witness: MemberId, request: VoteRequest) -> Answer:
        slots = self._slots.get(witness)
        if slots is None:
            slots = self._slots[witness] = trio.Semaphore(self.MAX_IDLE)
        async with slots:
            return await self._exchange_remote(witness, request)

    async def _exchange_remote(self, witness: MemberId, request: VoteRequest) -> Answer:
        idle = self._idle.setdefault(witness, [])
        if idle:  # a stream kept from an earlier request: no dial, no negotiation
            stream = idle.pop()
            try:
                answer = await self._round_trip(stream, request)
            except (FrameError, RemoteProtocolError):
                await close_stream(stream, reset=True)  # the witness closed it meanwhile
            else:
                await self._keep(witness, stream)
                return answer
        stream = await self.host.open_stream(member_peer_id(witness), PROTOCOL_ID, redial=True)
        try:
            answer = await self._round_trip(stream, request)
        except BaseException:
            await close_stream(stream, reset=True)
            raise
        await self._keep(witness, stream)
        return answer

    #: Streams kept open per witness for reuse, at most.
    MAX_IDLE = 8

    async def _keep(self, witness: MemberId, stream: Any) -> None:
        idle = self._idle.setdefault(witness, [])
        if len(idle) < self.MAX_IDLE:
            idle.append(stream)
        else:
            await close_stream(stream, reset=False)

    @staticmethod
    async def _round_trip(stream: Any, request: VoteRequest) -> Answer:
        await write_frame(stream, encode_request(request), frame_timeout=ANSWER_TIMEOUT)
        reader = FrameReader(stream, max_size=MESSAGE_LIMITS.max_size, frame_timeout=ANSWER_TIMEOUT)
        return decode_answer(await reader.read_frame())

    def _request(self, entry: Entry, rival: tuple[Entry, bytes] | None = None) -> VoteRequest:
        """The entry, with its log since the final tip and what it names
        (and, for void votes, its ``rival`` and the rival's certificate)."""
        c = entry.community
        assert c is not None
        store = self.local.store
        head = store.head(c, entry.author)
        since = 0 if head is None or head.final_seq is None else head.final_seq
        deps = self._chain(c, entry.author, entry.seq - 1, floor=since)
        certs: list[bytes] = []
        named = certificate_needed(entry)
        if named is not None:
            wire = self._wire(c, named)
            if wire is not None:
                deps.append(wire)
            cert = certificate_for(self.local.ledger, c, named)
            if cert is not None:
                certs.append(cert)
        if rival is not None:
            deps.append(rival[0].wire)
            certs.append(rival[1])
        return VoteRequest(
            entry.wire, tuple(deps[-MAX_DEPS:]), tuple(certs), void=rival is not None
        )

    def _named(
        self, entry: Entry, waiting: Waiting, *, rival: tuple[Entry, bytes] | None = None
    ) -> VoteRequest | None:
        """A request carrying what a ``wait`` named, or None if we lack it all.
        For void votes (a ``rival``), the rival and its certificate again: a
        witness that could not store the rival yet waits for what the rival
        names, and reads the rival from the request (docs/witness.md §3.6)."""
        c = entry.community
        assert c is not None
        deps: list[bytes] = []
        for r in waiting.missing:
            if r.author == entry.author and r.seq < entry.seq:
                # A gap in our own log at the witness: send the window below it too.
                deps += self._chain(c, r.author, r.seq)
            else:
                wire = self._wire(c, r)
                if wire is not None:
                    deps.append(wire)
        ledger = self.local.ledger
        certs = [
            x
            for x in (certificate_for(ledger, c, r) for r in waiting.certificates)
            if x is not None
        ]
        if not deps and not certs:
            return None
        if rival is not None:  # last, after what the wait named (stored first)
            deps = [*deps[: MAX_DEPS - 1], rival[0].wire]
            certs = [*certs[: MAX_CERTIFICATES - 1], rival[1]]
        return VoteRequest(
            entry.wire,
            tuple(deps[:MAX_DEPS]),
            tuple(certs[:MAX_CERTIFICATES]),
            void=rival is not None,
        )

    def _chain(self, c: CommunityId, author: MemberId, upto: int, floor: int = 0) -> list[bytes]:
        """``author``'s entries up to seq ``upto``, at most CHAIN_WINDOW of
        them and none at or below ``floor``, oldest first (wire bytes)."""
        low = max(floor, upto - CHAIN_WINDOW)
        return [
            s.entry.wire
            for s in self.local.store.log(c, author, after_seq=low, limit=CHAIN_WINDOW)
            if s.entry.seq <= upto
        ]

    def _wire(self, c: CommunityId, ref: Ref) -> bytes | None:
        # Stored, or (an accept may name it) a transfer held parked with its
        # own certificate (docs/witness.md §6.1): a witness may lack it too.
        held = self.local.ledger.held_certified(c, ref)
        return None if held is None else held.wire
