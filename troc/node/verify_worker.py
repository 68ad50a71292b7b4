"""A child process that checks Ed25519 signatures for its parent node.

Run as ``python -m troc.node.verify_worker`` by :class:`troc.node.verifier.Verifier`.
Over its stdin it reads requests, each a 4-byte big-endian length and then
msgpack of a list of ``[public key, message, signature]`` (the message is an
entry's signed bytes, checked in the ``troc/entry/v1`` domain) or
``[public key, message, signature, domain]`` (``domain`` the value of a
:class:`~troc.crypto.sign.Domain`: a certificate's votes and times); over its
stdout it answers each with a 4-byte length and one byte per item, 1 if the
signature holds (and an entry's message is canonical msgpack: :func:`check`),
else 0. It exits at the end of its stdin (its parent closed
it, or died). The channel is the parent's own pipe: nothing here is read
from a peer without the parent's decoding first.

Why a process: libsodium drops the GIL while it checks, but each check is a
call of its own, and handing the GIL back and forth with the node's thread
between ~60 µs calls cost more than a third of the work (bench/ingest.py).
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from typing import BinaryIO

import msgpack

from troc.crypto.sign import Domain, verify_once
from troc.errors import CodecError
from troc.protocol import codec

__all__ = ["check", "serve"]

_LENGTH = struct.Struct(">I")


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n)
    return data if data is not None and len(data) == n else None


def check(item: Sequence[bytes]) -> bool:
    """Whether one request item's signature holds (see the module's
    docstring) and, for an entry's (three elements), whether its signed
    bytes are the canonical encoding of their value: the parent decodes
    them without that proof (troc.node.verifier), most of what unpacking
    them costs, and sends an entry whose bytes are not to its ledger as
    bytes, refused there for the reason it always is."""
    if len(item) == 3:
        if not verify_once(Domain.ENTRY, item[0], item[1], item[2]):
            return False
        try:
            codec.unpack(item[1])
        except CodecError:
            return False
        return True
    return verify_once(Domain(item[3]), item[0], item[1], item[2])


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """Answer requests from ``inp`` on ``out`` until ``inp`` ends."""
    while True:
        head = _read_exactly(inp, _LENGTH.size)
        if head is None:
            return
        body = _read_exactly(inp, _LENGTH.unpack(head)[0])
        if body is None:
            return
        items = msgpack.unpackb(body, raw=True, use_list=False)
        verdicts = bytes(1 if check(item) else 0 for item in items)
        out.write(_LENGTH.pack(len(verdicts)) + verdicts)
        out.flush()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
