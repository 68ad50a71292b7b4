"""The peers file, shared by the running node and the CLI."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from troc.errors import LocalProtocolError
from troc.node import homefiles


def test_remembered_peers_are_deduplicated_newest_last_and_capped(tmp_path: Path) -> None:
    homefiles.remember_bootstrap(tmp_path, ["/a", "/b"])
    homefiles.remember_bootstrap(tmp_path, ["/a"])
    assert homefiles.bootstrap_addrs(tmp_path) == ["/b", "/a"]
    homefiles.remember_bootstrap(tmp_path, [f"/p{i}" for i in range(100)])
    kept = homefiles.bootstrap_addrs(tmp_path)
    assert len(kept) == homefiles.MAX_REMEMBERED
    assert kept[-1] == "/p99"
    homefiles.set_self_addrs(tmp_path, ["/me"])
    assert homefiles.self_addrs(tmp_path) == ["/me"]
    assert homefiles.bootstrap_addrs(tmp_path)[-1] == "/p99"  # untouched by set_self
    mode = stat.S_IMODE((tmp_path / homefiles.PEERS_FILE).stat().st_mode)
    assert mode == 0o600


def test_a_damaged_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / homefiles.PEERS_FILE).write_text("{not json")
    with pytest.raises(LocalProtocolError, match=r"damaged.*fix or remove it"):
        homefiles.bootstrap_addrs(tmp_path)
