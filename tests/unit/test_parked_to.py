"""Ledger.parked_to (docs/witness.md §6.1, "What the node shows"; docs/sync.md):
the transfers to a member held parked, with or without their own certificate,
oldest first and at most ``limit``, the same on both backends; none in an
optimistic community."""

from __future__ import annotations

from tests.helpers import World, certify, key, witnessed_world
from tests.property.test_cert_accept import both, feed
from troc.protocol.ledger import Ledger


def test_parked_to_splits_by_certificate_and_is_bounded() -> None:
    w = witnessed_world()
    p, n, o = key(1), key(2), key(3)
    joins = [w.join(k) for k in (p, n, o)]
    w.offer(p)  # the history a newcomer lacks: every payment below parks
    to_n = [w.pay(p, n, amount) for amount in (1, 2, 3, 4)]
    to_o = w.pay(p, o, 5)
    with both() as (memory, on_disk, store):
        for blob in [w.genesis.wire] + [j.wire for j in joins] + [t.wire for t in to_n]:
            feed(memory, on_disk, store, "entry", blob, w.now)
        feed(memory, on_disk, store, "entry", to_o.wire, w.now)
        for t in (to_n[1], to_n[3], to_o):
            feed(memory, on_disk, store, "cert", certify(t), w.now)
        for ledger in (memory, on_disk):

            def ids(certified: bool, limit: int = 100, ledger: Ledger = ledger) -> list[bytes]:
                found = ledger.parked_to(w.community, n.public, certified=certified, limit=limit)
                return [e.id for e in found]

            assert ids(certified=True) == [to_n[1].id, to_n[3].id]
            assert ids(certified=False) == [to_n[0].id, to_n[2].id]
            assert ids(certified=True, limit=1) == [to_n[1].id]
            assert ids(certified=False, limit=0) == []
            assert [e.id for e in ledger.parked_to(w.community, o.public, certified=True)] == [
                to_o.id
            ]


def test_parked_to_is_empty_in_an_optimistic_community() -> None:
    w = World()
    p, n = key(1), key(2)
    joins = [w.join(k) for k in (p, n)]
    w.offer(p)
    t = w.pay(p, n, 3)
    with both() as (memory, on_disk, store):
        for blob in [w.genesis.wire] + [j.wire for j in joins] + [t.wire]:
            assert feed(memory, on_disk, store, "entry", blob, w.now).status.value in (
                "accepted",
                "waiting",
            )
        for ledger in (memory, on_disk):
            assert ledger.backend.waiting_count() == 1
            assert ledger.parked_to(w.community, n.public, certified=False) == []
