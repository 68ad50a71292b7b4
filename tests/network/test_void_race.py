"""A lost accept / take-back race does not stop the payee's log (docs/witness.md
§3.6), over real libp2p hosts on 127.0.0.1 (in one process): the payer takes
back an expired payment and the witnesses certify it; the payee's late accept
is then refused by every honest witness; its node asks for void votes with the
take-back's certificate, says plainly that the accept is void, and the
payee's next payment becomes final. Before void votes that payment could
never become final (the accept below it could never be certified)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from tests.network.test_witnessed import Cluster, eventually, pay
from troc.node import ops
from troc.node.node import Node
from troc.node.opdata import VOID_ACCEPT
from troc.protocol.entry import Ref

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]


async def paid_final(cl: Cluster, a: Node, b: Node, expires: int) -> Ref:
    """a pays b 10, expiring at ``expires``; returns the transfer once it is
    final at both."""
    c = cl.community
    await a.connect(b.addrs()[0])
    await eventually(lambda: b.local.balance(c, cl.b.public).joined)
    params = {"community": ops.cid(c), "to": ops.mid(cl.b.public), "amount": "10"}
    paid = await a.run_op("pay", {**params, "expires_ms": expires, "wait": 20})
    assert paid["finality"]["final"], paid
    transfer: Ref = a.local.pending_out(c)[0].ref
    await eventually(lambda: b.local.is_final(c, transfer))
    return transfer


async def test_a_payee_whose_accept_lost_pays_again(tmp_path: Path) -> None:
    cl = Cluster(tmp_path)
    c = cl.community
    async with trio.open_nursery() as nursery:
        for i in range(4):
            await cl.start_witness(nursery, i)
        async with cl.member("a", cl.a) as a, cl.member("b", cl.b) as b:
            expires = int(time.time() * 1000) + 1500
            transfer = await paid_final(cl, a, b, expires)
            await trio.sleep(max(0.0, expires / 1000 - time.time()) + 0.5)  # expired everywhere
            taken = await a.run_op(
                "take_back", {"community": ops.cid(c), "transfer": ops.eid(transfer.id), "wait": 20}
            )
            assert taken["finality"]["final"], taken
            take_back = a.local.store.head(c, cl.a.public)
            assert take_back is not None
            # The payee's node holds the take-back and its certificate.
            await eventually(
                lambda: b.local.is_final(c, Ref(cl.a.public, take_back.seq, take_back.id))
            )
            # Its certificate carries the witnesses' times (docs/witness.md §3.5),
            # from the witnesses through the Certifier to both nodes' history.
            for node in (a, b):
                member = {"member": ops.mid(cl.a.public)}
                hist = await node.run_op("history", {"community": ops.cid(c), **member})
                (row,) = [e for e in hist["entries"] if e["kind"] == "take_back"]
                assert expires < row["witnesses_time_ms"] <= int(time.time() * 1000)
                assert row["witnesses_time"].startswith("taken back: the witnesses' clocks said")
            # The payee insists (--late): its accept reaches the witnesses
            # after the payer's certified take-back, and loses.
            accepted = await b.run_op(
                "accept",
                {
                    "community": ops.cid(c),
                    "transfer": ops.eid(transfer.id),
                    "late": True,
                    "wait": 30,
                },
            )
            fin = accepted["finality"]
            assert fin["final"], fin
            assert fin["void"] == VOID_ACCEPT
            assert b.local.balance(c).balance == 0  # the void accept credits nothing
            # balance and history say so, in JSON too.
            bal = await b.run_op("balance", {"community": ops.cid(c)})
            assert [v["why"] for v in bal["void"]] == [VOID_ACCEPT]
            assert bal["void"][0]["transfer"] == ops.eid(transfer.id)
            hist = await b.run_op("history", {"community": ops.cid(c)})
            assert [e.get("void") for e in hist["entries"] if e["kind"] == "accept"] == [
                VOID_ACCEPT
            ]
            again = await pay(b, c, cl.a.public, 3, wait=20)
            assert again["finality"]["final"], again
            assert again["finality"]["void"] is None
            for node in (a, b, *(w for w, _ in cl.witnesses.values())):
                await eventually(lambda n=node: n.local.balance(c, cl.b.public).balance == -3)
                assert node.local.balance(c, cl.a.public).balance == 0
        nursery.cancel_scope.cancel()


async def test_an_accept_and_a_payment_in_a_burst_both_become_final(tmp_path: Path) -> None:
    """The witnesses lock nothing above an accept that can race until it is
    settled (docs/witness.md §3.6): the payee's node certifies its accept of
    an expiring payment first, then the payment it signed right after."""
    cl = Cluster(tmp_path)
    c = cl.community
    async with trio.open_nursery() as nursery:
        for i in range(4):
            await cl.start_witness(nursery, i)
        async with cl.member("a", cl.a) as a, cl.member("b", cl.b) as b:
            transfer = await paid_final(cl, a, b, int(time.time() * 1000) + 600_000)
            params = {"community": ops.cid(c), "transfer": ops.eid(transfer.id), "wait": 0}
            await b.run_op("accept", params)
            again = await pay(b, c, cl.a.public, 3, wait=30)
            assert again["finality"]["final"], again
            assert b.local.balance(c).balance == 7
        nursery.cancel_scope.cancel()
