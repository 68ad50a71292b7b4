"""Witnessed finality (troc.protocol.witness): each rule, then a simulation.

(a) Quorum arithmetic, the same as the genesis's check.
(b) Votes and certificates: wire form, strict decoding, what verifies.
(c) The witness: it votes only for valid entries, waits for what it lacks,
    never signs two ids at one (author, seq), not after a restart, not after
    a crash in the middle of writing its vote log, and locks the whole chain
    below each vote (a fork at an unvoted entry cannot spend twice).
(d) The collector: distinct valid votes up to the quorum; garbage,
    duplicates, outsiders and conflicting votes ignored; equivocation proven.
(e) A seeded simulation, hypothesis choosing the faults: n in {4, 7}, up to f
    byzantine witnesses that vote for anything and send garbage, a member
    that forks and asks different witnesses for different branches, message
    loss, duplication and delay, witness crashes (also while writing votes):
    never two certificates at one (author, seq), the certified entries of a
    log lie on one chain, nobody credits an uncertified transfer, balances
    over certified entries sum to 0, and every honest payment (and the
    payee's accept of it) becomes final once the network heals. With f + 1
    byzantine witnesses the same checks do find a double spend.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.helpers import World, fresh_ledger, key, make_genesis, pack_raw
from tests.strategies import mutated
from troc.crypto.sign import Domain, MemberId, SigningKey, verify
from troc.errors import CodecError, LocalProtocolError, RefusedError, RemoteProtocolError
from troc.protocol import codec
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import (
    Accept,
    CommunityId,
    Decline,
    Entry,
    EntryId,
    Genesis,
    Join,
    Offer,
    Reclaim,
    Ref,
    TakeBack,
    Transfer,
    expiry_of,
)
from troc.protocol.ledger import Ledger, Status
from troc.protocol.witness import (
    LIES,
    MAX_CERTIFICATES,
    MAX_DEPS,
    MESSAGE_LIMITS,
    Answer,
    Certificate,
    Collector,
    Conflicting,
    Equivocation,
    LedgerView,
    MemoryVoteLog,
    Position,
    Refused,
    Tally,
    TimeAttestation,
    VoidVote,
    Vote,
    Voted,
    VoteRequest,
    Waiting,
    WitnessRules,
    WitnessState,
    certificate_needed,
    check_quorum,
    decode_answer,
    decode_request,
    default_quorum,
    encode_answer,
    encode_request,
    fork_proof_problem,
    max_faults,
    min_quorum,
    quorum_problem,
    vote_message,
)
from troc.protocol.witness_time import deadline_of

EXAMPLES = settings().max_examples
#: Witness keys for the unit tests (members are key(0) … key(9)).
WKEYS = [key(200 + i) for i in range(7)]


# -- a witnessed community, its witnesses, helpers --------------------------------


def witnessed_world(n: int = 4, credit_limit: int = 100) -> tuple[World, WitnessRules]:
    f, q = default_quorum(n)
    world = World(
        credit_limit=credit_limit,
        finality="witnessed",
        witnesses=tuple(sorted(k.public for k in WKEYS[:n])),
        faults=f,
        quorum=q,
    )
    rules = WitnessRules.from_genesis(world.genesis)
    # The world's own ledger makes the entries tests ask witnesses about,
    # accepts of uncertified transfers too: it certifies all it makes.
    world.certifier = lambda e: certify(rules, e).encode()
    return world, rules


class WitnessNode:
    """One witness: its own ledger (durable), vote log (durable) and state."""

    def __init__(
        self, world: World, rules: WitnessRules, k: SigningKey, votes: MemoryVoteLog | None = None
    ) -> None:
        self.world, self.rules, self.key = world, rules, k
        self.ledger = fresh_ledger(world.genesis)
        self.view = LedgerView(self.ledger, lambda: world.now)
        self.votes = MemoryVoteLog() if votes is None else votes
        self.state = WitnessState(k, rules, self.votes, self.view)

    def ask(
        self, entry: Entry | bytes, deps: Iterable[Entry] = (), certs: Iterable[Certificate] = ()
    ) -> Answer:
        wire = entry.wire if isinstance(entry, Entry) else entry
        return self.state.handle(
            VoteRequest(wire, tuple(d.wire for d in deps), tuple(c.encode() for c in certs))
        )

    def restart(self, *, lose_store: bool = False) -> None:
        """A new process on the same vote log (and, unless ``lose_store``,
        the same ledger)."""
        if lose_store:
            self.ledger = fresh_ledger(self.world.genesis)
            self.view = LedgerView(self.ledger, lambda: self.world.now)
        self.state = WitnessState(self.key, self.rules, self.votes, self.view)


def below(world: World, entry: Entry) -> list[Entry]:
    """Everything the world stored before ``entry`` (what a payer would send along)."""
    return [e for e in world.log if e.id != entry.id and e.timestamp_ms <= entry.timestamp_ms]


def certify(
    rules: WitnessRules, entry: Entry, signers: Iterable[SigningKey] | None = None
) -> Certificate:
    assert entry.community is not None
    keys = list(signers) if signers is not None else WKEYS[: rules.quorum]
    return Certificate.from_votes(Vote.sign(k, entry.community, entry.ref) for k in keys)


def voted(answer: Answer) -> Vote:
    assert isinstance(answer, Voted), answer
    assert answer.vote.verify()
    return answer.vote


# -- (a) quorum arithmetic -----------------------------------------------------------


def test_default_quorum_is_2f_plus_1_of_3f_plus_1() -> None:
    for f in range(6):
        assert max_faults(3 * f + 1) == f
        assert default_quorum(3 * f + 1) == (f, 2 * f + 1)
    assert max_faults(1) == 0
    assert max_faults(6) == 1  # n = 6 tolerates no more than n = 4
    assert default_quorum(6) == (1, 4)
    assert default_quorum(7, faults=1) == (1, 5)
    assert min_quorum(7, 2) == 5


@pytest.mark.parametrize(
    ("n", "f", "q", "ok"),
    [
        (1, 0, 1, True),  # one witness: a notary
        (4, 1, 3, True),
        (4, 1, 2, False),  # two quorums of 2 of 4 may share no honest witness
        (4, 1, 4, False),  # one witness down stops payments
        (4, 0, 4, True),
        (4, 0, 2, False),  # 2 + 2 = 4: two disjoint quorums
        (3, 1, 2, False),  # n = 3 cannot tolerate a fault: no q works
        (3, 1, 3, False),
        (7, 2, 5, True),
        (7, 2, 4, False),
        (7, 1, 5, True),
        (7, 1, 6, True),
        (0, 0, 0, False),
        (65, 0, 65, False),
    ],
)
def test_quorum_edges(n: int, f: int, q: int, ok: bool) -> None:
    assert (quorum_problem(n, f, q) is None) == ok
    if not ok:
        with pytest.raises(LocalProtocolError):
            check_quorum(n, f, q)


def test_no_safe_and_live_quorum_is_refused_with_a_sentence() -> None:
    with pytest.raises(LocalProtocolError, match="not live"):
        default_quorum(3, faults=1)
    problem = quorum_problem(4, 1, 2)
    assert problem is not None
    assert "2q >= n+f+1" in problem
    assert "q >= 3" in problem


def test_quorum_rule_is_the_genesis_rule() -> None:
    """quorum_problem accepts exactly what Genesis (and so every node) accepts."""
    members = sorted(key(300 + i).public for i in range(9))
    for n in range(1, 10):
        for f in range(5):
            for q in range(11):
                try:
                    Genesis(
                        name="g",
                        unit="u",
                        credit_limit=1,
                        finality="witnessed",
                        witnesses=tuple(members[:n]),
                        faults=f,
                        quorum=q,
                    )._check()
                    genesis_ok = True
                except CodecError:
                    genesis_ok = False
                assert (quorum_problem(n, f, q) is None) == genesis_ok, (n, f, q)


def test_rules_come_from_a_witnessed_genesis_only() -> None:
    world, rules = witnessed_world(4)
    assert rules.community == world.community
    assert rules.witnesses == frozenset(k.public for k in WKEYS[:4])
    assert (rules.faults, rules.quorum) == (1, 3)
    with pytest.raises(LocalProtocolError, match="optimistic"):
        WitnessRules.from_genesis(make_genesis(key(0)))
    with pytest.raises(LocalProtocolError):
        WitnessRules(world.community, frozenset(k.public for k in WKEYS[:4]), 1, 2)


# -- (b) votes and certificates -------------------------------------------------------


def test_vote_signs_the_canonical_array_in_the_vote_domain() -> None:
    world, _rules = witnessed_world()
    world.join(key(1))
    t = world.pay(key(1), key(2), 5)
    vote = Vote.sign(WKEYS[0], world.community, t.ref)
    message = vote_message(world.community, t.author, t.seq, t.id)
    assert message == codec.pack([world.community, t.author, t.seq, t.id])
    assert message[:3] == bytes.fromhex("94c420")  # fixarray 4, bin8 of 32
    assert verify(Domain.VOTE, WKEYS[0].public, message, vote.signature)
    assert not verify(Domain.ENTRY, WKEYS[0].public, message, vote.signature)
    data = vote.encode()
    assert data[0] == 0x96
    assert len(data) < 256
    assert Vote.decode(data) == vote
    assert vote.verify()
    assert Vote.sign(WKEYS[0], world.community, t.ref) == vote  # deterministic


def test_a_vote_verifies_for_exactly_what_it_says() -> None:
    world, _rules = witnessed_world()
    c = world.community
    ref = Ref(key(1).public, 3, EntryId(b"\x01" * 32))
    vote = Vote.sign(WKEYS[0], c, ref)
    other = bytes(31) + b"\x02"
    for changed in (
        Vote(CommunityId(other), vote.author, vote.seq, vote.id, vote.witness, vote.signature),
        Vote(c, key(2).public, vote.seq, vote.id, vote.witness, vote.signature),
        Vote(c, vote.author, 4, vote.id, vote.witness, vote.signature),
        Vote(c, vote.author, vote.seq, EntryId(other), vote.witness, vote.signature),
        Vote(c, vote.author, vote.seq, vote.id, WKEYS[1].public, vote.signature),
        Vote(c, vote.author, vote.seq, vote.id, vote.witness, bytes(64)),
    ):
        assert not changed.verify()
    # The same bytes signed for another purpose are no vote.
    entry_domain = WKEYS[0].sign(Domain.ENTRY, vote_message(c, ref.author, ref.seq, ref.id))
    assert not Vote(c, ref.author, ref.seq, ref.id, WKEYS[0].public, entry_domain).verify()


def _vote_fields() -> list[Any]:
    ref = Ref(key(1).public, 3, EntryId(b"\x01" * 32))
    return Vote.sign(WKEYS[0], CommunityId(b"\x07" * 32), ref).to_wire()


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda v: v[:5], "bad_shape"),
        (lambda v: [*v, 1], "bad_shape"),
        (lambda v: [v[0][:31], *v[1:]], "bad_shape"),
        (lambda v: [v[0], b"\x01" + bytes(31), *v[2:]], "bad_member"),  # the identity point
        (lambda v: [*v[:2], 0, *v[3:]], "bad_shape"),
        (lambda v: [*v[:2], True, *v[3:]], "bad_shape"),
        (lambda v: [*v[:2], 2**53, *v[3:]], "bad_shape"),
        (lambda v: [*v[:2], "3", *v[3:]], "bad_shape"),
        (lambda v: [*v[:4], bytes(32), v[5]], "bad_member"),
        (lambda v: [*v[:5], v[5][:63]], "bad_shape"),
        (lambda v: {"v": v[0]}, "bad_shape"),
    ],
)
def test_vote_decode_is_strict(edit: Callable[[list[Any]], Any], reason: str) -> None:
    with pytest.raises(CodecError) as info:
        Vote.decode(pack_raw(edit(_vote_fields())))
    assert info.value.reason == reason


def test_vote_decode_refuses_non_canonical_bytes() -> None:
    fields = _vote_fields()
    good = pack_raw(fields)
    assert Vote.decode(good).to_wire() == fields
    wide = bytes([0xDC, 0x00, 0x06]) + good[1:]  # array16 header for 6 items
    with pytest.raises(CodecError) as info:
        Vote.decode(wide)
    assert info.value.reason == "non_canonical"
    with pytest.raises(CodecError) as info:
        Vote.decode(good + b"\x00")
    assert info.value.reason == "trailing_bytes"


def test_certificate_verifies_with_a_quorum_of_distinct_witnesses() -> None:
    world, rules = witnessed_world(4)
    world.join(key(1))
    t = world.pay(key(1), key(2), 5)
    cert = certify(rules, t)
    assert cert.verify(rules), cert.problem(rules)
    assert cert.certifies(t)
    assert cert.ref == t.ref
    assert list(cert.witnesses) == sorted(cert.witnesses)
    assert Certificate.decode(cert.encode()) == cert
    assert [v.verify() for v in cert.vote_list()] == [True] * 3
    assert certify(rules, t, WKEYS[:4]).verify(rules)  # more than q is fine
    assert not cert.certifies(world.join(key(2)))


def test_certificate_rejects_what_is_not_a_quorum() -> None:
    world, rules = witnessed_world(4)
    world.join(key(1))
    t = world.pay(key(1), key(2), 5)
    u = world.pay(key(1), key(2), 6)
    c = world.community
    good = certify(rules, t)
    a, s, i = t.author, t.seq, t.id

    def cert(votes: list[tuple[MemberId, bytes]]) -> Certificate:
        return Certificate(c, a, s, i, tuple(votes))

    sig = {k.public: Vote.sign(k, c, t.ref).signature for k in WKEYS}
    w = [k.public for k in WKEYS]
    too_few = certify(rules, t, WKEYS[:2])
    assert "quorum is 3" in (too_few.problem(rules) or "")
    duplicate = cert([(w[0], sig[w[0]]), (w[0], sig[w[0]]), (w[1], sig[w[1]])])
    assert "twice" in (duplicate.problem(rules) or "")
    outsider = certify(rules, t, [WKEYS[0], WKEYS[1], WKEYS[5]])  # key 5 is no witness here
    assert "not a witness" in (outsider.problem(rules) or "")
    forged = cert([(w[0], sig[w[0]]), (w[1], sig[w[1]]), (w[2], bytes(64))])
    assert "does not verify" in (forged.problem(rules) or "")
    other_entry = Vote.sign(WKEYS[2], c, u.ref).signature  # a real vote, for u
    wrong_entry = cert([(w[0], sig[w[0]]), (w[1], sig[w[1]]), (w[2], other_entry)])
    assert "does not verify" in (wrong_entry.problem(rules) or "")
    # The same votes do not certify another entry at the same position.
    moved = Certificate(c, a, s, u.id, good.votes)
    assert not moved.verify(rules)
    other_world, other_rules = witnessed_world(4, credit_limit=7)
    assert "another community" in (good.problem(other_rules) or "")
    with pytest.raises(LocalProtocolError):
        Certificate.from_votes([Vote.sign(WKEYS[0], c, t.ref), Vote.sign(WKEYS[1], c, u.ref)])
    with pytest.raises(LocalProtocolError):
        Certificate.from_votes([])
    assert other_world.community != c


def test_certificate_decode_is_strict() -> None:
    world, rules = witnessed_world(4)
    world.join(key(1))
    t = world.pay(key(1), key(2), 5)
    wire = certify(rules, t).to_wire()
    pairs = wire[4]
    for bad in (
        [*wire[:4], list(reversed(pairs))],  # unsorted
        [*wire[:4], [pairs[0], pairs[0], pairs[1]]],  # a witness twice
        [*wire[:4], []],
        [*wire[:4], [[pairs[0][0]], *pairs[1:]]],
        wire[:4],
        [*wire[:2], 0, *wire[3:]],
    ):
        with pytest.raises(CodecError):
            Certificate.decode(pack_raw(bad))


@settings(max_examples=EXAMPLES * 4)
@given(data=st.data())
def test_garbage_only_raises_codec_errors(data: st.DataObject) -> None:
    world, rules = witnessed_world(4)
    world.join(key(1))
    t = world.pay(key(1), key(2), 5)
    vote = Vote.sign(WKEYS[0], world.community, t.ref)
    samples = [
        vote.encode(),
        certify(rules, t).encode(),
        encode_answer(Voted(vote)),
        encode_answer(Waiting((t.ref,), (t.ref,))),
        encode_answer(Conflicting(vote, t.wire, t.wire)),
        encode_request(VoteRequest(t.wire, (t.wire,), (certify(rules, t).encode(),))),
    ]
    blob = data.draw(st.sampled_from(samples).flatmap(mutated) | st.binary(max_size=300))
    for decode in (Vote.decode, Certificate.decode, Equivocation.decode):
        try:
            decode(blob)
        except CodecError:
            pass
    for parse in (decode_answer, decode_request):
        try:
            parse(blob)
        except RemoteProtocolError:
            pass


def test_the_limits_docs_witness_md_gives_are_the_codes() -> None:
    """docs/witness.md §5 against MESSAGE_LIMITS (it once said ≈1.2 MiB)."""
    text = (Path(__file__).parents[2] / "docs" / "witness.md").read_text(encoding="utf-8")
    section = text[text.index("## 5. The witness protocol") :]
    rows = {}
    for line in section[section.index("| limit | value |") :].splitlines()[2:]:
        if not line.startswith("|"):
            break
        name, value = (c.strip() for c in line.strip("|").split("|"))
        rows[name] = int(value.split()[0].replace(",", ""))
    m = MESSAGE_LIMITS
    assert rows == {
        "frame (one message)": m.max_size,
        "nesting depth": m.max_depth,
        "array length": m.max_array,
        "map length": m.max_map,
        "bin length": m.max_bin,
        "str length": m.max_str,
    }


def test_messages_round_trip() -> None:
    world, rules = witnessed_world(4)
    world.join(key(1))
    t = world.pay(key(1), key(2), 5)
    vote = Vote.sign(WKEYS[0], world.community, t.ref)
    answers: list[Answer] = [
        Voted(vote),
        Refused("overdraft", "balance 0 - 5 would pass …"),
        Waiting((t.ref,), ()),
        Waiting((), (t.ref, t.ref)),
        Conflicting(vote, t.wire),
        Conflicting(vote, t.wire, t.wire),
    ]
    for answer in answers:
        assert decode_answer(encode_answer(answer)) == answer
    request = VoteRequest(t.wire, tuple(e.wire for e in world.log), (certify(rules, t).encode(),))
    assert decode_request(encode_request(request)) == request
    with pytest.raises(RemoteProtocolError):
        decode_answer(codec.pack({"t": "vote", "v": vote.encode(), "x": 1}))
    with pytest.raises(RemoteProtocolError):
        decode_answer(codec.pack({"t": "nope"}))
    with pytest.raises(RemoteProtocolError):
        decode_request(encode_answer(Voted(vote)))
    with pytest.raises(LocalProtocolError):
        encode_request(VoteRequest(t.wire, (t.wire,) * 65))


# -- (c) the witness ---------------------------------------------------------------------


def test_witness_votes_for_a_valid_payment_and_records_its_chain() -> None:
    world, rules = witnessed_world()
    w = WitnessNode(world, rules, WKEYS[0])
    j = world.join(key(1))
    t = world.pay(key(1), key(2), 30)
    vote = voted(w.ask(t, deps=[j]))
    assert vote.ref == t.ref
    assert vote.witness == WKEYS[0].public
    assert [w.votes.get(world.community, key(1).public, s) for s in (1, 2, 3)] == [j.id, t.id, None]
    assert w.votes.last(world.community, key(1).public) == 2
    # Asked again, even after a restart: the very same vote.
    assert w.ask(t) == Voted(vote)
    w.restart()
    assert w.ask(t) == Voted(vote)


def test_witness_refuses_an_invalid_entry_and_records_nothing() -> None:
    world, rules = witnessed_world(credit_limit=10)
    w = WitnessNode(world, rules, WKEYS[0])
    j = world.join(key(1))
    too_much = world.create(key(1), Transfer(to=key(2).public, amount=11))
    answer = w.ask(too_much, deps=[j])
    assert answer == Refused("overdraft", answer.detail if isinstance(answer, Refused) else "")
    assert w.votes.last(world.community, key(1).public) == 0
    truncated = w.ask(b"\x92\xc4\x00")
    assert isinstance(truncated, Refused)
    assert truncated.reason == "malformed"
    assert isinstance(w.ask(b"garbage"), Refused)
    other, _ = witnessed_world(credit_limit=11)
    stranger = other.join(key(1))
    assert w.ask(stranger) == Refused(
        "unknown_community", "not an entry of this witness's community"
    )
    assert isinstance(w.ask(world.genesis), Refused)
    with pytest.raises(LocalProtocolError, match="not one of"):
        WitnessState(WKEYS[5], rules, MemoryVoteLog(), w.view)


def test_witness_waits_for_what_it_lacks_then_votes() -> None:
    world, rules = witnessed_world()
    w = WitnessNode(world, rules, WKEYS[0])
    j = world.join(key(1))
    t1 = world.pay(key(1), key(2), 5)
    t2 = world.pay(key(1), key(2), 5)
    answer = w.ask(t2)
    assert answer == Waiting(missing=(t1.ref,))
    # t1 arrived but waits for j: the witness names j, what is really
    # missing (naming t1 again would bring t1 again, never the gap below it).
    assert w.ask(t2, deps=[t1]) == Waiting(missing=(j.ref,))
    voted(w.ask(t2, deps=[j]))  # j releases t1, which t2 builds on
    assert w.votes.last(world.community, key(1).public) == 3


def fork(world: World, signer: SigningKey, at: Entry | None, body: Any, seq: int) -> Entry:
    """An entry of ``signer`` at ``seq`` on top of ``at`` (a branch)."""
    return world.create(signer, body, seq=seq, prev=None if at is None else at.id)


def test_witness_never_votes_for_two_entries_at_one_seq() -> None:
    world, rules = witnessed_world()
    w = WitnessNode(world, rules, WKEYS[0])
    j = world.join(key(1))
    a = world.pay(key(1), key(2), 100)
    b = fork(world, key(1), j, Transfer(to=key(3).public, amount=100), 2)
    vote_a = voted(w.ask(a, deps=[j]))
    answer = w.ask(b)
    assert isinstance(answer, Conflicting)
    assert answer.vote == vote_a
    assert answer.first == a.wire
    assert answer.second == b.wire
    assert answer.verify()
    assert answer.fork_proof == (a.wire, b.wire)
    assert fork_proof_problem(a.wire, b.wire) is None
    # The proof convinces any node: it records the fork through its ledger.
    node = fresh_ledger(world.genesis)
    for e in (j, a, b):
        node.ingest_entry(e, world.now)
    assert node.head(world.community, key(1).public).frozen_at == 2  # type: ignore[union-attr]
    # Not after a restart either, nor with its ledger lost (a restored backup).
    for lose_store in (False, True):
        w.restart(lose_store=lose_store)
        answer = w.ask(b, deps=[j])
        assert isinstance(answer, Conflicting)
        assert answer.vote == vote_a
        assert w.ask(a, deps=[j]) == Voted(vote_a)


def test_a_fork_below_the_vote_cannot_spend_twice() -> None:
    """The payer forks at an entry no witness was asked about (an offer on
    one branch), and pays the same credit on each branch at different seqs.
    Every honest witness's records lock the chain below its votes."""
    world, rules = witnessed_world(credit_limit=100)
    j = world.join(key(1))
    a2 = world.pay(key(1), key(2), 100)  # branch A: spends everything at seq 2
    b2 = fork(world, key(1), j, Offer(side="offer", title="decoy"), 2)
    b3 = fork(world, key(1), b2, Transfer(to=key(3).public, amount=100), 3)
    w = WitnessNode(world, rules, WKEYS[0])
    voted(w.ask(a2, deps=[j]))
    answer = w.ask(b3, deps=[j, b2])
    assert isinstance(answer, Conflicting)
    assert answer.vote.ref == a2.ref
    assert answer.fork_proof == (a2.wire, b2.wire)
    # And the other way round: a vote for b3 locks b2, so a2 is refused.
    w2 = WitnessNode(world, rules, WKEYS[1])
    voted(w2.ask(b3, deps=[j, b2]))
    assert w2.votes.get(world.community, key(1).public, 2) == b2.id
    answer = w2.ask(a2, deps=[j])
    assert isinstance(answer, Conflicting)
    assert answer.fork_proof == (b2.wire, a2.wire)
    # A lower entry of the voted chain gets a vote, and the same one every time.
    assert voted(w2.ask(b2)).ref == b2.ref


