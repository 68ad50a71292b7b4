"""The one place troc turns values into msgpack bytes and back.

Canonical form: troc signs bytes, and a node must be able to tell whether the
bytes it holds are *the* encoding of what they say. So decoding is strict and
round-trips: bytes are accepted only if re-encoding the decoded value gives
the same bytes. msgpack's packer already picks the shortest integer and length
headers; maps must have string keys in sorted (code point) order; floats and
extension types are refused. Limits are enforced before and during decoding,
so hostile bytes cost little: the frame size first, then msgpack's own
per-container limits, then a depth walk.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack

from troc.errors import CodecError, RemoteProtocolError

__all__ = ["ENTRY_LIMITS", "Limits", "pack", "unpack", "unpack_message"]


class Limits:
    """Bounds checked while decoding one message."""

    __slots__ = ("max_array", "max_bin", "max_depth", "max_map", "max_size", "max_str")

    def __init__(
        self,
        *,
        max_size: int,
        max_depth: int,
        max_str: int,
        max_bin: int,
        max_array: int,
        max_map: int,
    ) -> None:
        self.max_size = max_size
        self.max_depth = max_depth
        self.max_str = max_str
        self.max_bin = max_bin
        self.max_array = max_array
        self.max_map = max_map


#: Limits for one entry's signed bytes (docs/protocol.md §2).
ENTRY_LIMITS = Limits(
    max_size=16 * 1024,
    max_depth=6,
    # Bytes. The longest text field holds 4 000 code points (entry.MAX_TEXT),
    # at most 4 UTF-8 bytes each: no valid entry has a longer string, and a
    # longer one is refused before its code points are counted.
    max_str=16_000,
    max_bin=16 * 1024,
    max_array=256,
    max_map=32,
)


def _normalise(value: Any, depth: int, limits: Limits) -> Any:
    """Check types and depth; sort map keys so packing is canonical."""
    if depth > limits.max_depth:
        raise CodecError("too_deep", f"nesting deeper than {limits.max_depth}")
    if value is None or isinstance(value, bool | int | str | bytes):
        return value
    if isinstance(value, list | tuple):
        return [_normalise(v, depth + 1, limits) for v in value]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise CodecError("bad_type", f"map keys must be strings, got {type(key).__name__}")
        return {k: _normalise(value[k], depth + 1, limits) for k in sorted(value)}
    raise CodecError("bad_type", f"cannot encode {type(value).__name__}")


def pack(value: Any, limits: Limits = ENTRY_LIMITS) -> bytes:
    """Canonical msgpack bytes of ``value`` (maps with sorted str keys).

    Raises CodecError for floats, ext types, non-str keys, too deep, too large.
    """
    try:
        data: bytes = msgpack.packb(_normalise(value, 0, limits), use_bin_type=True)
    except (OverflowError, ValueError) as exc:  # int beyond 64 bits
        raise CodecError("bad_value", str(exc)) from None
    if len(data) > limits.max_size:
        raise CodecError("too_large", f"{len(data)} bytes, the limit is {limits.max_size}")
    return data


def unpack(data: bytes, limits: Limits = ENTRY_LIMITS) -> Any:
    """Decode canonical msgpack bytes, strictly.

    Returns plain values: lists for arrays, dicts (str keys) for maps.
    Raises CodecError with a reason code: ``too_large``, ``malformed``,
    ``trailing_bytes``, ``too_deep``, ``bad_type``, ``non_canonical``.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError("bad_type", f"expected bytes, got {type(data).__name__}")
    if len(data) > limits.max_size:
        raise CodecError("too_large", f"{len(data)} bytes, the limit is {limits.max_size}")
    value = _unpack_reused(data, limits)
    if value is not _FAILED:
        return value
    return _unpack_plain(data, limits)


def unpack_checked(data: bytes, limits: Limits = ENTRY_LIMITS) -> Any:
    """:func:`unpack` for bytes :func:`unpack` took before, on this node
    (what its store kept): their value, without proving again that they
    are its canonical encoding, most of what :func:`unpack` costs (an
    entry's signed part: ~4 of ~6 µs). Bytes that are not one value within
    ``limits`` raise as :func:`unpack` says; other bytes are not looked at
    more closely than that."""
    value = _unpack_reused(data, limits, canonical=False)
    if value is not _FAILED:
        return value
    return _unpack_plain(data, limits)


def _unpacking(limits: Limits) -> dict[str, Any]:
    """msgpack's decoding options for ``limits``: strict, and its own limits."""
    return {
        "raw": False,
        "strict_map_key": True,
        "use_list": True,
        "max_str_len": limits.max_str,
        "max_bin_len": limits.max_bin,
        "max_array_len": limits.max_array,
        "max_map_len": limits.max_map,
        "max_ext_len": 0,
    }


