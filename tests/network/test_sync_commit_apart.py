"""A sync session's runs commit off the node's thread
(troc.node._store_commit): while SQLite writes a run's pages, the node's
thread goes on (here: a task ticking), and nothing of the run is announced
before its COMMIT has returned."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import trio

from tests.helpers import founded_homes
from tests.network.test_sync_not_following import _config  # sync rounds driven by the test
from troc.node import ops
from troc.node._store_commit import PendingCommit
from troc.node.local import open_local_node
from troc.node.node import open_node
from troc.node.operations import OPERATIONS
from troc.protocol.entry import Entry

HOLD = 0.3  # seconds each commit off the node's thread is held, before its COMMIT


async def test_a_sync_run_commits_off_the_nodes_thread_and_is_announced_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = PendingCommit.run
    ks, ka, community, _genesis = founded_homes(tmp_path)
    pay = OPERATIONS["pay"].run
    assert pay is not None
    trio_thread = threading.get_ident()
    ticks = 0
    events: list[str] = []
    during: list[int] = []  # ticks seen while each held COMMIT ran

    # Paid while offline: only sync carries them (not gossip).
    with open_local_node(tmp_path / "a", ka) as offline:
        for n in range(3):
            pay(offline, {"to": ops.mid(ks.public), "amount": str(n + 1), "to_unknown": True})
    async with (
        open_node(_config(tmp_path / "a"), ka) as a,
        open_node(_config(tmp_path / "s", a.addrs()[0]), ks) as s,
    ):

        def held(pending: PendingCommit) -> None:
            if threading.get_ident() == trio_thread or pending.done:
                real(pending)
                return
            start = ticks
            time.sleep(HOLD)  # the GIL released, as SQLite writing pages
            during.append(ticks - start)
            real(pending)
            events.append("commit")

        def told(entry: Entry, _own: bool) -> None:
            events.append("told")

        monkeypatch.setattr(PendingCommit, "run", held)
        s.local.listeners.append(told)

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await trio.sleep(0.01)
                ticks += 1

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ticker)
                await s.sync_with(a.peer_id)
                nursery.cancel_scope.cancel()
        head = s.local.store.head(community, ka.public)
    assert head is not None
    assert head.seq == 4
    assert during, "no run was committed off the node's thread"
    # The node's thread went on while the commits ran (~30 ticks of 10 ms
    # each; a shared machine may give it fewer).
    assert max(during) >= 3, (during, events)
    # Every announcement follows the commit of its run.
    assert events[0] == "commit"
    assert events.count("told") == 4