def test_a_quorum_cannot_form_for_both_branches() -> None:
    """Whatever the payer asks of whom, honest witnesses give at most one
    branch a quorum when at most f witnesses are faulty."""
    world, rules = witnessed_world(4)
    j = world.join(key(1))
    a = world.pay(key(1), key(2), 100)
    b = fork(world, key(1), j, Transfer(to=key(3).public, amount=100), 2)
    nodes = [WitnessNode(world, rules, k) for k in WKEYS[:4]]
    byzantine = WKEYS[3]
    # Witnesses 0 and 1 are asked for a first, 2 for b first; all are asked for both.
    for node, first in zip(nodes[:3], (a, a, b), strict=True):
        voted(node.ask(first, deps=[j]))
    votes = {a.id: {byzantine.public}, b.id: {byzantine.public}}
    for node in nodes[:3]:
        for e in (a, b):
            answer = node.ask(e, deps=[j])
            if isinstance(answer, Voted):
                votes[e.id].add(answer.vote.witness)
    assert len(votes[a.id]) == 3
    assert len(votes[b.id]) == 2


def test_an_accept_needs_the_transfers_certificate() -> None:
    world, rules = witnessed_world()
    w = WitnessNode(world, rules, WKEYS[0])
    j1, j2 = world.join(key(1)), world.join(key(2))
    t = world.pay(key(1), key(2), 10)
    accept = world.accept(key(2), t)
    assert certificate_needed(accept) == t.ref
    assert w.ask(accept, deps=[j1, j2, t]) == Waiting(certificates=(t.ref,))
    not_enough = certify(rules, t, WKEYS[:2])
    assert w.ask(accept, certs=[not_enough]) == Waiting(certificates=(t.ref,))
    voted(w.ask(accept, certs=[certify(rules, t)]))


