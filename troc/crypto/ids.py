"""Text forms of ids that people type, paste and read aloud.

A member id is 32 bytes; shown raw (hex) a typo gives another valid key, and
paying it sends units into the void. The text form carries a checksum::

    m + base32(id || checksum)        checksum = SHA-256(domain || id)[:4]

with domain = ``troc/id/`` + the letter + a zero byte; RFC 4648 base32 in
lower case, no padding (docs/protocol.md §3.4); the first letter names what
it is (``m`` member, ``c`` community, ``e`` entry). A mistyped character is caught with
probability 1 - 2**-32, and an id of one kind is refused where another kind is
expected. Entry ids may be abbreviated to a unique prefix where the caller
can resolve it (like git); member and community ids never are.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from troc.errors import LocalProtocolError

__all__ = ["IdError", "decode_id", "encode_id"]

_KINDS = {"m": "member", "c": "community", "e": "entry"}
_CHECK = 4


class IdError(LocalProtocolError):
    """A text id that is malformed, of the wrong kind, or fails its checksum.

    ``reason`` says which (docs/protocol.md §3.4): ``kind``, ``form``,
    ``length`` or ``checksum``; ``str(err)`` is a sentence a person can act on.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _checksum(kind: str, raw: bytes) -> bytes:
    return hashlib.sha256(b"troc/id/" + kind.encode() + b"\x00" + raw).digest()[:_CHECK]


def encode_id(kind: str, raw: bytes) -> str:
    """The text form of ``raw`` (32 bytes) as a ``kind`` id (``m``, ``c``, ``e``)."""
    if kind not in _KINDS:
        raise ValueError(f"unknown id kind {kind!r}")
    body = base64.b32encode(raw + _checksum(kind, raw)).decode().rstrip("=").lower()
    return kind + body


def decode_id(kind: str, text: str) -> bytes:
    """The 32 bytes behind a text id of ``kind``.

    Raises IdError with a sentence a person can act on.
    """
    what = _KINDS[kind]
    text = text.strip().lower()
    if not text:
        raise IdError("form", f"empty {what} id")
    if text[0] != kind:
        other = _KINDS.get(text[0])
        if other:
            raise IdError("kind", f"{text[:12]}… is a {other} id, not a {what} id")
        raise IdError("kind", f"{text[:12]}… is not a {what} id (they start with {kind!r})")
    body = text[1:].upper()
    body += "=" * (-len(body) % 8)
    try:
        data = base64.b32decode(body)
    except (binascii.Error, ValueError):
        raise IdError("form", f"{text[:12]}… is not a well-formed {what} id") from None
    raw, check = data[:-_CHECK], data[-_CHECK:]
    if len(raw) != 32:
        raise IdError("length", f"{text[:12]}… has the wrong length for a {what} id")
    if check != _checksum(kind, raw):
        raise IdError("checksum", f"{text[:12]}… fails its checksum: a character is mistyped")
    return raw
