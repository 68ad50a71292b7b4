"""What the gossip layer hands its validators and subscribers: the origin's
peer id in base58, encoded once per origin, not once per message."""

from __future__ import annotations

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from troc.net import gossip


def test_an_origin_is_encoded_in_base58_once(monkeypatch: pytest.MonkeyPatch) -> None:
    origin = ID.from_pubkey(create_new_key_pair().public_key)
    forwarder = ID.from_pubkey(create_new_key_pair().public_key)
    encoded: list[bytes] = []
    real = ID.to_base58

    def counting(self: ID) -> str:
        encoded.append(self.to_bytes())
        return real(self)

    monkeypatch.setattr(ID, "to_base58", counting)
    msgs = [
        rpc_pb2.Message(from_id=origin.to_bytes(), data=b"x%d" % i, seqno=bytes([i]))
        for i in range(5)
    ]
    got = [gossip._message("t", m, forwarder) for m in msgs]
    assert {g.origin for g in got} == {real(origin)}
    assert [g.data for g in got] == [m.data for m in msgs]
    assert {g.forwarder for g in got} == {real(forwarder)}
    assert encoded.count(origin.to_bytes()) <= 1