def test_a_reclaim_needs_the_declines_certificate() -> None:
    world, rules = witnessed_world()
    w = WitnessNode(world, rules, WKEYS[0])
    deps = [world.join(key(1)), world.join(key(2))]
    t = world.pay(key(1), key(2), 10)
    d = world.decline(key(2), t)
    r = world.reclaim(key(1), d)
    assert certificate_needed(r) == d.ref
    assert certificate_needed(d) is None
    assert w.ask(r, deps=[*deps, t, d]) == Waiting(certificates=(d.ref,))
    voted(w.ask(r, certs=[certify(rules, d)]))


def test_uncertified_credit_below_the_entry_is_not_spent() -> None:
    """A payee accepts a transfer that never became final, then spends the
    credit: the witness, locking the payee's chain, asks for the certificate
    of the transfer below too."""
    world, rules = witnessed_world(credit_limit=50)
    w = WitnessNode(world, rules, WKEYS[0])
    j1, j2 = world.join(key(1)), world.join(key(2))
    t = world.pay(key(1), key(2), 50)
    acc = world.accept(key(2), t)
    spend = world.pay(key(2), key(1), 70)  # 50 of credit + 20 of its own limit
    assert w.ask(spend, deps=[j1, j2, t, acc]) == Waiting(certificates=(t.ref,))
    assert w.votes.last(world.community, key(2).public) == 0
    voted(w.ask(spend, certs=[certify(rules, t)]))
    assert w.votes.last(world.community, key(2).public) == 3


class CrashingVoteLog(MemoryVoteLog):
    """Dies (raises) on the ``crash_at``-th record written."""

    def __init__(self, crash_at: int | None = None) -> None:
        super().__init__()
        self.crash_at = crash_at

    def _record(self, ids: list[EntryId], eid: EntryId) -> None:
        if self.crash_at is not None and self.writes + 1 >= self.crash_at:
            self.crash_at = None
            raise Crash
        super()._record(ids, eid)


class Crash(Exception):
    """The process died here."""


@pytest.mark.parametrize("crash_at", [1, 2, 3, 4])
def test_a_crash_while_writing_votes_never_leads_to_two(crash_at: int) -> None:
    world, rules = witnessed_world()
    j = world.join(key(1))
    o = world.offer(key(1))
    a = world.pay(key(1), key(2), 100)
    b = fork(world, key(1), o, Transfer(to=key(3).public, amount=100), 3)
    log = CrashingVoteLog(crash_at)
    w = WitnessNode(world, rules, WKEYS[0], votes=log)
    try:
        first = w.ask(a, deps=[j, o])  # writes records 1, 2, 3
    except Crash:
        first = None
    assert first is None or isinstance(first, Voted)
    w.restart()
    # Whatever the crash left, the witness votes for one of a, b at most, and
    # if it answered a vote before the crash, never for b.
    answers = [w.ask(b, deps=[j, o]), w.ask(a, deps=[j, o])]
    assert sum(isinstance(x, Voted) for x in answers) == 1
    if first is not None:
        assert answers[1] == first
    assert [log.get(world.community, key(1).public, s) for s in (1, 2)] == [j.id, o.id]


def test_the_vote_log_refuses_overwrites_and_gaps() -> None:
    log = MemoryVoteLog()
    c, a = CommunityId(bytes(32)), key(1).public
    x, y = EntryId(b"x" * 32), EntryId(b"y" * 32)
    log.put(c, a, [(1, x), (2, y)])
    log.put(c, a, [(2, y)])  # the same again is fine
    with pytest.raises(LocalProtocolError):
        log.put(c, a, [(2, x)])
    with pytest.raises(LocalProtocolError):
        log.put(c, a, [(4, x)])
    assert (log.get(c, a, 2), log.get(c, a, 3), log.last(c, a)) == (y, None, 2)


