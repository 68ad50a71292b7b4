"""Hostile peers against a real node on 127.0.0.1 ("Bounded and hostile-proof").

Each test runs a victim node A and an honest node B (both :func:`open_node`,
one community, connected) and attacks A from a raw libp2p host X
(:func:`troc.net.p2p.open_host`), which writes whatever bytes it likes on
``/troc/sync/2`` streams or on the community's gossip topic. Each then
checks what an operator would notice:

* A stays up (a crash in any of its tasks would end the ``open_node`` block
  and fail the test);
* A keeps syncing with B: an entry that only anti-entropy can carry (B holds
  it but does not gossip it) and an entry B appends (gossiped) both reach A
  within a bounded wait;
* where the design says so, X is cut off and banned
  (``status()["banned"]``) and its later streams are refused.

Every wait is bounded with ``trio.fail_after``.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.abc import INetStream

import troc.node.sync as node_mod
from troc.crypto.sign import Domain, SigningKey
from troc.net.gossip import GossipParams
from troc.net.p2p import FrameError, FrameReader, P2PHost, encode_frame, open_host
from troc.node.local import LocalNode, now_ms, open_local_node
from troc.node.node import MAX_INBOUND_PER_PEER, Node, NodeConfig, open_node, topic_of
from troc.protocol import codec
from troc.protocol.entry import AnyBody, CommunityId, Entry, EntryId, Genesis, Join, Offer
from troc.protocol.sync_wire import MAX_FRAME, decode_message, encode_message
from troc.protocol.sync_wire import PROTOCOL_ID as SYNC

#: How long an honest entry may take to reach A (sync_interval is 0.2 s;
#: it typically takes well under a second).
HONEST_WAIT = 5.0
#: How long A may take to cut off a peer that misbehaved (it needs no timeout).
CUT_WAIT = 3.0
#: How often the waits below look again at what they wait for.
POLL = 0.02


def _config(home: Path, ban_seconds: float) -> NodeConfig:
    return NodeConfig(
        home=home,
        listen=("/ip4/127.0.0.1/tcp/0",),
        sync_interval=0.2,
        control_socket=False,
        ban_seconds=ban_seconds,
        remember_peers=False,
    )


@dataclass
class Net:
    """Victim A, honest B, and C: an honest member off the network whose
    entries B holds but never gossips (B publishes only its own), so only
    anti-entropy can bring them to A."""

    a: Node
    b: Node
    c: LocalNode
    community: CommunityId
    _c_given: int = 0
    _probes: itertools.count[int] = field(default_factory=itertools.count)

    @staticmethod
    def has(node: Node, entry: Entry) -> bool:
        store = node.local.store
        if entry.community is None:
            return store.genesis(CommunityId(entry.id)) is not None
        return store.entry(entry.community, entry.author, entry.seq, entry.id) is not None

    async def wait_for(self, node: Node, entry: Entry, within: float = HONEST_WAIT) -> None:
        await until(
            f"{entry.kind} {entry.id.hex()[:8]} stored", lambda: self.has(node, entry), within
        )

    async def sync_probe(self, within: float = HONEST_WAIT) -> None:
        """An entry that only anti-entropy carries reaches A ``within`` seconds."""
        entry = self.c.offer(self.community, f"sync probe {next(self._probes)}")
        wires = self.c.store.entries_since(self.community, self.c.member, self._c_given, 1000)
        self.b.local.ingest_many(wires, community=self.community)
        self._c_given = entry.seq
        assert self.has(self.b, entry)
        await self.wait_for(self.a, entry, within)

    async def gossip_probe(self, within: float = HONEST_WAIT) -> None:
        """An entry B appends reaches A ``within`` seconds (by gossip or sync)."""
        entry = self.b.local.offer(self.community, f"gossip probe {next(self._probes)}")
        await self.wait_for(self.a, entry, within)

    async def honest_ok(self, within: float = HONEST_WAIT) -> None:
        """What an operator checks: A is up, answers, and still syncs with B."""
        status = self.a.status()
        assert status["peer_id"] == self.a.peer_id
        assert self.b.peer_id in status["peers"]
        await self.sync_probe(within)
        await self.gossip_probe(within)

    @asynccontextmanager
    async def attacker(self, **kw: Any) -> AsyncIterator[P2PHost]:
        """A raw host X connected to A."""
        kw.setdefault("gossip", None)
        async with open_host(**kw) as x:
            with trio.fail_after(CUT_WAIT):
                await x.connect(self.a.addrs()[0])
            yield x

    def banned(self, peer: str) -> bool:
        return peer in self.a.status()["banned"]


@asynccontextmanager
async def open_net(tmp: Path, *, ban_seconds: float = 60.0) -> AsyncIterator[Net]:
    async with (
        open_node(_config(tmp / "a", ban_seconds), SigningKey.generate()) as a,
        open_node(_config(tmp / "b", ban_seconds), SigningKey.generate()) as b,
    ):
        await a.run_op("community.create", {"name": "Valley", "unit": "hour", "credit_limit": 100})
        invitation = (await a.run_op("community.invite", {}))["invitation"]
        await b.run_op("community.join", {"invitation": invitation})  # and connects to A
        [info] = a.local.communities()
        await until("B connects to A", lambda: b.peer_id in a.host.connected_peers())
        with open_local_node(tmp / "c", SigningKey.generate()) as c:
            c.join(info.genesis)
            net = Net(a, b, c, info.id)
            await net.honest_ok()  # the baseline: A and B sync before any attack
            yield net


# --- an attacker's tools ------------------------------------------------------


def frame(msg: dict[str, Any]) -> bytes:
    return encode_frame(encode_message(msg))


def hello(community: CommunityId) -> bytes:
    """A hello whose digest matches nobody's, so the responder answers with heads."""
    return frame({"t": "hello", "c": community, "d": bytes(32), "n": 0})


