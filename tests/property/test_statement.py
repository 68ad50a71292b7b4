"""Verifiable statements (docs/protocol.md §9).

(a) A bundle built from any valid history (forks included), for any member
    and any period, from the in-memory backend or from the SQLite store fed
    in any order, verifies, and shows the statement the source ledger
    computes: same movements, balances and totals; with the period ending
    at the head of a log that counts, the closing balance less what a
    forked payer's frozen part gave is the member's counted balance.
(b) Witnessed communities: the period's last entry is final in the
    verifier exactly when the source holds it final.
(c) Any single byte changed is refused (hypothesis over the position), and
    so is a bundle its member re-signed after leaving out or adding an
    entry: the verifier trusts the rules, not the member.
"""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests.helpers import World, certify, key, witnessed_world
from tests.strategies import arrivals, histories
from troc.crypto.sign import Domain
from troc.errors import BundleError, RefusedError
from troc.node.store import Store
from troc.protocol import codec
from troc.protocol.entry import Accept, Offer, Ref, Transfer
from troc.protocol.ledger import Ledger
from troc.protocol.statement import (
    BUNDLE_LIMITS,
    build_bundle,
    chain_of,
    statement_of,
    verify_bundle,
)

EXAMPLES = settings().max_examples


def not_counted(ledger: Ledger, community: bytes, chain: list) -> int:  # type: ignore[type-arg]
    """Credit along ``chain`` from transfers in a forked payer's frozen part."""
    total = 0
    for s in chain:
        if isinstance(s.entry.body, Accept):
            t = s.entry.body.transfer
            payer = ledger.head(community, t.author)  # type: ignore[arg-type]
            if payer is not None and not payer.counts(t.seq):
                stored = ledger.backend.entry(community, t.author, t.seq, t.id)  # type: ignore[arg-type]
                assert stored is not None
                assert isinstance(stored.entry.body, Transfer)
                total += stored.entry.body.amount
    return total


@settings(max_examples=max(EXAMPLES // 2, 10))
@given(st.data())
def test_a_bundle_verifies_with_the_ledgers_statement(data: st.DataObject) -> None:
    h = data.draw(histories(max_ops=30, forks=data.draw(st.sampled_from([0, 0, 2]))))
    w = h.world
    c = w.community
    m = data.draw(st.sampled_from(h.members), label="member")
    head = w.ledger.head(c, m.public)
    assert head is not None
    full = chain_of(w.backend, c, Ref(m.public, head.seq, head.id))
    to_seq = data.draw(st.integers(1, len(full)), label="to_seq")
    from_seq = data.draw(st.integers(1, to_seq + 1), label="from_seq")
    chain = full[:to_seq]
    expected = statement_of(w.backend, c, chain, from_seq, to_seq)
    end = chain[-1].entry.ref
    verified = verify_bundle(build_bundle(w.ledger, m, c, end, from_seq, w.now), w.now)
    assert verified.statement == expected
    assert verified.final is None
    frozen = head.frozen_at if head.frozen_at is not None and head.frozen_at <= to_seq else None
    assert verified.frozen_at == frozen
    assert verified.not_counted == not_counted(w.ledger, c, chain)
    if to_seq == head.seq and head.frozen_at is None:
        # Less the take-backs that a payee's accept undid: listed as
        # movements, and the bundle carries each accept its builder holds
        # (docs/protocol.md §4.11), so the verifier counts them as undone.
        balance = w.ledger.balance(c, m.public)
        assert verified.undone == head.undone
        assert expected.closing - verified.not_counted - verified.undone == balance
    # The same bundle's evidence from the SQLite store, fed in another order.
    order = data.draw(arrivals(h), label="order")
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "s.sqlite") as store:
        node = Ledger(store)
        with store.transaction():
            node.ingest(w.genesis.wire, w.now)
            for e in order:
                node.ingest(e.wire, w.now)
            again = verify_bundle(build_bundle(node, m, c, end, from_seq, w.now), w.now)
    assert again.statement == expected
    assert (again.frozen_at, again.not_counted) == (verified.frozen_at, verified.not_counted)


witnessed_ops = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(1, 30), st.booleans()),
    max_size=14,
)


