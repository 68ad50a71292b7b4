"""Anti-entropy carries certificates (docs/sync.md, docs/witness.md §6.2).

Real :class:`~troc.protocol.sync.SyncSession` pairs over the in-memory
stream of :func:`troc.protocol.sim.sync_pair`, on nodes that are ledgers over
memory. A node that was offline catches up on finality, not only on entries:

* two nodes with the same entries but not the same certificates sync, and
  end with the same final tips, balances and digest;
* an accept parked for its transfer's certificate is released by a sync;
* a peer that sends a certificate that does not verify is flagged, while a
  witness fault (two certified ids at one position) is not the peer's doing;
* an optimistic community's sessions cost what they did;
* whatever entries and certificates two nodes hold, a few sessions make
  their heads, final tips and balances equal to those of a node that holds
  everything either held.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import WITNESS_KEYS, World, certify, key, witnessed_world
from troc.crypto.sign import MemberId, SigningKey
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import Entry, Transfer
from troc.protocol.ledger import Ledger
from troc.protocol.sim import MemoryView, PairResult, sync_pair
from troc.protocol.sync_wire import Finals, decode_message

WKEYS = WITNESS_KEYS


def node(w: World, entries: Iterable[Entry] = (), certs: Iterable[bytes] = ()) -> MemoryView:
    """A fresh node of ``w``'s community holding what it is given (entries
    whose dependencies are missing wait, as they would)."""
    ledger = Ledger(MemoryBackend())
    assert ledger.ingest(w.genesis.wire, w.now).ok
    for e in entries:
        ledger.ingest(e.wire, w.now)
    for c in certs:
        ledger.ingest_certificate(c, w.now)
    return MemoryView(ledger, w.community, lambda: w.now)


def tips(view: MemoryView) -> dict[MemberId, int]:
    return {a: seq for a, (seq, _c) in view.finals(view.community).items()}


def final_state(view: MemoryView) -> Any:
    backend = view.ledger.backend
    return (
        view.heads(view.community),
        {a: (h.final_seq, h.final_id) for a, h in backend.heads(view.community)},
        view.balances(),
    )


def kinds(result: PairResult, *, from_initiator: bool) -> list[str]:
    return [str(decode_message(f)["t"]) for ini, f in result.frames if ini == from_initiator]


class Payment:
    """a pays b 30, b accepts; b pays a 5, a declines, b reclaims."""

    def __init__(self) -> None:
        self.w = witnessed_world()
        self.a, self.b = key(1), key(2)
        self.j1, self.j2 = self.w.join(self.a), self.w.join(self.b)
        self.t = self.w.pay(self.a, self.b, 30)
        self.acc = self.w.accept(self.b, self.t)
        self.t2 = self.w.pay(self.b, self.a, 5)
        self.d = self.w.decline(self.a, self.t2)
        self.r = self.w.reclaim(self.b, self.d)
        self.entries = [self.j1, self.j2, self.t, self.acc, self.t2, self.d, self.r]


# -- (1) the same entries, not the same certificates ---------------------------------


def test_same_entries_different_certificates_sync() -> None:
    p = Payment()
    final = node(p.w, p.entries, [certify(e) for e in p.entries])
    bare = node(p.w, p.entries)
    # The bare node holds the accept and the reclaim parked: not final.
    assert bare.balances() == {p.a.public: 0, p.b.public: 0}
    assert final.balances() == {p.a.public: -30, p.b.public: 30}
    assert bare.digest() != final.digest()
    for bare_starts in (True, False):
        bare = node(p.w, p.entries)
        result = sync_pair(bare, final) if bare_starts else sync_pair(final, bare)
        assert result.done
        got = result.initiator if bare_starts else result.responder
        assert got.misbehaviour is None
        # One per author (the final tips), and the transfer's, which the
        # streamed accept needs, ahead of it (the payer's tip, its decline
        # of t2, would be held up by the accept until the transfer is final).
        assert got.stats.certificates_received == 3
        assert got.stats.certificates_accepted == 3
        assert got.stats.accepted == 4  # released: acc, t2, d, r
        assert final_state(bare) == final_state(final)
        assert tips(bare) == {p.a.public: 3, p.b.public: 4}
        assert bare.digest() == final.digest()
        assert sync_pair(bare, final).kinds() == ["hello", "same"]


def test_the_final_tips_and_what_the_stream_needs_travel() -> None:
    """One certificate per author makes its whole chain final; ahead of the
    entries go those their accepts and reclaims need (docs/sync.md,
    "Certificates"), so nothing waits for the end; each one once."""
    p = Payment()
    final = node(p.w, p.entries, [certify(e) for e in p.entries])
    behind = node(p.w, p.entries[:3], [certify(p.j1)])
    result = sync_pair(final, behind)
    sent = [decode_message(f) for ini, f in result.frames if ini and not decode_message(f).get("r")]
    order = [m["t"] for m in sent]
    first, last = order.index("entries"), len(order) - 1 - order[::-1].index("entries")
    ahead = [c for m in sent[:first] if m["t"] == "certs" for c in m["k"]]
    tips_after = [c for m in sent[last:] if m["t"] == "certs" for c in m["k"]]
    # The accept needs the transfer's, the reclaim the decline's (a's tip:
    # not sent again); then b's tip, after the entries and before the end.
    assert sorted(ahead) == sorted([certify(p.t), certify(p.d)])
    assert tips_after == [certify(p.r)]
    assert order.index("end") > last + 1
    assert result.responder.stats.certificates_accepted == 3
    assert not any(m["t"] == "want" for m in map(decode_message, (f for _i, f in result.frames)))
    assert final_state(behind) == final_state(final)


def test_the_initiator_sends_what_the_responders_entries_made_final() -> None:
    """A certificate held alone (its entry missing) moves the final tip when
    the responder streams the entry; the initiator then sends it on."""
    p = Payment()
    ini = node(p.w, p.entries[:3], [certify(p.t)])
    res = node(p.w, p.entries)
    assert tips(ini) == {p.a.public: 2}
    assert tips(res) == {}
    result = sync_pair(ini, res)
    assert result.done
    assert tips(ini) == {p.a.public: 2}
    assert tips(res) == {p.a.public: 2}
    assert result.initiator.stats.certificates_sent == 1


# -- (2) a parked accept is released -------------------------------------------------


def test_a_parked_accept_is_released_by_a_sync() -> None:
    p = Payment()
    for payee_starts in (True, False):
        payee = node(p.w, [p.j1, p.j2, p.t, p.acc])
        assert payee.ledger.backend.head(p.w.community, p.b.public).seq == 1  # acc waits
        payer = node(p.w, [p.j1, p.j2, p.t], [certify(p.t)])
        result = sync_pair(payee, payer) if payee_starts else sync_pair(payer, payee)
        assert result.done
        got = result.initiator if payee_starts else result.responder
        assert got.stats.certificates_accepted == 1
        assert got.stats.accepted == 1  # the accept, released
        assert payee.holds(p.acc.ref)
        assert payee.ledger.is_final(p.w.community, p.t.ref)
        assert payee.balances()[p.a.public] == -30
        assert payee.ledger.backend.waiting_count() == 0  # type: ignore[attr-defined]
        # The payer gets the accept in the next session (heads are read
        # when a session starts).
        sync_pair(payer, payee)
        assert payer.holds(p.acc.ref)
        assert final_state(payer) == final_state(payee)


# -- (3) misbehaviour ------------------------------------------------------------------


class Liar(MemoryView):
    """Announces a final tip and sends ``cert`` as its certificate."""

    def __init__(self, view: MemoryView, author: MemberId, seq: int, cert: bytes) -> None:
        super().__init__(view.ledger, view.community, view.clock)
        self.lie = (author, seq, cert)

    def finals(self, community: Any) -> Finals:
        author, seq, cert = self.lie
        return {**super().finals(community), author: (seq, cert)}


def _lied_to(p: Payment, cert: bytes, *, liar_starts: bool) -> tuple[MemoryView, PairResult]:
    honest = node(p.w, [p.j1, p.j2, p.t])
    liar = Liar(node(p.w, [p.j1, p.j2, p.t]), p.a.public, 2, cert)
    result = sync_pair(liar, honest) if liar_starts else sync_pair(honest, liar)
    return honest, result


def test_a_certificate_that_does_not_verify_flags_the_peer() -> None:
    p = Payment()
    optimistic = World()
    other_community = optimistic.join(key(1))
    bad = {
        "too few votes": certify(p.t, WKEYS[:2]),
        "an outsider's vote": certify(p.t, [*WKEYS[:2], key(9)]),
        "not a certificate": b"\x93garbage",
        "another community": certify(other_community),
    }
    for what, cert in bad.items():
        for liar_starts in (True, False):
            honest, result = _lied_to(p, cert, liar_starts=liar_starts)
            session = result.responder if liar_starts else result.initiator
            assert session.misbehaviour is not None, what
            assert "invalid certificate" in session.misbehaviour, what
            assert sum(session.stats.certificates_rejected.values()) == 1, what
            assert not honest.ledger.is_final(p.w.community, p.t.ref), what


def test_a_valid_certificate_from_a_peer_is_not_misbehaviour() -> None:
    p = Payment()
    honest, result = _lied_to(p, certify(p.t), liar_starts=True)
    assert result.responder.misbehaviour is None
    assert honest.ledger.is_final(p.w.community, p.t.ref)


def test_a_witness_fault_is_not_the_peers_fault() -> None:
    """Two valid certificates for different entries at one position mean
    more than f witnesses lied; the peer that relays one is honest."""
    w = witnessed_world()
    a = key(1)
    j = w.join(a)
    t1 = w.pay(a, key(2), 10)
    t2 = w.create(
        a, Transfer(to=key(3).public, amount=10), seq=2, prev=j.id
    )  # a fork: another entry at seq 2
    # x holds t1's certificate without t1; y holds t2, certified by others.
    x = node(w, [j], [certify(j), certify(t1)])
    y = node(w, [j, t2], [certify(j), certify(t2, WKEYS[1:])])
    for _ in range(2):  # the fault is recorded the first time only
        result = sync_pair(x, y)
        assert result.done
        assert result.initiator.misbehaviour is None
        assert result.initiator.stats.certificates_rejected == {"bad_certificate": 1}
    backend = x.ledger.backend
    assert isinstance(backend, MemoryBackend)
    assert list(backend.witness_faults) == [(w.community, a.public, 2)]


# -- (4) optimistic communities ----------------------------------------------------------


def test_an_optimistic_community_costs_what_it_did() -> None:
    w = World()
    a, b = key(1), key(2)
    entries = [w.join(a), w.join(b)]
    t = w.pay(a, b, 10)
    entries += [t, w.accept(b, t)]
    one, two = node(w, entries), node(w, entries)
    assert one.finals(w.community) == {}
    result = sync_pair(one, two)
    assert result.kinds() == ["hello", "same"]
    assert result.bytes_exchanged < 300, result.bytes_exchanged
    behind = node(w, entries[:2])
    result = sync_pair(behind, one)
    assert "certs" not in result.kinds()
    heads = [decode_message(f) for _, f in result.frames if decode_message(f)["t"] == "heads"]
    assert heads
    assert all("k" not in m for m in heads)
    assert final_state(behind) == final_state(one)


# -- (5) any subsets of entries and certificates -----------------------------------------


@cache
def rich_history() -> tuple[World, tuple[Entry, ...]]:
    """Four members paying, accepting, declining and reclaiming, everything
    certified on the world's ledger (built once)."""
    w = witnessed_world(credit_limit=1_000)
    rng = random.Random(7)
    members = [key(i) for i in range(1, 5)]
    for m in members:
        w.join(m)
    open_: list[Entry] = []  # transfers not answered yet
    declined: list[tuple[SigningKey, Entry]] = []  # (payer, decline)
    for _ in range(30):
        roll = rng.random()
        if declined and roll < 0.15:
            payer, d = declined.pop(0)
            w.reclaim(payer, d)
        elif open_ and roll < 0.6:
            t = open_.pop(rng.randrange(len(open_)))
            assert isinstance(t.body, Transfer)
            payee = next(m for m in members if m.public == t.body.to)
            if rng.random() < 0.25:
                payer = next(m for m in members if m.public == t.author)
                declined.append((payer, w.decline(payee, t)))
            else:
                w.accept(payee, t)
        else:
            payer, payee = rng.sample(members, 2)
            open_.append(w.pay(payer, payee, rng.randint(1, 20)))
    return w, tuple(w.log)


