"""A node outlives any unexpected error in handling one entry or one peer.

Whatever raises while a gossiped entry or a sync session is handled, be it a
TrocError or not (an OverflowError from the store once did), the entry is
dropped or the session ended, the error is logged with its traceback, and
the node goes on gossiping and syncing. Before, anything but a TrocError
escaped the gossip loop or the outbound sync and stopped the node.

Real nodes on 127.0.0.1 (tests/network/test_hostile.py's victim A and
honest B); the store's ingest is made to raise a RuntimeError for a while.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import troc.node.sync as node_mod
from tests.network.test_hostile import HONEST_WAIT, open_net, until
from troc.protocol.entry import Entry


async def test_outbound_sync_survives_an_unexpected_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_net(tmp_path) as net:
        a_local = net.a.local
        raised = 0
        poisoned = True
        original = node_mod._StoreView.ingest_batch

        def ingest_batch(view: Any, wires: list[bytes]) -> Any:
            nonlocal raised
            if poisoned and wires and view.local is a_local:
                raised += 1
                raise RuntimeError("a bug in handling this batch")
            return original(view, wires)

        monkeypatch.setattr(node_mod._StoreView, "ingest_batch", ingest_batch)
        entry = net.c.offer(net.community, "only sync carries this")
        net.b.local.ingest_many(
            net.c.store.entries_since(net.community, net.c.member, 0, 1000),
            community=net.community,
        )
        failed = net.a.progress.failed
        with caplog.at_level(logging.WARNING, logger="troc.node"):
            # A pulls from B: the session's ingest raises in A's own
            # (outbound) session, the path that used to stop the node.
            assert await net.a.sync_with(net.b.peer_id) == []
        assert raised >= 1
        assert net.a.progress.failed > failed
        assert not net.has(net.a, entry)
        assert any(
            "unexpected error" in r.getMessage() and r.exc_info is not None for r in caplog.records
        )
        poisoned = False
        await net.wait_for(net.a, entry)  # the loop syncs again
        await net.honest_ok()


async def test_gossip_survives_an_unexpected_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_net(tmp_path) as net:
        local = net.a.local
        original = local.ingest_many
        raised = 0

        def ingest_many(items: list[Any], **kw: Any) -> Any:
            nonlocal raised
            # Gossip hands over entries its validator decoded; sync, bytes.
            if any(isinstance(i, Entry) for i in items):
                raised += 1
                raise RuntimeError("a bug in handling this gossip batch")
            return original(items, **kw)

        monkeypatch.setattr(local, "ingest_many", ingest_many)
        # Sync may bring an entry before gossip does (then gossip drops it
        # unseen): a few tries, each bounded.
        for i in range(5):
            entry = net.b.local.offer(net.community, f"gossiped {i}")
            await net.wait_for(net.a, entry, HONEST_WAIT)
            if raised:
                break
        # The batch raised; each of its entries was then stored alone.
        assert raised, "no gossiped entry reached A's gossip loop"
        monkeypatch.setattr(local, "ingest_many", original)
        await until("A still answers", lambda: net.a.status()["peer_id"] == net.a.peer_id)
        await net.honest_ok()
