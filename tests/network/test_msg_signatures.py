"""Gossip message signatures: a publisher's key is read from its peer id
once, and every message's signature is still checked
(troc.net.msg_signatures). Real hosts on 127.0.0.1, and messages signed as
py-libp2p signs them."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.pubsub import pubsub as pubsub_module
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX

from tests.helpers import publish_and_receive
from troc.net.msg_signatures import check_signature
from troc.net.p2p import open_host

TOPIC = "troc/test/signatures"


def _signed(key_pair: Any, data: bytes, seqno: bytes = b"\x00\x01") -> rpc_pb2.Message:
    msg = rpc_pb2.Message(
        data=data,
        topicIDs=[TOPIC],
        from_id=ID.from_pubkey(key_pair.public_key).to_bytes(),
        seqno=seqno,
    )
    payload = PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString()
    msg.signature = key_pair.private_key.sign(payload)
    msg.key = key_pair.public_key.serialize()
    return msg


def test_every_message_is_still_checked() -> None:
    alice, mallory = create_new_key_pair(), create_new_key_pair()
    good = _signed(alice, b"pay 1")
    assert check_signature(good)
    assert check_signature(good)  # the key read once, the signature checked again
    tampered = _signed(alice, b"pay 1")
    tampered.data = b"pay 9"
    assert not check_signature(tampered)
    forged = _signed(mallory, b"pay 1")
    forged.from_id = good.from_id  # mallory's signature under alice's id
    assert not check_signature(forged)
    unsigned = _signed(alice, b"pay 1")
    unsigned.signature = b""
    assert not check_signature(unsigned)


async def test_a_publishers_key_is_read_from_its_id_once(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[bytes] = []
    extract = ID.extract_public_key

    def counting(self: ID) -> Any:
        reads.append(self.to_bytes())
        return extract(self)

    async with open_host() as a, open_host() as b:
        await a.connect(b.listen_addrs()[0])
        async with a.gossip.subscribe(TOPIC), b.gossip.subscribe(TOPIC) as sub:
            with trio.fail_after(10):
                await a.gossip.wait_for_mesh(b.peer_id, TOPIC)
            monkeypatch.setattr(ID, "extract_public_key", counting)
            sent = [f"m{i}".encode() for i in range(20)]
            got = await publish_and_receive(a, TOPIC, sub, sent)
    assert got == sent
    a_id = ID.from_base58(a.peer_id).to_bytes()
    # Each host read a's key from its id at most once (a checks its own
    # publishes too), not once per message.
    assert reads.count(a_id) <= 2
    assert pubsub_module.signature_validator is check_signature  # what push_msg calls
