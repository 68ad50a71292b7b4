"""Witnessed finality over real libp2p hosts on 127.0.0.1 (in one process).

Four witness nodes (f = 1, q = 3) and two members: a payment becomes final
within seconds, the payee can accept only once it is, and balances say what
is final; with one witness down payments still finalise, with two they wait
and finish when one returns; one witness lying about forks is ignored; a
replayed certificate is neither checked again nor forwarded; a peer flooding
a witness with requests is slowed and refused while another is served.
Real-process versions are in tests/e2e.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from troc.crypto.sign import SigningKey
from troc.errors import RefusedError
from troc.net.gossip import GossipParams
from troc.net.p2p import DialError, FrameError, FrameReader, P2PHost, open_host, write_frame
from troc.node import ops
from troc.node.config import PeerQuotas
from troc.node.local import open_local_node
from troc.node.node import Node, NodeConfig, final_topic_of, open_node
from troc.node.witness import WitnessService
from troc.protocol.entry import CommunityId, Entry, EntryId, Ref
from troc.protocol.witness import (
    MESSAGE_LIMITS,
    PROTOCOL_ID,
    Answer,
    Certificate,
    Conflicting,
    Refused,
    Vote,
    VoteRequest,
    decode_answer,
    encode_request,
)

pytestmark = [
    pytest.mark.slow,
    # py-libp2p 0.8.1 leaks the socket of a dial cancelled mid-handshake (here:
    # nodes stopped while they redial a stopped witness); the GC reports it.
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.wkeys = [SigningKey.generate() for _ in range(4)]
        self.a, self.b = SigningKey.generate(), SigningKey.generate()
        with open_local_node(tmp / "a", self.a) as a:
            self.community: CommunityId = a.create_community(
                "Witnessed valley",
                "h",
                100,
                finality="witnessed",
                witnesses=tuple(k.public for k in self.wkeys),
                faults=1,
            )
            self.genesis = a.community(self.community).genesis
        with open_local_node(tmp / "b", self.b) as b:
            b.join(self.genesis)
        for i, k in enumerate(self.wkeys):
            with open_local_node(tmp / f"w{i}", k) as w:
                w.ingest(self.genesis)  # a witness follows the community
        self.witnesses: dict[int, tuple[Node, trio.CancelScope]] = {}
        self.addrs: dict[int, str] = {}

    def config(self, name: str, *, witness: bool = False, bootstrap: tuple[str, ...] = ()) -> Any:
        return NodeConfig(
            home=self.tmp / name,
            bootstrap=bootstrap,
            sync_interval=1.0,
            control_socket=False,
            remember_peers=False,
            witness=witness,
            listen=(f"/ip4/127.0.0.1/tcp/{0}",),
        )

    async def start_witness(self, nursery: trio.Nursery, i: int) -> Node:
        async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            listen = self.addrs.get(i)
            config = self.config(f"w{i}", witness=True)
            if listen is not None:  # a restart listens where peers expect it
                config = dataclasses.replace(config, listen=(listen.split("/p2p/")[0],))
            with trio.CancelScope() as scope:
                async with open_node(config, self.wkeys[i]) as node:
                    self.witnesses[i] = (node, scope)
                    task_status.started(node)
                    await trio.sleep_forever()

        node: Node = await nursery.start(run)
        self.addrs[i] = node.addrs()[0]
        return node

    def stop_witness(self, i: int) -> None:
        self.witnesses.pop(i)[1].cancel()

    @asynccontextmanager
    async def member(self, name: str, key: SigningKey) -> AsyncIterator[Node]:
        boot = tuple(self.addrs[i] for i in sorted(self.addrs))
        async with open_node(self.config(name, bootstrap=boot), key) as node:
            yield node


async def pay(node: Node, c: CommunityId, to: bytes, amount: int, wait: float) -> dict[str, Any]:
    # b joined offline and never runs: its join never reaches the payer.
    params = {"community": ops.cid(c), "to": ops.mid(to), "amount": str(amount), "wait": wait}
    return await node.run_op("pay", {**params, "to_unknown": True})


async def eventually(check: Any, seconds: float = 15.0) -> None:
    with trio.fail_after(seconds):
        while not check():  # noqa: ASYNC110 - polls node state
            await trio.sleep(0.05)


async def test_payments_become_final_and_only_final_ones_are_accepted(tmp_path: Path) -> None:
    cl = Cluster(tmp_path)
    c = cl.community
    async with trio.open_nursery() as nursery:
        for i in range(4):
            await cl.start_witness(nursery, i)
        async with cl.member("a", cl.a) as a, cl.member("b", cl.b) as b:
            await eventually(lambda: b.local.balance(c, cl.b.public).joined)
            result = await pay(a, c, cl.b.public, 10, wait=20)
            assert result["finality"]["final"], result
            assert result["finality"]["votes"] >= 3
            transfer = a.local.pending_out(c)[0].ref
            assert a.local.balance(c).balance == -10  # final
            # The payee's node learns the certificate, then may accept.
            await eventually(lambda: b.local.is_final(c, transfer))
            accepted = await b.run_op(
                "accept", {"community": ops.cid(c), "transfer": ops.eid(transfer.id), "wait": 20}
            )
            assert accepted["finality"]["final"], accepted
            for node in (a, b, *(w for w, _ in cl.witnesses.values())):
                await eventually(lambda n=node: n.local.balance(c, cl.b.public).balance == 10)
                assert node.local.balance(c, cl.a.public).balance == -10
        nursery.cancel_scope.cancel()


async def test_an_uncertified_payment_cannot_be_accepted(tmp_path: Path) -> None:
    """No witness runs: the payment stays pending, the payee cannot accept."""
    cl = Cluster(tmp_path)
    c = cl.community
    async with cl.member("a", cl.a) as a, cl.member("b", cl.b) as b:
        await a.connect(b.addrs()[0])
        result = await pay(a, c, cl.b.public, 10, wait=0.5)
        assert not result["finality"]["final"]
        transfer = a.local.pending_out(c)[0].ref
        await eventually(
            lambda: b.local.store.entry(c, transfer.author, transfer.seq, transfer.id) is not None
        )
        with pytest.raises(RefusedError) as info:
            b.local.accept(c, transfer)
        assert info.value.reason == "not_final"
        assert b.local.balance(c).pending_in_final == 0
        assert a.local.balance(c).balance == 0  # nothing final yet
        assert a.local.balance(c).unconfirmed == -10


async def test_one_witness_down_changes_nothing_two_down_wait(tmp_path: Path) -> None:
    cl = Cluster(tmp_path)
    c = cl.community
    async with trio.open_nursery() as nursery:
        for i in range(4):
            await cl.start_witness(nursery, i)
        async with cl.member("a", cl.a) as a:
            cl.stop_witness(3)
            first = await pay(a, c, cl.b.public, 5, wait=20)
            assert first["finality"]["final"], first
            cl.stop_witness(2)
            second = await pay(a, c, cl.b.public, 7, wait=2)
            assert not second["finality"]["final"]
            assert second["finality"]["votes"] == 2
            assert a.local.balance(c).balance == -5
            await cl.start_witness(nursery, 2)  # one comes back: the node keeps asking
            await eventually(lambda: a.local.balance(c).balance == -12, 30)
        nursery.cancel_scope.cancel()


def lie_about_forks(witness: Node) -> None:
    """Make ``witness`` answer every request as in issue 10: its vote for a
    made-up id at the entry's position, the author's own entry as the
    "other" one, no entry voted for. No fork exists."""
    service = witness.witness
    assert service is not None

    def decide(request: VoteRequest) -> Answer:
        entry = Entry.decode(request.entry)
        if entry.community is None:
            return Refused("unknown_community")
        made_up = Ref(entry.author, entry.seq, EntryId(bytes(32)))
        return Conflicting(Vote.sign(service.key, entry.community, made_up), entry.wire)

    service._decide = decide  # type: ignore[method-assign]


def answer_late(witness: Node, seconds: float) -> None:
    """Delay ``witness``'s answers, so a liar's answer arrives first."""
    service = witness.witness
    assert service is not None
    ask = service.ask

    async def late(request: VoteRequest) -> Answer | None:
        await trio.sleep(seconds)
        return await ask(request)

    service.ask = late  # type: ignore[method-assign]


async def test_one_lying_witness_does_not_stop_finality(tmp_path: Path) -> None:
    """Issue 10: one witness of four (f = 1) claims a fork it cannot prove,
    first. Payments still become final, the payee accepts, no fork is
    recorded, and the liar is named in the progress and in status."""
    cl = Cluster(tmp_path)
    c = cl.community
    async with trio.open_nursery() as nursery:
        for i in range(4):
            await cl.start_witness(nursery, i)
        liar, _ = cl.witnesses[0]
        lie_about_forks(liar)
        for i in (1, 2, 3):
            answer_late(cl.witnesses[i][0], 0.5)
        liar_hex = cl.wkeys[0].public.hex()
        async with cl.member("a", cl.a) as a, cl.member("b", cl.b) as b:
            await eventually(lambda: b.local.balance(c, cl.b.public).joined)
            for amount in (10, 5):
                result = await pay(a, c, cl.b.public, amount, wait=20)
                fin = result["finality"]
                assert fin["final"], result
                assert fin["problem"] is None
                assert fin["votes"] >= 3
                assert "false fork" in fin["witness_problems"][liar_hex]
            head = a.local.store.head(c, cl.a.public)
            assert head is not None
            assert head.frozen_at is None  # no fork recorded
            assert a.local.balance(c).balance == -15
            lies = a.status()["witness"]["lies"]
            assert set(lies) == {liar_hex}
            assert lies[liar_hex] >= 2  # each payment (and the join, if asked after start)
            transfer = a.local.pending_out(c)[0].ref
            await eventually(lambda: b.local.is_final(c, transfer))
            accepted = await b.run_op(
                "accept", {"community": ops.cid(c), "transfer": ops.eid(transfer.id), "wait": 20}
            )
            assert accepted["finality"]["final"], accepted
        nursery.cancel_scope.cancel()


def fail_once(witness: Node) -> None:
    """Make ``witness`` fail on its own side once (its service returns no
    answer: it closes the stream, as one killed mid-answer does)."""
    service = witness.witness
    assert service is not None
    ask = service.ask
    failed: list[bool] = []

    async def once(request: VoteRequest) -> Answer | None:
        if not failed:
            failed.append(True)
            return None
        return await ask(request)

    service.ask = once  # type: ignore[method-assign]


async def test_a_witness_that_hangs_up_is_asked_again_not_called_a_liar(tmp_path: Path) -> None:
    """A witness whose stream ends before its answer (killed, or failing on
    its own side) is unreachable for now, not a liar: with another witness
    down, its vote is needed, and the payment becomes final once it answers."""
    cl = Cluster(tmp_path)
    c = cl.community
    async with trio.open_nursery() as nursery:
        for i in range(4):
            await cl.start_witness(nursery, i)
        async with cl.member("a", cl.a) as a:
            cl.stop_witness(3)
            fail_once(cl.witnesses[0][0])
            result = await pay(a, c, cl.b.public, 5, wait=20)
            assert result["finality"]["final"], result
            assert a.status()["witness"]["lies"] == {}
        nursery.cancel_scope.cancel()


async def test_a_replayed_held_certificate_is_not_checked_or_forwarded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10: X re-publishes a certificate B holds (a new message id, old
    content): B checks none of its signatures and does not forward it to A,
    while a new certificate from X is checked and forwarded as usual."""
    cl = Cluster(tmp_path)
    c = cl.community
    topic = final_topic_of(c)

    def certificate(ref: Ref) -> bytes:
        votes = [Vote.sign(k, c, ref) for k in cl.wkeys[:3]]
        return Certificate.from_votes(votes).encode()

    held = certificate(Ref(cl.a.public, 1, EntryId(b"h" * 32)))
    new = certificate(Ref(cl.b.public, 7, EntryId(b"n" * 32)))
    checked: list[bytes] = []
    problem = Certificate.problem

    def counting(self: Certificate, rules: Any) -> str | None:
        checked.append(self.encode())
        return problem(self, rules)

    async with cl.member("a", cl.a) as a, cl.member("b", cl.b) as b:
        for node in (a, b):
            assert node.local.ingest_certificate(held).ok
        await a.connect(b.addrs()[0])
        forwarded: list[bytes] = []
        over_quota = a._over_quota

        def record(msg: Any) -> bool:
            forwarded.append(msg.data)
            return over_quota(msg)

        a._over_quota = record  # type: ignore[method-assign]
        await eventually(lambda: b.peer_id in a.host.gossip.topic_peers(topic))
        monkeypatch.setattr(Certificate, "problem", counting)
        async with open_host(gossip=GossipParams()) as x:
            await x.connect(b.addrs()[0])
            await eventually(lambda: b.peer_id in x.gossip.topic_peers(topic))
            for _ in range(5):
                await x.gossip.publish(topic, held)
            await x.gossip.publish(topic, new)
            await eventually(lambda: new in forwarded)
    # (outside the nodes' nurseries, for a readable failure)
    assert held not in forwarded
    assert held not in checked  # neither B's validator nor its store checked it
    assert new in checked


