"""What asking for certificates costs the store while a newcomer catches up.

Every entry a witnessed community's node stores asks whether its own
certificate is held (``Ledger._apply``), and every certificate received
whether it is a replay: at a newcomer, ~1.7 reads per entry, most in vain.
The store answers those above what it read once per log from the log's
cached row (troc/node/_store_finality.py, ``_may_be_certified``), without a
query; its answers stay those of the rows, across rollbacks and pruning.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import T0, certify, key, witnessed_world
from troc.node import _store_finality
from troc.node.store import Store
from troc.protocol import codec
from troc.protocol.backend import Stored
from troc.protocol.entry import CommunityId, Entry, EntryId, Offer
from troc.protocol.ledger import Ledger, Status
from troc.protocol.vote import Certificate, decode_any_certificate

A, B = key(1), key(2)


def _history(offers: int) -> tuple[Entry, list[Entry]]:
    """A witnessed community: A and B join, A makes ``offers`` offers."""
    w = witnessed_world(certified=False, credit_limit=100)
    w.join(A)
    w.join(B)
    for i in range(offers):
        w.add(A, Offer(side="offer", title=f"offer {i}"))
    return w.genesis, w.log


@contextlib.contextmanager
def _following(tmp_path: Path, genesis: Entry) -> Iterator[tuple[Store, Ledger]]:
    """A store in ``tmp_path`` following ``genesis``'s community, and its ledger."""
    with Store.open(tmp_path / "s.sqlite") as store:
        ledger = Ledger(store)
        with store.transaction():
            assert ledger.ingest(genesis.wire, T0).status is Status.ACCEPTED
        yield store, ledger


def _certificate_reads(statements: list[str]) -> list[str]:
    return [s for s in statements if "FROM certificates" in s]


def test_entries_without_certificates_cost_one_read_per_log(tmp_path: Path) -> None:
    genesis, log = _history(40)
    with _following(tmp_path, genesis) as (store, ledger):
        seen: list[str] = []
        store._conn.set_trace_callback(seen.append)
        with store.transaction():
            for e in log:
                assert ledger.ingest_entry(e, T0).status is Status.ACCEPTED
        store._conn.set_trace_callback(None)
        # One read per log (its certificates above its top), then in memory;
        # before, one read per entry.
        assert len(_certificate_reads(seen)) == 2
        assert not ledger.is_final(CommunityId(genesis.id), log[-1].ref)


def test_certificates_ahead_of_their_entries_are_found(tmp_path: Path) -> None:
    """Certificates stored before their entries (as a sync sends them ahead
    of a run), one before the log's row is read, one after: each entry
    finds its own as it is stored, and its log's final tip moves onto it."""
    genesis, log = _history(12)
    c = CommunityId(genesis.id)
    a_log = [e for e in log if e.author == A.public]
    with _following(tmp_path, genesis) as (store, ledger):
        with store.transaction():
            assert ledger.ingest_certificate(certify(a_log[3]), T0).ok  # no log of A yet
        with store.transaction():
            for e in log[:4]:
                assert ledger.ingest_entry(e, T0).status is Status.ACCEPTED
            assert ledger.ingest_certificate(certify(a_log[8]), T0).ok  # A's row is read
        tips = []
        with store.transaction():
            for e in log[4:]:
                assert ledger.ingest_entry(e, T0).status is Status.ACCEPTED
                head = store.head(c, A.public)
                assert head is not None
                tips.append(head.final_seq)
        assert set(tips) == {a_log[3].seq, a_log[8].seq}
        assert ledger.is_final(c, a_log[8].ref)
        assert not ledger.is_final(c, a_log[9].ref)


#: One step on a store: ("entry", author), ("cert", author, seq),
#: ("ask", author, seq), ("commit",) or ("rollback",).
_STEP = st.one_of(
    st.tuples(st.just("entry"), st.sampled_from([0, 1])),
    st.tuples(st.just("cert"), st.sampled_from([0, 1]), st.integers(1, 16)),
    st.tuples(st.just("ask"), st.sampled_from([0, 1]), st.integers(1, 16)),
    st.tuples(st.just("commit")),
    st.tuples(st.just("rollback")),
)


