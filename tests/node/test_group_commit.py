"""Group commit of own entries (troc.node.groupcommit), on real SQLite.

Concurrent payment requests share one durable transaction; each is answered
once, with its own entry; an entry is announced only once it is committed;
a refused payment fails alone; a step that breaks after it began writing
undoes its batch, whose other steps are then each committed alone.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers import founded_homes
from troc.errors import RefusedError, StoreError
from troc.node import homefiles, ops
from troc.node.groupcommit import GroupCommit
from troc.node.local import LocalNode, open_local_node
from troc.node.node import NodeConfig, open_node
from troc.node.operations import OPERATIONS
from troc.protocol.entry import Entry, Transfer


def _pay_step(local: LocalNode, to: bytes, amount: int) -> Callable[[], Any]:
    step = OPERATIONS["pay"].run
    assert step is not None
    params = {"to": ops.mid(to), "amount": str(amount), "to_unknown": True}
    return lambda: step(local, params)


def _count_durable(local: LocalNode) -> list[int]:
    """Count the node's fsyncs of its store: durable transactions, and
    fsyncs of the log after transactions that were not (troc.node.walsync)."""
    count = [0]
    transaction = local.store.transaction
    sync_log = local.store.sync_log

    def counting(durable: bool = False) -> Any:
        count[0] += durable
        return transaction(durable=durable)

    def counting_syncs() -> None:
        count[0] += 1
        sync_log()

    local.store.transaction = counting  # type: ignore[method-assign]
    local.store.sync_log = counting_syncs  # type: ignore[method-assign]
    return count


async def _run_all(commit: GroupCommit, steps: list[Callable[[], Any]]) -> list[Any]:
    """Run ``steps`` through ``commit`` at once; each one's result or error."""
    out: list[Any] = [None] * len(steps)

    async def one(i: int) -> None:
        try:
            out[i] = await commit.run(steps[i])
        except Exception as exc:
            out[i] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(commit.serve)
        async with trio.open_nursery() as requests:
            for i in range(len(steps)):
                requests.start_soon(one, i)
        nursery.cancel_scope.cancel()
    return out


def _announced(local: LocalNode, store_path: Path) -> list[Entry]:
    """Record own entries as announced, checking each is committed by then
    (another connection to the file sees it)."""
    seen: list[Entry] = []

    def listener(entry: Entry, own: bool) -> None:
        assert own
        other = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)
        try:
            found = other.execute("SELECT count(*) FROM entries WHERE id = ?", (entry.id,))
            assert found.fetchone() == (1,)
        finally:
            other.close()
        seen.append(entry)

    local.listeners.append(listener)
    return seen


def _own_log(home: Path, key: Any, community: Any) -> list[Entry]:
    with open_local_node(home, key) as a:
        return [s.entry for s in a.store.log(community, key.public, after_seq=0, limit=100)]


async def test_concurrent_pays_share_one_durable_transaction(tmp_path: Path) -> None:
    ks, ka, community, _genesis = founded_homes(tmp_path)
    home = tmp_path / "a"
    with open_local_node(home, ka) as a:
        durable = _count_durable(a)
        announced = _announced(a, home / "store.sqlite")
        commit = GroupCommit(a)
        results = await _run_all(commit, [_pay_step(a, ks.public, 1) for _ in range(8)])
        assert (commit.batches, commit.steps, durable[0]) == (1, 8, 1)
    transfers = [r.result["transfer"] for r in results]
    assert len(set(transfers)) == 8  # each answered once, with its own entry
    log = _own_log(home, ka, community)  # reopened: all of it was committed
    assert [e.seq for e in log] == list(range(1, 10))  # the join, then 8 payments
    assert sorted(ops.eid(e.id) for e in log[1:]) == sorted(transfers)
    assert [e.id for e in announced] == [e.id for e in log[1:]]  # once each, in order
    mark = homefiles.signed_marks(home)
    assert mark is not None
    assert mark[community].seq == 9


async def _arriving(commit: GroupCommit, step: Callable[[], Any], count: int) -> None:
    """``count`` requests reaching ``commit`` one scheduler pass apart, as
    requests on their way (accepted, read, parsed) do while a batch gathers."""

    async def late(i: int) -> None:
        for _ in range(i):
            await trio.lowlevel.checkpoint()
        await commit.run(step)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(commit.serve)
        async with trio.open_nursery() as requests:
            for i in range(count):
                requests.start_soon(late, i)
        nursery.cancel_scope.cancel()


async def test_requests_on_their_way_join_the_batch(tmp_path: Path) -> None:
    ks, ka, _community, _genesis = founded_homes(tmp_path)
    with open_local_node(tmp_path / "a", ka) as a:
        durable = _count_durable(a)
        commit = GroupCommit(a)
        await _arriving(commit, _pay_step(a, ks.public, 1), 8)
        # Two passes in all (before) closed the batch with the first two or three.
        assert (commit.batches, commit.steps, durable[0]) == (1, 8, 1)


