"""The decoder's fast paths say exactly what its plain path says.

:func:`troc.protocol.codec.unpack` keeps an Unpacker and a Packer per thread
from call to call, and :meth:`Entry.decode` reads the usual entry's outer
array by hand; both only spare work. Here, on valid and mutated bytes, each
gives the same value or the same error (reason and words) as the plain way,
and a failure leaves nothing behind for the next call.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests import strategies as tst
from tests.helpers import World, canonical_proofs, key
from troc.errors import CodecError
from troc.node import _store_files
from troc.protocol import codec, entry
from troc.protocol.entry import Entry


def _verdict(decode: Any, data: Any) -> tuple[str, Any]:
    try:
        return "ok", decode(data)
    except CodecError as exc:
        return exc.reason, str(exc)


def _plain(data: bytes) -> Any:
    return codec._unpack_plain(data, codec.ENTRY_LIMITS)


@given(tst.msgpack_values(), st.data())
def test_reused_unpacker_agrees_with_the_plain_path(value: Any, data: st.DataObject) -> None:
    good = msgpack.packb(value, use_bin_type=True)
    for raw in (good, data.draw(tst.mutated(good)), data.draw(st.binary(max_size=64))):
        if len(raw) <= codec.ENTRY_LIMITS.max_size:
            assert _verdict(codec.unpack, raw) == _verdict(_plain, raw)
        # What failed left nothing in the reused Unpacker.
        assert _verdict(codec.unpack, good) == _verdict(_plain, good)


@pytest.mark.parametrize(
    "bad",
    [
        b"\x93\x01\x02",  # truncated: the Unpacker holds a partial array
        b"\x01\x02",  # trailing bytes
        b"\x82\xa1b\x01\xa1a\x02",  # unsorted keys
        b"\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00",  # a float
        b"\xc1",  # a reserved byte
    ],
)
def test_a_failure_leaves_the_next_value_whole(bad: bytes) -> None:
    reason = _verdict(_plain, bad)
    assert reason[0] != "ok"
    assert _verdict(codec.unpack, bad) == reason
    assert codec.unpack(b"\x92\x01\x02") == [1, 2]
    assert _verdict(codec.unpack, bad) == reason


def test_threads_keep_their_own_unpackers() -> None:
    values = [[n, "x" * (n % 50), {"a": n}] for n in range(300)]
    wires = [msgpack.packb(v, use_bin_type=True) for v in values]
    wrong: list[Any] = []

    def run() -> None:
        for _ in range(20):
            for v, w in zip(values, wires, strict=True):
                if codec.unpack(w) != v:
                    wrong.append(v)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not wrong


def _entry_verdict(wire: bytes) -> tuple[str, Any]:
    try:
        e = Entry.decode(wire)
    except CodecError as exc:
        return exc.reason, str(exc)
    return "ok", (e.signed, e.signature, e.id, e.body, e.kind, e.wire)


@given(tst.entries(), st.data())
def test_split_agrees_with_the_general_decoder(e: Entry, data: st.DataObject) -> None:
    for wire in (e.wire, data.draw(tst.mutated(e.wire))):
        fast = _entry_verdict(wire)
        real_split = entry._split
        entry._split = lambda _wire: None  # type: ignore[assignment]
        try:
            plain = _entry_verdict(wire)
        finally:
            entry._split = real_split
        assert fast == plain


def test_split_reads_both_bin_headers() -> None:
    for n in (0, 1, 255, 256, 1000):
        signed = bytes(range(256)) * 4
        wire = msgpack.packb([signed[:n], b"s" * 64], use_bin_type=True)
        assert entry._split(wire) == (signed[:n], b"s" * 64)
    # Not the canonical form, or not 64 bytes of signature: the general decoder reads it.
    assert entry._split(b"\x92\xc5\x00\x01a\xc4\x40" + b"s" * 64) is None
    assert entry._split(msgpack.packb([b"a", b"s" * 63], use_bin_type=True)) is None
    assert entry._split(msgpack.packb([b"a", b"s" * 64, 1], use_bin_type=True)) is None


@given(tst.entries())
def test_bytes_not_proven_canonical_again_decode_to_the_same_entry(e: Entry) -> None:
    """A stored entry's bytes (troc/node/_store_files.py, decode_trusted),
    decoded without proving their signed part canonical again, make the
    entry the full decode makes, field for field."""
    again = Entry.decode(e.wire, check_signature=False, check_canonical=False)
    assert again == Entry.decode(e.wire)
    assert (again.signed, again.signature, again.wire) == (e.signed, e.signature, e.wire)


@given(tst.msgpack_values(), st.data())
def test_unpack_checked_agrees_on_canonical_bytes(value: Any, data: st.DataObject) -> None:
    """On bytes :func:`codec.unpack` takes, :func:`codec.unpack_checked`
    gives the same value; on bytes that are not msgpack within the limits,
    the same error. (What it does not look at: the canonical form, and the
    types and depth the canonical proof checks.)"""
    for raw in (codec.pack(value), data.draw(tst.mutated(codec.pack(value)))):
        plain = _verdict(codec.unpack, raw)
        checked = _verdict(codec.unpack_checked, raw)
        if plain[0] not in ("non_canonical", "bad_type", "too_deep"):
            assert checked == plain


def test_a_stored_entry_is_not_proven_canonical_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """What decoding a stored entry spares: the proof that its signed part
    is canonical (most of what unpacking it costs), made when it was stored."""
    w = World()
    wire = w.join(key(1)).wire
    shapes = canonical_proofs(monkeypatch)
    _store_files._DECODED.clear()
    assert _store_files.decode_trusted(wire).wire == wire
    assert shapes == []
    Entry.decode(wire)
    assert shapes  # the full decode proves it
