"""Certificates ahead of their entries, entries in one batch, both backends.

What a newcomer's witnessed catch-up does (docs/sync.md, "Certificates"):
the certificates a run of entries needs come first, then the run is stored
in one transaction, each certified entry moving its author's final tip
onto itself as it is stored. Whatever the certificates' order, and with
some entries never certified, the final tips, final balances, final
entries and what waits are those of entries and certificates taken one by
one in log order, on the in-memory backend and on the SQLite store.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import T0, certify, key, witnessed_world
from troc.node.store import Store
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import CommunityId, Entry
from troc.protocol.ledger import Ledger

A, B, C = key(1), key(2), key(3)


def _history(payments: int) -> tuple[Entry, list[Entry]]:
    """A witnessed community whose transfers expire (an accept may race):
    ``a`` and ``c`` pay ``b``, ``b`` accepts each and pays ``c``, who accepts."""
    w = witnessed_world(credit_limit=1000, transfer_expiry_ms=3_600_000)
    out = [w.join(A), w.join(B), w.join(C)]
    for i in range(payments):
        t1, t2 = w.pay(A, B, 1 + i), w.pay(C, B, 2 + i)
        out += [t1, t2, w.accept(B, t1), w.accept(B, t2)]
        t3 = w.pay(B, C, 1)
        out += [t3, w.accept(C, t3)]
    return w.genesis, out


def _state(ledger: Ledger, genesis: Entry, entries: list[Entry]) -> list[tuple[object, ...]]:
    c = CommunityId(genesis.id)
    out: list[tuple[object, ...]] = []
    for m in (A, B, C):
        head = ledger.head(c, m.public)
        assert head is not None
        out.append((head.seq, head.final_seq, head.final_id, head.final_balance))
        out.append((ledger.balance(c, m.public),))
    out += [(e.seq, ledger.is_final(c, e.ref), ledger.is_void(c, e.ref)) for e in entries]
    out.append((len(ledger.backend.parked(c, None)),))
    return out


@settings(max_examples=30, deadline=None)
@given(st.data(), st.integers(1, 3))
def test_certificates_ahead_of_a_batch(data: st.DataObject, payments: int) -> None:
    genesis, entries = _history(payments)
    skipped = data.draw(st.sets(st.integers(3, len(entries) - 1)), label="uncertified")
    certified = [e for n, e in enumerate(entries) if n not in skipped]
    certs = data.draw(st.permutations([certify(e) for e in certified]), label="certificates")

    reference = Ledger(MemoryBackend())
    reference.ingest(genesis.wire, T0)
    for e in entries:
        reference.ingest_entry(e, T0)
        if e in certified:
            reference.ingest_certificate(certify(e), T0)
    expected = _state(reference, genesis, entries)

    memory = Ledger(MemoryBackend())
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "s.sqlite")
        try:
            on_disk = Ledger(store)
            for ledger in (memory, on_disk):
                with store.transaction():
                    ledger.ingest(genesis.wire, T0)
                    for d in certs:
                        assert ledger.ingest_certificate(d, T0).ok
                    for e in entries:
                        ledger.ingest_entry(e, T0)
            assert _state(memory, genesis, entries) == expected
            assert _state(on_disk, genesis, entries) == expected
        finally:
            store.close()
