"""What a community topic's gossip message holds (docs/sync.md, "Gossip").

A message is one entry's wire bytes, as it always was, or a **run**: a
canonical msgpack map ``{"e": [wire, …], "t": "run"}`` of 2 to
:data:`MAX_RUN` entries of one author, in log order, each the next of the
one before (seq + 1, ``prev`` its id). A node that signs several entries at
once (group commit, troc/node/groupcommit.py) publishes them as one run:
gossip costs per message, not per byte (docs/relay.md), and each message is
signed, checked, relayed and deduplicated by every node it reaches.

The two are told apart by their first byte: an entry is a msgpack array, a
run a map. A node from before runs does not take one (its validator finds no
entry in it) and sync carries those entries to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from troc.errors import CodecError
from troc.protocol import codec
from troc.protocol.entry import Entry

__all__ = [
    "MAX_RUN",
    "MAX_RUN_BYTES",
    "RUN_LIMITS",
    "decode_run",
    "encode_run",
    "follows",
    "is_run",
    "run_wires",
]

#: Entries in one run, at most.
MAX_RUN = 64
#: Bytes of one run, at most: well under py-libp2p's 1 MiB pubsub RPC.
MAX_RUN_BYTES = 256 * 1024
RUN_LIMITS = codec.Limits(
    max_size=MAX_RUN_BYTES,
    max_depth=2,
    max_str=8,
    max_bin=codec.ENTRY_LIMITS.max_size,
    max_array=MAX_RUN,
    max_map=2,
)


def is_run(data: bytes) -> bool:
    """True if ``data`` is shaped as a run (a msgpack map), not as an entry."""
    return bool(data) and (0x80 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF))


def encode_run(wires: Sequence[bytes]) -> bytes:
    """A run of 2 to MAX_RUN entries' wire bytes (the caller checks they
    chain); CodecError if it would exceed the limits."""
    if not 2 <= len(wires) <= MAX_RUN:
        raise CodecError("bad_value", f"a run holds 2 to {MAX_RUN} entries, not {len(wires)}")
    return codec.pack({"e": list(wires), "t": "run"}, RUN_LIMITS)


def run_wires(data: bytes) -> list[bytes]:
    """The entries' wire bytes a run holds, none of them checked yet.
    Raises CodecError if ``data`` is not shaped as a run."""
    value = codec.unpack(data, RUN_LIMITS)
    if not isinstance(value, dict) or set(value) != {"e", "t"} or value["t"] != "run":
        raise CodecError("malformed", "not a run of entries")
    wires = value["e"]
    if not isinstance(wires, list) or not 2 <= len(wires) <= MAX_RUN:
        raise CodecError("malformed", f"a run holds 2 to {MAX_RUN} entries")
    if not all(isinstance(w, bytes) for w in wires):
        raise CodecError("malformed", "a run holds entries' wire bytes")
    return wires


def decode_run(data: bytes, *, check_signature: bool = True) -> list[Entry]:
    """The entries of a run, each decoded with its signature checked (unless
    ``check_signature`` is False: the caller checks them, as for
    :meth:`Entry.decode`).

    Raises CodecError if ``data`` is not a well-formed run, if an entry does
    not decode or verify, or if they are not consecutive entries of one
    author's log in one community.
    """
    entries = [Entry.decode(w, check_signature=check_signature) for w in run_wires(data)]
    if not all(follows(a, b) for a, b in pairwise(entries)):
        raise CodecError("malformed", "a run's entries are not one log's, in order")
    return entries


def follows(before: Entry, after: Entry) -> bool:
    """True if ``after`` is the next entry of ``before``'s log (in a run)."""
    return (
        after.community == before.community
        and after.author == before.author
        and after.seq == before.seq + 1
        and after.prev == before.id
    )
