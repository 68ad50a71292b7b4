"""The mark (signed.json) of own entries is fsynced while the store's commit
is, not after it, and is put in place only once the commit has returned:
never ahead of the store, always before the entries can leave the node."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from tests.helpers import founded_homes
from troc.errors import StoreError
from troc.node import homefiles
from troc.node.local import open_local_node
from troc.node.store import Store


def _marked_seq(home: Path) -> int:
    (mark,) = json.loads((home / homefiles.SIGNED_FILE).read_text()).values()
    return int(mark["seq"])


def test_the_mark_is_fsynced_beside_the_commit_and_replaced_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ks, ka, community, _genesis = founded_homes(tmp_path)
    home = tmp_path / "a"
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = homefiles.os.fsync, homefiles.os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", threading.current_thread().name))
        real_fsync(fd)

    def replace(src: object, dst: object) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst)  # type: ignore[arg-type]

    with open_local_node(home, ka) as a:
        before = _marked_seq(home)
        a.store._conn.set_trace_callback(
            lambda sql: events.append(("sql", sql)) if sql == "COMMIT" else None
        )
        monkeypatch.setattr(homefiles.os, "fsync", fsync)
        monkeypatch.setattr(homefiles.os, "replace", replace)
        with a.appending():
            a.offer(community, "one")
            a.offer(community, "two")
        monkeypatch.undo()
        assert _marked_seq(home) == before + 2
    fsyncs = [who for what, who in events if what == "fsync"]
    assert fsyncs
    assert all(who != threading.main_thread().name for who in fsyncs)  # a worker's
    order = [what for what, _ in events if what in ("sql", "replace")]
    assert order == ["sql", "replace"]  # COMMIT returned, then the mark is in place


def test_a_commit_that_fails_leaves_the_mark_where_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ks, ka, community, _genesis = founded_homes(tmp_path)
    home = tmp_path / "a"
    with open_local_node(home, ka) as a:
        a.offer(community, "kept")
        before = _marked_seq(home)

        def broken(self: Store) -> None:
            raise StoreError("disk full")

        monkeypatch.setattr(Store, "_flush", broken)  # after the mark is staged, before COMMIT
        with pytest.raises(StoreError, match="disk full"):
            a.offer(community, "lost")
        monkeypatch.undo()
        assert _marked_seq(home) == before
        assert not (home / (homefiles.SIGNED_FILE + ".tmp")).exists()
        assert a.behind() == []
        entry = a.offer(community, "after")  # signs on from the store, as before
        assert entry.seq == before + 1
    assert _marked_seq(home) == before + 1