class _Rollback(Exception):
    pass


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(_STEP, max_size=60),
    cached=st.sampled_from([2, 1024]),
    cache_entries=st.sampled_from([4096, 0]),
)
def test_answers_are_those_of_the_rows(steps: list[tuple], cached: int, cache_entries: int) -> None:
    """Whatever the order of entries, certificates (below, at and above each
    log's top), commits and rollbacks, however few seqs a log's row may
    keep, and with no log row cached at all, ``certificate`` answers as a
    query of the table does."""
    genesis, log = _history(14)
    c = CommunityId(genesis.id)
    logs = [[e for e in log if e.author == k.public] for k in (A, B)]
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr(_store_finality, "MAX_CERTS_CACHED", cached)
        store = Store.open(Path(tmp) / "s.sqlite", cache_entries=cache_entries)
        try:
            with store.transaction():
                store.put_genesis(genesis)
            _run(store, c, logs, steps)
        finally:
            store.close()


def _run(store: Store, c: CommunityId, logs: list[list[Entry]], steps: list[tuple]) -> None:
    stored = [0, 0]  # entries of each log stored (committed or not)
    committed = [0, 0]

    def truth(author: int, seq: int) -> tuple[EntryId, bytes] | None:
        row = store._cur.execute(
            "SELECT id, data FROM certificates WHERE community = ? AND author = ? AND seq = ?",
            (c, logs[author][0].author, seq),
        ).fetchone()
        return None if row is None else (EntryId(row[0]), row[1])

    i = 0
    while i < len(steps):
        try:
            with store.transaction():
                while i < len(steps):
                    step = steps[i]
                    i += 1
                    if step[0] == "commit":
                        break
                    if step[0] == "rollback":
                        raise _Rollback
                    author = step[1]
                    member = logs[author][0].author
                    if step[0] == "entry" and stored[author] < len(logs[author]):
                        e = logs[author][stored[author]]
                        store.put_entry(Stored(e, 0, 0), [])
                        stored[author] += 1
                    elif step[0] == "cert":
                        seq = step[2]
                        store.put_certificate(c, member, seq, EntryId(bytes([seq]) * 32), b"c")
                    elif step[0] == "ask":
                        assert store.certificate(c, member, step[2]) == truth(author, step[2])
                for author in (0, 1):
                    for seq in range(1, 17):
                        member = logs[author][0].author
                        assert store.certificate(c, member, seq) == truth(author, seq)
            committed = stored[:]
        except _Rollback:
            stored = committed[:]
    for author in (0, 1):
        for seq in range(1, 17):
            assert store.certificate(c, logs[author][0].author, seq) == truth(author, seq)


def test_a_certified_transfer_no_accept_named_costs_one_look(tmp_path: Path) -> None:
    """A transfer stored after its own certificate may have been accepted
    while it was parked (docs/witness.md §6.1): one look for such accepts,
    and when there is none, the payee's accepts need no second one."""
    w = witnessed_world(certified=False, credit_limit=100)
    joins = [w.join(A), w.join(B)]
    paid = w.pay(A, B, 5)
    with _following(tmp_path, w.genesis) as (store, ledger):
        with store.transaction():
            for e in joins:
                assert ledger.ingest_entry(e, T0).status is Status.ACCEPTED
            assert ledger.ingest_certificate(certify(paid), T0).ok
        seen: list[str] = []
        store._conn.set_trace_callback(seen.append)
        with store.transaction():
            assert ledger.ingest_entry(paid, T0).status is Status.ACCEPTED
        store._conn.set_trace_callback(None)
        assert ledger.is_final(CommunityId(w.genesis.id), paid.ref)
        assert len([s for s in seen if "r.target_id" in s]) == 1


def test_a_certificate_taken_decoded_is_stored_as_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A certificate the verify workers checked reaches the ledger decoded;
    it is stored as the bytes it came as (proven canonical as it was
    decoded), not packed again."""
    genesis, log = _history(1)
    data = certify(log[0])
    cert = decode_any_certificate(data)
    assert cert == Certificate.decode(data)
    assert cert.encode() is data
    with _following(tmp_path, genesis) as (store, ledger):
        packed: list[object] = []
        real = codec.pack
        monkeypatch.setattr(codec, "pack", lambda *a, **k: packed.append(a) or real(*a, **k))
        with store.transaction():
            assert ledger.ingest_certificate(cert, T0).ok
        assert packed == []
        held = store.certificate(CommunityId(genesis.id), log[0].author, log[0].seq)
        assert held == (log[0].id, data)
