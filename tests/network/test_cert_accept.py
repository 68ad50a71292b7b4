"""A newcomer accepts a certified payment before it holds the payer's history
(docs/witness.md §6.1, issue 16 part 2), over real libp2p hosts on 127.0.0.1.

Four witnesses (f = 1, q = 3), a payer with a log of 40 entries and a
newcomer whose sync is held back: it gets the payment and its certificate by
gossip only, the payment parked for want of the payer's history. It accepts
(``troc accept`` by the transfer's id), and its accept becomes final with the
witnesses' votes. Then its sync runs: the history arrives, the transfer is
stored, and nothing is counted twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from tests.network.test_witnessed import Cluster, eventually, pay
from troc.crypto.sign import SigningKey
from troc.node import ops
from troc.node.local import open_local_node
from troc.node.node import Node
from troc.node.sync import Syncer
from troc.node.topics import final_topic_of, topic_of
from troc.protocol.entry import CommunityId

pytestmark = [
    pytest.mark.slow,
    # As in test_witnessed: py-libp2p leaks the socket of a dial cancelled
    # mid-handshake when nodes stop; the GC reports it.
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]

HISTORY = 40


def hold_back_sync(
    monkeypatch: pytest.MonkeyPatch, member: bytes, allowed: set[str] | None = None
) -> list[bool]:
    """Make ``member``'s node run no sync session, either way, while the
    returned flag's first item is True (set it False to let sync run),
    except with the peers in ``allowed`` (ids; the set may grow later)."""
    held = [True]
    allowed = set() if allowed is None else allowed
    sync_one, handle_stream = Syncer.sync_one, Syncer.handle_stream

    async def one(self: Syncer, peer: str, community: Any) -> Any:
        if held[0] and self.local.member == member and peer not in allowed:
            return None
        return await sync_one(self, peer, community)

    async def handle(self: Syncer, stream: Any, peer: str, version: int = 2) -> None:
        if held[0] and self.local.member == member and peer not in allowed:
            return
        await handle_stream(self, stream, peer, version)

    monkeypatch.setattr(Syncer, "sync_one", one)
    monkeypatch.setattr(Syncer, "handle_stream", handle)
    return held


def mesh(node: Node, topic: str) -> set[str]:
    """``node``'s gossip mesh peers for ``topic``."""
    return {p.to_base58() for p in node.host.gossip.pubsub.router.mesh.get(topic, ())}


def relayed(
    a: Node, witnesses: list[Node], n: Node, c: CommunityId, *, certificates: bool = True
) -> bool:
    """True if what ``a`` publishes on both of ``c``'s topics (the entries'
    only, without ``certificates``) reaches ``n`` through the gossip
    meshes: directly or through one witness."""
    for topic in (topic_of(c), final_topic_of(c))[: 2 if certificates else 1]:
        if n.peer_id in mesh(a, topic):
            continue
        if not any(w.peer_id in mesh(a, topic) and n.peer_id in mesh(w, topic) for w in witnesses):
            return False
    return True


async def test_a_newcomer_accepts_a_certified_payment_before_the_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cl = Cluster(tmp_path)
    c = cl.community
    n_key = SigningKey.generate()
    with open_local_node(tmp_path / "a", cl.a) as a:
        for i in range(HISTORY):  # the payer's history, signed offline
            a.offer(c, f"offer {i}")
        history = [w for _t, w in a.store.timed_entries_since(c, cl.a.public, 0, HISTORY + 1)]
    for i in range(4):  # the witnesses hold it (they follow the community)
        with open_local_node(tmp_path / f"w{i}", cl.wkeys[i]) as w:
            w.ingest_many(history)
    with open_local_node(tmp_path / "n", n_key) as n:
        n.join(cl.genesis)
    held = hold_back_sync(monkeypatch, n_key.public)
    async with trio.open_nursery() as nursery:
        for i in range(4):
            await cl.start_witness(nursery, i)
        async with cl.member("a", cl.a) as a, cl.member("n", n_key) as n:
            await n.connect(a.addrs()[0])
            witnesses = [w for w, _ in cl.witnesses.values()]
            await eventually(lambda: relayed(a, witnesses, n, c), 20)
            result = await pay(a, c, n_key.public, 10, wait=20)
            assert result["finality"]["final"], result
            transfer = a.local.pending_out(c)[0].ref
            assert transfer.seq == HISTORY + 2  # join, the offers, the payment

            # By gossip only: the payment parked (its prev is missing), and
            # its own certificate.
            def holds_it() -> bool:
                held = n.local.ledger.certificate_of(c, transfer) is not None
                return held and n.local.store.waiting_count() > 0

            await eventually(holds_it, 20)
            assert n.local.store.entry(c, transfer.author, transfer.seq, transfer.id) is None
            assert n.local.store.head(c, cl.a.public) is None  # none of the history
            accepted = await n.run_op(
                "accept", {"community": ops.cid(c), "transfer": ops.eid(transfer.id), "wait": 20}
            )
            assert accepted["finality"]["final"], accepted
            assert n.local.balance(c).balance == 10  # final
            assert n.local.store.head(c, cl.a.public) is None  # still no history
            for w, _ in cl.witnesses.values():
                await eventually(lambda w=w: w.local.balance(c, n_key.public).balance == 10)
            # Accepting again is refused: the answer is seen while parked.
            again = n.local.certified_parked_in(c)
            assert again == []

            # Now the history comes: the payment is stored, debits the payer
            # once, and is answered (not pending) on the newcomer's node.
            held[0] = False
            await n.sync.sync_with(a.peer_id)
            await eventually(lambda: n.local.balance(c, cl.a.public).balance == -10, 20)
            assert n.local.store.entry(c, transfer.author, transfer.seq, transfer.id) is not None
            assert n.local.pending(c) == []
            assert n.local.balance(c).balance == 10
        nursery.cancel_scope.cancel()
