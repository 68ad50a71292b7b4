"""Payment requests and take-backs in every arrival order, on both ledger backends.

Histories (tests/strategies.py) now make requests, pay them and refuse
them, and take back expired transfers that payees may still accept, among
everything else. Here each history reaches a fresh in-memory
ledger and a fresh SQLite store in a random order, together with entries
the rules refuse: a second payment of a paid request and a refusal of it,
each at its payer's next position (so they compete with nothing valid).
Both nodes must reach the node's heads and balances (the sum invariant
holds: requests move nothing), reject every refused entry with the
reference ledger's reason, and the store must show each request in the
state the reference history gave it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import counted_balances, fresh_ledger
from tests.strategies import arrivals, histories
from troc.node.store import RequestState, Store
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import Entry, Refusal, Request, Transfer
from troc.protocol.ledger import Ledger, Reason, Status

EXAMPLES = settings().max_examples


def refused_extras(h: object) -> list[tuple[Entry, Reason]]:
    """For each paid request, a second payment and a refusal by its payer at
    the payer's next position: both refused ``already_paid``."""
    w = h.world  # type: ignore[attr-defined]
    out = []
    for q in h.requests:  # type: ignore[attr-defined]
        if q.id not in h.paid:  # type: ignore[attr-defined]
            continue
        payer = h.member(q.body.to)  # type: ignore[attr-defined]
        head = w.ledger.head(w.community, payer.public)
        if head.frozen_at is not None:
            continue
        for body in (Transfer.paying(q), Refusal(request=q.ref)):
            e = w.create(payer, body, seq=head.seq + 1, prev=head.id)
            assert w.ingest(e).reason is Reason.ALREADY_PAID
            out.append((e, Reason.ALREADY_PAID))
    return out


# Each example runs a history twice, on SQLite too: the profile's count (~9 s in CI).
@settings(max_examples=EXAMPLES, deadline=None)
@given(st.data())
def test_requests_in_any_order_on_both_backends(data: st.DataObject) -> None:
    h = data.draw(histories(max_ops=30))
    c = h.world.community
    extras = refused_extras(h)
    order = data.draw(arrivals(h))
    extra_order = data.draw(st.permutations(extras))
    # The refused entries land anywhere among the valid ones.
    cuts = sorted(
        data.draw(st.lists(st.integers(0, len(order)), min_size=len(extras), max_size=len(extras)))
    )
    mixed: list[tuple[Entry, Reason | None]] = []
    last = 0
    for (e, reason), cut in zip(extra_order, cuts, strict=True):
        mixed += [(x, None) for x in order[last:cut]] + [(e, reason)]
        last = cut
    mixed += [(x, None) for x in order[last:]]
    balances, in_flight = counted_balances(h.entries)
    assert sum(balances.values()) + in_flight == 0
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "s.sqlite") as store:
        for backend in (MemoryBackend(), store):
            node = Ledger(backend)
            with store.transaction():
                assert node.ingest(h.genesis.wire, h.world.now).ok
                verdicts = {}
                for e, _ in mixed:
                    out = node.ingest(e.wire, h.world.now)
                    verdicts[e.id] = (out.status, out.reason)
                    for d in out.dropped:
                        assert d.entry is not None
                        verdicts[d.entry.id] = (d.status, d.reason)
            for e, reason in mixed:
                if reason is None:
                    assert verdicts[e.id][0] is not Status.REJECTED, verdicts[e.id]
                elif verdicts[e.id][0] is not Status.WAITING:
                    assert verdicts[e.id] == (Status.REJECTED, reason)
                else:  # parked on its prev when offered, then checked again on release
                    assert backend.entry(c, e.author, e.seq, e.id) is None
            assert dict(node.backend.heads(c)) == dict(h.world.backend.heads(c))
            assert dict(node.balances(c)) == balances
        for q in h.requests:
            assert isinstance(q.body, Request)
            rows = {
                e.id: (state, by) for e, state, by in store.requests(c, q.body.to, to_member=True)
            }
            state, by = rows[q.id]
            paid = h.paid.get(q.id)
            if paid is not None:
                assert (state, by) == (RequestState.PAID, paid.ref)
            else:
                assert state in (RequestState.OPEN, RequestState.REFUSED)


def test_fresh_ledger_takes_a_payment_before_its_request() -> None:
    """The smallest case of the property: payment, then request."""
    from tests.helpers import World, key

    w = World(key(0))
    for i in range(2):
        w.join(key(i))
    q = w.request(key(1), key(0), 5)
    t = w.pay_request(key(0), q)
    node = fresh_ledger(w.genesis)
    for e in w.log:
        if e is not q:
            assert node.ingest_entry(e, w.now).status is Status.ACCEPTED
    assert node.ingest_entry(q, w.now).status is Status.ACCEPTED
    assert node.head(w.community, key(0).public).id == t.id  # type: ignore[union-attr]
