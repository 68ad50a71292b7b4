"""The restore guard: a home restored from an old backup learns its own newer
entries from a peer before it signs, whoever that peer is (here one only
remembered in peers.json, with no --bootstrap)."""

from __future__ import annotations

import shutil
from pathlib import Path

import trio

from tests.helpers import founded_homes
from troc.node import homefiles
from troc.node.local import open_local_node
from troc.node.node import NodeConfig, open_node


async def test_a_remembered_peer_is_synced_with_before_signing(tmp_path: Path) -> None:
    ks, ka, community, _genesis = founded_homes(tmp_path)
    shutil.copytree(tmp_path / "a", tmp_path / "backup")  # before the offer below
    with open_local_node(tmp_path / "a", ka) as a_local:
        newer = a_local.offer(community, "Signed after the backup")
        own_log = [e.wire for e in reversed(a_local.history(community))]
    with open_local_node(tmp_path / "s", ks) as s_local:  # the server has it all
        for wire in own_log:
            s_local.ingest(wire)
    shutil.rmtree(tmp_path / "a")
    shutil.move(tmp_path / "backup", tmp_path / "a")  # restored from the old backup

    def config(home: Path) -> NodeConfig:
        return NodeConfig(home=home, sync_interval=600, control_socket=False)

    async with open_node(config(tmp_path / "s"), ks) as s:
        # Remembered from an earlier run, not given as --bootstrap.
        homefiles.remember_bootstrap(tmp_path / "a", [s.addrs()[0]])
        async with open_node(config(tmp_path / "a"), ka) as a:
            assert not a.config.bootstrap
            assert s.peer_id in a.host.connected_peers()
            with trio.fail_after(20):
                await a.run_op("offer.add", {"title": "Signed after the restore"})
            head = a.local.store.head(community, ka.public)
            assert head is not None
            assert head.seq == newer.seq + 1  # after the entry it had forgotten
            assert a.local.store.entry(community, ka.public, newer.seq, newer.id) is not None
            assert a.local.forks(community) == []
