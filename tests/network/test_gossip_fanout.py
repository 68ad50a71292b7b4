"""A community server's fan-out: one hub node, many member nodes each
connected only to it, payments from random members at a steady rate and in
bursts. Every member stores every other member's payment, once, soon.

This is bench/relay.py in miniature, in one process and with periodic sync
off: what arrives, arrives by gossip through the hub. It pins the gossip
ingest path of :class:`troc.node.node.Node` (a batch of gossiped entries per
transaction, entries decoded once by the validator) and the inline (sync)
gossip validator.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from troc.crypto.sign import SigningKey
from troc.node.local import open_local_node
from troc.node.node import Node, NodeConfig, open_node, topic_of
from troc.protocol.entry import Entry, Transfer
from troc.protocol.ledger import Reason, Status

pytestmark = pytest.mark.slow

MEMBERS = 24
#: Generous: ~50 ms p50 on an idle machine; the suite may share the CPU.
DELIVERY_BOUND = 8.0


def _config(home: Path, *bootstrap: str) -> NodeConfig:
    return NodeConfig(
        home=home,
        bootstrap=bootstrap,
        sync_interval=600,  # periodic sync off: gossip must deliver
        control_socket=False,
        remember_peers=False,
        restore_guard_seconds=0,
    )


async def test_every_member_gets_every_payment_through_the_hub_soon(tmp_path: Path) -> None:
    keys = [SigningKey.generate() for _ in range(MEMBERS + 1)]
    homes = [tmp_path / f"n{i}" for i in range(MEMBERS + 1)]  # homes[0]: the hub
    with open_local_node(homes[1], keys[1]) as founder:
        community = founder.create_community("Fan-out", "h", 10**6)
        genesis = founder.community(community).genesis
    wires = [genesis]
    for home, key in zip(homes[1:], keys[1:], strict=True):
        with open_local_node(home, key) as local:
            local.join(genesis)
            wires += [w for _t, w in local.store.timed_entries_since(community, local.member, 0, 9)]
    for home, key in zip(homes, keys, strict=True):  # a settled community everywhere
        with open_local_node(home, key) as local:
            local.ingest_many(wires)

    async with AsyncExitStack() as stack:
        hub = await stack.enter_async_context(open_node(_config(homes[0]), keys[0]))
        members: list[Node] = [
            await stack.enter_async_context(open_node(_config(home, hub.addrs()[0]), key))
            for home, key in zip(homes[1:], keys[1:], strict=True)
        ]
        topic = topic_of(community)
        with trio.fail_after(15):
            for m in members:
                await m.host.gossip.wait_for_mesh(hub.peer_id, topic)
                await hub.host.gossip.wait_for_mesh(m.peer_id, topic)

        sent: dict[bytes, float] = {}
        payments: list[Entry] = []
        stored: list[Counter[bytes]] = [Counter() for _ in members]
        late: list[float] = []
        everything = trio.Event()

        async def watch(k: int, node: Node) -> None:
            async with node.subscribe(100_000) as entries:
                async for entry in entries:
                    if not isinstance(entry.body, Transfer) or entry.author == node.member:
                        continue
                    stored[k][entry.id] += 1
                    late.append(time.monotonic() - sent[entry.id])
                    if len(late) == expected:
                        everything.set()

        rng = random.Random(6)
        steady, burst = 40, 30
        expected = (steady + burst) * (MEMBERS - 1)
        async with trio.open_nursery() as nursery:
            for k, m in enumerate(members):
                nursery.start_soon(watch, k, m)
            await trio.lowlevel.checkpoint()

            def pay() -> None:
                payer, payee = rng.sample(members, 2)
                entry = payer.local.pay(community, payee.member, 1)
                sent[entry.id] = time.monotonic()
                payments.append(entry)

            for _ in range(steady):  # 20 payments/s
                pay()
                await trio.sleep(0.05)
            for _ in range(burst):  # at once: the hub and members take them in batches
                pay()
            with trio.move_on_after(DELIVERY_BOUND + 10):
                await everything.wait()
            nursery.cancel_scope.cancel()

        for k, m in enumerate(members):
            held = {e.id for e in payments if m.local.store.entry(community, e.author, e.seq, e.id)}
            assert held == set(sent), f"member {k} is missing payments"
            # Each entry of another member is announced to listeners once.
            others = {e.id for e in payments if e.author != m.member}
            assert set(stored[k]) == others
            assert set(stored[k].values()) == {1}
        assert len(late) == expected
        assert max(late) < DELIVERY_BOUND, f"slowest delivery {max(late):.2f} s"


async def test_decoded_entries_get_the_same_verdicts_as_wires(tmp_path: Path) -> None:
    """LocalNode.ingest_many takes decoded entries (gossip's validator decoded
    them) as it takes wire bytes: same outcomes, same notifications."""
    ka, kb = SigningKey.generate(), SigningKey.generate()
    with open_local_node(tmp_path / "a", ka) as a:
        community = a.create_community("Same", "h", 10)
        other = a.create_community("Other", "h", 10)
        genesis = a.community(community).genesis
        with open_local_node(tmp_path / "b", kb) as b:
            b.join(genesis)
            join = b.store.timed_entries_since(community, b.member, 0, 1)[0][1]
            a.ingest(join)
        a.pay(community, kb.public, 3)
        a.pay(community, kb.public, 2)
        offer = a.offer(other, "Elsewhere")
        log = [w for _t, w in a.store.timed_entries_since(community, a.member, 0, 10)]
    # Newest first (each waits for the one before), another community's
    # entry, garbage, a duplicate.
    batch = [join, *reversed(log), offer.wire, b"\x00not an entry", log[-1]]
    results = []
    for decoded in (False, True):
        with open_local_node(tmp_path / f"c{decoded}", SigningKey.generate()) as c:
            c.ingest(genesis)
            seen: list[bytes] = []
            c.listeners.append(lambda entry, _own, seen=seen: seen.append(entry.id))
            items: list[bytes | Entry] = list(batch)
            if decoded:
                items = [w if w.startswith(b"\x00") else Entry.decode(w) for w in batch]
            outcomes = c.ingest_many(items, community=community)
            results.append(([(o.status, o.reason) for o in outcomes], seen))
    assert results[0] == results[1]
    statuses, seen = results[0]
    assert Status.WAITING in {s for s, _r in statuses}
    assert statuses[-3:] == [
        (Status.REJECTED, Reason.UNKNOWN_COMMUNITY),
        (Status.REJECTED, Reason.TRAILING_BYTES),
        (Status.DUPLICATE, None),
    ]
    assert set(seen) == {Entry.decode(w).id for w in [join, *log]} - {genesis_id(genesis)}


def genesis_id(genesis: bytes) -> bytes:
    return Entry.decode(genesis).id
