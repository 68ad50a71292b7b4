"""Signed peer records in gossip: checked once per record, not once per RPC.

py-libp2p 0.8.1 attaches the sender's signed peer record (an Envelope: its
addresses, signed with its key) to every pubsub RPC, and its receiver
handles each copy in full: parse the envelope, verify its Ed25519
signature, then clear the peer's addresses in the peerstore and add them
back (``maybe_consume_signed_record``). The sender, for its part, lists and
compares all its listen addresses for every RPC before attaching its cached
record (``env_to_send_in_RPC``). Measured in bench/finality.py, where every
payment is gossiped through four witnesses: the two were about a seventh of
a witness's CPU (``consume_envelope``, ``BasicHost.get_addrs``), for records
that change when a node's addresses do.

:func:`install` wraps both, for every host of the process (pubsub and
gossipsub call them by module-level name):

- receiving, a record byte-identical to the last one this peer sent that
  was consumed successfully less than :data:`RECHECK_AFTER` seconds ago is
  taken as it was then (the same bytes verify the same way, and the
  peerstore already holds what they say); any other record, or a failure,
  goes through py-libp2p's own code, every time;
- sending, the record is looked up at most once per :data:`SEND_CACHE`
  seconds per host: a node whose addresses change sends its old record for
  at most that long, which costs nothing (peers learn addresses from
  identify and the DHT too).
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from typing import Any

from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.pubsub import gossipsub
from libp2p.pubsub import pubsub as pubsub_module
from libp2p.pubsub.utils import maybe_consume_signed_record

__all__ = ["RECHECK_AFTER", "SEND_CACHE", "install"]

#: A record seen again after this many seconds is checked and stored again
#: (the peerstore keeps its addresses for two hours).
RECHECK_AFTER = 60.0
#: A host's own record is looked up again after this many seconds.
SEND_CACHE = 1.0
#: Peers whose last record is remembered, at most.
MAX_PEERS = 4096

_consume = maybe_consume_signed_record
_envelope = env_to_send_in_RPC
#: peer id → (its last record consumed successfully, when).
_consumed: OrderedDict[Any, tuple[bytes, float]] = OrderedDict()
#: host → (its record, when looked up).
_sent: weakref.WeakKeyDictionary[Any, tuple[bytes, float]] = weakref.WeakKeyDictionary()


def consume_once(msg: Any, host: Any, peer_id: Any) -> bool:
    """``maybe_consume_signed_record``, skipping a record just consumed."""
    if not msg.HasField("senderRecord"):
        return True
    record = msg.senderRecord
    now = time.monotonic()
    last = _consumed.get(peer_id)
    if last is not None and last[0] == record and now - last[1] < RECHECK_AFTER:
        return True
    ok = bool(_consume(msg, host, peer_id))
    if ok:
        _consumed[peer_id] = (record, now)
        _consumed.move_to_end(peer_id)
        if len(_consumed) > MAX_PEERS:
            _consumed.popitem(last=False)
    return ok


def envelope_cached(host: Any) -> tuple[bytes, bool]:
    """``env_to_send_in_RPC``, looked up at most once per SEND_CACHE seconds."""
    now = time.monotonic()
    held = _sent.get(host)
    if held is not None and now - held[1] < SEND_CACHE:
        return held[0], False  # (py-libp2p's flag: not a new record)
    found = _envelope(host)
    _sent[host] = (found[0], now)
    return found


def install() -> None:
    """Use the wrappers in py-libp2p's pubsub and gossipsub modules."""
    for module in (pubsub_module, gossipsub):
        module.maybe_consume_signed_record = consume_once  # type: ignore[attr-defined]
        module.env_to_send_in_RPC = envelope_cached  # type: ignore[attr-defined]