NO_HEADS = frame({"t": "heads", "h": []})


def varint(n: int) -> bytes:
    """A frame's length prefix announcing ``n`` bytes (however many follow)."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def chain(key: SigningKey, community: CommunityId, bodies: list[AnyBody]) -> list[Entry]:
    """Validly signed entries of one new log (seq 1, 2, …), stored nowhere."""
    out: list[Entry] = []
    prev: EntryId | None = None
    for seq, body in enumerate(bodies, start=1):
        e = Entry.create(
            key, community=community, seq=seq, prev=prev, timestamp_ms=now_ms(), body=body
        )
        out.append(e)
        prev = e.id
    return out


def forged(entry: Entry) -> bytes:
    """``entry``'s signed bytes with a signature by another key."""
    return codec.pack([entry.signed, SigningKey.generate().sign(Domain.ENTRY, entry.signed)])


def new_genesis(name: str) -> Entry:
    rules = Genesis(name=name, unit="hour", credit_limit=100)
    return Entry.create(
        SigningKey.generate(), community=None, seq=0, prev=None, timestamp_ms=now_ms(), body=rules
    )


async def read_until_cut(
    stream: INetStream, within: float = CUT_WAIT, reader: FrameReader | None = None
) -> list[dict[str, Any]]:
    """Read A's messages until A ends the stream (EOF or reset); fail if A
    keeps it open longer than ``within`` seconds."""
    reader = reader or FrameReader(stream, max_size=MAX_FRAME, frame_timeout=within + 1)
    got: list[dict[str, Any]] = []
    with trio.fail_after(within):
        while True:
            try:
                data = await reader.read_frame()
            except FrameError as exc:
                reason = exc.reason
                break
            got.append(decode_message(data))
    assert reason in {"eof", "reset"}
    return got


async def reset(stream: INetStream) -> None:
    with trio.move_on_after(2):
        try:
            await stream.reset()
        except Exception:
            pass  # gone already


async def send_then_read(x: P2PHost, peer: str, data: bytes) -> list[dict[str, Any]]:
    """Open a sync stream, write ``data`` (keeping the stream open) and
    return what A sent before ending the stream."""
    stream = await x.open_stream(peer, SYNC)
    try:
        await stream.write(data)
        return await read_until_cut(stream)
    finally:
        await reset(stream)


async def first_answer(x: P2PHost, peer: str, community: CommunityId) -> list[dict[str, Any]]:
    """Open a sync stream, say hello, return A's first answer."""
    stream = await x.open_stream(peer, SYNC)
    try:
        await stream.write(hello(community))
        reader = FrameReader(stream, max_size=MAX_FRAME, frame_timeout=CUT_WAIT)
        return [decode_message(await reader.read_frame())]
    finally:
        await reset(stream)


