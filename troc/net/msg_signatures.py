"""Gossip message signatures: a publisher's key read from its peer id once.

py-libp2p 0.8.1 checks every pubsub message's signature (strict signing,
``signature_validator``): it parses the publisher's peer id, extracts the
Ed25519 key embedded in it (a protobuf), derives the peer id back from the
key to compare the two, and only then verifies. All but the verification
give the same answer for every message of one publisher, and were over half
of what the check cost: measured in bench/finality.py, ~3 % of a witness's
CPU, which checks every payment's message.

:func:`install` makes py-libp2p's pubsub (which calls it by module-level
name) use :func:`check_signature`: the key of a publisher whose peer id
embeds it is read and checked against the id once (a bounded map), and each
message's signature is verified with it, every time, over the same bytes as
py-libp2p's. Any other message (no signature, a key not embedded in the id:
RSA) goes through py-libp2p's own code, which says why.
"""

from __future__ import annotations

from typing import Any

from libp2p.peer.id import ID
from libp2p.pubsub import pubsub as pubsub_module
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX, signature_validator

__all__ = ["MAX_PUBLISHERS", "check_signature", "install"]

#: Publishers whose key is remembered, at most (then forgotten all at once:
#: reading one again costs what it cost every message before).
MAX_PUBLISHERS = 4096

_PREFIX = PUBSUB_SIGNING_PREFIX.encode()
#: Publisher's peer id (bytes) → its public key, read from the id and checked against it.
_keys: dict[bytes, Any] = {}


def _key_of(from_id: bytes) -> Any | None:
    """The key embedded in the peer id ``from_id``, if there is one and it
    gives that id back; else None."""
    key = _keys.get(from_id)
    if key is not None:
        return key
    sender = ID(from_id)
    try:
        key = sender.extract_public_key()
    except Exception:  # not an id that embeds its key (py-libp2p tries msg.key then)
        return None
    if key is None or ID.from_pubkey(key) != sender:
        return None
    if len(_keys) >= MAX_PUBLISHERS:
        _keys.clear()
    _keys[bytes(from_id)] = key
    return key


def check_signature(msg: rpc_pb2.Message) -> bool:
    """py-libp2p's ``signature_validator``, reading the publisher's key from
    its id once (see the module docstring)."""
    key = _key_of(msg.from_id) if msg.signature else None
    if key is None:
        return bool(signature_validator(msg))
    unsigned = rpc_pb2.Message(
        data=msg.data, topicIDs=msg.topicIDs, from_id=msg.from_id, seqno=msg.seqno
    )
    try:
        return bool(key.verify(_PREFIX + unsigned.SerializeToString(), msg.signature))
    except Exception:  # as py-libp2p: a key that cannot check it rejects it
        return False


def install() -> None:
    """Use :func:`check_signature` in py-libp2p's pubsub (every host of the process)."""
    pubsub_module.signature_validator = check_signature  # type: ignore[attr-defined]
