"""Invitation codes as text: ``troc-code:<server address>#<secret>``.

The secret is 80 random bits in Crockford base32, 16 characters plus 2 check
characters (10 bits of a hash) in three groups of six. Case, dashes and
spaces do not matter; I and L read as 1, O as 0; a mistyped secret is caught
by the check before anything is sent. Only SHA-256 of the secret is stored
(:func:`hash_secret`; :mod:`troc.node.invitebook`). Also here: the reasons a
code is refused (:data:`ERRORS`, :class:`CodeRefused`), the lifetime syntax
(``7d``) and a community's policy as its genesis states it (what a code's
redemption shows the joiner). The protocol is :mod:`troc.node.invites`.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from troc.crypto.ids import encode_id
from troc.errors import LocalProtocolError, RefusedError
from troc.protocol.entry import Entry, Genesis, Kind

__all__ = [
    "CODE_PREFIX",
    "ERRORS",
    "SECRET_BYTES",
    "CodeRefused",
    "format_code",
    "format_secret",
    "hash_secret",
    "is_code",
    "parse_code",
    "parse_expiry",
    "parse_secret",
    "policy_of",
]

CODE_PREFIX = "troc-code:"
INVITES_FILE = "invites.sqlite"

SECRET_BYTES = 10  # 80 bits
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
_VALUE = {c: i for i, c in enumerate(_ALPHABET)} | {"I": 1, "L": 1, "O": 0}
SECRET_CHARS = 18  # 16 for 80 bits, 2 check characters
_HASH_DOMAIN = b"troc/invite-code/v1"
_CHECK_DOMAIN = b"troc/invite-check/v1"

MAX_USES = 1_000_000
MAX_EXPIRY_S = 366 * 86400
MAX_LABEL = 100

ERRORS = {
    "unknown": "the server knows no such code: check it, or ask for a new one",
    "expired": "this code has expired: ask whoever gave it to you for a new one",
    "used_up": "this code has been used as many times as it allowed: ask for a new one",
    "revoked": "this code was withdrawn by the server's operator: ask for a new one",
    "needs_vouch": "this community admits members by vouch, and a server cannot vouch:"
    " ask a member for an invitation made for you (troc community invite --for YOUR-ID)",
    "unavailable": "the server no longer serves the community of this code",
    "throttled": "too many attempts from here",
    "bad_request": "the server did not understand the request",
}


class CodeRefused(RefusedError):
    """A code that cannot be redeemed; ``reason`` is one of :data:`ERRORS`."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(reason, message or ERRORS.get(reason, reason))


# -- codes --------------------------------------------------------------------


def _b32(data: bytes, chars: int) -> str:
    n = int.from_bytes(data, "big")
    bits = len(data) * 8
    n <<= chars * 5 - bits
    return "".join(_ALPHABET[(n >> (5 * (chars - 1 - i))) & 31] for i in range(chars))


def _check(secret: bytes) -> str:
    digest = hashlib.sha256(_CHECK_DOMAIN + secret).digest()
    return _ALPHABET[digest[0] >> 3] + _ALPHABET[digest[1] >> 3]


def format_secret(secret: bytes) -> str:
    """The 18 characters of a secret, grouped by six: ``K7M2Q9-XA4B8C-ZT3H0R``."""
    text = _b32(secret, 16) + _check(secret)
    return "-".join(text[i : i + 6] for i in range(0, SECRET_CHARS, 6))


def parse_secret(text: str) -> bytes:
    """The 10 secret bytes of a typed secret; LocalProtocolError if mistyped."""
    clean = re.sub(r"[\s\-]", "", text).upper()
    if len(clean) != SECRET_CHARS or any(c not in _VALUE for c in clean):
        raise LocalProtocolError(
            f"an invitation code's secret is {SECRET_CHARS} letters and digits"
            f" (like K7M2Q9-XA4B8C-ZT3H0R), got {text!r}"
        )
    n = 0
    for c in clean[:16]:
        n = (n << 5) | _VALUE[c]
    secret = n.to_bytes(SECRET_BYTES, "big")
    if _check(secret) != "".join(_ALPHABET[_VALUE[c]] for c in clean[16:]):
        raise LocalProtocolError("this code is mistyped (its check letters do not match)")
    return secret


def format_code(addr: str, secret: bytes) -> str:
    return f"{CODE_PREFIX}{addr}#{format_secret(secret)}"


def is_code(text: str) -> bool:
    return text.strip().startswith(CODE_PREFIX)


def parse_code(text: str) -> tuple[str, bytes]:
    """(server multiaddr, secret bytes) of a code; LocalProtocolError if damaged."""
    text = text.strip()
    if not text.startswith(CODE_PREFIX):
        raise LocalProtocolError(f"not an invitation code (they start with {CODE_PREFIX!r})")
    addr, sep, secret = text[len(CODE_PREFIX) :].rpartition("#")
    if not sep or "/p2p/" not in addr or len(addr) > 1024:
        raise LocalProtocolError(
            "this code is damaged: it should read troc-code:<server address>#<secret>"
        )
    return addr, parse_secret(secret)


def hash_secret(secret: bytes) -> bytes:
    return hashlib.sha256(_HASH_DOMAIN + secret).digest()


def parse_expiry(value: Any) -> int:
    """Seconds from ``7d``, ``12h``, ``30m``, ``90s``, ``2w`` or a number of seconds."""
    text = str(value).strip().lower()
    match = re.fullmatch(r"(\d+)\s*([smhdw]?)", text)
    if not match:
        raise LocalProtocolError(f"expiry: expected e.g. 7d, 12h, 30m or 3600, got {value!r}")
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[match.group(2)]
    seconds = int(match.group(1)) * scale
    if not 0 < seconds <= MAX_EXPIRY_S:
        raise LocalProtocolError("expiry: from 1 second to 366 days")
    return seconds


def policy_of(genesis: Entry) -> dict[str, Any]:
    """A community's policy, as its genesis states it (JSON-able, text ids)."""
    g = genesis.body
    if genesis.kind is not Kind.GENESIS or not isinstance(g, Genesis):
        raise LocalProtocolError("not a genesis entry")
    return {
        "community": encode_id("c", genesis.id),
        "name": g.name,
        "unit": g.unit,
        "credit_limit": g.credit_limit,
        "admission": g.admission,
        "finality": g.finality,
        "founder": encode_id("m", genesis.author),
        "witnesses": [encode_id("m", w) for w in g.witnesses],
        "faults": g.faults,
        "quorum": g.quorum,
        "ceiling": g.ceiling,
    }
