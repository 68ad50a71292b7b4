"""The witness's durable commit off the node's thread (troc.node.walsync):
a batch's answers wait for an fsync of the store's log that runs on a
worker thread while the node's thread goes on; waits at the same time share
one fsync; a failed fsync sends no answer."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers import founded_homes, key
from troc.errors import StoreError
from troc.node import homefiles, ops
from troc.node.certifier import Certifier
from troc.node.groupcommit import GroupCommit
from troc.node.local import LocalNode, now_ms, open_local_node
from troc.node.operations import OPERATIONS
from troc.node.store import Store
from troc.node.walsync import LogSync, own_durable
from troc.node.witness import WitnessService
from troc.protocol.entry import Entry
from troc.protocol.witness import Voted, VoteRequest

WITNESSES = [key(500 + i) for i in range(4)]


class GatedSync:
    """Stands for ``Store.sync_log`` on a worker thread: records each call
    and holds it until released (or fails it)."""

    def __init__(self, store: Store) -> None:
        self.real = store.sync_log
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self.fail = False
        store.sync_log = self  # type: ignore[method-assign]

    def __call__(self) -> None:
        self.calls += 1
        self.entered.set()
        assert self.release.wait(10)
        if self.fail:
            raise StoreError("cannot sync the store: (test) disk gone")
        self.real()


async def entered(gate: GatedSync) -> None:
    for _ in range(500):  # bounded: 5 s
        if gate.entered.is_set():
            return
        await trio.sleep(0.01)
    raise AssertionError("the log was never fsynced off the node's thread")


def request_for(tmp_path: Path) -> tuple[bytes, VoteRequest, Entry]:
    """A community witnessed by WITNESSES, and a vote request for an offer in it."""
    with open_local_node(tmp_path / "author", key(1)) as author:
        c = author.create_community(
            "W", "h", 5, finality="witnessed", witnesses=tuple(w.public for w in WITNESSES),
            faults=1,
        )  # fmt: skip
        offer = author.offer(c, "an offer")
        request = Certifier(author, None, lambda c, b: None)._request(offer)  # type: ignore[arg-type]
        return author.community(c).genesis, request, offer


def voted(node: LocalNode, entry: Entry) -> bool:
    assert entry.community is not None
    return node.store.voted(entry.community, entry.author, entry.seq) == entry.id


async def test_a_witness_answers_after_an_fsync_its_thread_does_not_wait_for(
    tmp_path: Path,
) -> None:
    genesis, request, offer = request_for(tmp_path)
    with open_local_node(tmp_path / "w", WITNESSES[0]) as w:
        w.ingest(genesis)
        service = WitnessService(w, WITNESSES[0], now_ms)
        gate = GatedSync(w.store)
        answers: list[object] = []

        async def ask() -> None:
            answers.append(await service.ask(request))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(service.run)
            nursery.start_soon(ask)
            await entered(gate)
            # The vote is recorded (committed), its fsync is running on a
            # worker thread, and the node's thread goes on meanwhile: no
            # answer has left yet.
            assert voted(w, offer)
            for _ in range(5):
                await trio.sleep(0.01)
            assert answers == []
            gate.release.set()
            for _ in range(500):  # bounded: 5 s
                if answers:
                    break
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert len(answers) == 1, answers
    assert isinstance(answers[0], Voted), answers
    assert (gate.calls, service.log_sync.syncs) == (1, 1)


async def test_a_witness_whose_fsync_fails_sends_no_answer(tmp_path: Path) -> None:
    genesis, request, _offer = request_for(tmp_path)
    with open_local_node(tmp_path / "w", WITNESSES[0]) as w:
        w.ingest(genesis)
        service = WitnessService(w, WITNESSES[0], now_ms)
        gate = GatedSync(w.store)
        gate.fail = True
        gate.release.set()
        answers: list[object] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(service.run)
            with trio.fail_after(5):
                answers.append(await service.ask(request))
            nursery.cancel_scope.cancel()
    assert answers == [None]  # the caller closes the stream unanswered


async def test_waits_at_once_share_an_fsync_and_a_later_one_gets_its_own(
    tmp_path: Path,
) -> None:
    with Store.open(tmp_path / "s.sqlite") as store:
        sync = LogSync(store)
        gate = GatedSync(store)
        done: list[int] = []

        async def wait(i: int) -> None:
            await sync.wait()
            done.append(i)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, 0)
            await entered(gate)
            # Begun while an fsync runs that may not cover their commits:
            # they wait for one more, which they share.
            for i in (1, 2, 3):
                nursery.start_soon(wait, i)
            await trio.sleep(0.05)
            assert done == []
            gate.entered.clear()
            gate.release.set()
        assert sorted(done) == [0, 1, 2, 3]
        assert gate.calls == sync.syncs == 2


def test_sync_log_fsyncs_the_write_ahead_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    synced: list[str] = []
    real_fsync = os.fdatasync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    with Store.open(tmp_path / "s.sqlite") as store:
        with store.transaction():
            pass
        monkeypatch.setattr(os, "fdatasync", fsync)
        store.sync_log()
    assert synced == [str(tmp_path / "s.sqlite-wal")]


# -- the payer's group commit ---------------------------------------------------


def _pay(local: LocalNode, to: bytes) -> Callable[[], Any]:
    step = OPERATIONS["pay"].run
    assert step is not None
    params = {"to": ops.mid(to), "amount": "1", "to_unknown": True}
    return lambda: step(local, params)


async def _settle() -> None:
    for _ in range(20):
        await trio.sleep(0.005)


async def test_a_group_commit_is_answered_announced_and_marked_after_an_fsync_off_the_thread(
    tmp_path: Path,
) -> None:
    ks, ka, community, _genesis = founded_homes(tmp_path)
    home = tmp_path / "a"
    with open_local_node(home, ka) as a:
        announced: list[Entry] = []
        a.listeners.append(lambda e, own: announced.append(e))
        commit = GroupCommit(a)
        gate = GatedSync(a.store)
        answers: list[Any] = []
        gated: list[bool] = []  # own_durable returned while the fsync ran

        async def pay() -> None:
            answers.append(await commit.run(_pay(a, ks.public)))

        async def sync_reads() -> None:
            await own_durable(a)
            gated.append(not gate.release.is_set())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(commit.serve)
            for _ in range(4):
                nursery.start_soon(pay)
            await entered(gate)
            nursery.start_soon(sync_reads)
            await _settle()
            # Committed, its fsync running on a worker thread while this
            # thread goes on: not answered, not announced, not marked, and
            # sync does not read the store meanwhile.
            assert a.store.head(community, ka.public).seq == 5  # type: ignore[union-attr]
            assert (answers, announced, gated) == ([], [], [])
            mark = homefiles.signed_marks(home)
            assert mark is not None
            assert mark[community].seq == 1
            gate.release.set()
            for _ in range(500):  # bounded: 5 s
                if len(answers) == 4 and gated:
                    break
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert len(answers) == 4
    assert gated == [False]
    assert [e.seq for e in announced] == [2, 3, 4, 5]
    assert (commit.batches, gate.calls) == (1, 1)
    mark = homefiles.signed_marks(home)
    assert mark is not None
    assert mark[community].seq == 5


async def test_an_own_entry_signed_while_a_batch_awaits_its_fsync_finishes_it_first(
    tmp_path: Path,
) -> None:
    """Another own entry (not through the group commit: an offer) signed
    while a batch's fsync runs: the batch is made durable, marked and
    announced first, on this thread; marks and announcements keep the log's
    order, and the batch's requests are answered once."""
    ks, ka, community, _genesis = founded_homes(tmp_path)
    home = tmp_path / "a"
    with open_local_node(home, ka) as a:
        announced: list[int] = []
        a.listeners.append(lambda e, own: announced.append(e.seq))
        commit = GroupCommit(a)
        gate = GatedSync(a.store)
        answers: list[Any] = []

        async def pay() -> None:
            answers.append(await commit.run(_pay(a, ks.public)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(commit.serve)
            for _ in range(3):
                nursery.start_soon(pay)
            await entered(gate)
            # The worker's fsync is held; this one runs on the node's thread.
            gate.release.set()  # (the offer's own sync must not wait for the worker's)
            offer = a.offer(community, "bread")
            assert offer.seq == 5
            assert announced == [2, 3, 4, 5]
            mark = homefiles.signed_marks(home)
            assert mark is not None
            assert mark[community].seq == 5
            for _ in range(500):  # bounded: 5 s
                if len(answers) == 3:
                    break
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert len(answers) == 3
    assert announced == [2, 3, 4, 5]  # once each


async def test_sync_is_not_left_waiting_for_a_batch_another_thread_finished(
    tmp_path: Path,
) -> None:
    """A batch awaiting its fsync is finished by an append on another thread
    just after sync read it pending and before sync added itself to its
    waiters (finish_own had called them all already): sync sees it finished
    and goes on, instead of waiting for a wake that never comes."""
    ks, ka, _community, _genesis = founded_homes(tmp_path)
    with open_local_node(tmp_path / "a", ka) as a:
        commit = GroupCommit(a)
        gate = GatedSync(a.store)

        class FinishedMeanwhile(list[Callable[[], None]]):
            def append(self, wake: Callable[[], None]) -> None:
                assert pending is not None
                a.finish_own(pending)  # what the other thread did first
                super().append(wake)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(commit.serve)
            for _ in range(2):  # a batch of one is committed as alone
                nursery.start_soon(commit.run, _pay(a, ks.public))
            await entered(gate)
            pending = a.pending_own
            assert pending is not None
            pending.waiters = FinishedMeanwhile()
            with trio.fail_after(5):
                await own_durable(a)
            gate.release.set()
            nursery.cancel_scope.cancel()
        assert a.pending_own is None