def _unpack_plain(data: bytes | bytearray | memoryview, limits: Limits) -> Any:
    """:func:`unpack` without reused objects: slower, and the one that words
    every error."""
    # One call of msgpack's C decoder, with its own limits (a fresh
    # Unpacker per value cost ~1.5 µs more, twice per entry on the ingest
    # path). A complete value followed by more bytes raises ExtraData.
    try:
        value = msgpack.unpackb(data, **_unpacking(limits))
    except msgpack.ExtraData as exc:
        raise CodecError("trailing_bytes", f"{len(exc.extra)} bytes after the value") from None
    except ValueError as exc:
        if str(exc).endswith("incomplete input"):
            raise CodecError("malformed", "truncated msgpack") from None
        # Limits exceeded, invalid UTF-8, reserved bytes.
        raise CodecError("malformed", f"not valid msgpack: {exc}") from None
    except (TypeError, msgpack.StackError) as exc:  # TypeError: non-str map keys
        raise CodecError("malformed", f"not valid msgpack: {exc}") from None
    except Exception as exc:  # msgpack raises a few private error types too
        raise CodecError("malformed", f"not valid msgpack: {type(exc).__name__}") from None
    # Check types (no floats), depth and key order without rebuilding the
    # value, then prove the bytes are exactly the canonical encoding. (This
    # is the hot path of ingest: rebuilding through pack() cost ~40% more.)
    if not _canonical_shape(value, 0, limits) or (msgpack.packb(value, use_bin_type=True) != data):
        raise CodecError("non_canonical", "bytes are not the canonical encoding of their value")
    return value


#: What :func:`_unpack_reused` returns when the bytes are not one canonical value.
_FAILED = object()
# Per thread, an Unpacker per Limits and one Packer, kept from call to call:
# making them afresh (which msgpack.unpackb and packb do) is most of what
# decoding a small value costs (~0.7 µs each, four times per entry on the
# ingest path). Not thread-safe themselves, hence one set per thread.
_reused = threading.local()


def _unpack_reused(
    data: bytes | bytearray | memoryview, limits: Limits, *, canonical: bool = True
) -> Any:
    """The value of ``data`` if it is exactly one canonical value within
    ``limits`` (``canonical=False``: any one value within ``limits``), else
    _FAILED. Never raises for bad bytes: the caller then
    decodes again the plain way (:func:`unpack`), which says why, so errors
    are worded the same whichever way found them. After a failure the
    Unpacker may hold part of the bytes: it is dropped."""
    try:
        unpackers: dict[Limits, msgpack.Unpacker] = _reused.unpackers
        packer: msgpack.Packer = _reused.packer
    except AttributeError:
        unpackers = _reused.unpackers = {}
        packer = _reused.packer = msgpack.Packer(use_bin_type=True)
    unpacker = unpackers.get(limits)
    if unpacker is None:
        unpacker = unpackers[limits] = msgpack.Unpacker(
            max_buffer_size=limits.max_size, **_unpacking(limits)
        )
    try:
        start = unpacker.tell()
        unpacker.feed(data)
        value = unpacker.unpack()
        if unpacker.tell() - start != len(data):
            raise ValueError("trailing bytes")
        if canonical and (not _canonical_shape(value, 0, limits) or packer.pack(value) != data):
            return _FAILED
    except Exception:
        del unpackers[limits]
        # A Packer resets itself after a failed pack, but make sure.
        _reused.packer = msgpack.Packer(use_bin_type=True)
        return _FAILED
    return value


def unpack_message(data: bytes, limits: Limits, what: str) -> dict[str, Any]:
    """A peer's wire message: a map with a string ``t``, within ``limits``.
    Raises RemoteProtocolError ("bad {what}: ...") if it is not one."""
    try:
        msg = unpack(data, limits)
    except CodecError as exc:
        raise RemoteProtocolError(f"bad {what}: {exc}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("t"), str):
        raise RemoteProtocolError(f"bad {what}: not a message")
    return msg


#: Types that hold no other value (None is checked by identity).
_LEAVES = frozenset({bool, int, str, bytes})


def _canonical_shape(value: Any, depth: int, limits: Limits) -> bool:
    """True if every map's keys are sorted; raises for types and depth."""
    if depth > limits.max_depth:
        raise CodecError("too_deep", f"nesting deeper than {limits.max_depth}")
    t = type(value)
    if value is None or t in _LEAVES:
        return True
    ok = True
    # Leaves one level down are passed over here rather than in a call of
    # their own (most of an entry's values are leaves: ~8 calls per value
    # saved on the ingest path); the depth rule still holds for them.
    leaves_ok = depth + 1 <= limits.max_depth
    if t is list:
        for v in value:
            if leaves_ok and (v is None or type(v) in _LEAVES):
                continue
            ok = _canonical_shape(v, depth + 1, limits) and ok
        return ok
    if t is dict:
        keys = list(value)
        for key in keys:
            if type(key) is not str:
                raise CodecError("bad_type", f"map keys must be strings, got {type(key).__name__}")
        ok = keys == sorted(keys)
        for v in value.values():
            if leaves_ok and (v is None or type(v) in _LEAVES):
                continue
            ok = _canonical_shape(v, depth + 1, limits) and ok
        return ok
    if t is msgpack.ExtType:
        return False  # extension types have no canonical troc form
    raise CodecError("bad_type", f"cannot encode {t.__name__}")