def test_a_witness_signs_only_what_its_log_holds() -> None:
    world, rules = witnessed_world()
    w = WitnessNode(world, rules, WKEYS[0])
    world.join(key(1))
    t = world.pay(key(1), key(2), 5)
    with pytest.raises(LocalProtocolError, match="refusing"):
        w.state._sign(t.ref)


# -- (d) the collector -----------------------------------------------------------------


def test_collector_gathers_distinct_valid_votes_into_a_certificate() -> None:
    world, rules = witnessed_world(7)  # f = 2, q = 5
    world.join(key(1))
    t = world.pay(key(1), key(2), 5)
    u = world.pay(key(1), key(2), 6)
    c = world.community
    col = Collector.for_entry(rules, t)
    votes = [Vote.sign(k, c, t.ref) for k in WKEYS]
    assert col.add(votes[0]) is Tally.COUNTED
    assert col.add(votes[0]) is Tally.DUPLICATE
    bad = Vote(c, t.author, t.seq, t.id, WKEYS[1].public, votes[0].signature)
    assert col.add(bad) is Tally.INVALID
    assert col.add(Vote.sign(key(9), c, t.ref)) is Tally.OUTSIDER
    assert col.add(Vote.sign(WKEYS[1], c, u.ref)) is Tally.ELSEWHERE
    assert col.add_answer(Refused("overdraft"), WKEYS[2].public) is Tally.REFUSED
    assert col.add_answer(Waiting((t.ref,))) is Tally.WAITING
    assert not col.done
    assert len(col.pending()) == 6
    for v in votes[1:5]:
        assert col.add_answer(Voted(v)) is Tally.COUNTED
    assert col.done
    assert col.certificate is not None
    assert col.certificate.verify(rules)
    assert len(col.certificate.votes) == 5
    cert = col.certificate
    assert col.add(votes[5]) is Tally.COUNTED
    assert col.certificate is cert  # fixed once reached
    assert col.refusals == {WKEYS[2].public: Refused("overdraft")}


def test_a_witness_that_waits_or_votes_after_refusing_refuses_no_more() -> None:
    # The Certifier gives an entry up once more than n - q witnesses refuse
    # it (troc/node/certifier.py); a witness that refused a request lacking
    # something (docs/witness.md §3.6 step 3) and waits for it, or votes,
    # once it is sent, must not count among them. It did: its first refusal
    # stayed in `refusals` whatever it answered after.
    world, rules = witnessed_world(4)  # f = 1, q = 3: give up past 1 refusal
    world.join(key(1))
    t = world.pay(key(1), key(2), 5)
    c = world.community
    col = Collector.for_entry(rules, t)
    a, b = WKEYS[0].public, WKEYS[1].public
    assert col.add_answer(Refused("no_certified_rival"), a) is Tally.REFUSED
    assert col.add_answer(Refused("no_certified_rival"), b) is Tally.REFUSED
    assert set(col.refusals) == {a, b}
    assert col.add_answer(Waiting((t.ref,)), a) is Tally.WAITING
    assert set(col.refusals) == {b}
    assert col.add_answer(Voted(Vote.sign(WKEYS[1], c, t.ref)), b) is Tally.COUNTED
    assert col.refusals == {}
    # A vote that does not count (for another entry) takes no refusal back.
    assert col.add_answer(Refused("overdraft"), a) is Tally.REFUSED
    other = world.pay(key(1), key(2), 6)
    assert col.add_answer(Voted(Vote.sign(WKEYS[0], c, other.ref)), a) is Tally.ELSEWHERE
    assert set(col.refusals) == {a}


def test_collector_catches_an_equivocating_witness() -> None:
    world, rules = witnessed_world(4)
    j = world.join(key(1))
    t = world.pay(key(1), key(2), 5)
    other = fork(world, key(1), j, Transfer(to=key(3).public, amount=5), 2)
    c = world.community
    col = Collector.for_entry(rules, t)
    assert col.add(Vote.sign(WKEYS[0], c, t.ref)) is Tally.COUNTED
    assert col.add(Vote.sign(WKEYS[0], c, other.ref)) is Tally.EQUIVOCATION
    assert col.add(Vote.sign(WKEYS[1], c, other.ref)) is Tally.CONFLICTING
    assert col.add(Vote.sign(WKEYS[1], c, t.ref)) is Tally.EQUIVOCATION  # the other order
    proof = col.equivocations[WKEYS[0].public]
    assert proof.verify()
    assert Equivocation.decode(proof.encode()) == proof
    assert set(col.equivocations) == {WKEYS[0].public, WKEYS[1].public}
    assert col.votes == {}  # liars are not counted
    assert col.add(Vote.sign(WKEYS[0], c, t.ref)) is Tally.EXCLUDED
    assert col.pending() == sorted([WKEYS[2].public, WKEYS[3].public])
    # With f = 1, two liars can prevent finality: that is the bound.
    assert not Equivocation(proof.first, proof.first).verify()


def test_collector_takes_a_witness_fork_proof() -> None:
    world, rules = witnessed_world(4)
    j = world.join(key(1))
    a = world.pay(key(1), key(2), 5)
    b = fork(world, key(1), j, Transfer(to=key(3).public, amount=5), 2)
    w = WitnessNode(world, rules, WKEYS[0])
    voted(w.ask(a, deps=[j]))
    answer = w.ask(b)
    col = Collector.for_entry(rules, b)
    assert col.add_answer(answer) is Tally.FORK
    assert col.conflicts == [answer]
    assert not col.votes
    assert isinstance(answer, Conflicting)
    forged = Conflicting(answer.vote, answer.first or b"", answer.first)
    assert col.add_answer(forged) is Tally.FALSE_FORK
    vote_b = Vote.sign(WKEYS[1], world.community, b.ref)
    for lie in (Conflicting(vote_b, b.wire, b.wire), Conflicting(vote_b, j.wire, b.wire)):
        assert col.add_answer(lie) is Tally.FALSE_FORK
    # Any witness's vote with both entries the author signed at that seq is
    # a real fork proof, whoever assembles it.
    assert col.add_answer(Conflicting(vote_b, a.wire, b.wire)) is Tally.FORK
    assert not col.faulty  # no sender named: nobody is blamed


def test_a_conflict_without_both_entries_is_a_lie_not_a_fork() -> None:
    """Issue 10: a witness answers with its vote for a made-up id at the
    entry's position and the author's own entry as ``second``, omitting
    ``first``. No fork exists: the answer is a lie, its sender is named
    faulty and not asked again, and the honest witnesses still certify."""
    world, rules = witnessed_world(4)  # f = 1, q = 3
    j = world.join(key(1))
    t = world.pay(key(1), key(2), 5)
    c = world.community
    liar = WKEYS[0]
    made_up = Ref(t.author, t.seq, EntryId(bytes(32)))
    tampered = bytearray(t.wire)
    tampered[-1] ^= 1  # the author never signed this one
    lies = [
        Conflicting(Vote.sign(liar, c, made_up), t.wire),  # no first: the attack
        Conflicting(Vote.sign(liar, c, made_up), t.wire, t.wire),  # first is not the voted id
        Conflicting(Vote.sign(liar, c, t.ref), bytes(tampered), t.wire),  # forged second
        Conflicting(Vote.sign(liar, c, Ref(t.author, 1, EntryId(bytes(32)))), j.wire),
    ]
    for lie in lies:
        assert decode_answer(encode_answer(lie)) == lie
        assert lie.problem() is not None
        col = Collector.for_entry(rules, t)
        assert col.add_answer(lie, liar.public) is Tally.FALSE_FORK
        assert not col.conflicts
        assert liar.public in col.faulty
        assert "false fork" in col.faulty[liar.public]
        assert liar.public not in col.pending()
        # The honest witnesses, asked for real, make the quorum without it.
        for k in WKEYS[1:4]:
            answer = WitnessNode(world, rules, k).ask(t, deps=[j])
            assert col.add_answer(answer, k.public) is Tally.COUNTED
        assert col.certificate is not None
        assert col.certificate.verify(rules)
        assert liar.public not in col.certificate.witnesses


@pytest.mark.parametrize("lie", ["other_id", "bad_signature", "wrong_key", "elsewhere", "outsider"])
def test_a_witness_sending_a_bad_vote_is_named_and_not_asked_again(lie: str) -> None:
    world, rules = witnessed_world(4)
    world.join(key(1))
    t = world.pay(key(1), key(2), 5)
    c, w = world.community, WKEYS[0]
    vote = {
        "other_id": Vote.sign(w, c, Ref(t.author, t.seq, EntryId(bytes(32)))),
        "bad_signature": Vote(c, t.author, t.seq, t.id, w.public, bytes(64)),
        "wrong_key": replace(Vote.sign(WKEYS[1], c, t.ref), witness=w.public),
        "elsewhere": Vote.sign(w, CommunityId(bytes(32)), t.ref),
        "outsider": Vote.sign(key(9), c, t.ref),
    }[lie]
    col = Collector.for_entry(rules, t)
    assert col.add_answer(Voted(vote), w.public) in LIES
    assert w.public in col.faulty
    assert w.public not in col.pending()
    assert len(col.pending()) == 3


# -- (e) the simulation ------------------------------------------------------------------

BASE_MS = 1_700_000_000_000
LIMIT = 100


class SimCrash(Exception):
    """A simulated witness process died in the middle of a write."""


class FlakyVoteLog(MemoryVoteLog):
    """Dies, with probability ``p`` per record, while ``armed``."""

    def __init__(self, rng: random.Random, p: float) -> None:
        super().__init__()
        self.rng, self.p, self.armed = rng, p, True

    def _record(self, ids: list[EntryId], eid: EntryId) -> None:
        if self.armed and self.p and self.rng.random() < self.p:
            raise SimCrash
        super()._record(ids, eid)


