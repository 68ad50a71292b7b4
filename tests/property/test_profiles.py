"""Profiles (docs/protocol.md §4.4): a member's profile is its profile entry at
the highest seq that counts, never the one with the latest timestamp. Every
node holding the same entries shows the same profile, in every arrival order,
on the in-memory backend and on the SQLite store alike.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import fork_points
from tests.strategies import arrivals, histories
from troc.crypto.sign import MemberId
from troc.node.store import Store
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import Entry, EntryId, Profile
from troc.protocol.ledger import Ledger, Status

EXAMPLES = settings().max_examples


def expected_profiles(entries: Iterable[Entry]) -> dict[MemberId, EntryId]:
    """The rule, computed from the entries alone: per author, the profile at
    the highest seq below its first fork (if any)."""
    entries = list(entries)
    frozen = fork_points(entries)
    best: dict[MemberId, Entry] = {}
    for e in entries:
        if not isinstance(e.body, Profile):
            continue
        if e.author in frozen and e.seq >= frozen[e.author]:
            continue
        if e.author not in best or e.seq > best[e.author].seq:
            best[e.author] = e
    return {a: e.id for a, e in best.items()}


def profiles_of(node: Ledger, community: bytes) -> dict[MemberId, EntryId]:
    out = {}
    for member, _head in node.backend.heads(community):  # type: ignore[arg-type]
        entry = node.profile(community, member)  # type: ignore[arg-type]
        if entry is not None:
            out[member] = entry.id
    return out


@settings(max_examples=max(EXAMPLES // 2, 10))
@given(st.data())
def test_profiles_agree_in_any_order_on_both_backends(data: st.DataObject) -> None:
    h = data.draw(histories(forks=data.draw(st.sampled_from([0, 2]), label="forks")))
    w = h.world
    # Every member states a profile at least once, stamped back in time…
    for n, m in enumerate(h.members):
        h.profile(m, f"last {n}", back_ms=data.draw(st.integers(0, 120_000), label="back"))
    # …and a forked author signs one more on top of its frozen branch: valid,
    # stored, and never its profile.
    for author_id, _seq in h.forks.items():
        author = h.member(author_id)
        head = w.ledger.head(w.community, author_id)
        assert head is not None
        extra = w.create(author, Profile(name="after the fork"), seq=head.seq + 1, prev=head.id)
        assert w.ingest(extra).status is Status.ACCEPTED
        w.log.append(extra)
    expected = expected_profiles(h.entries)
    assert profiles_of(w.ledger, w.community) == expected
    order = data.draw(arrivals(h), label="order")
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "store.sqlite") as store:
        for node in (Ledger(MemoryBackend()), Ledger(store)):
            with store.transaction():
                assert node.ingest(w.genesis.wire, w.now).ok
                for e in order:
                    assert node.ingest(e.wire, w.now).status is not Status.REJECTED
                assert profiles_of(node, w.community) == expected
