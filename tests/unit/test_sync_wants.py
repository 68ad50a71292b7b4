"""What one sync session can make a node do (docs/sync.md, "Limits").

The attack (issue 10, item 4): a member of a witnessed community forks its
long certified log; from then on deciding whether an entry of that log is
final walked the chain back from the final tip, and a ``want`` of
certificates for 256 random ids cost 256 such walks on the node's only
thread. Here the work is counted, not timed: every read the ledger makes of
its backend (the in-memory one through a counting proxy, the SQLite store
through SQLite's statement trace), per wanted ref, must not grow with the
chain's length. And a session answers a bounded number of wants and bytes.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import World, certify, key, witnessed_world
from tests.unit.test_spec import constant, number, table
from troc.crypto.sign import MemberId, SigningKey
from troc.errors import RemoteProtocolError
from troc.node.store import Store
from troc.protocol import sync
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import CommunityId, Entry, EntryId, Offer, Ref
from troc.protocol.ledger import Ledger, Status
from troc.protocol.sim import MemoryView, sync_pair
from troc.protocol.sync import SyncSession, certificate_for
from troc.protocol.sync_wire import MAX_WANT_ROUNDS, MAX_WANTS


class Counting:
    """A backend that counts the calls made to it (every method is a read or
    a write of one thing, so the count is the work done)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr
        calls = self.calls

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return attr(*args, **kwargs)

        return counted