@dataclass(frozen=True)
class SimSpec:
    n: int = 4
    byzantine: int = 0
    loss: float = 0.1
    dup: float = 0.1
    max_delay_ms: int = 300
    payments: int = 3
    fork: str = "same_seq"  # none, same_seq, lower_seq, deep
    ask_decoy: bool = True  # the forker asks for votes on its decoy offer too
    crashes: int = 0
    put_crash: float = 0.0
    heal_ms: int = 4_000
    retry_ms: int = 250
    forker_rounds: int = 12
    lie: str | None = None  # byzantine witnesses always answer this (LIE_KINDS)
    #: Transfers expire this long after they are made (docs/witness.md §3.5);
    #: the payer then takes back each one with probability ``take_backs``,
    #: racing the payee's accept, a little after expiry by the clock of a
    #: witness that runs up to ``skew_ms`` ahead or behind.
    expiry_ms: int | None = None
    take_backs: float = 0.0
    skew_ms: int = 0
    #: The loser of a race asks for void votes once its rival is certified
    #: (docs/witness.md §3.6), and its author keeps appending: a payee pays
    #: another payee, a payer pays again.
    void: bool = False


#: What a simulated byzantine witness may answer ("vote": what was asked).
LIE_KINDS = (
    "vote",
    "other_id",
    "garbage",
    "first_mismatch",
    "no_first",
    "forged_second",
    "bad_signature",
    "wrong_key",
    "other_community",
    "other_seq",
    "refuse",
    "silence",
    "void",
)


class NaiveWitness:
    """What chain locking is for: a witness that checks validity and keeps
    one id per (author, seq), and nothing more (test-only)."""

    def __init__(self, k: SigningKey, rules: WitnessRules, view: LedgerView) -> None:
        self.key, self.rules, self.view = k, rules, view
        self.ids: dict[Position, EntryId] = {}

    def handle(self, request: VoteRequest) -> Answer:
        c = self.rules.community
        for wire in request.deps:
            self.view.offer(c, wire)
        entry = Entry.decode(request.entry)
        problem = self.view.check(entry)
        if problem is not None:
            return problem
        if self.ids.setdefault((c, entry.author, entry.seq), entry.id) != entry.id:
            return Refused("conflict")
        return Voted(Vote.sign(self.key, c, entry.ref))


@dataclass(eq=False)
class SimWitness:
    index: int
    key: SigningKey
    byzantine: bool
    votes: FlakyVoteLog
    view: LedgerView
    state: WitnessState | NaiveWitness | None
    up: bool = True


@dataclass(eq=False)
class Task:
    """One entry its author's node wants certified."""

    entry: Entry
    collector: Collector
    honest: bool
    with_deps: bool = False
    rounds: int = 0
    announced: bool = False
    stopped: bool = False  # a fork was proven: its node stops asking (as the Certifier does)
    #: An accept or a take-back of this transfer: at most one of the two can win.
    race: EntryId | None = None
    #: Collecting void votes for ``entry`` (a race's loser, docs/witness.md §3.6).
    void: bool = False
    #: A race's loser whose void certificate is made: final, with no effect.
    voided: bool = False
    #: This race entry's void task, once started.
    void_task: Task | None = None


@dataclass
class SimResult:
    violations: list[str] = field(default_factory=list)
    honest_tasks: int = 0
    honest_done: int = 0
    requests: int = 0
    garbage: int = 0
    forks_proven: int = 0
    lies_caught: int = 0
    forged_certificates: int = 0
    equivocations: int = 0
    crashes: int = 0
    certified_forker: int = 0
    take_backs: int = 0  # take-backs asked for
    take_backs_won: int = 0  # certified (their transfer's accept then never is)
    races_stuck: int = 0  # race entries never certified: their log stops there
    voided: int = 0  # race entries void-certified: their log goes on
    after_void: int = 0  # honest entries signed after a void one of their log, final


