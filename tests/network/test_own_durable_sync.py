"""Own entries of a group commit whose fsync runs off the node's thread
(troc.node.walsync) are not sent by sync before they are on disk: a session
a peer starts meanwhile waits for the fsync, then carries them."""

from __future__ import annotations

import threading
from pathlib import Path

import trio

from tests.helpers import founded_homes
from tests.network.test_sync_not_following import _config  # sync rounds driven by the test
from troc.node import ops
from troc.node.node import Node, open_node
from troc.node.operations import OPERATIONS
from troc.protocol.entry import CommunityId


def _seq(node: Node, community: CommunityId, member: bytes) -> int:
    head = node.local.store.head(community, member)  # type: ignore[arg-type]
    assert head is not None
    return head.seq


async def test_sync_serves_no_own_entry_before_its_group_commit_is_on_disk(
    tmp_path: Path,
) -> None:
    ks, ka, community, _genesis = founded_homes(tmp_path)
    pay = OPERATIONS["pay"].run
    assert pay is not None
    params = {"to": ops.mid(ks.public), "amount": "1", "to_unknown": True}
    entered, release = threading.Event(), threading.Event()
    paid: list[object] = []
    async with (
        open_node(_config(tmp_path / "a"), ka) as a,
        open_node(_config(tmp_path / "s", a.addrs()[0]), ks) as s,
    ):
        real = a.local.store.sync_log

        def held() -> None:  # the log's fsync, on a worker thread, held
            entered.set()
            assert release.wait(10)
            real()

        async def one() -> None:
            paid.append(await a.group_commit.run(lambda: pay(a.local, params)))

        session = trio.Event()

        async def sync() -> None:
            await s.sync_with(a.peer_id)
            session.set()

        with trio.fail_after(20):
            await s.sync_with(a.peer_id)
            assert _seq(s, community, ka.public) == 1  # s holds a's join
            a.local.store.sync_log = held  # type: ignore[method-assign]
            try:
                async with trio.open_nursery() as nursery:
                    for _ in range(3):
                        nursery.start_soon(one)
                    while not entered.is_set():  # noqa: ASYNC110 - set by a worker thread; bounded by fail_after
                        await trio.sleep(0.01)
                    # Committed at a, its fsync held: a session s starts
                    # now carries none of it, and waits.
                    assert _seq(a, community, ka.public) == 4
                    nursery.start_soon(sync)
                    await trio.sleep(0.5)
                    assert _seq(s, community, ka.public) == 1
                    assert not session.is_set()
                    assert paid == []
                    release.set()
                    await session.wait()
            finally:
                release.set()  # a failed check must not leave the worker thread held
    assert len(paid) == 3
    assert _seq(s, community, ka.public) == 4