@settings(max_examples=max(EXAMPLES // 4, 5))
@given(ops=witnessed_ops, data=st.data())
def test_witnessed_bundles_prove_finality(
    ops: list[tuple[int, int, int, bool]], data: st.DataObject
) -> None:
    """Entries certified or not at random (a transfer is final once it or a
    later entry of its log is certified; accepts wait for that): every
    member's bundle verifies, with the source's statement, and the period's
    last entry is final in the verifier exactly when it is in the source."""
    w = witnessed_world()
    members = [key(i) for i in range(3)]
    for m in members:
        w.join(m)
    open_transfers = []
    for i, j, amount, certified in ops:
        w.certifier = certify if certified else None
        if i != j:
            try:
                open_transfers.append(w.pay(members[i], members[j], amount))
            except RefusedError:
                pass  # overdraft
        for t in list(open_transfers):
            if w.ledger.is_final(w.community, t.ref):
                payee = next(m for m in members if m.public == t.body.to)  # type: ignore[union-attr]
                w.accept(payee, t)
                open_transfers.remove(t)
                event("accepted" if w.ledger.certificate_of(w.community, t.ref) else "final later")
    c = w.community
    for m in members:
        head = w.ledger.head(c, m.public)
        assert head is not None
        chain = chain_of(w.backend, c, Ref(m.public, head.seq, head.id))
        to_seq = data.draw(st.integers(1, len(chain)), label="to_seq")
        end = chain[to_seq - 1].entry.ref
        v = verify_bundle(build_bundle(w.ledger, m, c, end, 1, w.now), w.now)
        assert v.statement == statement_of(w.backend, c, chain[:to_seq], 1, to_seq)
        assert v.final is w.ledger.is_final(c, end)
        final_here = [s.entry.seq for s in chain[:to_seq] if w.ledger.is_final(c, s.entry.ref)]
        assert v.final_seq == max(final_here, default=0)


def test_witnessed_bundles_carry_logs_up_to_their_next_certificate(tmp_path: Path) -> None:
    """A transfer final only through a later certified entry of its payer's
    log: the bundle carries the payer's log up to that entry and its
    certificate, from the in-memory backend and from the SQLite store."""
    w = witnessed_world()
    a, b = key(0), key(1)
    w.join(a)
    w.join(b)
    w.certifier = None
    t1 = w.pay(a, b, 4)  # no certificate of its own
    w.certifier = certify
    w.offer(a, "bread")  # certified: t1 below it is final
    w.accept(b, t1)
    c = w.community
    head = w.ledger.head(c, b.public)
    assert head is not None
    end = Ref(b.public, head.seq, head.id)
    with Store.open(tmp_path / "s.sqlite") as store:
        node = Ledger(store)
        with store.transaction():
            node.ingest(w.genesis.wire, w.now)
            for e in w.log:
                node.ingest(e.wire, w.now)
                cert = w.ledger.certificate_of(c, e.ref)
                if cert is not None:
                    node.ingest_certificate(cert, w.now)
            for ledger in (w.ledger, node):
                v = verify_bundle(build_bundle(ledger, b, c, end, 1, w.now), w.now)
                assert (v.final, v.statement.closing) == (True, 4)
                assert v.entries == 5  # both joins, t1, the offer, the accept


@cache
def sample_bundle() -> tuple[bytes, int]:
    w = World(key(0), credit_limit=100)
    a, b, c = key(0), key(1), key(2)
    for m in (a, b, c):
        w.join(m)
    w.accept(b, w.pay(a, b, 30, memo="bread"))
    w.reclaim(b, w.decline(c, w.pay(b, c, 10)))
    w.accept(b, w.pay(c, b, 5))
    head = w.ledger.head(w.community, b.public)
    assert head is not None
    return build_bundle(w.ledger, b, w.community, Ref(b.public, head.seq, head.id), 2, w.now), w.now


@settings(max_examples=EXAMPLES * 2)
@given(st.data())
def test_any_single_byte_changed_is_refused(data: st.DataObject) -> None:
    bundle, now = sample_bundle()
    assert verify_bundle(bundle, now).statement.closing == 35
    at = data.draw(st.integers(0, len(bundle) - 1), label="position")
    new = data.draw(st.integers(0, 255).filter(lambda x: x != bundle[at]), label="byte")
    with pytest.raises(BundleError):
        verify_bundle(bundle[:at] + bytes([new]) + bundle[at + 1 :], now)


def resigned(bundle: bytes, **changes: object) -> bytes:
    """``bundle`` with body fields changed and signed again by its member
    (key 1 in :func:`sample_bundle`): what a dishonest member could make."""
    outer = codec.unpack(bundle, BUNDLE_LIMITS)
    body = codec.unpack(outer[0], BUNDLE_LIMITS)
    body.update(changes)
    raw = codec.pack(body, BUNDLE_LIMITS)
    return codec.pack([raw, key(1).sign(Domain.STATEMENT, raw)], BUNDLE_LIMITS)


def test_the_verifier_trusts_the_rules_not_the_members_signature() -> None:
    bundle, now = sample_bundle()
    body = codec.unpack(codec.unpack(bundle, BUNDLE_LIMITS)[0], BUNDLE_LIMITS)
    entries = body["entries"]
    assert verify_bundle(resigned(bundle), now).statement.total_in == 45
    cases = {
        "missing": resigned(bundle, entries=entries[:3] + entries[4:]),
        "duplicate": resigned(bundle, entries=[*entries, entries[-1]]),
        "bad_period": resigned(bundle, to_seq=body["to_seq"] + 1),
        "bad_genesis": resigned(bundle, community=bytes(32)),
        "malformed": resigned(bundle, format="troc-statement/2"),
    }
    for reason, data in cases.items():
        with pytest.raises(BundleError) as info:
            verify_bundle(data, now)
        assert info.value.reason == reason, (reason, str(info.value))
    # An entry its author never signed that way.
    forged = bytearray(entries[-1])
    forged[-1] ^= 1
    with pytest.raises(BundleError) as info:
        verify_bundle(resigned(bundle, entries=[*entries[:-1], bytes(forged)]), now)
    assert info.value.reason == "rejected"
    assert "bad_signature" in str(info.value)


def test_what_a_bundle_cannot_prove_in_an_optimistic_community() -> None:
    """docs/protocol.md §9.3: a member who shows the community one branch and
    a verifier another gets a bundle that verifies (a hidden fork cannot be
    excluded); a bundle from a node that knows both branches shows the fork."""
    a, b = key(0), key(1)
    community, hidden = World(a), World(a)  # one genesis: same founder, same clock
    for w in (community, hidden):
        w.join(a)
        w.join(b)
    paid = community.pay(a, b, 20)
    other = community.create(a, Offer(side="offer", title="hidden"), seq=paid.seq, prev=paid.prev)
    assert hidden.ingest(other).ok  # the member's second store: the other branch only
    c = community.community
    v = verify_bundle(build_bundle(hidden.ledger, a, c, other.ref, 1, hidden.now), hidden.now)
    assert (v.statement.closing, v.final, v.frozen_at) == (0, None, None)
    # A node holding both branches proves the fork, and its bundles carry it.
    assert community.ingest(other).fork
    bundle = build_bundle(community.ledger, a, c, other.ref, 1, community.now)
    v = verify_bundle(bundle, community.now)
    assert v.frozen_at == other.seq


def test_a_forked_branch_is_never_final_in_a_witnessed_community() -> None:
    w = witnessed_world()
    a, b = key(0), key(1)
    w.join(a)
    w.join(b)
    certified = w.pay(a, b, 5)
    w.certifier = None
    branch = w.create(a, Transfer(to=b.public, amount=7), seq=certified.seq, prev=certified.prev)
    assert w.ingest(branch).fork
    c = w.community
    v = verify_bundle(build_bundle(w.ledger, a, c, branch.ref, 1, w.now), w.now)
    assert (v.final, v.final_seq, v.frozen_at) == (False, certified.seq - 1, certified.seq)
    v = verify_bundle(build_bundle(w.ledger, a, c, certified.ref, 1, w.now), w.now)
    assert (v.final, v.final_seq) == (True, certified.seq)
