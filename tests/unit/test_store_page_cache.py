"""The store's SQLite page cache holds the pages ingest writes over and over
(troc.node.store.CACHE_MIB): a 1,000,000-entry catch-up reread them from the
file at 32 MiB."""

from __future__ import annotations

from pathlib import Path

from troc.node.store import CACHE_MIB, Store


def test_store_page_cache_is_64_mib(tmp_path: Path) -> None:
    with Store.open(tmp_path / "store.sqlite") as store:
        (size,) = store._conn.execute("PRAGMA cache_size").fetchone()
    assert CACHE_MIB == 64
    assert size == -64 * 1024  # negative: KiB, whatever the page size


def test_store_page_cache_can_be_chosen(tmp_path: Path) -> None:
    with Store.open(tmp_path / "store.sqlite", cache_mib=8) as store:
        (size,) = store._conn.execute("PRAGMA cache_size").fetchone()
    assert size == -8 * 1024
