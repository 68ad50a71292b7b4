"""A peer that follows other communities is not a failed sync: it closes a
session for a community it does not follow, which the initiator says once."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from troc.crypto.sign import SigningKey
from troc.node.local import open_local_node
from troc.node.node import NodeConfig, open_node


def _config(home: Path, *bootstrap: str) -> NodeConfig:
    return NodeConfig(
        home=home,
        bootstrap=bootstrap,
        sync_interval=600,  # rounds are driven by the test
        control_socket=False,
        remember_peers=False,
        mdns=False,
        dht="off",
    )


async def test_a_peer_not_following_the_community_is_said_once_not_failed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ka, kb = SigningKey.generate(), SigningKey.generate()
    with open_local_node(tmp_path / "a", ka) as a_local:
        a_local.create_community("Valley", "h", 5)
    caplog.set_level(logging.DEBUG, logger="troc.node")
    async with (
        open_node(_config(tmp_path / "b"), kb) as b,  # follows nothing
        open_node(_config(tmp_path / "a", b.addrs()[0]), ka) as a,
    ):
        with trio.fail_after(20):
            for _ in range(3):
                assert await a.sync_with(b.peer_id) == []
    said = [r for r in caplog.records if "does not sync" in r.getMessage()]
    assert len(said) >= 3  # the three rounds, and maybe the one on connecting
    assert [r.levelno for r in said] == [logging.INFO] + [logging.DEBUG] * (len(said) - 1)
    assert a.progress.failed == 0
    assert not [
        r for r in caplog.records if "sync with" in r.getMessage() and "failed" in r.getMessage()
    ]
