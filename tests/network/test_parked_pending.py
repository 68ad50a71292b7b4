"""A newcomer sees and gets the certified payments waiting for it before it
holds the payer's history (docs/witness.md §6.1, "What the node shows";
docs/sync.md), over real libp2p hosts on 127.0.0.1.

As tests/network/test_cert_accept.py: four witnesses (f = 1, q = 3), a payer
with a history signed offline, a newcomer whose sync is held back, so that
the payment reaches it by gossip only and stays parked for want of that
history.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from tests.network.test_cert_accept import HISTORY, hold_back_sync, relayed
from tests.network.test_witnessed import Cluster, eventually, pay
from troc.crypto.sign import SigningKey
from troc.node import ops
from troc.node.local import open_local_node
from troc.node.node import Node, open_node
from troc.node.topics import Topics
from troc.protocol.entry import CommunityId, Ref

pytestmark = [
    pytest.mark.slow,
    # As in test_witnessed: py-libp2p leaks the socket of a dial cancelled
    # mid-handshake when nodes stop; the GC reports it.
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]


def with_history(cl: Cluster) -> None:
    """The payer's history, signed offline, held by the witnesses only."""
    c = cl.community
    with open_local_node(cl.tmp / "a", cl.a) as a:
        for i in range(HISTORY):
            a.offer(c, f"offer {i}")
        history = [w for _t, w in a.store.timed_entries_since(c, cl.a.public, 0, HISTORY + 1)]
    for i in range(4):
        with open_local_node(cl.tmp / f"w{i}", cl.wkeys[i]) as w:
            w.ingest_many(history)


async def paid_and_parked(
    cl: Cluster, a: Node, n: Node, n_key: SigningKey, *, certified: bool
) -> Ref:
    """``a`` pays the newcomer 10, final; wait until the newcomer holds the
    payment parked (and its certificate, if ``certified``)."""
    c = cl.community
    await n.connect(a.addrs()[0])
    witnesses = [w for w, _ in cl.witnesses.values()]
    await eventually(lambda: relayed(a, witnesses, n, c, certificates=False), 20)
    result = await pay(a, c, n_key.public, 10, wait=20)
    assert result["finality"]["final"], result
    transfer = a.local.pending_out(c)[0].ref

    def holds_it() -> bool:
        if n.local.store.waiting_count() == 0:
            return False
        return not certified or n.local.ledger.certified_itself(c, transfer)

    await eventually(holds_it, 20)
    assert n.local.store.entry(c, transfer.author, transfer.seq, transfer.id) is None
    assert n.local.store.head(c, cl.a.public) is None  # none of the history
    return transfer


async def test_pending_lists_a_parked_certified_payment_and_accepts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cl = Cluster(tmp_path)
    cid = ops.cid(cl.community)
    with_history(cl)
    n_key = SigningKey.generate()
    with open_local_node(tmp_path / "n", n_key) as local:
        local.join(cl.genesis)
    hold_back_sync(monkeypatch, n_key.public)
    async with trio.open_nursery() as nursery:
        for i in range(4):
            await cl.start_witness(nursery, i)
        async with cl.member("a", cl.a) as a, cl.member("n", n_key) as n:
            transfer = await paid_and_parked(cl, a, n, n_key, certified=True)

            # What `troc pending` (and the web app) shows: acceptable now,
            # the payer's history not checked yet.
            listed = await n.run_op("pending", {"community": cid})
            [row] = listed["incoming"]
            assert row["transfer"] == ops.eid(transfer.id)
            assert row["from"] == ops.mid(cl.a.public)
            assert (row["amount"], row["status"]) == (10, "pending")
            assert row["final"] is True
            assert row["history_checked"] is False
            balance = await n.run_op("balance", {"community": cid})
            assert balance["pending_in"] == 10
            assert balance["pending_in_final"] == 10
            assert balance["pending_in_parked"] == 10

            # Accepted from that listing, by its id.
            accepted = await n.run_op(
                "accept", {"community": cid, "transfer": row["transfer"], "wait": 20}
            )
            assert accepted["finality"]["final"], accepted
            assert (await n.run_op("pending", {"community": cid}))["incoming"] == []
            balance = await n.run_op("balance", {"community": cid})
            assert (balance["balance"], balance["pending_in"]) == (10, 0)
            assert balance["pending_in_parked"] == 0
        nursery.cancel_scope.cancel()


async def test_a_lost_certificate_is_wanted_at_the_next_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The newcomer is not on the certificates' topic: the payment's
    certificate never reaches it by gossip. Its next sync session, with a
    peer that holds that certificate but none of the payer's history,
    brings the certificate: the payment is listed and accepted."""
    cl = Cluster(tmp_path)
    c, cid = cl.community, ops.cid(cl.community)
    with_history(cl)
    n_key, r_key = SigningKey.generate(), SigningKey.generate()
    for key, name in ((n_key, "n"), (r_key, "r")):
        with open_local_node(tmp_path / name, key) as local:
            local.join(cl.genesis)
    allowed: set[str] = set()
    hold_back_sync(monkeypatch, n_key.public, allowed)
    gossip_certificates = Topics._gossip_certificates

    async def no_certificates(self: Topics, community: CommunityId) -> None:
        if self.local.member == n_key.public:
            await trio.sleep_forever()  # not subscribed (yet)
        await gossip_certificates(self, community)

    monkeypatch.setattr(Topics, "_gossip_certificates", no_certificates)
    async with trio.open_nursery() as nursery:
        for i in range(4):
            await cl.start_witness(nursery, i)
        async with cl.member("a", cl.a) as a, cl.member("n", n_key) as n:
            transfer = await paid_and_parked(cl, a, n, n_key, certified=False)
            await trio.sleep(0.5)  # what gossip would bring has had its chance
            assert not n.local.ledger.certified_itself(c, transfer)
            # Not shown: nothing here has checked it (docs/witness.md §6.1).
            assert (await n.run_op("pending", {"community": cid}))["incoming"] == []

            # A peer that holds the certificate only (no history, no payment).
            certificate = a.local.ledger.certificate_of(c, transfer)
            assert certificate is not None
            with open_local_node(tmp_path / "r", r_key) as local:
                local.ingest_certificate(certificate)
            async with open_node(cl.config("r"), r_key) as r:
                allowed.add(r.peer_id)
                await n.connect(r.addrs()[0])
                stats: list[Any] = await n.sync.sync_with(r.peer_id)
                assert stats, "the session ran"
                assert n.local.ledger.certified_itself(c, transfer)
                assert n.local.store.head(c, cl.a.public) is None  # still no history
                [row] = (await n.run_op("pending", {"community": cid}))["incoming"]
                assert row["transfer"] == ops.eid(transfer.id)
                assert row["history_checked"] is False
                await n.run_op("accept", {"community": cid, "transfer": row["transfer"]})
                head = n.local.store.head(c, n_key.public)
                assert head is not None
                assert head.balance == 10  # stored (final once certified)
        nursery.cancel_scope.cancel()
