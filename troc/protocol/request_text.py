"""The text form of a payment request, for face-to-face payment.

``troc-request:`` followed by the unpadded base32 (RFC 4648 alphabet, lower
case) of the request entry's wire bytes (docs/protocol.md §4.10). Decoders
strip white space and fold case, so the same text read back from a QR code
in upper case (QR's compact alphanumeric mode) decodes too. This text is
never signed or synced: the entry inside is.
"""

from __future__ import annotations

import base64
import binascii

from troc.errors import CodecError, LocalProtocolError
from troc.protocol.entry import MAX_REQUEST_WIRE, Entry, Kind

__all__ = ["PREFIX", "decode_request_text", "encode_request_text"]

PREFIX = "troc-request:"


def encode_request_text(entry: Entry) -> str:
    """The ``troc-request:`` text of a request entry."""
    if entry.kind is not Kind.REQUEST:
        raise LocalProtocolError(f"a {entry.kind.value} is not a request")
    return PREFIX + base64.b32encode(entry.wire).decode("ascii").rstrip("=").lower()


def decode_request_text(text: str) -> Entry:
    """The request entry a ``troc-request:`` text holds, its signature checked.

    Raises LocalProtocolError if the text is not one, or holds anything but
    a well-formed, validly signed request (whether it is *valid* in its
    community is the ledger's business).
    """
    text = "".join(text.split()).lower()
    if not text.startswith(PREFIX):
        raise LocalProtocolError(f"a payment request text starts with {PREFIX!r}")
    body = text[len(PREFIX) :].upper()
    if len(body) > (MAX_REQUEST_WIRE * 8 + 4) // 5:
        raise LocalProtocolError("that payment request text is too long")
    try:
        wire = base64.b32decode(body + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):
        raise LocalProtocolError("that payment request text is damaged (not base32)") from None
    try:
        entry = Entry.decode(wire)
    except CodecError as exc:
        raise LocalProtocolError(
            f"that payment request text is damaged ({exc.reason}): {exc}"
        ) from None
    if entry.kind is not Kind.REQUEST:
        raise LocalProtocolError(f"that text holds a {entry.kind.value}, not a payment request")
    return entry
