"""troc's libp2p shell against real py-libp2p hosts on 127.0.0.1."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import cast

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.network.exceptions import SwarmDialAllFailedError
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.transport.tcp.tcp import TCP
from nacl.signing import SigningKey

from troc.errors import LocalProtocolError, NetworkError
from troc.net.gossip import GossipMessage
from troc.net.p2p import (
    DialError,
    FrameError,
    FrameReader,
    P2PHost,
    encode_frame,
    open_host,
    peer_id_from_seed,
    read_frame,
    write_frame,
    write_frames,
)

ECHO = "/troc/test-echo/1.0.0"
RAW = "/troc/test-raw/1.0.0"
MiB = 1024 * 1024


@pytest.fixture
async def pair() -> AsyncIterator[tuple[P2PHost, P2PHost]]:
    async with open_host(gossip=None) as a, open_host(gossip=None) as b:
        yield a, b


def _tcp_port(host: P2PHost) -> int:
    return int(multiaddr.Multiaddr(host.listen_addrs()[0]).value_for_protocol("tcp"))


# --- frames over real streams -------------------------------------------------


async def test_frames_both_directions(pair: tuple[P2PHost, P2PHost]) -> None:
    a, b = pair

    async def echo(stream: INetStream, peer: str) -> None:
        assert peer == a.peer_id
        reader = FrameReader(stream, max_size=2 * MiB, frame_timeout=5)
        # One large frame, four small ones sent in a single write, then a
        # lone empty frame (nothing after it to fill the reader's buffer).
        for _ in range(6):
            data = await reader.read_frame()
            await write_frame(stream, data[::-1])

    b.set_stream_handler(ECHO, echo)
    assert await a.connect(b.listen_addrs()[0]) == b.peer_id
    assert a.connected_peers() == [b.peer_id]
    assert b.connected_peers() == [a.peer_id]

    big = hashlib.sha256(b"seed").digest() * (MiB // 32)
    small = [b"", b"x", b"y" * 127, b"z" * 300]
    stream = await a.open_stream(b.peer_id, ECHO)
    await write_frame(stream, big)
    assert await read_frame(stream, 2 * MiB) == big[::-1]
    await write_frames(stream, small)
    for frame in small:
        assert await read_frame(stream, 2 * MiB) == frame[::-1]
    await write_frame(stream, b"")
    assert await read_frame(stream, 2 * MiB, frame_timeout=5) == b""
    await stream.close()


async def test_listen_addrs_carry_peer_id(pair: tuple[P2PHost, P2PHost]) -> None:
    a, _ = pair
    [addr] = a.listen_addrs()
    assert addr.startswith("/ip4/127.0.0.1/tcp/")
    assert addr.endswith(f"/p2p/{a.peer_id}")
    assert _tcp_port(a) != 0


async def test_oversized_frame_rejected_before_body(pair: tuple[P2PHost, P2PHost]) -> None:
    a, b = pair
    outcome: dict[str, object] = {}
    done = trio.Event()

    async def guard(stream: INetStream, peer: str) -> None:
        with trio.fail_after(5):  # fails the test, instead of a frame timeout, if it waited
            try:
                await read_frame(stream, max_size=1024, frame_timeout=30)
            except FrameError as exc:
                outcome["reason"] = exc.reason
            # Everything after the length prefix is still unread in the stream.
            outcome["next"] = await stream.read(4)
        done.set()

    b.set_stream_handler(RAW, guard)
    await a.connect(b.listen_addrs()[0])
    stream = await a.open_stream(b.peer_id, RAW)
    # Announce 64 MiB and send only the first body bytes: a reader that tried
    # to collect the body would wait (and fail the 5 s guard above).
    await stream.write(_varint(64 * MiB) + b"BODY")
    with trio.fail_after(5):
        await done.wait()
    assert outcome == {"reason": "too_large", "next": b"BODY"}
    await stream.reset()


async def test_stalled_partial_frame_times_out(pair: tuple[P2PHost, P2PHost]) -> None:
    a, b = pair
    result: list[tuple[str, float]] = []
    done = trio.Event()

    async def slow_reader(stream: INetStream, peer: str) -> None:
        start = trio.current_time()
        try:
            await FrameReader(stream, max_size=1024, frame_timeout=0.3).read_frame()
        except FrameError as exc:
            result.append((exc.reason, trio.current_time() - start))
        done.set()

    b.set_stream_handler(RAW, slow_reader)
    await a.connect(b.listen_addrs()[0])
    stream = await a.open_stream(b.peer_id, RAW)
    await stream.write(_varint(100) + b"only ten b")  # 10 of 100 bytes, then silence
    with trio.fail_after(5):
        await done.wait()
    [(reason, elapsed)] = result
    assert reason == "timeout"
    assert 0.25 < elapsed < 2
    await stream.reset()


async def test_handler_failure_resets_stream_and_host_goes_on(
    pair: tuple[P2PHost, P2PHost],
) -> None:
    a, b = pair

    async def picky(stream: INetStream, peer: str) -> None:
        if await read_frame(stream, 100) == b"boom":
            raise RuntimeError("handler bug")
        await write_frame(stream, b"ok")

    b.set_stream_handler(RAW, picky)
    await a.connect(b.listen_addrs()[0])
    bad = await a.open_stream(b.peer_id, RAW)
    await write_frame(bad, b"boom")
    with pytest.raises(FrameError) as info:
        await read_frame(bad, 100, frame_timeout=5)
    assert info.value.reason in {"reset", "eof"}
    good = await a.open_stream(b.peer_id, RAW)
    await write_frame(good, b"hello")
    assert await read_frame(good, 100, frame_timeout=5) == b"ok"
    await good.close()


async def test_open_stream_for_unknown_protocol_fails(pair: tuple[P2PHost, P2PHost]) -> None:
    a, b = pair
    await a.connect(b.listen_addrs()[0])
    with pytest.raises(DialError):
        await a.open_stream(b.peer_id, "/troc/nobody-speaks-this/1.0.0")


@pytest.mark.parametrize(
    "listen",
    [
        "/ip4/127.0.0.1/udp/0/quic-v1",  # py-libp2p would skip it and listen nowhere
        "/ip4/127.0.0.1/tcp/0/ws",
        "not a multiaddr",
    ],
)
async def test_open_host_refuses_unusable_listen_address(listen: str) -> None:
    with pytest.raises(LocalProtocolError):
        async with open_host(listen=[listen], gossip=None):
            pass


async def test_open_host_refuses_busy_port(pair: tuple[P2PHost, P2PHost]) -> None:
    # py-libp2p listens with SO_REUSEPORT: without the guard a second node
    # would share the port and take some of the first node's connections.
    a, _ = pair
    with pytest.raises(NetworkError, match="in use"):
        async with open_host(listen=[f"/ip4/127.0.0.1/tcp/{_tcp_port(a)}"], gossip=None):
            pass


async def test_connect_rejects_address_without_peer_id(pair: tuple[P2PHost, P2PHost]) -> None:
    a, b = pair
    with pytest.raises(LocalProtocolError):
        await a.connect(f"/ip4/127.0.0.1/tcp/{_tcp_port(b)}")


# --- frame codec edge cases, on an in-memory stream ---------------------------


class _BytesStream:
    """Just enough of a stream for the frame readers: fixed bytes, then EOF."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def read(self, n: int) -> bytes:
        await trio.lowlevel.checkpoint()
        out, self._data = self._data[:n], self._data[n:]
        return out