async def play_initiator(
    x: P2PHost, peer: str, community: CommunityId, wires: list[bytes]
) -> list[str]:
    """A whole sync session from X that claims to hold nothing and sends
    ``wires``; returns the kinds of A's messages."""
    stream = await x.open_stream(peer, SYNC)
    reader = FrameReader(stream, max_size=MAX_FRAME, frame_timeout=CUT_WAIT)
    try:
        await stream.write(hello(community))
        got = [decode_message(await reader.read_frame())["t"]]
        assert got == ["heads"]
        await stream.write(NO_HEADS + frame({"t": "entries", "e": wires}) + frame({"t": "end"}))
        with trio.fail_after(CUT_WAIT):
            while "fin" not in got:
                got.append(decode_message(await reader.read_frame())["t"])
        await stream.write(frame({"t": "fin"}))
        got += kinds(await read_until_cut(stream, reader=reader))
        return got
    finally:
        await reset(stream)


async def until(what: str, predicate: Callable[[], bool], within: float = CUT_WAIT) -> None:
    """Wait (bounded) for a condition that no event announces: store contents,
    status, libp2p's peer tables."""
    try:
        with trio.fail_after(within):
            while not predicate():  # noqa: ASYNC110 (polling: nothing to wait on)
                await trio.sleep(POLL)
    except trio.TooSlowError:
        raise AssertionError(f"not within {within} s: {what}") from None


def kinds(messages: list[dict[str, Any]]) -> list[str]:
    return [m["t"] for m in messages]


# --- 1. garbage on a sync stream -------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\xff" * 64, id="not-a-frame"),  # a length prefix too long to be one
        pytest.param(b"\x85\x00" + b"x" * 8, id="bad-varint"),  # not minimally encoded
        pytest.param(encode_frame(b"\xc1 not msgpack"), id="not-msgpack"),
        pytest.param(bytes([40]) + random.Random(7).randbytes(40), id="random-body"),
        pytest.param(encode_frame(codec.pack([1, 2, 3])), id="msgpack-not-a-message"),
        pytest.param(frame({"t": "fin"}), id="no-hello-first"),
    ],
)
async def test_garbage_on_sync_stream_is_cut_off_and_banned(tmp_path: Path, garbage: bytes) -> None:
    async with open_net(tmp_path) as net, net.attacker() as x:
        # A answers nothing and ends the stream at once (no frame timeout).
        assert await send_then_read(x, net.a.peer_id, garbage) == []
        await until("X is banned", lambda: net.banned(x.peer_id))
        await net.honest_ok()


# --- 2. a frame over MAX_FRAME ---------------------------------------------------


@pytest.mark.parametrize("size", [MAX_FRAME + 1, 1 << 40])
@pytest.mark.parametrize("after_hello", [False, True], ids=["first-frame", "mid-session"])
async def test_oversized_frame_refused_before_its_body(
    tmp_path: Path, size: int, after_hello: bool
) -> None:
    async with open_net(tmp_path) as net, net.attacker() as x:
        prefix = hello(net.community) if after_hello else b""
        # The length and a few body bytes, then nothing: a reader that waited
        # for the body would hold the stream for FRAME_TIMEOUT (30 s), far
        # beyond CUT_WAIT.
        got = await send_then_read(x, net.a.peer_id, prefix + varint(size) + b"BODY")
        assert kinds(got) == (["heads"] if after_hello else [])
        await until("X is banned", lambda: net.banned(x.peer_id))
        await net.honest_ok()


# --- 3. entries with a bad signature ------------------------------------------------


