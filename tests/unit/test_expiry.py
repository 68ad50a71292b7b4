"""Transfers that expire, and take-backs (docs/protocol.md §4.11): one
entry per rule with its exact reason, and "the accept wins" in every
arrival order on both backends, forks included."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import T0, World, key
from troc.node.store import Store
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import Entry, Offer, Reclaim, TakeBack, Transfer
from troc.protocol.ledger import Ledger, Reason, Status
from troc.protocol.statement import build_bundle, verify_bundle

A, B, C = key(0), key(1), key(2)
DAY = 86_400_000


@pytest.fixture
def w() -> World:
    world = World(A, credit_limit=100, transfer_expiry_ms=14 * DAY)
    for member in (A, B, C):
        world.join(member)
    return world


def test_take_back_after_the_community_default(w: World) -> None:
    t = w.pay(A, B, 30)
    w.now = t.timestamp_ms + 14 * DAY
    w.refused(A, TakeBack(transfer=t.ref), Reason.NOT_EXPIRED)  # stamped exactly at expiry
    w.take_back(A, t)  # stamped 1 s after
    assert w.balance(A) == 0
    w.refused(A, TakeBack(transfer=t.ref), Reason.ALREADY_RECLAIMED)


def test_a_transfer_s_own_expiry(w: World) -> None:
    t = w.pay(A, B, 5, expires_ms=w.now + 5000)
    w.refused(A, TakeBack(transfer=t.ref), Reason.NOT_EXPIRED)
    w.now += 4000  # the take-back is stamped 5 s later: 1 s after the transfer's own expiry
    w.take_back(A, t)
    assert w.balance(A) == 0


def test_without_an_expiry_nothing_is_taken_back() -> None:
    w = World(A)  # a community without transfer_expiry_ms: today's behaviour
    w.join(A)
    w.join(B)
    t = w.pay(A, B, 5)
    w.now += 10**12
    w.refused(A, TakeBack(transfer=t.ref), Reason.NOT_EXPIRED)


def test_take_back_rules(w: World) -> None:
    t = w.pay(A, B, 5)
    w.now += 15 * DAY
    w.refused(C, TakeBack(transfer=t.ref), Reason.NOT_PAYER)
    w.refused(B, TakeBack(transfer=t.ref), Reason.NOT_PAYER)
    o = w.add(A, Offer(side="offer", title="x"))
    w.refused(A, TakeBack(transfer=o.ref), Reason.NOT_A_TRANSFER)
    # Declined, then reclaimed: no take-back after; taken back: no reclaim after.
    d = w.decline(B, t)
    w.reclaim(A, d)
    w.refused(A, TakeBack(transfer=t.ref), Reason.ALREADY_RECLAIMED)
    t2 = w.pay(A, B, 5, expires_ms=w.now)
    d2 = w.decline(B, t2)
    w.take_back(A, t2)
    w.refused(A, Reclaim(decline=d2.ref), Reason.ALREADY_RECLAIMED)
    assert w.balances() == {A.public: 0, B.public: 0, C.public: 0}


def _run(backend: Any, genesis: Entry, entries: list[Entry], now: int) -> Ledger:
    ledger = Ledger(backend)
    with backend.transaction() if isinstance(backend, Store) else _nothing():
        ledger.ingest(genesis.wire, T0)
        for e in entries:
            assert ledger.ingest_entry(e, now).status in (Status.ACCEPTED, Status.WAITING)
    return ledger


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_the_accept_wins_in_every_arrival_order(w: World, tmp_path: Path) -> None:
    """The payee accepts (late, or its accept travels late) and the payer
    takes back: both are valid, and every node counts the accept and undoes
    the take-back, whatever it saw first; the payer then spent units that
    are not there (its balance below its credit limit, by the amount)."""
    t = w.pay(A, B, 60)
    accept = w.accept(B, t)  # signed in time ...
    # ... but the payer's node never saw it: a take-back, then a spend.
    w.ledger = Ledger(MemoryBackend())
    w.ledger.ingest(w.genesis.wire, T0)
    for e in w.log:
        if e is not accept:
            w.ledger.ingest_entry(e, w.now)
    w.now += 15 * DAY
    tb = w.take_back(A, t)
    spend = w.pay(A, C, 90)
    assert w.balance(A) == -90
    rest = [e for e in w.log if e not in (t, accept, tb, spend)]
    for n, order in enumerate(itertools.permutations([t, accept, tb, spend])):
        (tmp_path / str(n)).mkdir()
        for backend in (MemoryBackend(), Store.open(tmp_path / str(n) / "s.sqlite")):
            ledger = _run(backend, w.genesis, rest + list(order), w.now)
            balances = dict(ledger.balances(w.community))
            assert balances == {A.public: -150, B.public: 60, C.public: 0}, order
            head = ledger.head(w.community, A.public)
            assert head is not None
            assert (head.balance, head.undone) == (-90, 60)
            if isinstance(backend, Store):
                backend.close()


def test_a_payee_fork_gives_the_take_back_its_credit_again(w: World) -> None:
    """An accept that stops counting (its author forked below it) no longer
    undoes the take-back: the payer's credit counts again."""
    t = w.pay(A, B, 10, expires_ms=w.now)
    accept = w.accept(B, t)
    w.now += 1000
    w.take_back(A, t)
    assert w.balance(A) == -10
    # B signs another entry at the accept's seq: a fork, frozen there.
    other = w.create(B, Transfer(to=C.public, amount=1), seq=accept.seq, prev=accept.prev)
    assert w.ingest(other).fork
    assert w.balance(A) == 0
    assert w.ledger.head(w.community, A.public).undone == 0  # type: ignore[union-attr]


def test_a_payer_fork_below_its_take_back_undoes_nothing(w: World) -> None:
    """A take-back in the frozen part of its payer's log never counted: the
    accept has nothing to undo there."""
    t = w.pay(A, B, 10, expires_ms=w.now)
    w.accept(B, t)
    w.now += 1000
    tb = w.take_back(A, t)
    assert w.balance(A) == -10  # the take-back, undone
    other = w.create(A, Offer(side="offer", title="x"), seq=tb.seq, prev=tb.prev)
    assert w.ingest(other).fork
    assert w.balance(A) == -10  # the transfer counts, the take-back does not
    assert w.ledger.head(w.community, A.public).undone == 0  # type: ignore[union-attr]


def test_a_bundle_shows_a_take_back_the_accept_undid(w: World) -> None:
    """The payer's verifiable statement (docs/protocol.md §9) lists its
    take-back as a movement; the bundle carries the payee's accept that
    undid it, so the verifier says so and its figures add up to the
    balance every node counts."""
    t = w.pay(A, B, 60)
    w.now += 15 * DAY
    tb = w.take_back(A, t)
    w.accept(B, t)  # the accept wins
    head = w.ledger.head(w.community, A.public)
    assert head is not None
    assert head.undone == 60
    bundle = build_bundle(w.ledger, A, w.community, tb.ref, 1, w.now)
    verified = verify_bundle(bundle, w.now)
    assert [m.amount for m in verified.statement.movements] == [-60, 60]
    assert verified.undone == 60
    assert verified.statement.closing - verified.undone == w.balance(A) == -60