async def test_a_steady_stream_of_requests_still_closes_batches(tmp_path: Path) -> None:
    _ks, ka, community, _genesis = founded_homes(tmp_path)
    with open_local_node(tmp_path / "a", ka) as a:
        commit = GroupCommit(a)
        sizes: list[int] = []
        run_batch = commit.commit

        async def recording(batch: list[Any]) -> None:
            sizes.append(len(batch))
            await run_batch(batch)

        commit.commit = recording  # type: ignore[method-assign]
        count = 3 * GroupCommit.GATHER_MAX_PASSES
        await _arriving(commit, lambda: a.offer(community, "more"), count)
        assert commit.steps == count
        # A batch gathers for GATHER_MAX_PASSES passes at most: one request
        # each. (Those that arrive while it is made durable, off the node's
        # thread, wait for the next batch, however many.)
        assert sizes[0] <= GroupCommit.GATHER_MAX_PASSES + 2, sizes
        assert len(sizes) >= 2, sizes


async def test_a_refused_payment_fails_alone(tmp_path: Path) -> None:
    ks, ka, community, _genesis = founded_homes(tmp_path)  # credit limit 10
    home = tmp_path / "a"
    with open_local_node(home, ka) as a:
        commit = GroupCommit(a)
        amounts = [3, 3, 20, 3]  # the third would overdraw
        results = await _run_all(commit, [_pay_step(a, ks.public, n) for n in amounts])
        assert commit.batches == 1
    assert isinstance(results[2], RefusedError)
    assert results[2].reason == "overdraft"
    log = _own_log(home, ka, community)
    paid = [e.body.amount for e in log if isinstance(e.body, Transfer)]
    assert paid == [3, 3, 3]
    # (Arrival order, hence log order, is the scheduler's.)
    assert {ops.eid(e.id) for e in log[1:]} == {results[i].result["transfer"] for i in (0, 1, 3)}


async def test_a_step_broken_mid_write_undoes_its_batch_and_the_others_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ks, ka, community, _genesis = founded_homes(tmp_path)
    home = tmp_path / "a"
    with open_local_node(home, ka) as a:
        write = a._ingest_checked

        def breaking(entry: Entry) -> None:
            write(entry)  # it wrote: the transaction holds half a step
            if isinstance(entry.body, Transfer) and entry.body.amount == 2:
                raise StoreError("disk trouble")

        monkeypatch.setattr(a, "_ingest_checked", breaking)
        durable = _count_durable(a)
        announced = _announced(a, home / "store.sqlite")
        commit = GroupCommit(a)
        results = await _run_all(commit, [_pay_step(a, ks.public, n) for n in (1, 2, 3)])
        # The batch, undone (never fsynced: it commits before its fsync),
        # then each step in a durable transaction of its own.
        assert durable[0] == 3
    assert isinstance(results[1], StoreError)
    log = _own_log(home, ka, community)
    assert [e.seq for e in log] == [1, 2, 3]
    assert sorted(e.body.amount for e in log[1:]) == [1, 3]  # type: ignore[union-attr]
    assert {ops.eid(e.id) for e in log[1:]} == {results[i].result["transfer"] for i in (0, 2)}
    assert [e.id for e in announced] == [e.id for e in log[1:]]  # nothing undone was announced
    mark = homefiles.signed_marks(home)
    assert mark is not None
    assert mark[community].seq == 3


@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)
async def test_a_running_node_commits_concurrent_payments_together(tmp_path: Path) -> None:
    ks, ka, community, _genesis = founded_homes(tmp_path)
    config = NodeConfig(
        home=tmp_path / "a",
        control_socket=False,
        remember_peers=False,
        listen=("/ip4/127.0.0.1/tcp/0",),
        mdns=False,
    )
    params = {"community": ops.cid(community), "to": ops.mid(ks.public), "amount": "1"}
    params["to_unknown"] = True  # the founder's join is not held here
    async with open_node(config, ka) as node:
        results: list[dict[str, Any]] = []
        refreshed = [0]

        def refresh() -> None:  # what a payment need not do
            refreshed[0] += 1

        node.refresh_subscriptions = refresh  # type: ignore[method-assign]

        async def pay() -> None:
            results.append(await node.run_op("pay", params))

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(pay)
        counts = node.status()["group_commit"]
        balance = node.local.balance(community)
    assert len({r["transfer"] for r in results}) == 10
    assert counts["steps"] == 10
    assert counts["batches"] < 10
    assert balance.balance == -10
    assert refreshed[0] == 0  # a payment follows no new community