@pytest.mark.parametrize("version", [2, 3], ids=["v2", "v3"])
@settings(max_examples=40, deadline=None)
@given(st.data())
def test_any_entries_and_certificates_converge(version: int, data: st.DataObject) -> None:
    w, log = rich_history()
    authors = sorted({e.author for e in log})
    by_author = {a: [e for e in log if e.author == a] for a in authors}

    def holding(label: str) -> tuple[list[Entry], list[bytes]]:
        # A node holds a prefix of each log (what it heard so far) and some
        # of the certificates (of entries it may not hold).
        prefix = {
            a: data.draw(st.integers(0, len(by_author[a])), label=f"{label} {a.hex()[:4]}")
            for a in authors
        }
        entries = [e for e in log if by_author[e.author].index(e) < prefix[e.author]]
        certified = data.draw(st.lists(st.sampled_from(log), unique=True), label=f"{label} certs")
        return entries, [certify(e) for e in certified]

    (ea, ca), (eb, cb) = holding("one"), holding("two")
    one, two = node(w, ea, ca), node(w, eb, cb)
    # What both would hold, had each got everything the other had.
    both = node(w, [e for e in log if e in ea or e in eb], [*ca, *cb])
    # Each session moves the entries each side held at its start; what the
    # other's entries and certificates released travels in the next. Held-up
    # chains (an accept waiting for a payer whose tip waits for ...) thus
    # take a few sessions; a node that holds everything it has as final
    # (below) brings another up to date in one.
    sessions = 0
    while one.digest() != two.digest():
        sessions += 1
        assert sessions <= 8, "no convergence"
        ini, res = (one, two) if sessions % 2 else (two, one)
        result = sync_pair(ini, res, version=version)
        assert result.done
        assert result.initiator.misbehaviour is None
        assert result.responder.misbehaviour is None
    assert final_state(one) == final_state(two) == final_state(both)
    assert tips(one) == tips(two)


@pytest.mark.parametrize("version", [2, 3], ids=["v2", "v3"])
def test_a_full_and_an_empty_node_converge_in_one_session(version: int) -> None:
    w, log = rich_history()
    full = node(w, log, [certify(e) for e in log])
    for empty_starts in (True, False):
        empty = node(w)
        ini, res = (empty, full) if empty_starts else (full, empty)
        result = sync_pair(ini, res, version=version)
        assert result.done
        assert final_state(empty) == final_state(full)
        assert empty.digest() == full.digest()
        got = result.initiator if empty_starts else result.responder
        # The final tips', then those that held-up accepts wait for.
        assert got.stats.certificates_received >= len({e.author for e in log})
        assert got.stats.accepted == got.stats.received == len(log)
        assert empty.ledger.backend.waiting_count() == 0  # type: ignore[attr-defined]
