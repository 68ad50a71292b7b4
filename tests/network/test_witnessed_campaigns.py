"""A campaign in a witnessed community over real libp2p hosts on 127.0.0.1
(in one process; the cluster of tests/network/test_witnessed.py): a pledge
becomes final; with no close, the pledger's node refuses to take it back
before the deadline, and after it the lapse (a withdraw naming no close,
docs/protocol.md §10.5) is certified by witnesses whose own clocks are past
the deadline (docs/witness.md §3.5), and every node counts it; a close
counting the pledge, signed by an author's node that never received the
lapse, is then refused by the witnesses (`voted_lapse`): the node asks for
void votes, the void close pays nothing, and the author's next payment
becomes final (before void votes covered a close, its log stopped there)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.network.test_witnessed import Cluster, eventually, pay
from troc.cli import render
from troc.errors import RefusedError
from troc.node import ops
from troc.node.local import LocalNode
from troc.node.opdata import VOID_CLOSE
from troc.protocol.entry import CampaignClose, CommunityId, Kind, Ref


def _seq_id(node: Any, c: CommunityId, text: str) -> tuple[int, Any]:
    """The (seq, id) of the entry whose text id is ``text``, held by ``node``."""
    local: LocalNode = node.local
    entry = next(
        e
        for e in local.store.of_kind(c, Kind.CAMPAIGN) + local.store.of_kind(c, Kind.PLEDGE)
        if ops.eid(e.id) == text
    )
    return entry.seq, entry.id


pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]


async def test_a_lapse_after_the_deadline_is_certified_by_the_witnesses(tmp_path: Path) -> None:
    cl = Cluster(tmp_path)
    c = cl.community
    cid = ops.cid(c)
    async with trio.open_nursery() as nursery:
        for i in range(4):
            await cl.start_witness(nursery, i)
        async with cl.member("a", cl.a) as a, cl.member("b", cl.b) as b:
            await eventually(lambda: a.local.balance(c, cl.b.public).joined)
            deadline = int(time.time() * 1000) + 3_000
            made = await a.run_op(
                "campaign.create",
                {"community": cid, "title": "Oven", "goal": 10, "deadline_ms": deadline},
            )
            oven = made["campaign"]
            await eventually(lambda: len(b.local.store.of_kind(c, Kind.CAMPAIGN)) == 1)
            pledged = await b.run_op(
                "campaign.pledge", {"community": cid, "campaign": oven, "amount": 10, "wait": 20}
            )
            assert pledged["finality"]["final"], pledged
            with pytest.raises(RefusedError) as info:
                await b.run_op("campaign.withdraw", {"community": cid, "campaign": oven})
            assert info.value.reason == "not_closed"
            await trio.sleep(max(0.0, deadline / 1000 - time.time()) + 0.2)
            lapsed = await b.run_op(
                "campaign.withdraw", {"community": cid, "campaign": oven, "wait": 20}
            )
            assert lapsed["lapse"] is True
            assert lapsed["finality"]["final"], lapsed
            for node in (a, b, *(w for w, _ in cl.witnesses.values())):
                await eventually(lambda n=node: n.local.balance(c, cl.b.public).balance == 0)
            shown = await b.run_op("balance", {"community": cid})
            assert (shown["reserved"], shown["lapsed"]) == (0, 10)
            # A close counting the pledge, as an author's node that never
            # received the lapse would sign it: the witnesses refuse it.
            pledge = Ref(cl.b.public, *_seq_id(b, c, pledged["pledge"]))
            camp = Ref(cl.a.public, *_seq_id(a, c, oven))
            await eventually(lambda: a.local.is_final(c, pledge))
            close = a.local.append(c, CampaignClose(campaign=camp, pledges=(pledge,)))
            progress = a.certifier.track(close)
            assert progress is not None
            # The lapse won: the author's node asks for void votes with the
            # lapse's certificate (docs/witness.md §3.6); the void close is
            # final as a position, pays nothing, and the author's log goes on.
            described = await a.wait_final(progress, 20)
            assert described["final"], described
            assert described["void"] == VOID_CLOSE, described
            assert a.local.ledger.is_void(c, close.ref)
            assert a.local.balance(c, cl.a.public).balance == 0  # nothing paid
            shown = await a.run_op("balance", {"community": cid})
            assert shown["void"] == [
                {"entry": ops.eid(close.id), "campaign": oven, "amount": 10, "why": VOID_CLOSE}
            ], shown["void"]
            assert f"{VOID_CLOSE}: campaign {oven[:12]}" in render.balance(tmp_path)(shown)
            again = await pay(a, c, cl.b.public, 3, wait=20)
            assert again["finality"]["final"], again
            for node in (a, b, *(w for w, _ in cl.witnesses.values())):
                await eventually(lambda n=node: n.local.balance(c, cl.a.public).balance == -3)
        nursery.cancel_scope.cancel()