class FinalitySim:
    """Witnesses, members and a lossy network in virtual time, all from one seed."""

    def __init__(
        self,
        seed: int,
        spec: SimSpec,
        *,
        split_honest: bool = False,
        naive: bool = False,
    ) -> None:
        self.seed, self.spec, self.split_honest, self.naive = seed, spec, split_honest, naive
        rng = self.rng = random.Random(seed)
        self.now = BASE_MS
        self._queue: list[tuple[int, int, Callable[[], None]]] = []
        self._tie = 0
        wkeys = [SigningKey(rng.randbytes(32)) for _ in range(spec.n)]
        f = max_faults(spec.n)
        q = min_quorum(spec.n, f)
        self.founder, self.forker = SigningKey(rng.randbytes(32)), SigningKey(rng.randbytes(32))
        self.payers = [SigningKey(rng.randbytes(32)) for _ in range(2)]
        self.payees = [SigningKey(rng.randbytes(32)) for _ in range(2)]
        self.genesis = Entry.create(
            self.founder,
            community=None,
            seq=0,
            prev=None,
            timestamp_ms=BASE_MS,
            body=Genesis(
                name="sim",
                unit="hour",
                credit_limit=LIMIT,
                finality="witnessed",
                witnesses=tuple(sorted(k.public for k in wkeys)),
                faults=f,
                quorum=q,
                transfer_expiry_ms=spec.expiry_ms,
            ),
        )
        self.community = CommunityId(self.genesis.id)
        self.rules = WitnessRules.from_genesis(self.genesis)
        byzantine = set(rng.sample(range(spec.n), spec.byzantine))
        self.witnesses: list[SimWitness] = []
        for i, k in enumerate(wkeys):
            skew = rng.randint(-spec.skew_ms, spec.skew_ms)  # each witness's own clock
            view = LedgerView(self._ledger(), lambda skew=skew: self.now + skew)
            votes = FlakyVoteLog(rng, spec.put_crash)
            self.witnesses.append(SimWitness(i, k, i in byzantine, votes, view, None))
        for w in self.witnesses:
            self.restart(w, force=True)
        # Members' own nodes (a ledger each), and what everyone published.
        self.nodes: dict[MemberId, Ledger] = {}
        self.store: dict[EntryId, Entry] = {}
        self.certs: dict[Position, Certificate] = {}
        self.void_certs: dict[Position, Certificate] = {}
        self.tasks: list[Task] = []
        self.pool: dict[Position, dict[EntryId, set[MemberId]]] = {}
        self.void_pool: dict[Position, dict[EntryId, set[MemberId]]] = {}
        self.keys = {k.public: k for k in [*self.payers, *self.payees]}
        self._verified: set[bytes] = set()
        self.result = SimResult()
        self.healed = False
        #: With ``split_honest``: the forker's entries of its second branch.
        self._branch_b: set[EntryId] = set()

    def _ledger(self) -> Ledger:
        ledger = Ledger(MemoryBackend())
        assert ledger.ingest(self.genesis.wire, BASE_MS).status is Status.ACCEPTED
        return ledger

    # -- time ------------------------------------------------------------

    def at(self, when: int, action: Callable[[], None]) -> None:
        self._tie += 1
        heapq.heappush(self._queue, (max(when, self.now), self._tie, action))

    def after(self, delay: int, action: Callable[[], None]) -> None:
        self.at(self.now + delay, action)

    # -- members ---------------------------------------------------------

    def publish(self, entry: Entry) -> None:
        self.store[entry.id] = entry

    def sign(self, k: SigningKey, body: Any) -> Entry | None:
        ledger = self.nodes.setdefault(k.public, self._ledger())
        try:
            entry = ledger.prepare(k, self.community, body, self.now)
        except RefusedError:
            return None
        assert ledger.ingest_entry(entry, self.now).status is Status.ACCEPTED
        self.publish(entry)
        return entry

    def join(self, k: SigningKey) -> None:
        assert self.sign(k, Join(name="member")) is not None

    def chain(self, entry: Entry) -> list[Entry]:
        """``entry``'s ancestors, oldest first (what its author can send along)."""
        out = []
        cur = entry
        while cur.prev is not None:
            cur = self.store[cur.prev]
            out.append(cur)
        out.reverse()
        return out

    def pay(self, payer: SigningKey) -> None:
        payee = self.rng.choice(self.payees)
        entry = self.sign(payer, Transfer(to=payee.public, amount=self.rng.randint(1, 8)))
        assert entry is not None  # at most 12 payments of at most 8 < LIMIT
        self.start(entry, honest=True)

    def start(
        self, entry: Entry, *, honest: bool, race: EntryId | None = None, void: bool = False
    ) -> Task:
        collector = Collector.for_entry(
            self.rules, entry, void=void, deadline_ms=self.timed_deadline(entry)
        )
        task = Task(entry, collector, honest, race=race, void=void)
        self.tasks.append(task)
        if honest and not void:
            self.result.honest_tasks += 1
        self.tick(task)
        return task

    def timed_deadline(self, entry: Entry) -> int | None:
        """A take-back's transfer expiry (its certificate carries times past
        it, docs/witness.md §3.5), else None."""
        genesis = self.genesis.body
        assert isinstance(genesis, Genesis)

        def expiry(ref: Ref) -> int | None:
            held = self.store.get(ref.id)
            return None if held is None else expiry_of(held, genesis)

        return deadline_of(entry, lambda ref: self.store.get(ref.id), expiry)

    def accept(self, transfer: Entry, cert: Certificate, tries: int = 0) -> None:
        """An honest payee takes a payment that has become final (by ``cert``:
        past the bound, the other branch's may be the first seen there).
        If its payer's final tip still waits for the own certificate of a
        raceable entry below (a void certificate being gathered, docs/witness.md
        §6.1), the payee's node waits for it too: it tries again a little later."""
        assert isinstance(transfer.body, Transfer)
        payee = next(k for k in self.payees if k.public == transfer.body.to)
        ledger = self.nodes.setdefault(payee.public, self._ledger())
        for e in [*self.chain(transfer), transfer]:
            ledger.ingest_entry(e, self.now)
        # Beside the transfer's certificate, the payee's sync brings the own
        # certificates of the entries below it (docs/witness.md §6.2): its
        # final tip passes a raceable one only with it (§6.1).
        for e in self.chain(transfer):
            for held in (self.certs, self.void_certs):
                own = held.get((self.community, e.author, e.seq))
                if own is not None and own.id == e.id:
                    ledger.ingest_certificate(own.encode(), self.now)
        if self.spec.void:  # a payee paying: the accepts on its chain need theirs
            for e in self.chain(transfer):
                named = certificate_needed(e)
                if named is not None and named.id in self.store:
                    for d in [*self.chain(self.store[named.id]), self.store[named.id]]:
                        ledger.ingest_entry(d, self.now)
            # Every certificate, void ones too: the tips of the logs those
            # chains name pass a raceable entry only with its own (§6.1),
            # as sync brings them.
            for held in (*self.certs.values(), *self.void_certs.values()):
                ledger.ingest_certificate(held.encode(), self.now)
        assert ledger.ingest_certificate(cert.encode(), self.now).ok
        if not ledger.is_final(self.community, transfer.ref) and tries < 400:
            assert ledger.tip_waits_for(self.community, transfer.author) is not None
            self.at(self.now + self.spec.retry_ms, partial(self.accept, transfer, cert, tries + 1))
            return
        entry = self.sign(payee, Accept(transfer=transfer.ref))
        assert entry is not None, "an honest payee could not accept a final payment"
        self.start(entry, honest=True, race=transfer.id if self.spec.expiry_ms else None)

    def schedule_take_back(self, transfer: Entry) -> None:
        """The payer, not knowing of any accept, takes back after expiry."""
        expiry = self.spec.expiry_ms
        if expiry is None or self.rng.random() >= self.spec.take_backs:
            return
        when = transfer.timestamp_ms + expiry + 1 + self.rng.randrange(400)
        self.at(when, partial(self.take_back, transfer))

    def take_back(self, transfer: Entry) -> None:
        payer = self.keys[transfer.author]
        entry = self.sign(payer, TakeBack(transfer=transfer.ref))
        assert entry is not None, "an honest payer could not take back an expired payment"
        self.result.take_backs += 1
        self.start(entry, honest=True, race=transfer.id)

    def spawn_forker(self) -> None:
        """Signs two branches from its join and asks witnesses for both."""
        rng, k, c = self.rng, self.forker, self.community
        join = next(e for e in self.store.values() if e.author == k.public and e.seq == 1)
        p0, p1 = (p.public for p in self.payees)

        def branch(bodies: list[Any]) -> list[Entry]:
            out, prev = [], join
            for body in bodies:
                e = Entry.create(
                    k, community=c, seq=prev.seq + 1, prev=prev.id, timestamp_ms=self.now, body=body
                )
                self.publish(e)
                out.append(e)
                prev = e
            return out

        decoy = Offer(side="offer", title="decoy")
        half = LIMIT // 2
        if self.spec.fork == "same_seq":
            a = branch([Transfer(to=p0, amount=LIMIT)])
            b = branch([Transfer(to=p1, amount=LIMIT)])
        elif self.spec.fork == "lower_seq":
            a = branch([Transfer(to=p0, amount=LIMIT)])
            b = branch([decoy, Transfer(to=p1, amount=LIMIT)])
        else:
            a = branch([Transfer(to=p0, amount=half), Transfer(to=p1, amount=half)])
            b = branch([decoy, Transfer(to=p1, amount=half), Transfer(to=p0, amount=half)])
        self._branch_b.update(e.id for e in b)
        entries = a + b
        rng.shuffle(entries)
        for e in entries:
            if self.spec.ask_decoy or not isinstance(e.body, Offer):
                self.start(e, honest=False)

    # -- requests and answers -----------------------------------------------

    def targets(self, task: Task) -> list[SimWitness]:
        col = task.collector
        if task.honest:
            pending = set(col.pending())
            return [w for w in self.witnesses if w.key.public in pending]
        # The forker colludes with the liars: it keeps asking them all.
        ws = [w for w in self.witnesses if w.key.public not in col.votes]
        if self.split_honest:
            # Every byzantine witness, and one half of the honest ones per branch.
            honest = [w for w in self.witnesses if not w.byzantine]
            branch_b = task.entry.id in self._branch_b
            half = honest[len(honest) // 2 :] if branch_b else honest[: len(honest) // 2]
            return [w for w in ws if w.byzantine or w in half]
        return [w for w in ws if self.rng.random() < 0.6]

    def tick(self, task: Task) -> None:
        if task.collector.done or task.stopped:
            return
        task.rounds += 1
        if not task.honest and task.rounds > self.spec.forker_rounds:
            return
        for w in self.targets(task):
            self.send_request(task, w)
        self.after(self.spec.retry_ms + self.rng.randrange(50), lambda: self.tick(task))

    def request_bytes(self, task: Task) -> bytes:
        entry = task.entry
        if not task.with_deps and not task.void:  # a void request shows the rival's certificate
            return encode_request(VoteRequest(entry.wire))
        deps = self.chain(entry)
        # An accept or take-back below: its own certificate, if it won its race;
        # then what each entry names, the entry's own need last, so that the
        # newest survive the request's bounds (MAX_CERTIFICATES, MAX_DEPS), as
        # the node's Certifier keeps them.
        needs: list[Ref | None] = [e.ref for e in deps if isinstance(e.body, Accept | TakeBack)]
        needs += [certificate_needed(e) for e in [*deps, entry]]
        if task.void:  # the rival that won, and its certificate (§3.6)
            won = [r for r in self.rivals(entry) if r.ref.id in self.certified_ids()]
            if task.with_deps:
                # A witness that could not store the rival waits for what the
                # rival names (its transfer's certificate), and the Certifier
                # sends what a wait names; its first request carries only the
                # rival and the rival's certificate (Certifier._request).
                needs += [certificate_needed(r) for r in won]
            needs += [r.ref for r in won]
        below: list[Ref | None] = []
        for ref in needs:
            if ref is not None and ref.id in self.store:
                target = self.store[ref.id]
                deps = [*self.chain(target), target, *deps]
                # The target's log is final past its raceable entries only
                # with their own certificates (§6.1): the Certifier sends
                # those a wait names; here they go along at once, first, so
                # that the request's bounds keep the entry's own need.
                below += [
                    e.ref for e in self.chain(target) if isinstance(e.body, Accept | TakeBack)
                ]
        needs = [*below, *needs]
        certs = [
            held[(self.community, r.author, r.seq)].encode()
            for r in needs
            for held in (self.certs, self.void_certs)
            if r is not None
            and (self.community, r.author, r.seq) in held
            and held[(self.community, r.author, r.seq)].id == r.id
        ]
        seen: set[EntryId] = set()
        wires = []
        for d in deps:
            if d.id not in seen:
                seen.add(d.id)
                wires.append(d.wire)
        return encode_request(
            VoteRequest(
                entry.wire,
                tuple(wires[-MAX_DEPS:]),
                tuple(certs[-MAX_CERTIFICATES:]),
                void=task.void,
            )
        )

    def certified_ids(self) -> set[EntryId]:
        return {cert.id for cert in self.certs.values()}

    def rivals(self, entry: Entry) -> list[Entry]:
        """The entries that exclude the accept or take-back ``entry``."""
        body = entry.body
        assert isinstance(body, Accept | TakeBack)
        other = TakeBack if isinstance(body, Accept) else Accept
        return [
            e
            for e in self.store.values()
            if isinstance(e.body, other) and e.body.transfer.id == body.transfer.id
        ]

    def ask_void(self, task: Task) -> None:
        """The loser's author: its entry was refused for its rival, whose
        certificate it holds: ask for void votes (docs/witness.md §3.6)."""
        if task.void_task is not None or task.collector.done:
            return
        if not any(r.id in self.certified_ids() for r in self.rivals(task.entry)):
            return  # not certified yet (or a split): ask again on the next refusal
        task.void_task = self.start(task.entry, honest=task.honest, void=True)

    def follow_up(self, entry: Entry) -> None:
        """The author of a race's loser goes on once it is void: a payee pays
        another payee 1, a payer offers something."""
        k = self.keys.get(entry.author)
        if k is None:
            return
        if k in self.payees:
            to = next(p for p in self.payees if p is not k)
            body: Any = Transfer(to=to.public, amount=1)
        else:
            body = Offer(side="offer", title="after the race")
        nxt = self.sign(k, body)
        if nxt is not None:
            self.start(nxt, honest=True)

    def lost(self) -> bool:
        return not self.healed and self.rng.random() < self.spec.loss

    def deliver(self, action: Callable[[], None]) -> None:
        """Send one message: maybe lost, maybe twice, after a random delay."""
        copies = 2 if not self.healed and self.rng.random() < self.spec.dup else 1
        for _ in range(copies):
            if not self.lost():
                self.after(1 + self.rng.randrange(self.spec.max_delay_ms), action)

    def send_request(self, task: Task, w: SimWitness) -> None:
        self.result.requests += 1
        data = self.request_bytes(task)
        self.deliver(lambda: self.on_request(w, task, data))

    def on_request(self, w: SimWitness, task: Task, data: bytes) -> None:
        if not w.up:
            return
        if w.byzantine:
            answers = self.byzantine_answers(w, data)
        else:
            assert w.state is not None
            try:
                answers = [encode_answer(w.state.handle(decode_request(data)))]
            except SimCrash:
                self.crash(w)
                return
        for a in answers:
            self.note(a)
            self.deliver(partial(self.on_answer, task, w, a))

    def byzantine_answers(self, w: SimWitness, data: bytes) -> list[bytes]:
        """Anything goes (:data:`LIE_KINDS`): votes for whatever is asked and
        for other ids, positions and communities, votes under the wrong key or
        with a bad signature, garbage, conflicts that prove no fork, refusals,
        silence; and forged certificates pushed to honest witnesses. With
        ``spec.lie`` set, always that answer (once)."""
        rng = self.rng
        entry = Entry.decode(decode_request(data).entry)
        if rng.random() < 0.3:
            self.push_forged_certificate(w, entry)
        if self.spec.lie is not None:
            kinds = [self.spec.lie]
        else:  # honest-looking votes weigh more: a liar mixes them in
            kinds = rng.choices(LIE_KINDS, [5, *[1] * (len(LIE_KINDS) - 1)], k=rng.randint(0, 3))
        return [a for a in (self.lie(kind, w, entry) for kind in kinds) if a is not None]

    def lie(self, kind: str, w: SimWitness, entry: Entry) -> bytes | None:
        rng, c, a = self.rng, self.community, entry.author
        other = Ref(a, entry.seq, EntryId(rng.randbytes(32)))
        if kind == "vote":  # with a time for a take-back: any, even an early one
            deadline = self.timed_deadline(entry)
            time = None
            if deadline is not None:
                # Chosen without the rng, so that the runs stay as they were.
                ms = [deadline - 5, deadline + 1, self.now + 10**9][(entry.id[0] + w.index) % 3]
                time = TimeAttestation.sign(w.key, c, entry.ref, ms)
            return encode_answer(Voted(Vote.sign(w.key, c, entry.ref), time))
        if kind == "void":  # a void vote for whatever is asked
            return encode_answer(Voted(VoidVote.sign(w.key, c, entry.ref)))
        if kind == "other_id":
            return encode_answer(Voted(Vote.sign(w.key, c, other)))
        if kind == "garbage":
            return rng.randbytes(rng.randrange(1, 80))
        if kind == "first_mismatch":  # the vote is for another id than the "first"
            return encode_answer(Conflicting(Vote.sign(w.key, c, other), entry.wire, entry.wire))
        if kind == "no_first":  # issue 10: a made-up id and the author's own entry
            return encode_answer(Conflicting(Vote.sign(w.key, c, other), entry.wire))
        if kind == "forged_second":  # a "second" entry the author never signed
            tampered = bytearray(entry.wire)
            tampered[-1] ^= 1
            vote = Vote.sign(w.key, c, entry.ref)
            return encode_answer(Conflicting(vote, bytes(tampered), entry.wire))
        if kind == "bad_signature":
            return encode_answer(Voted(Vote(c, a, entry.seq, entry.id, w.key.public, bytes(64))))
        if kind == "wrong_key":  # signed by another key than the one it names
            signed = Vote.sign(SigningKey(rng.randbytes(32)), c, entry.ref)
            return encode_answer(Voted(replace(signed, witness=w.key.public)))
        if kind == "other_community":
            return encode_answer(Voted(Vote.sign(w.key, CommunityId(rng.randbytes(32)), entry.ref)))
        if kind == "other_seq":
            return encode_answer(Voted(Vote.sign(w.key, c, Ref(a, entry.seq + 1, entry.id))))
        if kind == "refuse":
            return encode_answer(Refused("overdraft", "no"))
        assert kind == "silence", kind
        return None

    def push_forged_certificate(self, w: SimWitness, entry: Entry) -> None:
        """A liar hands an honest witness a "certificate" for ``entry`` that
        names itself q times (or holds its vote alone): refused whole."""
        vote = Vote.sign(w.key, self.community, entry.ref)
        pair = [vote.witness, vote.signature]
        head = [self.community, entry.author, entry.seq, entry.id]
        for forged in (
            pack_raw([*head, [pair] * self.rules.quorum]),
            Certificate.from_votes([vote]).encode(),
        ):
            target = self.rng.choice([x for x in self.witnesses if not x.byzantine])
            if target.state is None or not target.up:
                continue
            self.result.forged_certificates += 1
            request = VoteRequest(entry.wire, (), (forged,))
            try:
                target.state.handle(request)
            except SimCrash:
                self.crash(target)

    def note(self, data: bytes) -> None:
        """Every valid vote that leaves a witness goes into the pool: what an
        adversary could assemble certificates from."""
        try:
            answer = decode_answer(data)
        except RemoteProtocolError:
            return
        if not isinstance(answer, Voted | Conflicting):
            return
        vote = answer.vote
        wire = vote.encode()
        if wire not in self._verified:
            if not vote.verify() or vote.witness not in self.rules.witnesses:
                return
            self._verified.add(wire)
        pool = self.void_pool if vote.void else self.pool
        pool.setdefault(vote.position, {}).setdefault(vote.id, set()).add(vote.witness)

    def on_answer(self, task: Task, w: SimWitness, data: bytes) -> None:
        try:
            answer = decode_answer(data)
        except RemoteProtocolError:
            self.result.garbage += 1
            return
        tally = task.collector.add_answer(answer, w.key.public)
        if tally is Tally.WAITING:
            task.with_deps = True
        elif tally is Tally.REFUSED and task.race is not None and self.spec.void:
            self.ask_void(task)
        elif tally is Tally.FORK:
            self.result.forks_proven += 1
            if task.honest:
                self.result.violations.append(
                    f"a fork was recorded for an honest entry: {answer}; from {w.index}"
                )
                task.stopped = True  # what the author's node does: the entry never finalises
        elif tally is Tally.EQUIVOCATION:
            self.result.equivocations += 1
        if tally in LIES:
            self.result.lies_caught += 1
            if not w.byzantine:
                self.result.violations.append(f"honest witness {w.index} taken for a liar: {tally}")
        cert = task.collector.certificate
        if cert is not None and task.void and not task.announced:
            task.announced = True
            if not cert.verify(self.rules):
                self.result.violations.append(f"a collector made a bad void certificate: {cert}")
            self.void_certs.setdefault(cert.position, cert)
            race = next(t for t in self.tasks if t.void_task is task)
            race.voided = race.announced = True
            self.result.voided += 1
            self.after(1 + self.rng.randrange(100), partial(self.follow_up, task.entry))
            return
        if cert is not None and not task.announced:
            task.announced = True
            if not cert.verify(self.rules):
                self.result.violations.append(f"a collector made a bad certificate: {cert}")
            self.certs.setdefault(cert.position, cert)
            if task.honest:
                self.result.honest_done += 1
            else:
                self.result.certified_forker += 1
            if isinstance(task.entry.body, Transfer):
                self.after(1 + self.rng.randrange(200), lambda: self.accept(task.entry, cert))
                if task.honest and task.entry.author in {k.public for k in self.payers}:
                    self.schedule_take_back(task.entry)

    # -- crashes ----------------------------------------------------------------

    def crash(self, w: SimWitness) -> None:
        if not w.up or self.healed:
            return
        w.up = False
        self.result.crashes += 1
        self.after(200 + self.rng.randrange(1_000), lambda: self.restart(w))

    def restart(self, w: SimWitness, *, force: bool = False) -> None:
        if w.up and not force:
            return
        w.up = True
        if w.byzantine:
            return
        if self.naive:
            w.state = w.state or NaiveWitness(w.key, self.rules, w.view)
        else:  # a new process: the same durable vote log and ledger
            w.state = WitnessState(w.key, self.rules, w.votes, w.view)

    # -- the run ------------------------------------------------------------------

    def run(self) -> SimResult:
        spec, rng = self.spec, self.rng
        start = self.now
        for k in [*self.payers, *self.payees, self.forker]:
            self.at(start + rng.randrange(200), partial(self.join, k))
        for _ in range(spec.payments):
            payer = rng.choice(self.payers)
            self.at(start + 300 + rng.randrange(spec.heal_ms), partial(self.pay, payer))
        if spec.fork != "none":
            self.at(start + 300 + rng.randrange(spec.heal_ms // 2), self.spawn_forker)
        honest = [w for w in self.witnesses if not w.byzantine]
        for _ in range(spec.crashes):
            w = rng.choice(honest)
            self.at(start + rng.randrange(spec.heal_ms), partial(self.crash, w))
        heal = start + spec.heal_ms
        self.at(heal, self.heal)
        end = heal + 20_000
        while self._queue and self._queue[0][0] <= end:
            when, _tie, action = heapq.heappop(self._queue)
            self.now = when
            action()
            if self.healed and self.settled():
                break
        self.check()
        return self.result

    def heal(self) -> None:
        """From now on every message arrives, every witness is up and stays up."""
        self.healed = True
        for w in self.witnesses:
            w.votes.armed = False
            self.restart(w)

    def excused(self) -> set[EntryId]:
        """Honest entries that may never become final: an accept or a
        take-back that lost its race (the witnesses voted for the other), or
        that neither won (split votes: docs/witness.md §8), and every entry
        of its author's chain after it."""
        stuck = {
            t.entry.id
            for t in self.tasks
            if t.race is not None
            and not t.collector.done
            and not t.voided
            # With void votes only a split is excused: a loser whose rival is
            # certified gets a void certificate and its log goes on (§3.6).
            and not (
                self.spec.void and any(r.id in self.certified_ids() for r in self.rivals(t.entry))
            )
        }
        return {
            t.entry.id
            for t in self.tasks
            if t.entry.id in stuck or any(e.id in stuck for e in self.chain(t.entry))
        }

    def settled(self) -> bool:
        racing = self.spec.expiry_ms or any(t.race is not None for t in self.tasks)
        excused = self.excused() if racing else set()
        return (
            all(
                t.collector.done or t.voided
                for t in self.tasks
                if t.honest and t.entry.id not in excused
            )
            and all(t.announced or not t.honest for t in self.tasks)
            and not any(
                isinstance(t.entry.body, Transfer) and t.announced and not self._accepted(t.entry)
                for t in self.tasks
            )
        )

    def _accepted(self, transfer: Entry) -> bool:
        return any(
            isinstance(t.entry.body, Accept) and t.entry.body.transfer.id == transfer.id
            for t in self.tasks
        )

    # -- invariants ------------------------------------------------------------------

    def check(self) -> None:
        v = self.result.violations
        q = self.rules.quorum
        honest = {w.key.public for w in self.witnesses if not w.byzantine}
        certified: dict[MemberId, list[Entry]] = {}
        quorate: set[EntryId] = set()
        # Void votes (docs/witness.md §3.6) lock a position as votes do.
        voids = {eid for ids in self.void_pool.values() for eid, ws in ids.items() if len(ws) >= q}
        positions = sorted({*self.pool, *self.void_pool})
        for pos in positions:
            _c, author, seq = pos
            ids: dict[EntryId, set[MemberId]] = {}
            for pool in (self.pool, self.void_pool):
                for eid, ws in pool.get(pos, {}).items():
                    ids.setdefault(eid, set()).update(ws)
            for eid, ws in ids.items():
                signed = ws & honest
                for other, others in ids.items():
                    if other != eid and signed & others:
                        v.append(f"an honest witness voted for two ids at {author.hex()[:8]}#{seq}")
            normal = [eid for eid, ws in self.pool.get(pos, {}).items() if len(ws) >= q]
            if set(normal) & voids:
                v.append(f"an entry at {author.hex()[:8]}#{seq} is certified and void-certified")
            final = [*normal, *(eid for eid in self.void_pool.get(pos, {}) if eid in voids)]
            quorate.update(normal)
            if len(set(final)) > 1:
                v.append(f"{len(final)} certificates at {author.hex()[:8]}#{seq}")
            for eid in final:
                if eid not in self.store:
                    v.append(f"a certificate for an entry nobody signed at #{seq}")
                else:
                    certified.setdefault(author, []).append(self.store[eid])
        # The certified entries of a log lie on one chain.
        tips: dict[MemberId, Entry] = {}
        for author, entries in certified.items():
            tip = max(entries, key=lambda e: e.seq)
            on_chain = {e.id for e in [*self.chain(tip), tip]}
            if any(e.id not in on_chain for e in entries):
                v.append(f"certified entries of {author.hex()[:8]} on two branches")
            tips[author] = tip
        final_ids = {e.id for es in certified.values() for e in es}
        # No honest witness took a forged certificate: every final tip it
        # holds has a quorum of real votes.
        for w in self.witnesses:
            if w.byzantine:
                continue
            for author, head in w.view.ledger.backend.heads(self.community):
                # (A void certificate's quorum is of void votes, §3.6.)
                if head.final_seq and head.final_id not in quorate | voids:
                    v.append(f"witness {w.index} holds {author.hex()[:8]} final without a quorum")
        # Balances over final chains (up to each log's last certified entry).
        balances: dict[MemberId, int] = {}
        credited: dict[EntryId, int] = {}
        final_transfers: dict[EntryId, int] = {}
        for author, tip in tips.items():
            balance = 0
            for e in [*self.chain(tip), tip]:
                if isinstance(e.body, Transfer):
                    balance -= e.body.amount
                    final_transfers[e.id] = e.body.amount
                elif e.id in voids:  # final as a position, with no effect (§3.6)
                    if not any(r.id in quorate for r in self.rivals(e)):
                        v.append(f"{e.ref} is void-certified but no rival of it is certified")
                elif isinstance(e.body, Accept):
                    t = self.store[e.body.transfer.id]
                    if t.id not in final_ids:
                        v.append(f"{author.hex()[:8]} was credited for an uncertified transfer")
                    assert isinstance(t.body, Transfer)
                    balance += t.body.amount
                    credited[t.id] = credited.get(t.id, 0) + 1
                elif isinstance(e.body, TakeBack):
                    t = self.store[e.body.transfer.id]
                    assert isinstance(t.body, Transfer)
                    balance += t.body.amount
                    credited[t.id] = credited.get(t.id, 0) + 1
                elif isinstance(e.body, Reclaim | Decline):  # pragma: no cover - not simulated
                    raise AssertionError("the simulation makes no declines")
            balances[author] = balance
            if balance < -LIMIT:
                v.append(f"{author.hex()[:8]} spent {-balance} with a limit of {LIMIT}")
        if any(n > 1 for n in credited.values()):
            v.append("a transfer was credited twice")
        if set(credited) - set(final_transfers):
            v.append("a credit for a transfer that is not on its payer's final chain")
        in_flight = sum(a for t, a in final_transfers.items() if t not in credited)
        if sum(balances.values()) + in_flight != 0:
            v.append(f"final balances plus in flight sum to {sum(balances.values()) + in_flight}")
        finals = [self.store[e] for e in final_ids - voids if e in self.store]
        taken = {e.body.transfer.id for e in finals if isinstance(e.body, TakeBack)}
        if taken & {e.body.transfer.id for e in finals if isinstance(e.body, Accept)}:
            v.append("an accept and a take-back of one transfer are both certified")
        excused = self.excused()
        self.result.races_stuck = sum(
            1 for t in self.tasks if t.race and not t.collector.done and not t.voided
        )
        self.result.take_backs_won = sum(
            1 for e in final_ids - voids if isinstance(self.store[e].body, TakeBack)
        )
        undone = [
            t
            for t in self.tasks
            if t.honest and not (t.collector.done or t.voided) and t.entry.id not in excused
        ]
        self.result.after_void = sum(
            1
            for t in self.tasks
            if t.honest
            and t.collector.done
            and not t.void
            and any(e.id in voids for e in self.chain(t.entry))
        )
        if undone:
            v.append(f"{len(undone)} honest entries never became final")


def _replay(seed: int, spec: SimSpec) -> str:
    return f"replay: FinalitySim({seed}, {spec!r}).run()"


@st.composite
def sim_specs(draw: st.DrawFn) -> SimSpec:
    n = draw(st.sampled_from([4, 7]))
    return SimSpec(
        n=n,
        byzantine=draw(st.integers(0, max_faults(n))),
        loss=draw(st.sampled_from([0.0, 0.1, 0.3, 0.6])),
        dup=draw(st.sampled_from([0.0, 0.2])),
        max_delay_ms=draw(st.sampled_from([5, 300, 2_000])),
        payments=draw(st.integers(1, 12)),
        fork=draw(st.sampled_from(["none", "same_seq", "lower_seq", "deep"])),
        ask_decoy=draw(st.booleans()),
        crashes=draw(st.integers(0, 3)),
        put_crash=draw(st.sampled_from([0.0, 0.0, 0.1, 0.3])),
    )


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), spec=sim_specs())
@example(  # more certificates below the entry than one request carries
    seed=0,
    spec=SimSpec(
        n=4,
        byzantine=0,
        loss=0.0,
        dup=0.2,
        max_delay_ms=5,
        payments=11,
        fork="same_seq",
        ask_decoy=False,
        crashes=0,
        put_crash=0.0,
        heal_ms=4000,
        retry_ms=250,
        forker_rounds=12,
        lie=None,
        expiry_ms=None,
        take_backs=0.0,
        skew_ms=0,
    ),
)
def test_simulated_witnesses_never_certify_a_double_spend(seed: int, spec: SimSpec) -> None:
    result = FinalitySim(seed, spec).run()
    assert not result.violations, f"{result.violations}; {_replay(seed, spec)}"
    assert result.honest_done == result.honest_tasks, _replay(seed, spec)


def test_the_simulation_exercises_its_faults() -> None:
    """A fixed, busy run: loss, crashes (also mid-write), byzantine
    witnesses, a forker; the counters show each fault happened."""
    spec = SimSpec(
        n=7, byzantine=2, loss=0.3, dup=0.2, payments=5, fork="deep", crashes=3, put_crash=0.2
    )
    result = FinalitySim(11, spec).run()
    assert not result.violations, result.violations
    assert result.honest_tasks == result.honest_done >= 10  # 5 payments + 5 accepts
    assert result.garbage > 0
    assert result.equivocations > 0
    assert result.crashes > 0
    assert result.forks_proven > 0
    assert result.lies_caught > 0
    assert result.forged_certificates > 0


@pytest.mark.parametrize("lie", LIE_KINDS)
def test_f_witnesses_telling_one_lie_every_time_change_nothing(lie: str) -> None:
    """Each lie on its own, from f witnesses on every request (issue 10's
    is ``no_first``): every honest entry becomes final, no fork is recorded
    for it, no honest witness is blamed, and the liars are (when it is a lie)."""
    for n in (4, 7):
        spec = SimSpec(n=n, byzantine=max_faults(n), payments=4, fork="none", lie=lie)
        result = FinalitySim(5, spec).run()
        assert not result.violations, (lie, n, result.violations)
        assert result.honest_done == result.honest_tasks >= 8, (lie, n, result)
        if lie not in ("vote", "refuse", "silence", "garbage"):
            assert result.lies_caught > 0, (lie, n, result)


@pytest.mark.parametrize("fork_kind", ["same_seq", "lower_seq"])
def test_f_plus_one_liars_do_make_a_double_spend_and_the_checks_see_it(fork_kind: str) -> None:
    """The checks have teeth: past the bound (f + 1 byzantine witnesses, the
    honest ones split between the branches) both branches get certified."""
    for n in (4, 7):
        spec = SimSpec(
            n=n,
            byzantine=max_faults(n) + 1,
            loss=0.0,
            dup=0.0,
            payments=0,
            fork=fork_kind,
            ask_decoy=False,
        )
        sim = FinalitySim(3, spec, split_honest=True)
        result = sim.run()
        assert any("two branches" in x for x in result.violations), (n, result)
        # At one seq it is two certificates there; at two seqs (the decoy
        # fork) only the chain check sees it, which is why witnesses lock chains.
        same_seq = any("certificates at" in x for x in result.violations)
        assert same_seq == (fork_kind == "same_seq"), (n, result)


def test_without_chain_locks_a_fork_below_the_payments_spends_twice() -> None:
    """Why witnesses lock whole chains: witnesses that only keep one id per
    (author, seq), all honest, certify both payments of a payer that forked
    at a decoy offer (seq 2 on one branch, seq 3 on the other)."""
    for n in (4, 7):
        spec = SimSpec(n=n, loss=0.0, dup=0.0, payments=0, fork="lower_seq", ask_decoy=False)
        result = FinalitySim(3, spec, naive=True).run()
        assert any("two branches" in x for x in result.violations), (n, result)
        assert not any("certificates at" in x for x in result.violations), (n, result)
        # The real witnesses, same run: nothing.
        assert not FinalitySim(3, spec).run().violations
