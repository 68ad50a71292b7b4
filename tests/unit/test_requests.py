"""Payment requests (docs/protocol.md §4.4): one tampered entry per rule,
asserting the exact reason, and the order-independence of "paid once"."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import T0, World, key
from troc.node.store import SCHEMA_VERSION, RequestState, Store
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import Entry, Refusal, Request, Transfer
from troc.protocol.ledger import Ledger, Reason, Status

A, B, C = key(0), key(1), key(2)


@pytest.fixture
def w() -> World:
    world = World(A, credit_limit=100)
    for member in (A, B, C):
        world.join(member)
    return world


def test_request_paid_then_accepted(w: World) -> None:
    bread = w.offer(B)
    q = w.request(B, A, 30, memo="bread", offer=bread.ref)
    t = w.pay_request(A, q)
    assert isinstance(t.body, Transfer)
    assert t.body.memo == "bread"
    w.accept(B, t)
    assert w.balance(A) == -30
    assert w.balance(B) == 30


def test_request_rules(w: World) -> None:
    w.refused(B, Request(to=B.public, amount=5), Reason.SELF_PAYMENT)
    t = w.pay(C, B, 1)
    w.refused(B, Request(to=A.public, amount=5, offer=t.ref), Reason.NOT_AN_OFFER)


def test_pay_a_request_once(w: World) -> None:
    q = w.request(B, A, 10)
    w.pay_request(A, q)
    w.refused(A, Transfer.paying(q), Reason.ALREADY_PAID)
    w.refused(A, Refusal(request=q.ref), Reason.ALREADY_PAID)
    w.pay(A, B, 10)  # a payment that names no request is another matter


def test_refuse_a_request(w: World) -> None:
    q = w.request(B, A, 10)
    w.refuse(A, q)
    w.refused(A, Transfer.paying(q), Reason.ALREADY_REFUSED)
    w.refused(A, Refusal(request=q.ref), Reason.ALREADY_REFUSED)
    w.refused(C, Refusal(request=q.ref), Reason.NOT_ASKED)
    w.refused(A, Refusal(request=w.pay(C, A, 1).ref), Reason.NOT_A_REQUEST)


def test_the_transfer_must_match_the_request(w: World) -> None:
    q = w.request(B, A, 10)
    paying = Transfer.paying(q)
    for wrong in (
        Transfer(to=B.public, amount=11, request=q.wire),
        Transfer(to=B.public, amount=10, request=q.wire, offer=w.offer(B).ref),
        Transfer(to=C.public, amount=10, request=q.wire),  # another payee
    ):
        w.refused(A, wrong, Reason.REQUEST_MISMATCH)
    w.refused(C, paying, Reason.REQUEST_MISMATCH)  # another payer
    # Another community's request, tampered bytes, another kind: bad_request.
    other = World(A, name="Another valley")
    other.join(B)
    foreign = other.request(B, A, 10)
    w.refused(A, Transfer(to=B.public, amount=10, request=foreign.wire), Reason.BAD_REQUEST)
    tampered = q.wire[:-1] + bytes([q.wire[-1] ^ 1])
    w.refused(A, Transfer(to=B.public, amount=10, request=tampered), Reason.BAD_REQUEST)
    t = w.pay(B, C, 1)
    w.refused(B, Transfer(to=B.public, amount=1, request=t.wire), Reason.SELF_PAYMENT)
    w.refused(C, Transfer(to=B.public, amount=1, request=t.wire), Reason.BAD_REQUEST)
    w.pay_request(A, q)  # the right one still pays


def test_an_expired_request_is_not_paid(w: World) -> None:
    q = w.request(B, A, 10, expires_ms=w.now + 1500)
    w.tick()
    w.tick()  # now > expires_ms: a transfer stamped now is late
    w.refused(A, Transfer.paying(q), Reason.REQUEST_EXPIRED)
    q2 = w.request(B, A, 10, expires_ms=w.now + 2000)  # request at +1 s, transfer at +2 s
    w.pay_request(A, q2)  # stamped exactly at expires_ms: in time


def test_pay_a_request_the_node_never_saw(w: World) -> None:
    """The transfer carries the request: a node that holds neither the
    request nor its author's log checks and stores the payment."""
    q = w.create(B, Request(to=A.public, amount=7))  # B's node alone holds it
    t = w.add(A, Transfer.paying(q))
    other = Ledger(MemoryBackend())
    assert other.ingest(w.genesis.wire, T0).ok
    for e in w.log:
        if e.author == A.public:
            assert other.ingest_entry(e, w.now).status is Status.ACCEPTED
    assert other.head(w.community, A.public).seq == t.seq  # type: ignore[union-attr]


