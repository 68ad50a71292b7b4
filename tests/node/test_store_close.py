"""Store.close() lets go of the file at once, whatever still refers to the
store: a closed store kept alive by a reference cycle the garbage collector
had not broken yet held SQLite's locks (an unfinished statement on one of
its cursors keeps the database open past the connection's close), and the
next opener of the same file found it locked (seen in
tests/node/test_signed_mark.py, which truncates a store and opens it again)."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from troc.crypto.sign import SigningKey
from troc.node.local import now_ms, open_local_node
from troc.node.store import Store
from troc.protocol.entry import Entry, EntryId, Offer
from troc.protocol.ledger import Status


@pytest.fixture
def no_collector() -> Iterator[None]:
    """The cyclic garbage collector off: what it would free stays alive."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_collector")
def test_a_closed_store_still_referenced_holds_no_lock(tmp_path: Path) -> None:
    with open_local_node(tmp_path, SigningKey.generate()) as node:
        community = node.create_community("Valley", "h", 5)
        node.offer(community, "bread")
        # An entry parked for a missing prev: the waiting set's rows are read too.
        dangling = Entry.create(
            SigningKey.generate(),
            community=community,
            seq=2,
            prev=EntryId(os.urandom(32)),
            timestamp_ms=now_ms(),
            body=Offer("offer", "never joined"),
        )
        assert node.ingest(dangling.wire).status is Status.WAITING
    kept = node  # still referenced: closed, not collected
    path = tmp_path / "store.sqlite"
    for f in tmp_path.glob("store.sqlite-*"):
        f.unlink()
    path.write_bytes(b"")  # as a store emptied behind the node's back
    with Store.open(path) as store:
        assert store.communities() == []
    assert kept.store is not None
