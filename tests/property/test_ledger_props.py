"""Properties of the ledger: convergence in any arrival order, a state machine
beside a plain model, forks, and decoder fuzzing.

(a) Any order, with duplicates, in which a valid history reaches a fresh node
    leads to the same heads and balances as on the node that made it.
(b) A RuleBasedStateMachine drives the real ledger beside dicts, valid and
    invalid operations alike, checking the money invariants at every step.
(c) With forks, every node freezes the same authors at the same seq and
    agrees on counted balances; the money invariant holds over what counts;
    fork proofs check out on their own.
(d) Random and mutated bytes only ever make Entry.decode raise CodecError,
    and Ledger.ingest return an Outcome.
(e) Balances near the bound: an accept or reclaim refused for passing
    MAX_BALANCE is refused in every arrival order, on the in-memory backend
    and on the SQLite store alike, and nothing stored leaves the range.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from tests.helpers import World, counted_balances, fresh_ledger, key
from tests.strategies import arrivals, histories, mutated
from troc.crypto.sign import Domain, MemberId, SigningKey
from troc.errors import CodecError, RefusedError
from troc.node.store import Store
from troc.protocol import codec
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import (
    Accept,
    AnyBody,
    Decline,
    Entry,
    EntryId,
    Join,
    Kind,
    Offer,
    OfferClose,
    Reclaim,
    Refusal,
    Request,
    Transfer,
)
from troc.protocol.ledger import MAX_BALANCE, Ledger, Outcome, Reason, Status

#: The profile's example count (tests/conftest.py); these tests are cheap, so
#: most run a multiple of it.
EXAMPLES = settings().max_examples

# -- (a) any arrival order -----------------------------------------------------


def ingest_all(node: Ledger, order: list[Entry], now_ms: int) -> None:
    for e in order:
        outcome = node.ingest(e.wire, now_ms)
        # Valid entries are never rejected, whatever came before.
        assert outcome.status in (Status.ACCEPTED, Status.DUPLICATE, Status.WAITING), outcome


@settings(max_examples=2 * EXAMPLES)
@given(st.data())
def test_any_arrival_order_reaches_the_same_state(data: st.DataObject) -> None:
    h = data.draw(histories())
    order = data.draw(arrivals(h))
    node = fresh_ledger(h.genesis)
    ingest_all(node, order, h.world.now)
    c = h.world.community
    assert node.backend.waiting_count() == 0  # type: ignore[attr-defined]
    assert dict(node.backend.heads(c)) == dict(h.world.backend.heads(c))
    assert dict(node.balances(c)) == h.world.balances()
    # … and both agree with an independent computation from the entries.
    balances, in_flight = counted_balances(h.entries)
    assert dict(node.balances(c)) == balances
    assert sum(balances.values()) + in_flight == 0


# -- (b) the state machine -------------------------------------------------------

MEMBERS = [key(i) for i in range(4)]
LIMIT, CEILING = 50, 120
#: Who acts: None for the member entitled to (the payee, the payer, the
#: offer's author), else anyone, so that both valid and invalid attempts are
#: frequent.
actors = st.none() | st.sampled_from(MEMBERS)


class LedgerMachine(RuleBasedStateMachine):
    """The real ledger beside a model of dicts.

    Every operation is tried through :meth:`Ledger.prepare`; when the model
    says it is invalid, the machine also signs it anyway and checks the
    ledger rejects it with the model's reason.
    """

    transfers = Bundle("transfers")
    declines = Bundle("declines")
    offers = Bundle("offers")
    requests = Bundle("requests")

    def __init__(self) -> None:
        super().__init__()
        self.world = World(MEMBERS[0], credit_limit=LIMIT, ceiling=CEILING)
        self.joined: set[MemberId] = set()
        self.balance: dict[MemberId, int] = {}
        self.amount: dict[EntryId, int] = {}
        self.payer: dict[EntryId, MemberId] = {}
        self.state: dict[EntryId, str] = {}  # open, accepted, declined, reclaimed
        self.closed: set[EntryId] = set()
        self.request_state: dict[EntryId, str] = {}  # open, paid, refused

    # -- doing ------------------------------------------------------------

    def attempt(self, signer: SigningKey, body: AnyBody, expected: Reason | None) -> Entry | None:
        w = self.world
        if expected is None:
            entry = w.add(signer, body)
            note(f"{body.KIND.value} by {signer.public.hex()[:6]}: accepted")
            return entry
        with pytest.raises(RefusedError) as info:
            w.ledger.prepare(signer, w.community, body, w.now)
        assert info.value.reason == expected.value
        outcome = w.ingest(w.create(signer, body))
        assert outcome.status is Status.REJECTED
        assert outcome.reason is expected, outcome.detail
        note(f"{body.KIND.value} by {signer.public.hex()[:6]}: {expected.value}")
        return None

    def not_joined(self, m: SigningKey) -> Reason | None:
        return None if m.public in self.joined else Reason.JOIN_FIRST

    @staticmethod
    def member(public: MemberId) -> SigningKey:
        return next(m for m in MEMBERS if m.public == public)

    @initialize(first=st.lists(st.sampled_from(MEMBERS), unique=True))
    def some_join_at_once(self, first: list[SigningKey]) -> None:
        for m in first:
            self.join(m)

    @rule(m=st.sampled_from(MEMBERS))
    def join(self, m: SigningKey) -> None:
        expected = Reason.JOIN_FIRST if m.public in self.joined else None
        if self.attempt(m, Join(), expected):
            self.joined.add(m.public)
            self.balance[m.public] = 0

    @rule(
        target=transfers,
        payer=st.sampled_from(MEMBERS),
        payee=st.sampled_from(MEMBERS),
        amount=st.integers(1, 80),
    )
    def pay(self, payer: SigningKey, payee: SigningKey, amount: int) -> Any:
        expected = self.not_joined(payer)
        if expected is None and payer is payee:
            expected = Reason.SELF_PAYMENT
        if expected is None and self.balance[payer.public] - amount < -LIMIT:
            expected = Reason.OVERDRAFT
        t = self.attempt(payer, Transfer(to=payee.public, amount=amount), expected)
        if t is None:
            return multiple()
        self.balance[payer.public] -= amount
        self.amount[t.id], self.payer[t.id], self.state[t.id] = amount, payer.public, "open"
        return t

    @rule(
        target=transfers,
        payer=st.sampled_from(MEMBERS),
        payee=st.sampled_from(MEMBERS),
        extra=st.sampled_from([-1, 0, 1]),
    )
    def pay_to_the_limit(self, payer: SigningKey, payee: SigningKey, extra: int) -> Any:
        """Pay what is left of the credit limit, one less, or one more."""
        amount = self.balance.get(payer.public, 0) + LIMIT + extra
        return self.pay(payer, payee, amount) if amount >= 1 else multiple()

    @rule(target=declines, who=actors, t=transfers, decline=st.booleans())
    def answer(self, who: SigningKey | None, t: Entry, decline: bool) -> Any:
        assert isinstance(t.body, Transfer)
        m = who or self.member(t.body.to)
        expected = self.not_joined(m)
        if expected is None and t.body.to != m.public:
            expected = Reason.NOT_PAYEE
        if expected is None and self.state[t.id] != "open":
            expected = Reason.ALREADY_ANSWERED
        if (
            expected is None
            and not decline
            and self.balance[m.public] + self.amount[t.id] > CEILING
        ):
            expected = Reason.OVER_CEILING
        body = Decline(transfer=t.ref) if decline else Accept(transfer=t.ref)
        entry = self.attempt(m, body, expected)
        if entry is None:
            return multiple()
        if decline:
            self.state[t.id] = "declined"
            return entry
        self.state[t.id] = "accepted"
        self.balance[m.public] += self.amount[t.id]
        return multiple()

    @rule(who=actors, d=declines)
    def reclaim(self, who: SigningKey | None, d: Entry) -> None:
        assert isinstance(d.body, Decline)
        tid = d.body.transfer.id
        m = who or self.member(self.payer[tid])
        expected = self.not_joined(m)
        if expected is None and self.payer[tid] != m.public:
            expected = Reason.NOT_PAYER
        if expected is None and self.state[tid] == "reclaimed":
            expected = Reason.ALREADY_RECLAIMED
        if self.attempt(m, Reclaim(decline=d.ref), expected):
            self.state[tid] = "reclaimed"
            self.balance[m.public] += self.amount[tid]

    @rule(who=actors, t=transfers)
    def reclaim_without_decline(self, who: SigningKey | None, t: Entry) -> None:
        m = who or self.member(t.author)
        self.attempt(m, Reclaim(decline=t.ref), self.not_joined(m) or Reason.NOT_A_DECLINE)

    @rule(
        target=requests,
        m=st.sampled_from(MEMBERS),
        payer=st.sampled_from(MEMBERS),
        amount=st.integers(1, 80),
    )
    def request(self, m: SigningKey, payer: SigningKey, amount: int) -> Any:
        expected = self.not_joined(m)
        if expected is None and m is payer:
            expected = Reason.SELF_PAYMENT
        q = self.attempt(m, Request(to=payer.public, amount=amount), expected)
        if q is None:
            return multiple()
        self.request_state[q.id] = "open"
        return q

    def request_answered(self, q: Entry) -> Reason | None:
        return {"paid": Reason.ALREADY_PAID, "refused": Reason.ALREADY_REFUSED}.get(
            self.request_state[q.id]
        )

    @rule(target=transfers, who=actors, q=requests)
    def pay_request(self, who: SigningKey | None, q: Entry) -> Any:
        assert isinstance(q.body, Request)
        m = who or self.member(q.body.to)
        amount = q.body.amount
        expected = self.not_joined(m)
        if expected is None and q.author == m.public:
            expected = Reason.SELF_PAYMENT
        if expected is None and q.body.to != m.public:
            expected = Reason.REQUEST_MISMATCH
        expected = expected or self.request_answered(q)
        if expected is None and self.balance[m.public] - amount < -LIMIT:
            expected = Reason.OVERDRAFT
        t = self.attempt(m, Transfer.paying(q), expected)
        if t is None:
            return multiple()
        self.request_state[q.id] = "paid"
        self.balance[m.public] -= amount
        self.amount[t.id], self.payer[t.id], self.state[t.id] = amount, m.public, "open"
        return t

    @rule(who=actors, q=requests)
    def refuse(self, who: SigningKey | None, q: Entry) -> None:
        assert isinstance(q.body, Request)
        m = who or self.member(q.body.to)
        expected = self.not_joined(m)
        if expected is None and q.body.to != m.public:
            expected = Reason.NOT_ASKED
        expected = expected or self.request_answered(q)
        if self.attempt(m, Refusal(request=q.ref), expected):
            self.request_state[q.id] = "refused"

    @rule(m=st.sampled_from(MEMBERS), t=transfers)
    def refuse_a_transfer(self, m: SigningKey, t: Entry) -> None:
        self.attempt(m, Refusal(request=t.ref), self.not_joined(m) or Reason.NOT_A_REQUEST)

    @rule(target=offers, m=st.sampled_from(MEMBERS))
    def offer(self, m: SigningKey) -> Any:
        o = self.attempt(m, Offer(side="offer", title="soup"), self.not_joined(m))
        return multiple() if o is None else o

    @rule(who=actors, o=offers)
    def close(self, who: SigningKey | None, o: Entry) -> None:
        m = who or self.member(o.author)
        expected = self.not_joined(m)
        if expected is None and o.author != m.public:
            expected = Reason.NOT_OWN_OFFER
        if expected is None and o.id in self.closed:
            expected = Reason.ALREADY_CLOSED
        if self.attempt(m, OfferClose(offer=o.ref), expected):
            self.closed.add(o.id)

    @rule(m=st.sampled_from(MEMBERS), o=offers)
    def accept_an_offer(self, m: SigningKey, o: Entry) -> None:
        self.attempt(m, Accept(transfer=o.ref), self.not_joined(m) or Reason.NOT_A_TRANSFER)

    @precondition(lambda self: self.world.log)
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        entry = data.draw(st.sampled_from(self.world.log))
        assert self.world.ingest(entry).status is Status.DUPLICATE

    # -- invariants -------------------------------------------------------------

    def in_flight(self) -> int:
        return sum(self.amount[t] for t, s in self.state.items() if s in ("open", "declined"))

    @invariant()
    def sum_of_balances_and_in_flight_is_zero(self) -> None:
        assert sum(self.world.balances().values()) + self.in_flight() == 0

    @invariant()
    def no_member_below_its_credit_limit(self) -> None:
        for member, head in self.world.backend.heads(self.world.community):
            assert head.limit == LIMIT
            assert head.balance >= -LIMIT, member

    @invariant()
    def every_transfer_is_credited_at_most_once(self) -> None:
        c, backend = self.world.community, self.world.backend
        credited = Counter(
            row.target_id
            for m in MEMBERS
            for kind in (Kind.ACCEPT, Kind.RECLAIM)
            for row in backend.refs_to(c, m.public, kind, 1, None)
        )
        assert all(n == 1 for n in credited.values())
        assert set(credited) == {t for t, s in self.state.items() if s in ("accepted", "reclaimed")}

    @invariant()
    def balances_equal_the_model(self) -> None:
        assert self.world.balances() == self.balance

    def teardown(self) -> None:
        # Every log is a hash chain of entries that verify, from head to join.
        c, backend = self.world.community, self.world.backend
        for member, head in backend.heads(c):
            seq, eid = head.seq, head.id
            while seq >= 1:
                stored = backend.entry(c, member, seq, eid)
                assert stored is not None
                assert stored.entry.signature_ok()
                seq, eid = seq - 1, stored.entry.prev  # type: ignore[assignment]
            assert eid is None


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(max_examples=2 * EXAMPLES, stateful_step_count=40)


# -- (c) forks ----------------------------------------------------------------------


def check_fork_proof(first: bytes, second: bytes) -> Entry:
    """What any node, holding nothing else, checks of a fork proof."""
    a, b = Entry.decode(first), Entry.decode(second)  # each validly signed
    assert (a.community, a.author, a.seq) == (b.community, b.author, b.seq)
    assert a.id != b.id
    return a


@settings(max_examples=2 * EXAMPLES)
@given(st.data())
def test_forks_freeze_alike_in_any_order(data: st.DataObject) -> None:
    h = data.draw(histories(forks=2, max_ops=24))
    c = h.world.community
    balances, in_flight = counted_balances(h.entries)
    assert sum(balances.values()) + in_flight == 0
    expected_proofs = {(c, author, seq) for author, seq in h.forks.items()}
    nodes = [h.world.ledger]
    for _ in range(2):
        node = fresh_ledger(h.genesis)
        ingest_all(node, data.draw(arrivals(h)), h.world.now)
        nodes.append(node)
    for node in nodes:
        backend: Any = node.backend
        assert backend.waiting_count() == 0
        assert set(backend.forks) == expected_proofs
        for author, seq in h.forks.items():
            head = node.head(c, author)
            assert head is not None
            assert head.frozen_at == seq
        # Counted balances: equal on every node, to the oracle's, and the sum
        # of what counts plus what is in flight is zero.
        assert dict(node.balances(c)) == balances
        assert sum(b for _, b in node.balances(c)) + in_flight == 0
        for (_, author, seq), (first, second) in backend.forks.items():
            proof = check_fork_proof(first, second)
            assert (proof.community, proof.author, proof.seq) == (c, author, seq)


# -- (d) decoder fuzzing ----------------------------------------------------------------


def _samples() -> tuple[World, list[tuple[SigningKey, Entry]]]:
    w = World(key(0), credit_limit=100, ceiling=500)
    for m in range(3):
        w.join(key(m))
    o = w.offer(key(1), "Bread")
    t = w.pay(key(0), key(1), 12, memo="loaf", offer=o.ref)
    w.accept(key(1), t)
    t2 = w.pay(key(0), key(2), 3)
    w.reclaim(key(0), w.decline(key(2), t2))
    w.close(key(1), o)
    w.vouch(key(2), key(3), limit=5)
    q = w.request(key(1), key(0), 4, memo="jam", expires_ms=w.now + 10**6)
    w.pay_request(key(0), q)
    w.refuse(key(2), w.request(key(1), key(2), 3))
    signers = {key(i).public: key(i) for i in range(4)}
    pairs = [(signers[e.author], e) for e in [w.genesis, *w.log]]
    return w, pairs


SAMPLE_WORLD, SAMPLES = _samples()


def node_with_samples() -> Ledger:
    node = fresh_ledger(SAMPLE_WORLD.genesis)
    for _, e in SAMPLES[1:]:
        node.ingest(e.wire, SAMPLE_WORLD.now)
    return node


def check_any_bytes(node: Ledger, wire: bytes) -> None:
    reason = None
    try:
        entry = Entry.decode(wire)
    except CodecError as exc:
        reason = exc.reason
    else:
        # Whatever decodes was canonical: it re-encodes to the same bytes.
        assert codec.pack([entry.signed, entry.signature]) == wire
    if reason is not None:
        assert reason in set(Reason)  # every decoder reason is a ledger reason
    outcome = node.ingest(wire, SAMPLE_WORLD.now)
    assert isinstance(outcome, Outcome)
    assert (outcome.status is Status.REJECTED) == (outcome.reason is not None)


@settings(max_examples=4 * EXAMPLES)
@given(st.binary(max_size=300))
def test_random_bytes(wire: bytes) -> None:
    check_any_bytes(node_with_samples(), wire)


@settings(max_examples=4 * EXAMPLES)
@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_wire(sample: tuple[SigningKey, Entry], data: st.DataObject) -> None:
    _, entry = sample
    check_any_bytes(node_with_samples(), data.draw(mutated(entry.wire)))


@settings(max_examples=4 * EXAMPLES)
@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_signed_part_validly_signed(
    sample: tuple[SigningKey, Entry], data: st.DataObject
) -> None:
    """Mutate the signed bytes and sign them again: the signature no longer
    stops the decoder early, so every later check gets hostile input."""
    signer, entry = sample
    signed = data.draw(mutated(entry.signed))
    check_any_bytes(node_with_samples(), codec.pack([signed, signer.sign(Domain.ENTRY, signed)]))


# -- (e) the balance range ------------------------------------------------------------

TOP = MAX_BALANCE


def range_history(data: st.DataObject) -> tuple[World, list[Entry], list[Entry]]:
    """Members with the largest credit limit and no ceiling pay each other
    amounts near the bound and answer in any order: (world, every valid
    entry in order, the accepts and reclaims refused for balance_range,
    signed anyway)."""
    members = [key(i) for i in range(4)]
    w = World(members[0], credit_limit=TOP)
    for m in members:
        w.join(m)
    open_: list[Entry] = []
    declined: list[Entry] = []
    refused: list[Entry] = []
    steps = data.draw(st.integers(4, 12), label="steps")
    for i in range(steps + 12):
        # Random steps, paying most often, then answers and reclaims until
        # none is left.
        op = data.draw(st.sampled_from(["pay", "pay", "answer", "reclaim"]), label="op")
        if i >= steps:
            op = "answer" if open_ else "reclaim"
        body: AnyBody
        if op == "pay":
            # Half the payments go to one member, whose balance then climbs.
            payee = data.draw(st.sampled_from([members[0], *members]), label="payee")
            payer = data.draw(st.sampled_from([m for m in members if m is not payee]))
            # All the payer may spend, half of it plus one, or one unit.
            room = min(TOP, w.balance(payer) + TOP)
            amount = data.draw(st.sampled_from([room, room, room // 2 + 1, 1]), label="amount")
            if amount < 1:
                continue
            body, signer = Transfer(to=payee.public, amount=amount), payer
        elif op == "answer" and open_:
            t = open_.pop(data.draw(st.integers(0, len(open_) - 1), label="which"))
            assert isinstance(t.body, Transfer)
            signer = next(m for m in members if m.public == t.body.to)
            body = Accept(transfer=t.ref)
            if data.draw(st.booleans(), label="decline"):
                body = Decline(transfer=t.ref)
        elif op == "reclaim" and declined:
            d = declined.pop(data.draw(st.integers(0, len(declined) - 1), label="which"))
            assert isinstance(d.body, Decline)
            signer = next(m for m in members if m.public == d.body.transfer.author)
            body = Reclaim(decline=d.ref)
        else:
            continue
        try:
            entry = w.add(signer, body)
        except RefusedError as exc:
            if exc.reason == Reason.BALANCE_RANGE.value:
                refused.append(w.create(signer, body))
            continue  # an overdraft: not signed
        if isinstance(body, Transfer):
            open_.append(entry)
        elif isinstance(body, Decline):
            declined.append(entry)
    return w, list(w.log), refused


@settings(max_examples=EXAMPLES)
@given(st.data())
def test_balance_range_in_any_order_on_both_backends(data: st.DataObject) -> None:
    w, valid, refused = range_history(data)
    event(f"refused for balance_range: {min(len(refused), 2)}+")
    everything = valid + refused
    order = data.draw(st.permutations(everything), label="order")
    order += data.draw(st.lists(st.sampled_from(everything), max_size=4), label="again")
    c = w.community
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "store.sqlite") as store:
        nodes = [Ledger(MemoryBackend()), Ledger(store)]
        for node in nodes:
            with store.transaction():
                assert node.ingest(w.genesis.wire, w.now).ok
            for e in order:
                with store.transaction():
                    outcome = node.ingest(e.wire, w.now)
                # A refused entry is never stored; a valid one never refused.
                assert outcome.status is not Status.ACCEPTED or e not in refused
                assert outcome.status is not Status.REJECTED or e in refused, outcome
            for e in refused:  # all its dependencies are held: refused now
                with store.transaction():
                    outcome = node.ingest(e.wire, w.now)
                assert outcome.status is Status.REJECTED
                assert outcome.reason is Reason.BALANCE_RANGE, outcome.detail
            with store.transaction():
                assert node.backend.waiting_count() == 0  # type: ignore[attr-defined]
                heads = dict(node.backend.heads(c))
            assert heads == dict(w.backend.heads(c))
            assert dict(node.balances(c)) == w.balances()
            assert all(-TOP <= h.balance <= TOP for h in heads.values())


def test_many_payers_cannot_push_a_balance_out_of_the_store() -> None:
    """The crash this rule fixes: 1,026 members each pay one member all they
    may (2**53 - 1) and it accepts every payment in one chain. Past 2**63 - 1
    the SQLite store could not hold the balance and raised OverflowError (not
    a TrocError), stopping the node. Now the second accept is refused
    (balance_range) and the rest of that chain waits for it forever, on
    both backends alike. What stays in flight to that member, 1,025 times
    2**53 - 1, is past 2**63 - 1 too: the store still sums it exactly."""
    payee = key(0)
    w = World(payee, credit_limit=TOP)
    w.join(payee)
    transfers = []
    for i in range(1, 1027):
        payer = key(i)
        w.join(payer)
        transfers.append(w.pay(payer, payee, TOP))
    accepts, prev = [], w.ledger.head(w.community, payee.public)
    assert prev is not None
    seq, prev_id = prev.seq, prev.id
    for t in transfers:  # one chain, signed whatever the rules say
        seq += 1
        accepts.append(
            Entry.create(
                payee,
                community=w.community,
                seq=seq,
                prev=prev_id,
                timestamp_ms=w.now,
                body=Accept(transfer=t.ref),
            )
        )
        prev_id = accepts[-1].id
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "s.sqlite") as store:
        for node in (Ledger(store), Ledger(MemoryBackend())):
            with store.transaction():
                for e in [w.genesis, *w.log, *accepts]:
                    node.ingest(e.wire, w.now)
                assert node.balance(w.community, payee.public) == TOP
                second = node.ingest(accepts[1].wire, w.now)
                assert second.reason is Reason.BALANCE_RANGE
        with store.transaction():
            incoming = store.pending_sums(w.community, payee.public)
        assert incoming == (1025 * TOP, 0)
        assert incoming[0] > 2**63 - 1