def _backends(tmp_path: Path) -> list[Any]:
    tmp_path.mkdir()
    return [MemoryBackend(), Store.open(tmp_path / "s.sqlite")]


def _ingest_all(backend: Any, genesis: Entry, entries: list[Entry]) -> list[Status]:
    ledger = Ledger(backend)
    out = []
    ctx = backend.transaction() if isinstance(backend, Store) else None
    if ctx is not None:
        ctx.__enter__()
    try:
        ledger.ingest(genesis.wire, T0)
        for e in entries:
            out.append(ledger.ingest_entry(e, T0 + 10**6).status)
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)
    return out


def test_paid_once_in_every_arrival_order(w: World, tmp_path: Path) -> None:
    """Two transfers pay one request on A's log: the first by seq counts,
    the second is refused, whatever order they (and the request) arrive in,
    on both backends; the SQLite store once trusted a cache saying a newly
    stored request had no payment naming it, which a payment held before
    the request contradicts."""
    q = w.request(B, A, 10)
    t1 = w.pay_request(A, q)
    # A's second payment, signed by a node that forgot the first one.
    t2 = Entry.create(
        A,
        community=w.community,
        seq=t1.seq + 1,
        prev=t1.id,
        timestamp_ms=w.now,
        body=Transfer.paying(q),
    )
    base = [e for e in w.log if e not in (q, t1)]
    n = 0
    for order in itertools.permutations([q, t1, t2]):
        for backend in _backends(tmp_path / str(n)):
            n += 1
            statuses = _ingest_all(backend, w.genesis, base + list(order))
            verdicts = dict(zip(order, statuses[len(base) :], strict=True))
            assert verdicts[q] is Status.ACCEPTED
            assert verdicts[t1] is Status.ACCEPTED
            # t2 either waits on t1 (its prev) and is then rejected, or is rejected at once.
            assert verdicts[t2] in (Status.REJECTED, Status.WAITING)
            ledger = Ledger(backend)
            head = ledger.head(w.community, A.public)
            assert head is not None
            assert head.seq == t1.seq, order
            if isinstance(backend, Store):
                [(entry, state, by)] = backend.requests(w.community, A.public, to_member=True)
                assert (entry.id, state, by) == (q.id, RequestState.PAID, t1.ref)
                backend.close()


def test_a_format_4_store_is_migrated_and_takes_requests(w: World, tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "store.sqlite"
    with Store.open(path) as store:
        ledger = Ledger(store)
        with store.transaction():
            for e in [w.genesis, *w.log]:
                assert ledger.ingest(e.wire, w.now).ok
    # Format 4 had no requests table and no logs.undone.
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE requests")
    conn.execute("ALTER TABLE logs DROP COLUMN undone")
    conn.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    q = w.request(B, A, 10)
    t = w.pay_request(A, q)
    with Store.open(path) as store:
        assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
        ledger = Ledger(store)
        with store.transaction():
            assert ledger.ingest(q.wire, w.now).status is Status.ACCEPTED
        [(entry, state, by)] = store.requests(w.community, A.public, to_member=True)
        assert (entry.id, state, by) == (q.id, RequestState.OPEN, None)
        assert [e.id for e, _, _ in store.requests(w.community, B.public, to_member=False)] == [
            q.id
        ]
        with store.transaction():
            assert ledger.ingest(t.wire, w.now).status is Status.ACCEPTED
        [(_, state, by)] = store.requests(w.community, A.public, to_member=True)
        assert (state, by) == (RequestState.PAID, t.ref)
        assert store.integrity_check() == "ok"