async def test_bad_signature_bans_and_ban_holds_then_expires(tmp_path: Path) -> None:
    ban = 4.0
    seed = os.urandom(32)  # X's identity: it comes back with it
    async with open_net(tmp_path, ban_seconds=ban) as net:
        topic = topic_of(net.community)
        async with net.attacker(key_seed=seed) as x:
            # A forged copy of C's next entry (C signed it, nobody has it yet).
            real = net.c.offer(net.community, "forged offer")
            stream = await x.open_stream(net.a.peer_id, SYNC)
            await stream.write(hello(net.community))
            reader = FrameReader(stream, max_size=MAX_FRAME, frame_timeout=CUT_WAIT)
            assert decode_message(await reader.read_frame())["t"] == "heads"
            await stream.write(NO_HEADS + frame({"t": "entries", "e": [forged(real)]}))
            await read_until_cut(stream)
            banned_at = trio.current_time()
            await until("X is banned", lambda: net.banned(x.peer_id))
            await until("A hangs up on X", lambda: net.a.peer_id not in x.connected_peers())
            assert not net.has(net.a, real)

        # X restarts and comes back under the same identity. The ban holds:
        # its sync streams are refused (no answer), its gossip is dropped.
        async with net.attacker(key_seed=seed, gossip=GossipParams()) as x:
            assert net.banned(x.peer_id)
            assert await send_then_read(x, net.a.peer_id, hello(net.community)) == []
            await until("X knows A's topic", lambda: net.a.peer_id in x.gossip.topic_peers(topic))
            unwelcome = chain(SigningKey.generate(), net.community, [Join()])[0]
            await x.gossip.publish(topic, unwelcome.wire)
            # A does not hold the forgery against the real entry (same id).
            await net.honest_ok()
            assert net.has(net.a, real)
            assert not net.has(net.a, unwelcome)
            assert net.banned(x.peer_id)

            # A ban lasts a while, not forever.
            await trio.sleep(max(0.0, banned_at + ban + 0.2 - trio.current_time()))
            assert not net.banned(x.peer_id)
            assert kinds(await first_answer(x, net.a.peer_id, net.community)) == ["heads"]
            welcome = chain(SigningKey.generate(), net.community, [Join()])[0]
            await x.gossip.publish(topic, welcome.wire)
            await net.wait_for(net.a, welcome, CUT_WAIT)


async def test_an_entry_already_held_is_not_gossiped_on(tmp_path: Path) -> None:
    """X re-publishes an entry A holds (a new message, old content): A does not
    forward it to B, while a new entry from X is forwarded as usual."""
    async with open_net(tmp_path) as net:
        topic = topic_of(net.community)
        old = net.b.local.offer(net.community, "already everywhere")
        await net.wait_for(net.a, old)
        seen_by_b: list[bytes] = []
        check = net.b._over_quota

        def record(msg: Any) -> bool:
            seen_by_b.append(msg.data)
            return check(msg)

        net.b._over_quota = record  # type: ignore[method-assign]
        async with net.attacker(gossip=GossipParams()) as x:
            await until("X knows A's topic", lambda: net.a.peer_id in x.gossip.topic_peers(topic))
            await x.gossip.publish(topic, old.wire)
            new = chain(SigningKey.generate(), net.community, [Join()])[0]
            await x.gossip.publish(topic, new.wire)
            await until("A forwards the new entry to B", lambda: new.wire in seen_by_b, HONEST_WAIT)
            assert old.wire not in seen_by_b


# --- 4. slow loris ------------------------------------------------------------------


async def test_stalled_inbound_streams_do_not_block_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame_timeout = 4.0
    monkeypatch.setattr(node_mod, "FRAME_TIMEOUT", frame_timeout)
    async with open_net(tmp_path) as net, net.attacker() as x:
        half_hello = hello(net.community)[:10]
        half_heads = NO_HEADS[:2]
        stalled = []
        for data in (half_hello, hello(net.community) + half_heads):
            stream = await x.open_stream(net.a.peer_id, SYNC)
            await stream.write(data)
            stalled.append(stream)
        start = trio.current_time()
        # While both stall (they take all of X's inbound slots), A syncs with B.
        await net.honest_ok(within=(frame_timeout - 1) / 2)
        assert trio.current_time() - start < frame_timeout
        # Then A cuts them, after the frame timeout: not before, not much after.
        first, second = [await read_until_cut(s, within=frame_timeout + 2) for s in stalled]
        assert (kinds(first), kinds(second)) == ([], ["heads"])
        assert trio.current_time() - start >= frame_timeout - 0.5
        assert not net.banned(x.peer_id)  # slowness is no proof of malice
        for s in stalled:
            await reset(s)
        await net.honest_ok()


