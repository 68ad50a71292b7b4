"""The sync protocol's frames (docs/sync.md): the protocol ids and versions,
the size limits, the shapes heads, final tips and frozen points travel in,
and the checked parsing of a peer's messages. Every failure is a
:class:`~troc.errors.RemoteProtocolError`. The session that sends and reads
them is :class:`troc.protocol.sync.SyncSession`. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from troc.crypto.sign import MemberId, is_valid_public_key
from troc.errors import CodecError, RemoteProtocolError
from troc.protocol import codec
from troc.protocol.entry import CommunityId, Entry, EntryId

__all__ = [
    "FRAME_LIMITS",
    "MAX_BATCH",
    "MAX_CERTS",
    "MAX_FRAME",
    "MAX_HEADS",
    "MAX_PROOFS",
    "MAX_PROOF_BYTES",
    "MAX_REPLY_BYTES",
    "MAX_WANTS",
    "MAX_WANT_ROUNDS",
    "PROTOCOL_ID",
    "PROTOCOL_ID_V3",
    "VERSIONS",
    "Finals",
    "Frozen",
    "Heads",
    "decode_message",
    "encode_message",
]

#: Version 2: the digest covers final tips, and certificates travel (``certs``).
PROTOCOL_ID = "/troc/sync/2"
#: Version 3: the heads that differ are found by range-based reconciliation
#: (``recon``, :mod:`troc.protocol.recon`) instead of sent whole.
PROTOCOL_ID_V3 = "/troc/sync/3"
#: The protocol id of each version spoken, newest (preferred) first.
VERSIONS = {3: PROTOCOL_ID_V3, 2: PROTOCOL_ID}
MAX_FRAME = 1024 * 1024
MAX_BATCH = 512
MAX_HEADS = 10_000
MAX_WANTS = 256
#: Wants one side sends per session (entries and certificates together), at
#: most; a peer that sends more is out of protocol.
MAX_WANT_ROUNDS = 16
#: Bytes of entries and certificates one side serves in replies to wants per
#: session, at most (past it, replies are empty: the asker asks again in the
#: next session). Without it, 16 replies of half a frame each.
MAX_REPLY_BYTES = 2 * 1024 * 1024
#: Fork proofs in one ``heads`` message: at most this many, and this many
#: bytes of entries (with MAX_HEADS heads the frame stays under MAX_FRAME).
MAX_PROOFS = 64
MAX_PROOF_BYTES = 200 * 1024
#: Certificates in one ``certs`` frame, at most (and batch_bytes of them).
MAX_CERTS = 512
#: Bytes of one ``[author, final seq]`` item of ``heads.k``, at most: the
#: list is cut to what fits beside the heads and proofs in one frame.
_FINAL_ITEM = 1 + 34 + 9
_HEAD_ITEM = 1 + 34 + 9 + 34

FRAME_LIMITS = codec.Limits(
    max_size=MAX_FRAME,
    max_depth=4,
    max_str=64,
    max_bin=codec.ENTRY_LIMITS.max_size + 64,
    max_array=MAX_HEADS,
    max_map=8,
)


#: (seq, id) of one author's head.
Heads = dict[MemberId, tuple[int, EntryId]]
#: Per author with a final tip above 0 (witnessed communities): its final
#: seq and the bytes of the certificate held for the final tip entry.
Finals = dict[MemberId, tuple[int, bytes]]
#: Per frozen author: (seq, first wire, second wire) of the fork proof at its
#: lowest fork point, the seq from which its entries stop counting.
Frozen = dict[MemberId, tuple[int, bytes, bytes]]


def encode_message(msg: dict[str, Any]) -> bytes:
    return codec.pack(msg, FRAME_LIMITS)


def decode_message(data: bytes) -> dict[str, Any]:
    """Parse one sync frame. Raises RemoteProtocolError if it is not one."""
    return codec.unpack_message(data, FRAME_LIMITS, "sync frame")


def _bad(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"bad sync message: {what}")


def _parse_heads(raw: Any) -> Heads:
    if not isinstance(raw, list) or len(raw) > MAX_HEADS:
        raise _bad("heads")
    heads: Heads = {}
    for item in raw:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not isinstance(item[0], bytes)
            or type(item[1]) is not int
            or not isinstance(item[2], bytes)
            or len(item[2]) != 32
            or item[1] < 1
            or not is_valid_public_key(item[0])
        ):
            raise _bad("head")
        heads[MemberId(item[0])] = (item[1], EntryId(item[2]))
    return heads


def _parse_finals(raw: Any) -> dict[MemberId, int]:
    """``heads.k``: [author, final seq] pairs."""
    if raw is None:
        return {}
    if not isinstance(raw, list) or len(raw) > MAX_HEADS:
        raise _bad("final tips")
    finals: dict[MemberId, int] = {}
    for item in raw:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], bytes)
            or type(item[1]) is not int
            or item[1] < 1
            or not is_valid_public_key(item[0])
        ):
            raise _bad("final tip")
        finals[MemberId(item[0])] = item[1]
    return finals


def _parse_proofs(raw: Any, community: CommunityId) -> list[tuple[Entry, Entry]]:
    """Fork proofs as sent in ``heads``: pairs of distinct entries of this
    community at one (author, seq). Signatures are checked when they are
    ingested, like any entry's."""
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_PROOFS:
        raise _bad("fork proofs")
    proofs = []
    for item in raw:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(w, bytes) for w in item)
        ):
            raise _bad("fork proof")
        try:
            a, b = (Entry.decode(w, check_signature=False) for w in item)
        except CodecError:
            raise _bad("fork proof entry") from None
        if (
            a.community != community
            or (a.community, a.author, a.seq) != (b.community, b.author, b.seq)
            or a.id == b.id
        ):
            raise _bad("not a fork proof")
        proofs.append((a, b))
    return proofs
