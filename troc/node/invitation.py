"""The invitation text (``troc-invite:…``) a member passes to a newcomer.

It carries the community's genesis (self-certifying: the community's id is
its hash), addresses to reach, and, for a community that admits by vouches,
the vouch made for the newcomer: msgpack in URL-safe base64 (docs/invitations.md).
"""

from __future__ import annotations

import base64
from typing import Any

import msgpack

from troc.errors import LocalProtocolError
from troc.protocol.entry import Entry, Kind, Ref

__all__ = ["INVITE_PREFIX", "MAX_INVITE_ADDRS", "decode_invitation", "encode_invitation"]

INVITE_PREFIX = "troc-invite:"
#: Addresses in one invitation, at most (what decode_invitation accepts).
MAX_INVITE_ADDRS = 64


def encode_invitation(genesis: bytes, addrs: list[str], vouch: Ref | None = None) -> str:
    """A text a newcomer pastes into ``troc community join``: the community's
    genesis (self-certifying: its id is its hash), addresses to reach, and,
    for a community that admits by vouches, the vouch made for the newcomer."""
    data: dict[str, Any] = {"g": genesis, "a": addrs}
    if vouch is not None:
        data["v"] = vouch.to_wire()
    packed = msgpack.packb(data, use_bin_type=True)
    return INVITE_PREFIX + base64.urlsafe_b64encode(packed).decode().rstrip("=")


def decode_invitation(text: str) -> tuple[bytes, list[str], Ref | None]:
    """(genesis wire, addresses, vouch) from an invitation; LocalProtocolError if damaged."""
    text = text.strip()
    if not text.startswith(INVITE_PREFIX):
        raise LocalProtocolError(f"not a troc invitation (they start with {INVITE_PREFIX!r})")
    body = text[len(INVITE_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        data = msgpack.unpackb(
            raw,
            raw=False,
            max_bin_len=65536,
            max_array_len=MAX_INVITE_ADDRS,
            max_map_len=8,
            max_str_len=1024,
        )
        genesis, addrs = data["g"], data["a"]
        if not isinstance(genesis, bytes) or not isinstance(addrs, list):
            raise ValueError
        if not all(isinstance(a, str) for a in addrs):
            raise ValueError
        vouch = Ref.from_wire(data["v"]) if "v" in data else None
    except Exception:
        raise LocalProtocolError("the invitation is damaged: copy it again, whole") from None
    try:
        entry = Entry.decode(genesis)
    except Exception:
        raise LocalProtocolError("the invitation holds no valid community") from None
    if entry.kind is not Kind.GENESIS:
        raise LocalProtocolError("the invitation holds no valid community")
    return genesis, addrs, vouch