async def ask_witness(
    x: P2PHost, witness: str, request: bytes, answered: list[float], closed: list[float]
) -> None:
    """Ask on one stream until the witness closes it; note when each answer
    came, and when the witness closed the stream unanswered."""
    stream = await x.open_stream(witness, PROTOCOL_ID)
    reader = FrameReader(stream, max_size=MESSAGE_LIMITS.max_size, frame_timeout=5.0)
    try:
        while True:
            await write_frame(stream, request, frame_timeout=5.0)
            decode_answer(await reader.read_frame())
            answered.append(trio.current_time())
    except FrameError:
        closed.append(trio.current_time())  # unanswered: over budget
    finally:
        await stream.reset()


async def flood_for(x: P2PHost, witness: str, request: bytes, flood: Flood, seconds: float) -> None:
    """Keep asking on a new stream whenever the witness closes one."""
    with trio.move_on_after(seconds):
        for _ in range(1000):  # bounded
            try:
                await ask_witness(x, witness, request, flood.answered, flood.closed)
            except DialError:
                await trio.sleep(0.05)


@dataclasses.dataclass
class Flood:
    answered: list[float] = dataclasses.field(default_factory=list)
    closed: list[float] = dataclasses.field(default_factory=list)
    honest: list[float] = dataclasses.field(default_factory=list)  # Y's answer times
    throttled: int = 0
    elapsed: float = 0.0


