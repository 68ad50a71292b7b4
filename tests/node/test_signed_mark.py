"""A store that lost the member's own log (emptied, deleted, an old backup)
never signs from where it stands: the home's signed.json says how far the
key got, and signing waits until the log is back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import founded_homes
from troc.crypto.sign import SigningKey
from troc.errors import StoreError
from troc.node import homefiles, ops
from troc.node.local import open_local_node


def _founded(tmp_path: Path) -> tuple[SigningKey, SigningKey, bytes, list[bytes]]:
    """A community founded by s; a joined it and signed two offers. Returns
    the keys, the genesis and a's own log (wire bytes, oldest first)."""
    ks, ka, community, genesis = founded_homes(tmp_path)
    shutil.copytree(tmp_path / "a", tmp_path / "backup")  # holds the join only
    with open_local_node(tmp_path / "a", ka) as a:
        a.offer(community, "one")
        a.offer(community, "two")
        log = [e.wire for e in reversed(a.history(community))]
    return ks, ka, genesis, log


@pytest.mark.parametrize("damage", ["truncate", "delete", "old_backup"])
def test_a_store_behind_the_mark_refuses_to_sign_until_the_log_is_back(
    tmp_path: Path, damage: str
) -> None:
    ks, ka, genesis, log = _founded(tmp_path)
    store = tmp_path / "a" / "store.sqlite"
    if damage == "old_backup":
        for f in store.parent.glob("store.sqlite*"):
            f.unlink()
        for f in (tmp_path / "backup").glob("store.sqlite*"):
            shutil.copy(f, store.parent)
    else:
        for f in store.parent.glob("store.sqlite-*"):
            f.unlink()
        store.write_bytes(b"") if damage == "truncate" else store.unlink()
    with open_local_node(tmp_path / "a", ka) as a:
        assert a.behind()
        with pytest.raises(StoreError, match=r"signed up to seq 3 .*troc run --bootstrap ADDR"):
            ops.run_op(a, "pay", {"to": ops.mid(ks.public), "amount": 1})
        with pytest.raises(StoreError, match="signed up to seq 3"):
            ops.run_op(a, "community.join", {"invitation": ops.encode_invitation(genesis, [])})
        with pytest.raises(StoreError):
            a.join(genesis)  # the library path is guarded too, not only the operations
        # Followed again (from the genesis kept with the mark), so sync can
        # bring the log back; but none of the member's lost entries is there.
        assert [c.genesis for c in a.communities()] == [genesis]
        held = [a.store.head(c.id, ka.public) for c in a.communities()]
        assert [h.seq for h in held if h is not None] == ([1] if damage == "old_backup" else [])
        # The log comes back (what sync does): signing goes on after it.
        a.ingest_many(log)
        assert a.behind() == []
        community = a.communities()[0].id
        paid = a.pay(community, ks.public, 1)
        assert paid.seq == 4
        assert a.forks(community) == []


def test_a_home_from_before_the_marks_is_marked_from_its_store(tmp_path: Path) -> None:
    _ks, ka, _genesis, _log = _founded(tmp_path)
    mark = tmp_path / "a" / homefiles.SIGNED_FILE
    community = next(iter(json.loads(mark.read_text())))
    mark.unlink()
    with open_local_node(tmp_path / "a", ka):
        pass
    assert json.loads(mark.read_text())[community]["seq"] == 3
    assert mark.stat().st_mode & 0o777 == 0o600
