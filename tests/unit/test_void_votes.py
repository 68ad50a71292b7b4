"""Void votes (docs/witness.md §3.6), the witness's rules one at a time: an
accept and a take-back of one transfer race; the loser gets a void vote
only from a witness holding the winner's certificate, locks its position
exactly as a vote does, never gets a normal vote afterwards, and spends
nothing; the loser's author's later entries get votes again."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import World, key
from tests.property.test_witness import WKEYS, WitnessNode, certify
from troc.errors import CodecError, LocalProtocolError
from troc.protocol.entry import Entry
from troc.protocol.witness import (
    CERTIFIED,
    NO_RIVAL,
    NOT_RACEABLE,
    VOID_OVERDRAFT,
    VOIDED,
    VOTED_TAKE_BACK,
    Certificate,
    Collector,
    Refused,
    Tally,
    VoidCertificate,
    VoidVote,
    Vote,
    Voted,
    VoteRequest,
    Waiting,
    WitnessRules,
    decode_answer,
    decode_request,
    default_quorum,
    encode_answer,
    encode_request,
)

P, Q = key(1), key(2)


class Race:
    """P pays Q 10, expiring; P takes it back after expiry and Q accepts it
    late: both entries are valid on their own logs."""

    def __init__(self, credit_limit: int = 100) -> None:
        f, q = default_quorum(4)
        self.world = w = World(
            credit_limit=credit_limit,
            finality="witnessed",
            witnesses=tuple(sorted(k.public for k in WKEYS[:4])),
            faults=f,
            quorum=q,
        )
        self.rules = rules = WitnessRules.from_genesis(w.genesis)
        w.certifier = lambda e: certify(rules, e).encode()
        self.j1, self.j2 = w.join(P), w.join(Q)
        self.t = w.pay(P, Q, 10, expires_ms=w.now + 500)
        self.k = w.take_back(P, self.t)  # a tick (1 s) later: expired
        self.a = w.accept(Q, self.t)

    def witness(self, i: int) -> WitnessNode:
        return WitnessNode(self.world, self.rules, WKEYS[i])

    def deps(self) -> list[Entry]:
        return [self.j1, self.j2, self.t]

    def void(self, node: WitnessNode, entry: Entry, certs: list[Certificate]) -> object:
        request = VoteRequest(
            entry.wire,
            tuple(e.wire for e in [*self.deps(), self.k, self.a]),
            tuple(c.encode() for c in certs),
            void=True,
        )
        return node.state.handle(decode_request(encode_request(request)))

    def void_certificate(self, entry: Entry) -> Certificate:
        c = self.world.community
        return VoidCertificate.from_votes(
            VoidVote.sign(k, c, entry.ref) for k in WKEYS[: self.rules.quorum]
        )


def void_voted(answer: object) -> VoidVote:
    assert isinstance(answer, Voted), answer
    assert isinstance(answer.vote, VoidVote)
    assert answer.vote.verify()
    return answer.vote


def test_a_void_vote_needs_the_rivals_certificate() -> None:
    race = Race()
    w = race.witness(0)
    tcert = certify(race.rules, race.t)
    assert isinstance(w.ask(race.k, deps=race.deps()), Voted)  # the take-back wins here
    answer = w.ask(race.a, certs=[tcert])
    assert isinstance(answer, Refused)
    assert answer.reason == VOTED_TAKE_BACK
    # No certificate of the take-back: no void vote, nothing marked.
    assert race.void(w, race.a, [tcert]) == Waiting(certificates=(race.k.ref,))
    assert w.votes.voids(race.world.community, Q.public) == {}
    # With it: a void vote, and the accept's position is locked to it.
    vote = void_voted(race.void(w, race.a, [tcert, certify(race.rules, race.k)]))
    assert vote.ref == race.a.ref
    assert w.votes.get(race.world.community, Q.public, race.a.seq) == race.a.id
    assert w.votes.voids(race.world.community, Q.public) == {race.a.seq: race.a.id}
    # Asked again: the same bytes (Ed25519 is deterministic).
    assert void_voted(race.void(w, race.a, [])) == vote


def test_a_rival_the_witness_cannot_store_yet_is_waited_for() -> None:
    """The take-back lost: the accept is certified. A witness that never saw
    the accept lacks its transfer's certificate, so it parks the accept the
    void request carries: it names that certificate (a wait), not
    ``no_certified_rival``, which told the payer nothing to send and stopped
    its log (docs/witness.md §3.6, step 3); given it, the void vote."""
    race = Race()
    c = race.world.community
    w = race.witness(3)
    acert, tcert = certify(race.rules, race.a), certify(race.rules, race.t)
    alone = VoteRequest(
        race.k.wire, tuple(e.wire for e in [*race.deps(), race.k]), (acert.encode(),), void=True
    )
    refused = w.state.handle(alone)  # no rival carried, none held: nothing to wait for
    assert isinstance(refused, Refused)
    assert refused.reason == NO_RIVAL
    assert race.void(w, race.k, [acert]) == Waiting(certificates=(race.t.ref,))
    assert w.votes.voids(c, P.public) == {}
    vote = void_voted(race.void(w, race.k, [tcert]))
    assert vote.ref == race.k.ref
    assert w.votes.voids(c, P.public) == {race.k.seq: race.k.id}


def test_no_normal_vote_after_a_void_one() -> None:
    race = Race()
    w = race.witness(1)
    kcert, tcert = certify(race.rules, race.k), certify(race.rules, race.t)
    void_voted(race.void(w, race.a, [tcert, kcert]))
    answer = w.ask(race.a)
    assert isinstance(answer, Refused)
    assert answer.reason == VOIDED
    w.restart()  # the mark is in the (durable) vote log, not in the process
    answer = w.ask(race.a)
    assert isinstance(answer, Refused)
    assert answer.reason == VOIDED
    with pytest.raises(LocalProtocolError):
        w.state._sign(race.a.ref)  # the one signing place refuses too


def test_a_void_vote_after_a_normal_vote_for_the_same_id() -> None:
    """A witness that voted for the accept before the take-back was
    certified elsewhere gives it a void vote too, then no more normal votes."""
    race = Race()
    w = race.witness(2)
    tcert, kcert = certify(race.rules, race.t), certify(race.rules, race.k)
    normal = w.ask(race.a, deps=race.deps(), certs=[tcert])
    assert isinstance(normal, Voted)
    assert not isinstance(normal.vote, VoidVote)
    void_voted(race.void(w, race.a, [kcert]))
    answer = w.ask(race.a)
    assert isinstance(answer, Refused)
    assert answer.reason == VOIDED


def test_a_certified_entry_or_a_transfer_is_never_void() -> None:
    race = Race()
    w = race.witness(0)
    kcert, tcert = certify(race.rules, race.k), certify(race.rules, race.t)
    answer = race.void(w, race.t, [kcert])
    assert isinstance(answer, Refused)
    assert answer.reason == NOT_RACEABLE
    # More than f liars could certify both: a witness holding the accept's
    # certificate still refuses it a void vote.
    answer = race.void(w, race.a, [tcert, kcert, certify(race.rules, race.a)])
    assert isinstance(answer, Refused)
    assert answer.reason == CERTIFIED


def test_the_losers_log_goes_on() -> None:
    """Q's accept lost; Q then pays P: a witness that never saw the race
    locks the accept with its void certificate (and marks it void), one that
    gave it a void vote votes at once, and a quorum forms."""
    race = Race()
    world, rules = race.world, race.rules
    pay = world.pay(Q, P, 3)
    tcert, kcert = certify(rules, race.t), certify(rules, race.k)
    voidcert = race.void_certificate(race.a)
    assert voidcert.verify(rules)
    fresh = race.witness(0)
    # Without either certificate of the accept: its race is not settled here.
    answer = fresh.ask(pay, deps=[*race.deps(), race.a], certs=[tcert])
    assert answer == Waiting(certificates=(race.a.ref,))
    voted = fresh.ask(pay, deps=[*race.deps(), race.a], certs=[tcert, voidcert])
    assert isinstance(voted, Voted)
    assert not isinstance(voted.vote, VoidVote)
    assert fresh.votes.voids(world.community, Q.public) == {race.a.seq: race.a.id}
    refused = fresh.ask(race.a)
    assert isinstance(refused, Refused)
    assert refused.reason == VOIDED
    # The witnesses that gave void votes vote for the payment as it is.
    collector = Collector.for_entry(rules, pay)
    collector.add(voted.vote)
    for i in (1, 2):
        w = race.witness(i)
        void_voted(race.void(w, race.a, [tcert, kcert]))
        assert collector.add_answer(w.ask(pay), WKEYS[i].public) is Tally.COUNTED
    assert collector.certificate is not None
    assert collector.certificate.verify(rules)


def test_void_credit_is_not_spent() -> None:
    """The void accept credited Q 10 on its log; a payment that needs those
    10 is refused by a witness that knows the accept is void."""
    race = Race(credit_limit=100)
    world, rules = race.world, race.rules
    spend = world.pay(Q, P, 105)  # nominal -95: valid on the log; -105 without the void 10
    w = race.witness(0)
    void_voted(race.void(w, race.a, [certify(rules, race.t), certify(rules, race.k)]))
    answer = w.ask(spend)
    assert isinstance(answer, Refused)
    assert answer.reason == VOID_OVERDRAFT
    fine = Race(credit_limit=100)
    spend = fine.world.pay(Q, P, 95)
    w = fine.witness(0)
    void_voted(fine.void(w, fine.a, [certify(rules, fine.t), certify(rules, fine.k)]))
    assert isinstance(w.ask(spend), Voted)


def test_void_votes_and_certificates_are_their_own_kind() -> None:
    race = Race()
    c = race.world.community
    void = VoidVote.sign(WKEYS[0], c, race.a.ref)
    normal = Vote.sign(WKEYS[0], c, race.a.ref)
    assert void.signature != normal.signature  # another domain
    assert Vote.decode(void.encode()) == void
    assert Vote.decode(normal.encode()) == normal
    with pytest.raises(CodecError):
        VoidVote.decode(normal.encode())
    # A void vote never counts towards a certificate, nor a vote towards a void one.
    assert Collector.for_entry(race.rules, race.a).add(void) is Tally.ELSEWHERE
    assert Collector.for_entry(race.rules, race.a, void=True).add(normal) is Tally.ELSEWHERE
    cert = race.void_certificate(race.a)
    with pytest.raises(CodecError):
        Certificate.decode(cert.encode())  # every reader of certificates refuses it
    with pytest.raises(CodecError):
        VoidCertificate.decode(certify(race.rules, race.a).encode())
    assert decode_answer(encode_answer(Voted(void))) == Voted(void)
    # A void certificate's signatures must be void votes: the normal ones, relabelled, fail.
    normal_cert = certify(race.rules, race.a)
    relabelled = VoidCertificate(c, Q.public, race.a.seq, race.a.id, normal_cert.votes)
    assert relabelled.problem(race.rules) is not None


def test_void_marks_last_in_the_store_and_a_format_5_store_is_migrated(tmp_path: Path) -> None:
    """The node's vote log keeps void marks durably (store format 6); a
    format 5 store, which has no void_votes table, gets one."""
    import sqlite3

    from troc.node.store import SCHEMA_VERSION, Store

    race = Race()
    c, eid = race.world.community, race.a.id
    path = tmp_path / "store.sqlite"
    with Store.open(path) as store, store.transaction(durable=True):
        store.put_void_vote(c, Q.public, 2, eid)
        store.put_void_vote(c, Q.public, 2, eid)  # again: changes nothing
    with Store.open(path) as store:
        assert store.void_votes(c, Q.public) == {2: eid}
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE void_votes")
    conn.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with Store.open(path) as store:
        assert store.get_meta("schema_version") == str(SCHEMA_VERSION) == "8"
        assert store.void_votes(c, Q.public) == {}
        with store.transaction():
            store.put_void_vote(c, Q.public, 2, eid)
        assert store.void_votes(c, Q.public) == {2: eid}


def test_an_upgraded_witness_asks_for_an_old_race_and_votes_it_again() -> None:
    """A witness's vote log from before void votes: Q's accept was locked
    under Q's later payment, with no certificate of its own. Asked for Q's
    next entry, the witness asks for the accept's certificate; asked for the
    accept itself it votes at once (it recorded it), and the certificate
    that makes settles it (what the author's node does: Certifier._own_races)."""
    race = Race()
    world, rules = race.world, race.rules
    paid = world.pay(Q, P, 1)
    later = world.pay(Q, P, 1)
    w = race.witness(3)
    for e in [*race.deps(), race.a, paid]:
        w.ledger.ingest(e.wire, world.now)
    w.ledger.ingest_certificate(certify(rules, race.t).encode(), world.now)
    c = world.community
    w.votes.put(
        c, Q.public, [(race.j2.seq, race.j2.id), (race.a.seq, race.a.id), (paid.seq, paid.id)]
    )
    assert w.ask(later) == Waiting(certificates=(race.a.ref,))
    again = w.ask(race.a)
    assert isinstance(again, Voted)
    assert not isinstance(again.vote, VoidVote)
    assert isinstance(w.ask(later, certs=[certify(rules, race.a)]), Voted)