async def flood_witness(tmp: Path, request: bytes, seconds: float, quotas: Any = None) -> Flood:
    """X asks a witness ``request`` on 4 streams as fast as answers come
    for ``seconds``; Y asks a small request now and then, on its own."""
    config = NodeConfig(
        home=tmp / "w",
        control_socket=False,
        remember_peers=False,
        witness=True,
        quotas=quotas,
        listen=("/ip4/127.0.0.1/tcp/0",),
    )
    small = encode_request(VoteRequest(b"not an entry"))  # refused, after a commit
    out = Flood()
    async with open_node(config, SigningKey.generate()) as w, open_host() as x, open_host() as y:
        for h in (x, y):
            await h.connect(w.addrs()[0])
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(flood_for, x, w.peer_id, request, out, seconds)
            for _ in range(5):
                await trio.sleep(seconds / 6)
                asked = trio.current_time()
                stream = await y.open_stream(w.peer_id, PROTOCOL_ID)
                await write_frame(stream, small)
                decode_answer(
                    await FrameReader(stream, max_size=MESSAGE_LIMITS.max_size).read_frame()
                )
                out.honest.append(trio.current_time() - asked)
                await stream.reset()
            nursery.cancel_scope.cancel()
        out.elapsed = trio.current_time() - start
        out.throttled = w.status()["witness"]["throttled"]
    return out