class Forked:
    """A witnessed community where ``a`` made a log of ``length`` entries,
    all final by the certificate of the last, then forked it at seq 2."""

    def __init__(self, length: int) -> None:
        self.w: World = witnessed_world(certified=False)
        self.a: SigningKey = key(1)
        self.chain: list[Entry] = [self.w.join(self.a)]
        for i in range(length - 1):
            self.chain.append(self.w.add(self.a, Offer(side="offer", title=f"o{i}")))
        self.tip_certificate = certify(self.chain[-1])
        self.fork = self.w.create(self.a, Offer(side="want", title="fork"), seq=2,
                                  prev=self.chain[0].id)  # fmt: skip
        self.entries = [self.w.genesis, *self.chain, self.fork]

    def load(self, ledger: Ledger) -> None:
        now = self.w.now
        for e in self.entries:
            assert ledger.ingest(e.wire, now).status is Status.ACCEPTED
        assert ledger.ingest_certificate(self.tip_certificate, now).final

    @property
    def community(self) -> CommunityId:
        return self.w.community

    def random_refs(self, n: int = MAX_WANTS) -> list[Ref]:
        """Refs to entries of ``a`` that do not exist, at seqs along the chain."""
        step = max(1, len(self.chain) // n)
        return [
            Ref(self.a.public, 2 + (i * step) % (len(self.chain) - 1), EntryId(os.urandom(32)))
            for i in range(n)
        ]


_FORKED: dict[int, Forked] = {}


def forked(length: int) -> Forked:
    if length not in _FORKED:  # building one costs a signature per entry
        _FORKED[length] = Forked(length)
    return _FORKED[length]


def memory_node(f: Forked) -> tuple[Ledger, Counting]:
    counting = Counting(MemoryBackend())
    ledger = Ledger(counting)
    f.load(ledger)
    counting.calls.clear()
    return ledger, counting


def store_node(f: Forked, store: Store) -> Ledger:
    ledger = Ledger(store)
    with store.transaction():
        f.load(ledger)
    return ledger


@contextlib.contextmanager
def statements(store: Store) -> Iterator[list[str]]:
    """The SQL statements the store runs while the block runs."""
    seen: list[str] = []
    store._conn.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        store._conn.set_trace_callback(None)


@pytest.mark.parametrize("length", [50, 400])
def test_finality_of_a_forked_log_costs_the_same_at_any_length(length: int) -> None:
    f = forked(length)
    ledger, counting = memory_node(f)
    c = f.community
    refs = f.random_refs(64)
    assert not any(ledger.is_final(c, r) for r in refs)
    assert sum(counting.calls.values()) <= 3 * len(refs), counting.calls
    counting.calls.clear()
    # Held entries: the chain is final, the other branch is not.
    assert all(ledger.is_final(c, e.ref) for e in f.chain)
    assert not ledger.is_final(c, f.fork.ref)
    assert sum(counting.calls.values()) <= 3 * (len(f.chain) + 1), counting.calls


@pytest.mark.parametrize("length", [50, 400])
def test_a_want_of_certificates_for_random_ids_is_cheap(length: int) -> None:
    """The attack itself, through a responder's session on the memory backend."""
    f = forked(length)
    ledger, counting = memory_node(f)
    session = responder(ledger, f.community)
    counting.calls.clear()
    refs = f.random_refs()
    (reply,) = session.receive({"t": "want", "k": [r.to_wire() for r in refs]})
    assert reply == {"t": "certs", "k": [], "r": True}
    assert sum(counting.calls.values()) <= 3 * len(refs), counting.calls


@pytest.mark.parametrize("length", [50, 400])
def test_a_want_of_final_entries_costs_a_bounded_number_of_reads(length: int) -> None:
    """Final entries with no certificate of their own: each is answered with
    the tip's (the lowest certified entry above), in a few reads per ref."""
    f = forked(length)
    ledger, counting = memory_node(f)
    refs = [e.ref for e in f.chain[-MAX_WANTS:]]
    for ref in refs:
        assert certificate_for(ledger, f.community, ref) == f.tip_certificate
    assert sum(counting.calls.values()) <= 8 * len(refs), counting.calls


def test_on_the_store_finality_is_a_few_statements(tmp_path: Path) -> None:
    """The same on the SQLite store, with its caches off so that every read
    is a statement: the count per ref is the same at 50 and 400 entries."""
    counts = []
    for length in (50, 400):
        f = forked(length)
        # No caches of its own: every read is a statement, so statements count reads.
        with Store.open(tmp_path / f"{length}.sqlite", cache_entries=0) as store:
            ledger = store_node(f, store)
            c = f.community
            refs = f.random_refs()
            with statements(store) as absent:
                assert not any(ledger.is_final(c, r) for r in refs)
                assert all(certificate_for(ledger, c, r) is None for r in refs)
            with statements(store) as held:
                assert all(ledger.is_final(c, e.ref) for e in f.chain[-40:])
                assert not ledger.is_final(c, f.fork.ref)
        assert len(absent) <= 8 * len(refs)
        assert len(held) <= 3 * 41
        counts.append((len(absent), len(held)))
    assert counts[0] == counts[1]


# -- a session's bounds ----------------------------------------------------------


class View(MemoryView):
    """A view over a ledger on a :class:`Counting` memory backend."""

    def forks(self, community: CommunityId) -> list[tuple[MemberId, int, bytes, bytes]]:
        backend = self.ledger.backend
        inner = backend._inner if isinstance(backend, Counting) else backend
        assert isinstance(inner, MemoryBackend)
        return [
            (author, seq, first, second)
            for (c, author, seq), (first, second) in sorted(inner.forks.items())
            if c == community
        ]


def responder(ledger: Ledger, c: CommunityId) -> SyncSession:
    """A responder that has sent its heads and received the asker's (equal
    to its own, so it streams nothing): ready for wants."""
    view = View(ledger, c, lambda: 2**50)
    session = SyncSession(view, c, initiator=False)
    out = list(session.receive({"t": "hello", "c": c, "d": b"\0" * 32, "n": 0}))
    assert out[0]["t"] == "heads"
    peer_heads = {"t": "heads", "h": out[0]["h"], "k": out[0].get("k", [])}
    assert [m["t"] for m in session.receive(peer_heads)] == ["end"]
    return session


def test_a_want_before_the_heads_is_out_of_turn() -> None:
    f = forked(50)
    ledger, _ = memory_node(f)
    view = View(ledger, f.community, lambda: 2**50)
    session = SyncSession(view, f.community, initiator=False)
    list(session.receive({"t": "hello", "c": f.community, "d": b"\0" * 32, "n": 0}))
    with pytest.raises(RemoteProtocolError, match="want"):
        list(session.receive({"t": "want", "r": [f.chain[1].ref.to_wire()]}))


def test_a_session_answers_at_most_max_want_rounds_wants() -> None:
    f = forked(50)
    ledger, _ = memory_node(f)
    session = responder(ledger, f.community)
    want = {"t": "want", "k": [r.to_wire() for r in f.random_refs(8)]}
    for _ in range(MAX_WANT_ROUNDS):
        assert [m["t"] for m in session.receive(want)] == ["certs"]
    with pytest.raises(RemoteProtocolError, match="wants"):
        list(session.receive(want))


def test_replies_to_wants_are_bounded_in_bytes_per_session() -> None:
    """Entries with large bodies: what the want replies carry in one
    session stops at sync.MAX_REPLY_BYTES; the rest comes in later sessions."""
    w = witnessed_world(certified=False)
    a = key(1)
    text = "x" * 3000
    chain = [w.join(a)] + [
        w.add(a, Offer(side="offer", title="t", description=text)) for _ in range(400)
    ]
    ledger = Ledger(MemoryBackend())
    for e in [w.genesis, *chain]:
        assert ledger.ingest(e.wire, w.now).ok
    session = responder(ledger, w.community)
    served = 0
    replies = 0
    for _ in range(MAX_WANT_ROUNDS):
        want = {"t": "want", "r": [e.ref.to_wire() for e in chain[:MAX_WANTS]]}
        (reply,) = session.receive(want)
        assert reply["t"] == "entries"
        assert reply["r"] is True
        served += sum(len(x) for x in reply["e"])
        replies += 1
    assert replies == MAX_WANT_ROUNDS
    assert 0 < served <= sync.MAX_REPLY_BYTES
    # Without the bound, 16 replies of up to half a frame each would go out.
    assert MAX_WANT_ROUNDS * session.batch_bytes > sync.MAX_REPLY_BYTES


def test_an_honest_asker_stays_within_the_bounds() -> None:
    """An ordinary session with wants (a fork found mid-stream) completes."""
    w = witnessed_world()
    a, b = key(1), key(2)
    w.join(a)
    w.join(b)
    for i in range(5):
        w.add(a, Offer(side="offer", title=f"o{i}"))
    ours = Ledger(MemoryBackend())
    theirs = Ledger(MemoryBackend())
    for e in [w.genesis, *w.log]:
        ours.ingest(e.wire, w.now)
        theirs.ingest(e.wire, w.now)
    # The member forks at seq 3: one node holds one branch, the other the other.
    other = [w.create(a, Offer(side="want", title="x"), seq=3, prev=w.log[2].id)]
    other.append(w.create(a, Offer(side="want", title="y"), seq=4, prev=other[0].id))
    for e in other:
        theirs.ingest(e.wire, w.now)
    v1 = MemoryView(ours, w.community, lambda: w.now)
    v2 = MemoryView(theirs, w.community, lambda: w.now)
    result = sync_pair(v1, v2)
    assert result.done
    assert result.initiator.misbehaviour is None
    assert result.responder.misbehaviour is None
    head = ours.backend.head(w.community, a.public)
    assert head is not None
    assert head.frozen_at == 3


def test_the_limits_table_of_docs_sync_md_is_the_code() -> None:
    rows = table("sync.md", "## Limits on wants")
    assert {name.strip("`") for _what, _value, name in rows} >= {
        "MAX_WANTS",
        "MAX_WANT_ROUNDS",
        "MAX_REPLY_BYTES",
    }
    for what, value, name in rows:
        assert number(value) == constant(name.strip("`")), what