def _stream(data: bytes) -> INetStream:
    return cast(INetStream, _BytesStream(data))


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"", "eof"),
        (b"\x85", "truncated"),  # EOF inside the length prefix
        (b"\x05abc", "truncated"),  # EOF inside the body
        (b"\x85\x00", "bad_varint"),  # 5, not minimally encoded
        (b"\x80" * 10, "bad_varint"),  # a prefix that never ends
        (b"\xe9\x07" + b"x" * 2001, "too_large"),  # 1001 > 1000
        (b"\x80" * 9 + b"\x01", "too_large"),  # 2**63
    ],
)
async def test_read_frame_errors(wire: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as unbuffered:
        await read_frame(_stream(wire), 1000)
    with pytest.raises(FrameError) as buffered:
        await FrameReader(_stream(wire), max_size=1000).read_frame()
    assert unbuffered.value.reason == buffered.value.reason == reason


async def test_frame_reader_splits_a_batch() -> None:
    frames = [b"a" * n for n in (0, 1, 127, 128, 300, 70_000, 1000)]
    reader = FrameReader(_stream(b"".join(encode_frame(f) for f in frames)), max_size=70_000)
    assert [await reader.read_frame() for _ in frames] == frames
    with pytest.raises(FrameError, match="between frames"):
        await reader.read_frame()


def _varint(n: int) -> bytes:
    """Unsigned LEB128, written independently of the code under test."""
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


# --- gossip --------------------------------------------------------------------


async def test_gossip_line_delivers_and_validator_blocks() -> None:
    topic = "troc/test/entries"
    async with open_host() as a, open_host() as b, open_host() as c:
        # A line: a - b - c. Nothing reaches c unless b forwards it.
        await a.connect(b.listen_addrs()[0])
        await c.connect(b.listen_addrs()[0])
        seen_by_b_validator: list[GossipMessage] = []

        async def no_bad(msg: GossipMessage) -> bool:
            seen_by_b_validator.append(msg)
            return not msg.data.startswith(b"bad")

        b.gossip.set_validator(topic, no_bad)
        async with (
            a.gossip.subscribe(topic) as sub_a,
            b.gossip.subscribe(topic) as sub_b,
            c.gossip.subscribe(topic) as sub_c,
        ):
            with trio.fail_after(5):
                await a.gossip.wait_for_mesh(b.peer_id, topic)
                await b.gossip.wait_for_mesh(a.peer_id, topic)
                await b.gossip.wait_for_mesh(c.peer_id, topic)
                await c.gossip.wait_for_mesh(b.peer_id, topic)

            await a.gossip.publish(topic, b"bad entry")
            await a.gossip.publish(topic, b"good entry")
            with trio.fail_after(5):
                got_b = await sub_b.receive()
                got_c = await sub_c.receive()
            # b saw both (its validator ran on each) but delivered and forwarded
            # only the good one; the bad one went first on the same streams, so
            # it would have arrived before the good one had it been let through.
            assert [m.data for m in seen_by_b_validator] == [b"bad entry", b"good entry"]
            assert (got_b.data, got_c.data) == (b"good entry", b"good entry")
            assert got_c.origin == a.peer_id
            assert got_c.topic == topic

            # a gets its own messages back from py-libp2p; the wrapper drops them.
            await c.gossip.publish(topic, b"from c")
            with trio.fail_after(5):
                got_a = await sub_a.receive()
            assert (got_a.data, got_a.origin) == (b"from c", c.peer_id)
            with trio.move_on_after(0.3):
                extra = await sub_a.receive()
                pytest.fail(f"unexpected message {extra}")
            assert sub_a.dropped == sub_b.dropped == sub_c.dropped == 0


async def test_gossip_burst_of_30_arrives_whole() -> None:
    # Pins the meshsub 1.1 choice: over 1.2, py-libp2p queues an IDONTWANT
    # beside every message and the 32-RPC peer queue overflows at ~17.
    topic = "troc/test/burst"
    async with open_host() as a, open_host() as b:
        await a.connect(b.listen_addrs()[0])
        async with a.gossip.subscribe(topic), b.gossip.subscribe(topic) as sub_b:
            with trio.fail_after(5):
                await a.gossip.wait_for_mesh(b.peer_id, topic)
            for i in range(30):
                await a.gossip.publish(topic, b"%d" % i)
            with trio.fail_after(5):
                got = [(await sub_b.receive()).data for _ in range(30)]
            assert got == [b"%d" % i for i in range(30)]


async def test_gossip_raising_validator_rejects_and_node_survives() -> None:
    # Registered as a plain sync validator, the same exception escapes
    # py-libp2p's push_msg task and tears down the whole host.
    topic = "troc/test/buggy"
    async with open_host() as a, open_host() as b:
        await a.connect(b.listen_addrs()[0])

        def buggy(msg: GossipMessage) -> bool:
            if msg.data == b"boom":
                raise RuntimeError("validator bug")
            return True

        b.gossip.set_validator(topic, buggy)
        async with a.gossip.subscribe(topic), b.gossip.subscribe(topic) as sub_b:
            with trio.fail_after(5):
                await a.gossip.wait_for_mesh(b.peer_id, topic)
            await a.gossip.publish(topic, b"boom")
            await a.gossip.publish(topic, b"after")
            with trio.fail_after(5):
                assert (await sub_b.receive()).data == b"after"


async def test_gossip_disabled_and_double_subscribe() -> None:
    async with open_host(gossip=None) as h:
        with pytest.raises(LocalProtocolError):
            _ = h.gossip
    async with open_host() as h, h.gossip.subscribe("t"):
        with pytest.raises(LocalProtocolError):
            async with h.gossip.subscribe("t"):
                pass


# --- security: Noise only ------------------------------------------------------


async def _multistream_exchange(port: int, proposal: str) -> str:
    """Propose one security protocol the way a dialer would; return the answer."""

    def msg(text: str) -> bytes:
        body = (text + "\n").encode()
        return _varint(len(body)) + body

    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(msg("/multistream/1.0.0") + msg(proposal))
        expected_header = msg("/multistream/1.0.0")
        received = b""
        with trio.fail_after(5):
            while len(received) <= len(expected_header) or not received.endswith(b"\n"):
                chunk = await stream.receive_some(1024)
                if not chunk:
                    break
                received += chunk
    assert received.startswith(expected_header)
    answer = received[len(expected_header) :]
    return answer[1:].decode().strip()  # drop the one-byte length prefix


async def test_security_offers_noise_and_nothing_else(pair: tuple[P2PHost, P2PHost]) -> None:
    a, _ = pair
    port = _tcp_port(a)
    assert await _multistream_exchange(port, "/noise") == "/noise"  # the probe works
    for insecure in (PLAINTEXT_PROTOCOL_ID, "/secio/1.0.0", "/tls/1.0.0"):
        assert await _multistream_exchange(port, insecure) == "na"


@pytest.fixture
async def plaintext_host() -> AsyncIterator[IHost]:
    """A stock py-libp2p host that speaks /plaintext/2.0.0 and nothing else."""
    key_pair = create_new_key_pair()
    host = new_host(
        key_pair=key_pair,
        sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(key_pair)},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        transports=[TCP()],
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    async with host.run(listen):
        try:
            yield host
        finally:
            await host.close()


async def test_plaintext_peer_cannot_connect_either_way(
    pair: tuple[P2PHost, P2PHost], plaintext_host: IHost
) -> None:
    a, _ = pair
    # py-libp2p retries a failed upgrade 3 times (~0.7 s) before giving up.
    with pytest.raises(SwarmDialAllFailedError), trio.fail_after(10):
        await plaintext_host.connect(info_from_p2p_addr(multiaddr.Multiaddr(a.listen_addrs()[0])))
    assert a.connected_peers() == []
    with pytest.raises(DialError):
        await a.connect(str(plaintext_host.get_addrs()[0]))
    assert a.connected_peers() == []
    assert plaintext_host.get_connected_peers() == []


# --- identity ------------------------------------------------------------------

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _b58(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _B58[r] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def _expected_peer_id(seed: bytes) -> str:
    # libp2p peer id spec: identity multihash of the protobuf PublicKey
    # {Type: Ed25519 (1), Data: 32-byte key}.
    public = bytes(SigningKey(seed).verify_key)
    protobuf = b"\x08\x01\x12\x20" + public
    return _b58(b"\x00" + bytes([len(protobuf)]) + protobuf)


async def test_peer_id_derives_from_seed() -> None:
    seed = hashlib.sha256(b"troc test member").digest()
    expected = _expected_peer_id(seed)
    assert expected.startswith("12D3KooW")
    assert peer_id_from_seed(seed) == expected
    async with open_host(key_seed=seed, gossip=None) as h:
        assert h.peer_id == expected
        assert h.listen_addrs()[0].endswith("/p2p/" + expected)
    async with open_host(key_seed=seed, gossip=None) as again:
        assert again.peer_id == expected
    async with open_host(key_seed=bytes(32), gossip=None) as other:
        assert other.peer_id == _expected_peer_id(bytes(32)) != expected
    with pytest.raises(LocalProtocolError):
        peer_id_from_seed(b"short")


async def test_a_group_of_dial_failures_is_one_dial_error(
    pair: tuple[P2PHost, P2PHost], monkeypatch: pytest.MonkeyPatch
) -> None:
    """py-libp2p may raise its negotiation failures as an ExceptionGroup
    (`troc demo` crashed on one): it is a DialError like any failed dial, and
    a group holding anything else (a cancellation, a bug) is not swallowed."""
    a, b = pair
    await a.connect(b.listen_addrs()[0])

    async def failing(*_: object) -> INetStream:
        raise ExceptionGroup("negotiation", [OSError("reset"), ValueError("handshake")])

    monkeypatch.setattr(a.libp2p, "new_stream", failing)
    with pytest.raises(DialError):
        await a.open_stream(b.peer_id, RAW)

    async def buggy(*_: object) -> INetStream:
        raise ExceptionGroup("negotiation", [OSError("reset"), KeyError("bug")])

    monkeypatch.setattr(a.libp2p, "new_stream", buggy)
    with pytest.raises(ExceptionGroup):
        await a.open_stream(b.peer_id, RAW)


async def test_connect_dials_the_address_it_is_given(pair: tuple[P2PHost, P2PHost]) -> None:
    """A peer known by several addresses is reached through the one named,
    even when the peerstore lists a dead one first: py-libp2p's own connect
    dials one address per transport, its peerstore's first, and after a
    partition healed a node kept dialling its peer's address on a link it had
    no route to (tests/e2e/test_partition.py)."""
    a, b = pair
    with trio.socket.socket() as probe:  # a port nothing listens on: refused at once
        await probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    dead = multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{dead_port}")
    a.libp2p.get_peerstore().add_addrs(b.libp2p.get_id(), [dead], 120)

    assert await a.connect(b.listen_addrs()[0]) == b.peer_id
    assert a.connected_peers() == [b.peer_id]
    stream = await a.open_stream(b.peer_id, "/ipfs/ping/1.0.0")  # usable at once
    await stream.reset()
    assert await a.connect(b.listen_addrs()[0]) == b.peer_id  # connected: returns at once
    assert a.connected_peers() == [b.peer_id]
