"""What the author's vote request carries: enough of its log that a witness
holding none of it votes at once, with no ``wait`` round trip; and for void
votes, what a witness that cannot store the rival yet waits for."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import WITNESS_KEYS, certify, key, witnessed_world
from troc.node.certifier import CHAIN_WINDOW, MAX_WAIT_ROUNDS, Certifier
from troc.node.local import now_ms, open_local_node
from troc.node.witness import WitnessService
from troc.protocol.witness import MAX_DEPS, Answer, VoidVote, Voted, VoteRequest, Waiting


def test_a_request_carries_the_log_since_the_final_tip_up_to_the_frame_limit(
    tmp_path: Path,
) -> None:
    witnesses = [key(500 + i) for i in range(4)]
    with open_local_node(tmp_path / "a", key(1)) as author:
        c = author.create_community(
            "W", "h", 5, finality="witnessed", witnesses=tuple(w.public for w in witnesses),
            faults=1,
        )  # fmt: skip
        genesis = author.community(c).genesis
        # A burst of own entries none of which is final yet: the driver asks
        # for the newest, whose certificate makes them all final.
        entries = [author.offer(c, f"offer {i}") for i in range(60)]
        request = Certifier(author, None, lambda c, b: None)._request(entries[-1])  # type: ignore[arg-type]
    assert CHAIN_WINDOW + 2 <= MAX_DEPS  # room for the entry an accept names, and a rival
    assert len(request.deps) == 60  # the join and 59 offers: all of it below the entry
    with open_local_node(tmp_path / "w", witnesses[0]) as w:
        w.ingest(genesis)  # follows the community, holds none of the author's log
        answer = WitnessService(w, witnesses[0], now_ms).answer(request)
    assert isinstance(answer, Voted), answer


def test_void_votes_for_a_lost_take_back_from_a_witness_that_never_saw_the_accept(
    tmp_path: Path,
) -> None:
    """The payer's take-back lost: the payee's accept is certified. A witness
    that never saw the accept lacks its log and its transfer's certificate:
    it waits for them (docs/witness.md §3.6, step 3), the payer's Certifier
    sends what each wait names, and the void vote comes; before, it refused
    ``no_certified_rival`` and the payer's node had nothing to send."""
    p, q = key(1), key(2)
    world = witnessed_world()
    world.join(p), world.join(q)
    t = world.pay(p, q, 10, expires_ms=world.now + 500)
    k = world.take_back(p, t)  # a tick (1 s) later: expired
    a = world.accept(q, t)
    signer = WITNESS_KEYS[3]
    with open_local_node(tmp_path / "p", p) as payer, open_local_node(tmp_path / "w", signer) as w:
        for node in (payer, w):
            node.ingest(world.genesis.wire)
        for e in world.log:
            payer.ingest(e.wire, community=world.community)
        acert = certify(a)
        for cert in (certify(t), acert):
            assert payer.ingest_certificate(cert).ok
        certifier = Certifier(payer, None, lambda c, b: None)  # type: ignore[arg-type]
        service = WitnessService(w, signer, now_ms)
        request: VoteRequest | None = certifier._request(k, rival=(a, acert))
        answers: list[Answer] = []
        for _round in range(MAX_WAIT_ROUNDS):  # as Certifier._ask does
            assert request is not None, answers
            answers.append(service.answer(request))
            if not isinstance(answers[-1], Waiting):
                break
            request = certifier._named(k, answers[-1], rival=(a, acert))
    assert Waiting(certificates=(t.ref,)) in answers
    voted = answers[-1]
    assert isinstance(voted, Voted), answers
    assert isinstance(voted.vote, VoidVote)
    assert voted.vote.ref == k.ref