async def test_a_peer_flooding_witness_requests_is_slowed_while_another_is_served(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Issue 10: each request runs a durable transaction under the node
    lock. X asks on 4 streams as fast as answers come; Y asks now and then.
    X's answers come at its budget (``rate`` a second after a second's
    burst: 52 in 2.3 s, 654 without the charge); each of Y's requests is
    answered promptly (within 2 s; measured 4-35 ms)."""
    rate = 20.0
    monkeypatch.setattr(WitnessService, "REQUESTS_PER_S", rate)
    request = encode_request(VoteRequest(b"not an entry"))
    out = await flood_witness(tmp_path, request, 2.0)
    assert len(out.answered) <= rate * (out.elapsed + 1) + 8, (len(out.answered), out.elapsed)
    assert out.throttled > 0
    assert max(out.honest) < 2.0, out.honest  # Y's own budget is untouched by X's flood


async def test_a_peer_far_over_its_byte_budget_has_its_witness_streams_closed(
    tmp_path: Path,
) -> None:
    """X's requests carry 64 KiB each against a budget of 100 KB/s: more
    than 2 s over, its streams are closed unanswered; Y is still served."""
    quotas = PeerQuotas(bytes_per_s=100_000)
    request = encode_request(VoteRequest(b"not an entry", tuple(bytes(1024) for _ in range(64))))
    out = await flood_witness(tmp_path, request, 3.0, quotas)
    assert out.closed, out
    assert len(out.answered) * len(request) <= 100_000 * (out.elapsed + 1 + 2), out
    assert max(out.honest) < 2.0, out.honest
