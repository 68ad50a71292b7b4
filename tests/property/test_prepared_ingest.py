"""Entries prepared on worker threads (troc.node.verifier) get the verdicts of
one-by-one ingest.

Sync hands the store entries decoded and signature-checked ahead, on the
other cores; what did not decode or verify goes in as wire bytes. A history
(forked or not) arrives in any order, cut into batches, mixed with invalid
items (bad signatures, mutated bytes, another community's entries, entries
signed over bytes that are not canonical): every
item's verdict, and the state reached, are those of ``Ledger.ingest`` one
entry at a time, on the in-memory backend and through the node's own batch
path on SQLite (``LocalNode.ingest_many``), with the signatures checked in
worker threads and in a child process alike.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import T0, fields_of, fresh_ledger, pack_wide, wrap
from tests.strategies import arrivals, histories, mutated
from troc.crypto.sign import Domain
from troc.node.local import open_local_node
from troc.node.verifier import Verifier, prepare
from troc.protocol.entry import CommunityId, Entry
from troc.protocol.ledger import Ledger, Outcome

EXAMPLES = settings().max_examples


def _bad_signature(wire: bytes) -> bytes:
    """``wire`` with one bit of its signature (the last 64 bytes) flipped:
    it still decodes; only the signature check refuses it."""
    return wire[:-1] + bytes([wire[-1] ^ 0x01])


def _wide(h: Any, wire: bytes) -> bytes:
    """``wire``'s entry signed again by its author over a wider encoding
    than the canonical one: its signature holds, its bytes are refused (the
    node's thread decodes without that proof; the workers make it)."""
    entry = Entry.decode(wire)
    signer = next(m for m in h.members if m.public == entry.author)
    signed = pack_wide(fields_of(entry), lambda: 1)
    return wrap(signed, signer.sign(Domain.ENTRY, signed))


@st.composite
def mixed_arrivals(draw: st.DrawFn) -> tuple[Any, list[bytes], list[list[bytes]]]:
    h = draw(histories(max_ops=24, forks=draw(st.sampled_from([0, 0, 1]))))
    wires = [e.wire for e in draw(arrivals(h))]
    other = draw(histories(min_members=3, max_members=3, max_ops=4))
    bad: list[bytes] = []
    for _ in range(draw(st.integers(0, 6))):
        victim = draw(st.sampled_from(h.entries)).wire
        kind = draw(st.sampled_from(["signature", "mutated", "other", "wide"]))
        if kind == "signature":
            bad.append(_bad_signature(victim))
        elif kind == "wide":
            bad.append(_wide(h, victim))
        elif kind == "mutated":
            bad.append(draw(mutated(victim)))
        else:
            bad.append(draw(st.sampled_from(other.entries)).wire)
    for wire in bad:
        wires.insert(draw(st.integers(0, len(wires))), wire)
    cuts = sorted(draw(st.lists(st.integers(0, len(wires)), max_size=6)))
    batches = [wires[a:b] for a, b in zip([0, *cuts], [*cuts, len(wires)], strict=True)]
    return h, wires, [b for b in batches if b]


def _verdict(o: Outcome) -> tuple[Any, ...]:
    return (
        o.status,
        o.reason,
        None if o.entry is None else o.entry.id,
        o.fork,
        tuple(e.id for e in o.released),
        tuple(e.id for e in o.dropped),
        o.missing,
    )


def _one_by_one(h: Any, wires: list[bytes]) -> tuple[Ledger, list[tuple[Any, ...]]]:
    ledger = fresh_ledger(h.genesis)
    c = h.world.community
    return ledger, [_verdict(ledger.ingest(w, T0, community=c)) for w in wires]


def _state(ledger: Ledger, c: CommunityId) -> tuple[Any, ...]:
    return (
        dict(ledger.backend.heads(c)),
        dict(ledger.balances(c)),
        ledger.backend.waiting_count(),  # type: ignore[attr-defined]
    )


@settings(max_examples=max(10, EXAMPLES // 2))
@given(mixed_arrivals())
def test_prepared_entries_get_one_by_one_verdicts_in_memory(drawn: Any) -> None:
    h, wires, batches = drawn
    c = h.world.community
    reference, expected = _one_by_one(h, wires)
    ledger = fresh_ledger(h.genesis)
    got = []
    for batch in batches:
        for item in prepare(batch):
            if isinstance(item, Entry):
                # What LocalNode.ingest_many does with a prepared entry.
                outcome = (
                    ledger.ingest_entry(item, T0)
                    if item.community == c
                    else ledger.ingest(item.wire, T0, community=c)
                )
            else:
                outcome = ledger.ingest(item, T0, community=c)
            got.append(_verdict(outcome))
    assert got == expected
    assert _state(ledger, c) == _state(reference, c)


@settings(max_examples=max(10, EXAMPLES // 4))
@given(drawn=mixed_arrivals())
def test_prepared_batches_through_the_node_get_one_by_one_verdicts_on_sqlite(
    drawn: Any, verifier: Verifier
) -> None:
    h, wires, batches = drawn
    c = h.world.community
    reference, expected = _one_by_one(h, wires)
    with (
        tempfile.TemporaryDirectory() as tmp,
        open_local_node(Path(tmp), None, lambda: T0, member=h.members[0].public) as node,
    ):
        node.ingest_many([h.genesis.wire])  # follow the community, as a relay does
        got = []
        for batch in batches:
            items = trio.run(verifier.prepare, batch)
            assert [i if isinstance(i, bytes) else i.wire for i in items] == batch
            got += [_verdict(o) for o in node.ingest_many(items, community=c)]
        assert got == expected
        assert _state(node.ledger, c) == _state(reference, c)