async def test_dripping_responder_does_not_hold_up_sync(tmp_path: Path) -> None:
    """X answers A's (and B's) sync sessions with a valid but endless trickle,
    each frame well within FRAME_TIMEOUT (30 s): a session lasts up to
    SESSION_TIMEOUT (10 min). Syncing with honest peers must go on meanwhile."""
    async with open_net(tmp_path) as net:
        dripping = 0

        async def drip(stream: INetStream, peer: str) -> None:
            nonlocal dripping
            reader = FrameReader(stream, max_size=MAX_FRAME, frame_timeout=60)
            await reader.read_frame()  # hello
            await stream.write(NO_HEADS)
            dripping += 1
            while True:
                await stream.write(frame({"t": "entries", "e": []}))
                await trio.sleep(0.2)

        async with open_host(gossip=None) as x:
            x.set_stream_handler(SYNC, drip)
            with trio.fail_after(CUT_WAIT):
                await x.connect(net.a.addrs()[0])
                await x.connect(net.b.addrs()[0])
            await until("A and B sync with X", lambda: dripping >= 2)
            await net.honest_ok()
            await net.honest_ok()


async def test_peer_resetting_mid_session(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """X resets its sync streams just as A is about to write: as the
    responder to A's and B's sessions, and as the initiator of its own."""
    async with open_net(tmp_path) as net:
        resets = 0

        async def answer_then_reset(stream: INetStream, peer: str) -> None:
            nonlocal resets
            reader = FrameReader(stream, max_size=MAX_FRAME, frame_timeout=60)
            try:
                await reader.read_frame()  # hello
            except FrameError:
                # A gave up first (its negotiation, now one more round trip
                # for /troc/sync/3, timed out under load): X's own handler
                # must not count as a failure of A's.
                return
            await stream.write(NO_HEADS + frame({"t": "end"}))
            await stream.reset()
            resets += 1

        async with open_host(gossip=None) as x:
            x.set_stream_handler(SYNC, answer_then_reset)
            with trio.fail_after(CUT_WAIT):
                await x.connect(net.a.addrs()[0])
                await x.connect(net.b.addrs()[0])
            await until("A and B sync with X", lambda: resets >= 2)
            for _ in range(3):
                stream = await x.open_stream(net.a.peer_id, SYNC)
                reader = FrameReader(stream, max_size=MAX_FRAME, frame_timeout=CUT_WAIT)
                await stream.write(hello(net.community))
                await reader.read_frame()  # heads
                await stream.write(NO_HEADS)  # A now streams everything to X
                await stream.reset()
            await trio.sleep(0.5)
            await net.honest_ok()
    # A peer going away mid-session is ordinary: no stack trace in the log.
    failures = [r for r in caplog.records if "handler failed" in r.getMessage()]
    assert failures == []


# --- 5. a flood of sync streams -------------------------------------------------------


async def test_stream_flood_is_capped_per_peer(tmp_path: Path) -> None:
    n = 4 * MAX_INBOUND_PER_PEER + 4
    async with open_net(tmp_path) as net, net.attacker() as x:
        answers: dict[int, str] = {}
        streams: dict[int, INetStream] = {}

        async def one(i: int) -> None:
            stream = streams[i] = await x.open_stream(net.a.peer_id, SYNC)
            await stream.write(hello(net.community))
            reader = FrameReader(stream, max_size=MAX_FRAME, frame_timeout=CUT_WAIT)
            try:
                answers[i] = decode_message(await reader.read_frame())["t"]
            except FrameError as exc:
                answers[i] = exc.reason

        with trio.fail_after(CUT_WAIT * 2):
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(one, i)
        served = [i for i, t in answers.items() if t == "heads"]
        refused = [i for i, t in answers.items() if t in {"eof", "reset"}]
        assert (len(served), len(refused)) == (MAX_INBOUND_PER_PEER, n - MAX_INBOUND_PER_PEER)
        # The held streams do not stop A syncing with B.
        await net.honest_ok()
        # Freed slots are given back: X is served again once it lets go.
        for s in streams.values():
            await reset(s)
        for _ in range(MAX_INBOUND_PER_PEER):
            assert kinds(await first_answer(x, net.a.peer_id, net.community)) == ["heads"]


# --- 6. gossip ------------------------------------------------------------------------


async def test_invalid_gossip_is_dropped_at_the_first_hop(tmp_path: Path) -> None:
    async with (
        open_net(tmp_path) as net,
        net.attacker(gossip=GossipParams(max_messages_per_second=10_000)) as x,
        open_host() as y,
    ):
        topic = topic_of(net.community)
        # Y: a plain observer behind A, with no validator of its own.
        with trio.fail_after(CUT_WAIT):
            await y.connect(net.a.addrs()[0])
        async with y.gossip.subscribe(topic) as seen_by_y:
            with trio.fail_after(CUT_WAIT * 2):
                await y.gossip.wait_for_mesh(net.a.peer_id, topic)
            await until("X knows A's topic", lambda: net.a.peer_id in x.gossip.topic_peers(topic))

            other = new_genesis("Elsewhere")
            mallory = SigningKey.generate()
            real = net.c.offer(net.community, "gossip forgery")
            invalid = {
                "bad signature": forged(real),
                "another community": chain(mallory, CommunityId(other.id), [Join()])[0].wire,
                "a genesis": other.wire,
                "not an entry": b"\x93\x01\x02\x03",
                "not msgpack": b"\xc1\xc1\xc1",
                "empty": b"",
            }
            for data in invalid.values():
                await x.gossip.publish(topic, data)
            # Then one valid entry: once Y has it, the ones before had their chance.
            marker = chain(mallory, net.community, [Join(name="mallory")])[0]
            await x.gossip.publish(topic, marker.wire)
            with trio.fail_after(CUT_WAIT):
                async for msg in seen_by_y:
                    assert msg.data not in invalid.values(), "A forwarded invalid gossip"
                    if msg.data == marker.wire:
                        break
            await net.wait_for(net.a, marker, CUT_WAIT)
            assert not net.has(net.a, real)
            assert [i.id for i in net.a.local.communities()] == [net.community]

            # A burst of valid-looking junk: well signed, right community, but
            # from strangers who never joined (an offer as their first entry),
            # or building on an entry nobody has (an offer after an unsent
            # join). A stays responsive and stores none of it.
            junk: list[Entry] = []
            for i in range(150):
                stranger = SigningKey.generate()
                junk.append(chain(stranger, net.community, [Offer("offer", f"junk {i}")])[0])
                junk.append(chain(stranger, net.community, [Join(), Offer("offer", f"{i}")])[1])
            async with trio.open_nursery() as nursery:

                async def flood() -> None:
                    for e in junk:
                        await x.gossip.publish(topic, e.wire)

                nursery.start_soon(flood)
                await net.honest_ok()
            await net.honest_ok()
            assert not any(net.has(net.a, e) for e in junk)
            before = net.a.local.store.entry_count(net.community)
            await trio.sleep(0.5)
            assert not any(net.has(net.a, e) for e in junk)
            assert net.a.local.store.entry_count(net.community) == before


# --- 7. wrong entries inside a sync session ---------------------------------------------


async def test_sync_session_takes_only_its_own_community(tmp_path: Path) -> None:
    async with open_net(tmp_path) as net, net.attacker() as x:
        # A follows a second community, Hill; X speaks in Valley's session.
        await net.a.run_op("community.create", {"name": "Hill", "unit": "hour", "credit_limit": 9})
        [hill] = [i.id for i in net.a.local.communities() if i.id != net.community]
        mallory = SigningKey.generate()
        elsewhere = new_genesis("Elsewhere")
        smuggled = {
            "a genesis": elsewhere,
            "an entry of a community A follows too": chain(mallory, hill, [Join()])[0],
            "an entry of a community A does not follow": chain(
                mallory, CommunityId(elsewhere.id), [Join()]
            )[0],
        }
        wires = [e.wire for e in smuggled.values()]
        got = await play_initiator(x, net.a.peer_id, net.community, wires)
        assert (got[0], got[-1]) == ("heads", "fin")  # a whole session, not cut short

        assert {i.id for i in net.a.local.communities()} == {net.community, hill}
        for what, e in smuggled.items():
            assert not net.has(net.a, e), what
        # The entry for Hill is valid: in Hill's own session A takes it.
        hill_join = smuggled["an entry of a community A follows too"]
        await play_initiator(x, net.a.peer_id, hill, [hill_join.wire])
        assert net.has(net.a, hill_join)
        await net.honest_ok()
