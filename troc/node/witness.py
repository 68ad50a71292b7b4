"""Witnessed finality in the node: a witness's votes, an author's certificates.

Theory of operation
-------------------
The rules are :mod:`troc.protocol.witness` (sans-I/O); this module moves
them over libp2p streams (``/troc/witness/1``, docs/witness.md §5) and keeps
their state in the node's store.

**The witness** (:class:`WitnessService`, ``troc run --witness``): for each
community whose genesis names the node's member as a witness, one
:class:`~troc.protocol.witness.WitnessState` over the node's own ledger and
a vote log in the store's ``votes`` table. A request is handled, its entries
and certificates stored, its vote records written, all in **one
transaction**, made durable before the answer is written to the stream:
a batch of requests commits, then waits for an fsync of the store's log on
a worker thread (:class:`~troc.node.walsync.LogSync`, shared with whatever
else waits for one) while the node's thread goes on. A witness killed at
any point (or a machine that loses power) therefore either never sent the
vote or has it on disk, and :meth:`WitnessState.decide` never signs
anything but what the vote log records: it cannot sign two ids at one
(author, seq), across restarts too. Requests are handled one at a time (the
node's lock), which the rules require.

The author's side, which asks witnesses for votes, is
:mod:`troc.node.certifier` (re-exported here).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from troc.crypto.sign import MemberId, SigningKey
from troc.errors import CodecError, StoreError
from troc.net.channels import take_ready
from troc.net.p2p import FrameError, FrameReader, write_frame
from troc.net.quota import PeerQuota
from troc.node.certifier import ANSWER_TIMEOUT, Certifier, Progress, member_peer_id
from troc.node.local import LocalNode
from troc.node.walsync import LogSync, log_sync_of
from troc.protocol.entry import CommunityId, Entry, EntryId
from troc.protocol.witness import (
    MESSAGE_LIMITS,
    PROTOCOL_ID,
    Answer,
    LedgerView,
    Refused,
    VoteRequest,
    WitnessState,
    decode_request,
    encode_answer,
)

__all__ = [
    "PROTOCOL_ID",
    "Certifier",
    "Progress",
    "StoreVoteLog",
    "WitnessService",
    "member_peer_id",
]

logger = logging.getLogger("troc.witness")
#: An idle inbound witness stream is closed after this.
IDLE_TIMEOUT = 60.0
#: A peer this far (seconds) over its witness-request budget has its stream
#: closed unanswered; less than this, it waits that long for its answer.
MAX_QUOTA_WAIT = 2.0


class StoreVoteLog:
    """:class:`~troc.protocol.witness.VoteLog` over the store's ``votes``
    table; durable when the enclosing transaction commits durably."""

    def __init__(self, local: LocalNode) -> None:
        self.store = local.store

    def get(self, community: CommunityId, author: MemberId, seq: int) -> EntryId | None:
        return self.store.voted(community, author, seq)

    def last(self, community: CommunityId, author: MemberId) -> int:
        return self.store.votes_last(community, author)

    def put(
        self, community: CommunityId, author: MemberId, records: Sequence[tuple[int, EntryId]]
    ) -> None:
        self.store.put_votes(community, author, records)

    def voids(self, community: CommunityId, author: MemberId) -> dict[int, EntryId]:
        return self.store.void_votes(community, author)

    def put_void(self, community: CommunityId, author: MemberId, seq: int, eid: EntryId) -> None:
        self.store.put_void_vote(community, author, seq, eid)


@dataclass(slots=True)
class _Asked:
    """One request in the group-commit queue, and its answer once committed."""

    request: VoteRequest
    answer: Answer | None = None
    done: trio.Event = field(default_factory=trio.Event)


class WitnessService:
    """Serves ``/troc/witness/1`` for the communities this member witnesses.

    Group commit: requests that arrive while a batch is being written wait
    for the next one; each batch is decided in one transaction, made durable
    by one fsync on a worker thread (:class:`LogSync`: the node's thread
    goes on meanwhile), and only then are its answers sent. :meth:`run`
    must be running.

    Each request is charged to its peer: to the node's ``quota`` (its bytes,
    and the entries and certificates it carries, as sync frames are) and to
    a budget of :attr:`REQUESTS_PER_S` requests a second per peer (each one
    costs a share of a durable transaction under the node's lock). A peer
    over budget waits before its request is queued; one more than
    :data:`MAX_QUOTA_WAIT` seconds over has its stream closed unanswered.
    With at most ``quota.streams`` streams per peer, one request each, a
    flooding peer holds few places in the queue, and others are served.
    """

    #: Requests decided in one transaction, at most.
    MAX_BATCH = 256
    #: Witness requests a second per peer (a second's worth may come at once).
    #: An author's node asks one request per log at a time; sequential
    #: payments make a few dozen a second.
    REQUESTS_PER_S = 200.0

    def __init__(
        self,
        local: LocalNode,
        key: SigningKey,
        clock: Callable[[], int],
        quota: PeerQuota | None = None,
    ) -> None:
        self.local = local
        self.key = key
        self.clock = clock
        self.votes = StoreVoteLog(local)
        self.view = LedgerView(local.ledger, clock)
        self.quota = quota
        self.requests = PeerQuota(0, self.REQUESTS_PER_S)
        self.answered = 0
        self.batches = 0
        self.throttled = 0  # requests slowed or refused for their peer's budget
        self.log_sync: LogSync = log_sync_of(local.store)
        self._send, self._queue = trio.open_memory_channel[_Asked](10_000)

    async def run(self) -> None:
        """Decide queued requests, a batch per durable transaction."""
        async for first in self._queue:
            batch = [first]
            take_ready(self._queue, batch, self.MAX_BATCH)
            self._decide_batch(batch)
            try:
                # No answer leaves before its vote records are on disk: a
                # witness restarted after a crash must find every vote it
                # sent (docs/witness.md §6.3).
                await self.log_sync.wait()
            except StoreError:
                logger.exception("a witness batch is not on disk: its %d requests fail", len(batch))
                for asked in batch:
                    asked.answer = None
            for asked in batch:
                asked.done.set()
            await trio.lowlevel.checkpoint()

    def _decide_batch(self, batch: list[_Asked]) -> None:
        """Decide ``batch`` in one transaction, committed but not fsynced
        (the caller waits for that); each request holds its answer after."""
        local = self.local
        try:
            with local.lock, local.store.transaction():
                answers = [self._decide(a.request) for a in batch]
        except Exception:
            # One request broke the transaction (nothing of it was kept, no
            # answer was sent): decide them one by one, so only it fails.
            logger.warning("a witness batch failed; deciding one by one", exc_info=True)
            for asked in batch:
                try:
                    asked.answer = self.answer(asked.request)
                except Exception:
                    logger.exception("a witness request failed")
            return
        for asked, answer in zip(batch, answers, strict=True):
            asked.answer = answer
        self.answered += len(batch)
        self.batches += 1

    def _state(self, community: CommunityId) -> WitnessState | None:
        rules = self.local.ledger.witness_rules(community)
        if rules is None or self.key.public not in rules.witnesses:
            return None
        return WitnessState(self.key, rules, self.votes, self.view)

    def answer(self, request: VoteRequest) -> Answer:
        """Decide on one request now; what it changes is durable before this returns."""
        local = self.local
        with local.lock, local.store.transaction(durable=True):
            answer = self._decide(request)
        self.answered += 1
        return answer

    def _decide(self, request: VoteRequest) -> Answer:
        """Inside a transaction: the witness's answer to one request."""
        try:
            entry = Entry.decode(request.entry)
        except CodecError as exc:
            return Refused(exc.reason, str(exc))
        state = None if entry.community is None else self._state(entry.community)
        if state is None:
            return Refused("unknown_community", "this node witnesses no such community")
        return state.handle(request)

    def _charge(self, peer: str, data: bytes, request: VoteRequest) -> float:
        """Charge one request to ``peer``; the seconds it is over budget."""
        over = self.requests.charge(peer, entries=1)
        if self.quota is not None:
            carried = len(request.deps) + len(request.certificates) + 1
            over = max(over, self.quota.charge(peer, nbytes=len(data), entries=carried))
        if over > 0:
            self.throttled += 1
        return over

    async def ask(self, request: VoteRequest) -> Answer | None:
        """Queue a request for the next batch; its answer once committed
        (None if deciding it failed on this side)."""
        asked = _Asked(request)
        await self._send.send(asked)
        await asked.done.wait()
        return asked.answer

    async def handle_stream(self, stream: Any, peer: str) -> None:
        reader = FrameReader(stream, max_size=MESSAGE_LIMITS.max_size, frame_timeout=IDLE_TIMEOUT)
        while True:
            try:
                data = await reader.read_frame()
            except FrameError as exc:
                if exc.reason in ("eof", "timeout"):  # done, or idle
                    return
                raise
            request = decode_request(data)  # RemoteProtocolError: the stream is reset
            over = self._charge(peer, data, request)
            if over > MAX_QUOTA_WAIT:
                logger.info("witness requests of %s over budget by %.1f s: refused", peer, over)
                return  # closed unanswered; it may ask again once under budget
            if over > 0:
                await trio.sleep(over)  # slowed to its budget; others' requests go on
            answer = await self.ask(request)
            if answer is None:
                return  # our failure, logged: the asker tries again later
            await write_frame(stream, encode_answer(answer), frame_timeout=ANSWER_TIMEOUT)
