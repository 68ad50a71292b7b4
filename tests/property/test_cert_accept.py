"""Accepting a certified transfer before the payer's history (docs/witness.md §6.1).

In a witnessed community a payee may accept a transfer it holds parked
(waiting for the payer's earlier entries) once it holds that transfer's own
certificate: the certificate proves the transfer valid on the one chain the
witnesses lock. The payee's node signs such an accept (``prepare``), and an
accept arriving from a peer gets the same verdict (``ingest``), whatever the
order in which the history, the transfer, the certificates and the accept
arrive, on both backends; once the history arrives, the balances are those of
a node that got everything in order, with nothing counted twice, and an
answer given while the transfer was parked is seen as one when it is stored.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import World, certify, key, witnessed_world
from tests.property.test_void_ledger import void_certify
from tests.property.test_witnessed_ledger import deliver
from troc.errors import RefusedError
from troc.node.store import Store
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import Accept, Decline, Entry
from troc.protocol.ledger import Ledger, Reason, Status
from troc.protocol.vote import default_quorum

#: Transfers expire (their accepts may race a take-back) in this variant.
EXPIRY_MS = 3_600_000


class History:
    """P pays O three times (O accepts two), then pays N 10 (``t``). N, a
    newcomer, accepts ``t`` (``acc``) and pays O 3 (``u``); its decline of
    ``t`` above them (``dec``) is refused ``already_answered``. Every entry
    is certified; ``acc``'s own certificate is left out with
    ``own_accept_cert`` False (then its log's final tip passes it through
    ``u``'s certificate, unless its transfer may expire and it may race)."""

    def __init__(self, *, expiring: bool, own_accept_cert: bool = True) -> None:
        rules: dict[str, Any] = {"credit_limit": 100}
        if expiring:
            rules["transfer_expiry_ms"] = EXPIRY_MS
        self.w = w = witnessed_world(**rules)
        self.p, self.o, self.n = key(1), key(2), key(3)
        self.joins = [w.join(k) for k in (self.p, self.o)]
        self.history = list(self.joins)
        for amount in (5, 7, 9):
            t = w.pay(self.p, self.o, amount)
            self.history.append(t)
            if amount != 9:
                self.history.append(w.accept(self.o, t))
        self.history.append(w.offer(self.p))
        self.join_n = w.join(self.n)
        self.t = w.pay(self.p, self.n, 10)
        self.acc = w.accept(self.n, self.t)
        self.u = w.pay(self.n, self.o, 3)
        self.dec = w.create(self.n, Decline(transfer=self.t.ref))
        self.entries = [*self.history, self.join_n, self.t, self.acc, self.u, self.dec]
        skip = set() if own_accept_cert else {self.acc.id}
        self.certified = [e for e in self.entries if e is not self.dec and e.id not in skip]
        #: Whether N's final tip reaches ``u`` (past the accept) in the end.
        self.n_final = own_accept_cert or not expiring

    @property
    def community(self) -> Any:
        return self.w.community

    def items(self) -> list[tuple[str, bytes]]:
        return [("entry", e.wire) for e in self.entries] + [
            ("cert", certify(e)) for e in self.certified
        ]


def state(ledger: Ledger, h: History) -> Any:
    c = h.community
    held = sorted(e.id for e in h.entries if ledger.backend.entry(c, e.author, e.seq, e.id))
    return list(ledger.backend.heads(c)), dict(ledger.balances(c)), held


def in_order(h: History) -> Ledger:
    node = Ledger(MemoryBackend())
    deliver(node, "entry", h.w.genesis.wire, h.w.now)
    for kind, blob in h.items():
        deliver(node, kind, blob, h.w.now)
    return node


@contextmanager
def both() -> Iterator[tuple[Ledger, Ledger, Store]]:
    """A ledger on each backend (memory, SQLite), fed the genesis."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "s.sqlite")
        try:
            memory, on_disk = Ledger(MemoryBackend()), Ledger(store)
            yield memory, on_disk, store
        finally:
            store.close()


def feed(memory: Ledger, on_disk: Ledger, store: Store, kind: str, blob: bytes, now: int) -> Any:
    a = deliver(memory, kind, blob, now)
    with store.transaction():
        b = deliver(on_disk, kind, blob, now)
    assert (a.status, a.reason) == (b.status, b.reason)
    assert [e.id for e in a.released] == [e.id for e in b.released]
    assert [(d.entry, d.reason) for d in a.dropped] == [(d.entry, d.reason) for d in b.dropped]
    return a


def check_end(memory: Ledger, on_disk: Ledger, store: Store, h: History) -> None:
    expected = state(in_order(h), h)
    assert state(memory, h) == expected
    assert state(on_disk, h) == expected
    c = h.community
    # Once t is stored, it is answered: not pending for N, and N's decline
    # of it was refused already_answered (it needs t stored, the accept not).
    assert store.pending_in(c, h.n.public) == []
    assert memory.backend.entry(c, h.n.public, h.dec.seq, h.dec.id) is None
    # Credited once, debited once: P paid 31 in all; N got 10 and paid 3,
    # once its final tip passes the accept (a raceable accept needs its own
    # certificate for that). Certified payments not credited by a final
    # accept are in flight: 9 to O, and 3 to O from N or, while N's tip is
    # below its accept, the 10 to N.
    balances = dict(memory.balances(c))
    assert balances[h.p.public] == -31
    assert balances[h.n.public] == (7 if h.n_final else 0)
    assert sum(balances.values()) == -(9 + (3 if h.n_final else 10))


@settings(max_examples=60, deadline=None)
@given(
    st.data(),
    st.booleans().flatmap(lambda e: st.tuples(st.just(e), st.booleans() if e else st.just(True))),
)
def test_every_arrival_order_gives_the_same_verdicts_and_balances(
    data: st.DataObject, variant: tuple[bool, bool]
) -> None:
    expiring, own = variant
    h = History(expiring=expiring, own_accept_cert=own)
    items = h.items()
    order = data.draw(st.permutations(items), label="order")
    now = h.w.now
    with both() as (memory, on_disk, store):
        feed(memory, on_disk, store, "entry", h.w.genesis.wire, now)
        # The accept counts as soon as the payee holds its join, the
        # transfer (stored or parked) and the transfer's own certificate.
        enough = {h.acc.wire, h.join_n.wire, h.t.wire, certify(h.t)}
        delivered: set[bytes] = set()
        for kind, blob in order:
            out = feed(memory, on_disk, store, kind, blob, now)
            delivered.add(blob)
            if kind == "entry" and blob == h.dec.wire:
                assert out.status in (Status.WAITING, Status.REJECTED)
                if out.status is Status.REJECTED:
                    assert out.reason is Reason.ALREADY_ANSWERED
            if enough <= delivered:
                for ledger in (memory, on_disk):
                    assert ledger.backend.entry(h.community, h.n.public, 2, h.acc.id) is not None
        check_end(memory, on_disk, store, h)


@settings(max_examples=40, deadline=None)
@given(st.data(), st.booleans())
def test_the_payee_accepts_a_parked_certified_transfer(data: st.DataObject, expiring: bool) -> None:
    """The newcomer holds only its join, ``t`` (parked: P's history is
    missing) and ``t``'s certificate: its node signs the accept, then the
    rest arrives in any order and the balances come out as in order."""
    h = History(expiring=expiring)
    c, now = h.community, h.w.now
    first = [
        ("entry", h.join_n.wire),
        ("cert", certify(h.join_n)),
        ("entry", h.t.wire),
        ("cert", certify(h.t)),
    ]
    first = data.draw(st.permutations(first), label="first")
    with both() as (memory, on_disk, store):
        feed(memory, on_disk, store, "entry", h.w.genesis.wire, now)
        for kind, blob in first:
            feed(memory, on_disk, store, kind, blob, now)
        for ledger in (memory, on_disk):
            assert ledger.backend.entry(c, h.t.author, h.t.seq, h.t.id) is None  # parked
            with store.transaction():
                acc = ledger.prepare(h.n, c, Accept(transfer=h.t.ref), h.acc.timestamp_ms)
                assert acc.wire == h.acc.wire
                assert ledger.ingest_entry(acc, now).status is Status.ACCEPTED
        # Not final yet: N's final tip waits for the accept's certificate.
        assert memory.balance(c, h.n.public) == 0
        rest = [i for i in h.items() if i not in first and i[1] != h.acc.wire]
        for kind, blob in data.draw(st.permutations(rest), label="rest"):
            feed(memory, on_disk, store, kind, blob, now)
        check_end(memory, on_disk, store, h)


def test_an_uncertified_parked_transfer_cannot_be_accepted() -> None:
    """Without the transfer's own certificate (or finality), parked is not enough."""
    h = History(expiring=False)
    c, now = h.community, h.w.now
    node = Ledger(MemoryBackend())
    for e in (h.w.genesis, h.join_n, h.t):
        node.ingest(e.wire, now)
    node.ingest_certificate(certify(h.join_n), now)
    with pytest.raises(RefusedError) as info:
        node.prepare(h.n, c, Accept(transfer=h.t.ref), h.acc.timestamp_ms)
    assert info.value.reason == "missing"
    assert node.ingest(h.acc.wire, now).status is Status.WAITING
    # The certificate arrives: the parked accept is stored.
    assert node.ingest_certificate(certify(h.t), now).released == (h.acc,)


def test_a_void_certificate_of_the_transfer_is_not_enough() -> None:
    """Only more than f liars void a transfer; its void certificate certifies nothing."""
    h = History(expiring=False)
    now = h.w.now
    node = Ledger(MemoryBackend())
    for e in (h.w.genesis, h.join_n, h.t):
        node.ingest(e.wire, now)
    assert node.ingest_certificate(void_certify(h.t), now).ok
    assert node.ingest(h.acc.wire, now).status is Status.WAITING


def test_a_witness_votes_for_an_accept_of_a_transfer_it_holds_parked_and_certified() -> None:
    """docs/witness.md §3.2 step 3 with §6.1: the transfer's own certificate
    is what an accept needs, at a witness too, even while the transfer is
    parked there (the witness lacks its payer's history)."""
    from tests.property.test_witness import WKEYS, WitnessNode
    from tests.property.test_witness import certify as certificate
    from troc.protocol.witness import Voted, Waiting, WitnessRules

    f, q = default_quorum(4)
    w = World(
        finality="witnessed",
        witnesses=tuple(sorted(k.public for k in WKEYS[:4])),
        faults=f,
        quorum=q,
    )
    rules = WitnessRules.from_genesis(w.genesis)
    w.certifier = lambda e: certificate(rules, e).encode()
    p, n = key(1), key(2)
    w.join(p)
    w.offer(p)
    join_n = w.join(n)
    t = w.pay(p, n, 10)
    acc = w.accept(n, t)
    witness = WitnessNode(w, rules, WKEYS[0])
    # Without the transfer's certificate: wait for it.
    assert isinstance(witness.ask(acc, deps=[join_n, t]), Waiting)
    assert witness.ledger.backend.entry(w.community, p.public, t.seq, t.id) is None
    answer = witness.ask(acc, deps=[join_n, t], certs=[certificate(rules, t)])
    assert isinstance(answer, Voted), answer
    assert answer.vote.ref == acc.ref


@pytest.mark.parametrize("version", [2, 3], ids=["v2", "v3"])
@pytest.mark.parametrize("cert_with", ["accept", "transfer"])
def test_sync_brings_the_parked_transfer_and_its_certificate(version: int, cert_with: str) -> None:
    """One node holds the transfer parked (no history), the other the
    accept and the payer's join (so their digests differ: equal digests
    need no session); the transfer's certificate is on either side. No
    stream carries a parked entry, nor a certificate of an entry the sender
    lacks: the sessions' wants do (docs/sync.md, "Certificates"), and both
    end with the accept stored, as a node holding everything would."""
    from troc.protocol.sim import MemoryView, sync_pair

    h = History(expiring=False)
    c, now = h.community, h.w.now

    def node(entries: list[Entry], certs: list[bytes]) -> MemoryView:
        ledger = Ledger(MemoryBackend())
        for e in [h.w.genesis, *entries]:
            ledger.ingest(e.wire, now)
        for data in certs:
            ledger.ingest_certificate(data, now)
        return MemoryView(ledger, c, lambda: now)

    cert_t = [certify(h.t)]
    one = node([h.join_n, h.t], cert_t if cert_with == "transfer" else [])
    two = node([h.joins[0], h.join_n, h.acc], cert_t if cert_with == "accept" else [])
    for sessions in range(1, 5):
        ini, res = (one, two) if sessions % 2 else (two, one)
        assert sync_pair(ini, res, version=version).done
        if one.digest() == two.digest() and all(
            v.ledger.backend.entry(c, h.n.public, 2, h.acc.id) for v in (one, two)
        ):
            break
    for view in (one, two):
        assert view.ledger.backend.entry(c, h.n.public, 2, h.acc.id) is not None
        assert view.ledger.certified_itself(c, h.t.ref)
