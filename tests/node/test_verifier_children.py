"""The Verifier's worker processes (troc.node.verifier): requests in flight
and workers that fail.

Each child is sent its requests without waiting for the answers before, so
many batches are outstanding at once across the children: each batch must
still get its own verdicts, in order. A child killed with requests in
flight must not lose them: they, and every later batch, are checked in the
threads, with the same verdicts. close() answers what was handed over
before it ends the children, and the Verifier starts new ones after. And a
sync session reads far enough ahead to keep them busy while it stores.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
import trio

from tests.helpers import World, canonical_proofs, fields_of, key, pack_wide, wrap
from troc.crypto.sign import Domain, SigningKey
from troc.errors import CodecError
from troc.node.sync import AHEAD_FRAMES, COMBINE_ENTRIES
from troc.node.verifier import Prepared, Verifier, prepare
from troc.protocol.entry import Entry
from troc.protocol.sync_wire import MAX_BATCH


def _bad_signature(wire: bytes) -> bytes:
    return wire[:-1] + bytes([wire[-1] ^ 0x01])


@pytest.fixture(scope="module")
def wires() -> list[bytes]:
    """59 signed entries, every fifth with a bad signature and every
    seventh cut short (it does not decode)."""
    w = World()
    members = [key(i) for i in range(1, 4)]
    for m in members:
        w.join(m)
    for i in range(28):
        w.offer(members[i % 3], title=f"item {i}")
    for i in range(28):
        w.pay(members[i % 3], members[(i + 1) % 3], 1)
    out = []
    for i, e in enumerate(w.log):
        wire = e.wire
        if i % 5 == 4:
            wire = _bad_signature(wire)
        elif i % 7 == 6:
            wire = wire[:-10]
        out.append(wire)
    return out


@pytest.fixture
def verifier() -> Iterator[Verifier]:
    v = Verifier(workers=2, min_threaded=1, mode="processes")
    yield v
    v.close()


def _batches(wires: list[bytes], size: int) -> list[list[bytes]]:
    return [wires[i : i + size] for i in range(0, len(wires), size)]


def _good(wires: list[bytes]) -> set[bytes]:
    """The wires that decode and verify, checked here on the calling thread."""
    return {i.wire for i in prepare(wires) if isinstance(i, Entry)}


async def _collect(pending: list[Prepared]) -> list[list[bytes | Entry]]:
    return [await p.result() for p in pending]


def _check(batches: list[list[bytes]], got: list[list[bytes | Entry]], good: set[bytes]) -> None:
    assert len(got) == len(batches)
    for batch, items in zip(batches, got, strict=True):
        assert [i if isinstance(i, bytes) else i.wire for i in items] == batch
        assert [isinstance(i, Entry) for i in items] == [w in good for w in batch]


def test_many_batches_in_flight_get_their_own_verdicts_in_order(
    wires: list[bytes], verifier: Verifier
) -> None:
    good = _good(wires)
    assert 0 < len(good) < len(wires)  # some of each
    batches = _batches(wires, 7) * 5  # 65 batches, all handed over before any is collected
    pending = [verifier.submit(b) for b in batches]
    assert len(verifier._children) == 2  # one per core
    _check(batches, trio.run(_collect, pending), good)


def test_a_child_killed_with_requests_in_flight_leaves_them_to_the_threads(
    wires: list[bytes], verifier: Verifier
) -> None:
    good = _good(wires)
    batches = _batches(wires, 9) * 4
    pending = [verifier.submit(b) for b in batches]
    children = list(verifier._children)
    assert children
    for child in children:  # while some of those requests are in its pipe
        os.kill(child.proc.pid, signal.SIGKILL)
    # The rest, handed over after the kill: every batch is answered, those
    # the children did not answer by the threads.
    pending += [verifier.submit(b) for b in batches]
    _check(batches * 2, trio.run(_collect, pending), good)
    assert verifier._broken
    assert all(c.proc.wait() == -signal.SIGKILL for c in children)


def test_close_answers_what_was_handed_over_and_the_verifier_starts_anew(
    wires: list[bytes], verifier: Verifier
) -> None:
    good = _good(wires)
    batches = _batches(wires, 11)
    pending = [verifier.submit(b) for b in batches]
    children = list(verifier._children)
    verifier.close()
    assert all(c.proc.returncode == 0 for c in children)
    _check(batches, trio.run(_collect, pending), good)
    again = [verifier.submit(b) for b in batches]
    assert verifier._children
    assert not set(verifier._children) & set(children)
    _check(batches, trio.run(_collect, again), good)


def test_the_read_ahead_holds_the_batch_being_stored_and_the_next() -> None:
    """A session reads nothing while its thread stores a batch (troc.node.sync):
    what is read ahead must outlast the batch taken, or the workers idle
    through every store."""
    assert AHEAD_FRAMES * MAX_BATCH >= 2 * COMBINE_ENTRIES


def _wide(signer: SigningKey, entry: Entry) -> bytes:
    """``entry``'s fields signed by ``signer`` over a wider encoding than
    the canonical one: the signature holds, the bytes are refused."""
    signed = pack_wide(fields_of(entry), lambda: 1)
    return wrap(signed, signer.sign(Domain.ENTRY, signed))


def test_an_entry_signed_over_bytes_not_canonical_comes_back_as_bytes(verifier: Verifier) -> None:
    """The node's thread decodes without proving the signed bytes canonical;
    the worker proves it as it checks the signature, so such an entry (its
    signature holds) reaches the ledger as bytes, refused there as ever."""
    w = World()
    member = key(1)
    join = w.join(member)
    wide = _wide(member, join)
    with pytest.raises(CodecError) as refused:
        Entry.decode(wide)
    assert refused.value.reason == "non_canonical"
    for items in (trio.run(verifier.prepare, [wide, join.wire]), prepare([wide, join.wire])):
        assert items[0] == wide
        assert isinstance(items[1], Entry)


def test_the_calling_thread_proves_no_bytes_canonical(
    verifier: Verifier, wires: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proving an entry's signed bytes canonical is a third of decoding it:
    the workers do it, beside the signature, not the node's thread."""
    proofs = canonical_proofs(monkeypatch)
    items = trio.run(verifier.prepare, wires)
    assert proofs == []
    assert any(isinstance(i, Entry) for i in items)
