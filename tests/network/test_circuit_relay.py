"""Circuit relay v2 (troc.net.relay) between real hosts: on 127.0.0.1, and across namespaces."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, StopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as PbPeerId
from libp2p.relay.circuit_v2.pb.circuit_pb2 import Status as PbStatus

from tests.network import netns
from troc.errors import LocalProtocolError
from troc.net.p2p import (
    DialError,
    FrameError,
    P2PHost,
    open_host,
    peer_id_from_seed,
    read_frame,
    write_frame,
)
from troc.net.relay import (
    HOP_PROTOCOL,
    STOP_PROTOCOL,
    RelayClient,
    RelayLimits,
    RelayRefused,
    RelayServer,
    dial_via_relay,
    open_relay_client,
    open_relay_server,
    parse_circuit_addr,
    reserve,
)

ECHO = "/troc/test-echo/1.0.0"
MiB = 1024 * 1024
#: Every localhost test allows several reservations per IP: all peers are 127.0.0.1.
LOCAL = RelayLimits(max_reservations_per_ip=100)


async def echo(stream: INetStream, peer: str) -> None:
    for _ in range(1000):
        try:
            data = await read_frame(stream, 2 * MiB, frame_timeout=10)
        except FrameError:
            return
        await write_frame(stream, data)


async def wait_until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``predicate`` every 20 ms; fail after ``within`` seconds."""
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 (polling: nothing to wait on)
            await trio.sleep(0.02)


class Net:
    """A relay R and helpers to start members, all on 127.0.0.1, closed together."""

    def __init__(self, stack: AsyncExitStack, relay: P2PHost, server: RelayServer) -> None:
        self.stack = stack
        self.relay = relay
        self.server = server

    @property
    def relay_addr(self) -> str:
        return self.relay.listen_addrs()[0]

    async def host(self) -> P2PHost:
        host = await self.stack.enter_async_context(open_host(gossip=None))
        host.set_stream_handler(ECHO, echo)
        return host

    async def member(self, **kwargs: float) -> tuple[P2PHost, RelayClient]:
        """A host holding a reservation on R."""
        host = await self.host()
        client = await self.stack.enter_async_context(
            open_relay_client(host, [self.relay_addr], **kwargs)
        )
        with trio.fail_after(10):
            await client.wait_reserved()
        return host, client


@asynccontextmanager
async def open_net(**limits: float) -> AsyncIterator[Net]:
    """A relay host R serving with ``LOCAL`` limits, changed by ``limits``.

    A context manager entered inside the test, not a fixture: pytest-trio
    runs fixtures in another task, and hosts and relay clients own nurseries.
    """
    fields = {"max_reservations_per_ip": LOCAL.max_reservations_per_ip, **limits}
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(open_host(gossip=None))
        server = await stack.enter_async_context(
            open_relay_server(relay, RelayLimits(**fields))  # type: ignore[arg-type]
        )
        yield Net(stack, relay, server)


# --- addresses ---------------------------------------------------------------


def test_parse_circuit_addr() -> None:
    r, t = peer_id_from_seed(b"r" * 32), peer_id_from_seed(b"t" * 32)
    full = parse_circuit_addr(f"/ip4/10.0.0.1/tcp/4001/p2p/{r}/p2p-circuit/p2p/{t}")
    assert (full.relay_peer_id, full.target_peer_id) == (r, t)
    assert full.relay_addr == f"/ip4/10.0.0.1/tcp/4001/p2p/{r}"
    bare = parse_circuit_addr(f"/p2p/{r}/p2p-circuit/p2p/{t}")
    assert bare.relay_addr is None
    assert str(bare) == f"/p2p/{r}/p2p-circuit/p2p/{t}"
    for bad in (
        f"/ip4/10.0.0.1/tcp/4001/p2p/{r}",  # not relayed
        f"/ip4/10.0.0.1/tcp/4001/p2p-circuit/p2p/{t}",  # no relay id
        f"/p2p/{r}/p2p-circuit",  # no target
        f"/p2p/{r}/p2p-circuit/p2p/{r}",  # relay to itself
        "garbage",
    ):
        with pytest.raises(LocalProtocolError):
            parse_circuit_addr(bad)


# --- (a) a round trip through the relay ----------------------------------------


async def test_round_trip_through_relay() -> None:
    async with open_net() as net:
        b, client = await net.member()
        a = await net.host()
        assert await a.connect(net.relay_addr) == net.relay.peer_id  # A knows R too
        (addr,) = client.circuit_addrs()
        assert addr == f"{net.relay_addr}/p2p-circuit/p2p/{b.peer_id}"
        assert net.server.reservations() == [b.peer_id]

        # Through P2PHost.connect, as the node dials its peers.
        assert await a.connect(addr) == b.peer_id
        assert net.server.circuit_count() == 1
        assert b.peer_id in a.connected_peers()
        assert a.peer_id in b.connected_peers()

        stream = await a.open_stream(b.peer_id, ECHO)
        big = bytes(range(256)) * (MiB // 256)
        for payload in (b"hello", big, b""):
            await write_frame(stream, payload)
            assert await read_frame(stream, 2 * MiB, frame_timeout=10) == payload
        # And the other way: B opens a stream to A over the same relayed connection.
        a.set_stream_handler(ECHO, echo)
        back = await b.open_stream(a.peer_id, ECHO)
        await write_frame(back, b"from b")
        assert await read_frame(back, 100, frame_timeout=10) == b"from b"
        assert net.server.stats.circuits_opened == 1
        assert net.server.stats.bytes_relayed > 2 * MiB

        # A second connect is a no-op; closing the connection frees the circuit.
        assert await a.connect(addr) == b.peer_id
        await a.disconnect(b.peer_id)
        await wait_until(lambda: net.server.circuit_count() == 0)


async def test_dial_without_reservation_is_refused() -> None:
    async with open_net() as net:
        a, b = await net.host(), await net.host()
        await b.connect(net.relay_addr)  # connected to R, but holds no reservation
        with pytest.raises(RelayRefused) as refused:
            await dial_via_relay(a, f"{net.relay_addr}/p2p-circuit/p2p/{b.peer_id}")
        assert refused.value.status == "NO_RESERVATION"
        assert b.peer_id not in a.connected_peers()


async def test_host_without_relay_service_says_so() -> None:
    async with open_net() as net:
        a, other = await net.host(), await net.host()
        with pytest.raises(RelayRefused) as refused:
            await reserve(a, other.listen_addrs()[0])
        assert refused.value.status == "NO_RELAY"


# --- (b) limits ----------------------------------------------------------------


async def test_reservations_beyond_max_are_refused() -> None:
    async with open_net(max_reservations=2) as net:
        b, _ = await net.member()
        c, client_c = await net.member()
        d = await net.host()
        with pytest.raises(RelayRefused) as refused:
            await reserve(d, net.relay_addr)
        assert refused.value.status == "RESOURCE_LIMIT_EXCEEDED"
        # Reserving again refreshes, never takes a second slot.
        again = await reserve(b, net.relay_addr)
        assert again.relay_peer_id == net.relay.peer_id
        assert net.server.reservations() == sorted([b.peer_id, c.peer_id])
        # A reservation ends with its holder's connection: the slot frees at once.
        await c.disconnect(net.relay.peer_id)
        await wait_until(lambda: net.relay.peer_id not in c.connected_peers())
        await wait_until(lambda: c.peer_id not in net.relay.connected_peers())
        assert (await reserve(d, net.relay_addr)).relay_peer_id == net.relay.peer_id
        assert net.server.stats.reservations_refused == 1
        assert client_c.host is c


async def test_reservations_per_ip() -> None:
    async with open_net(max_reservations_per_ip=1) as net:
        await net.member()
        other = await net.host()
        with pytest.raises(RelayRefused) as refused:
            await reserve(other, net.relay_addr)  # same 127.0.0.1
        assert refused.value.status == "RESOURCE_LIMIT_EXCEEDED"


async def test_reservation_requests_per_minute() -> None:
    """quota.reservations: one peer asking again and again is refused past its
    per-minute budget; another peer is not."""
    async with open_net(reservations_per_minute=3) as net:
        a = await net.host()
        for _ in range(3):
            await reserve(a, net.relay_addr)  # a reservation, then refreshes
        with pytest.raises(RelayRefused) as refused:
            await reserve(a, net.relay_addr)
        assert refused.value.status == "RESOURCE_LIMIT_EXCEEDED"
        b = await net.host()
        assert (await reserve(b, net.relay_addr)).relay_peer_id == net.relay.peer_id


async def test_reserve_naming_other_peers_takes_no_slots() -> None:
    """py-libp2p 0.8.1 reserves for the id in the message: one peer could fill every slot."""
    async with open_net(max_reservations=2) as net:
        mallory = await net.host()
        await mallory.connect(net.relay_addr)
        for seed in (b"x" * 32, b"y" * 32, b"z" * 32):
            forged = ID.from_base58(peer_id_from_seed(seed)).to_bytes()
            stream = await mallory.open_stream(net.relay.peer_id, HOP_PROTOCOL)
            request = HopMessage(type=HopMessage.RESERVE, peer=PbPeerId(id=forged))
            await write_frame(stream, request.SerializeToString())
            reply = HopMessage()
            reply.ParseFromString(await read_frame(stream, 4096, frame_timeout=10))
            assert reply.status == PbStatus.OK  # granted, to mallory herself
            await stream.close()
        assert net.server.reservations() == [mallory.peer_id]
        b, _ = await net.member()  # an honest member still finds a slot
        assert net.server.reservations() == sorted([mallory.peer_id, b.peer_id])


async def test_circuit_over_byte_limit_is_cut() -> None:
    async with open_net(circuit_bytes=256 * 1024) as net:
        b, client = await net.member()
        a = await net.host()
        await a.connect(client.circuit_addrs()[0])
        stream = await a.open_stream(b.peer_id, ECHO)
        chunk = b"\x5a" * (64 * 1024)
        sent = 0
        with pytest.raises(FrameError):  # noqa: PT012 (the cut comes at some write or read)
            for _ in range(16):  # 1 MiB, 4x the limit
                await write_frame(stream, chunk, frame_timeout=10)
                assert await read_frame(stream, MiB, frame_timeout=10) == chunk
                sent += len(chunk)
        assert sent < 256 * 1024  # cut before the limit's worth of payload went through
        await wait_until(lambda: b.peer_id not in a.connected_peers())
        assert net.server.stats.circuits_cut_bytes == 1
        assert net.server.circuit_count() == 0
        # The reservation survives the cut: A can dial again.
        assert await a.connect(client.circuit_addrs()[0]) == b.peer_id


async def test_idle_circuit_is_cut_at_its_duration() -> None:
    async with open_net(circuit_seconds=1.0) as net:
        b, client = await net.member()
        a = await net.host()
        await a.connect(client.circuit_addrs()[0])
        stream = await a.open_stream(b.peer_id, ECHO)
        await write_frame(stream, b"ping")
        assert await read_frame(stream, 100, frame_timeout=10) == b"ping"
        start = trio.current_time()
        # Idle from here: py-libp2p's relay would keep this circuit for ever.
        await wait_until(lambda: b.peer_id not in a.connected_peers(), within=5)
        assert trio.current_time() - start < 3
        assert net.server.stats.circuits_cut_duration == 1
        with pytest.raises(FrameError):
            await read_frame(stream, 100, frame_timeout=2)  # reset, not a timeout


async def test_circuits_beyond_max_are_refused() -> None:
    async with open_net(max_circuits=1) as net:
        b, client = await net.member()
        a, c = await net.host(), await net.host()
        await a.connect(client.circuit_addrs()[0])
        with pytest.raises(RelayRefused) as refused:
            await c.connect(client.circuit_addrs()[0])
        assert refused.value.status == "RESOURCE_LIMIT_EXCEEDED"
        assert net.server.stats.circuits_refused == 1
        await a.disconnect(b.peer_id)
        await wait_until(lambda: net.server.circuit_count() == 0)
        assert await c.connect(client.circuit_addrs()[0]) == b.peer_id


async def test_circuits_per_peer() -> None:
    async with open_net(max_circuits_per_peer=1) as net:
        _, client_b = await net.member()
        c, client_c = await net.member()
        a = await net.host()
        await a.connect(client_b.circuit_addrs()[0])
        with pytest.raises(RelayRefused) as refused:  # A is in one circuit already
            await a.connect(client_c.circuit_addrs()[0])
        assert refused.value.status == "RESOURCE_LIMIT_EXCEEDED"
        d = await net.host()
        with pytest.raises(RelayRefused):  # B is in one circuit already
            await d.connect(client_b.circuit_addrs()[0])
        assert await d.connect(client_c.circuit_addrs()[0]) == c.peer_id


# --- client behaviour -----------------------------------------------------------


async def test_reservation_is_refreshed_and_renewed_after_disconnect() -> None:
    async with open_net() as net:
        b, client = await net.member(refresh=0.3, check=0.05)
        await wait_until(lambda: net.server.stats.reservations_granted >= 3)  # refreshed
        table = net.relay.libp2p.get_network().connections
        b_id = ID.from_base58(b.peer_id)
        old = list(table.get(b_id, []))
        assert old
        # The connection drops (closed under the swarm, as a network failure
        # would), and the relay forgets B's reservation with it. Not
        # host.disconnect(): py-libp2p 0.8.1's close_peer pops the peer's
        # table entry *after* awaiting, so B's immediate reconnect lands in a
        # connection the relay's swarm no longer lists (docs/relay.md).
        for conn in old:
            await conn.close()

        def renewed() -> bool:
            fresh = [c for c in table.get(b_id, []) if c not in old]
            return bool(fresh) and b.peer_id in net.server.reservations()

        await wait_until(renewed, within=15)
        assert client.circuit_addrs()
        a = await net.host()  # and the renewed reservation carries circuits
        assert await a.connect(client.circuit_addrs()[0]) == b.peer_id


async def test_client_refuses_stop_from_a_relay_it_did_not_choose() -> None:
    async with open_net() as net:
        b, _ = await net.member()
        stranger = await net.host()
        await stranger.connect(b.listen_addrs()[0])
        stream = await stranger.libp2p.new_stream(
            ID.from_base58(b.peer_id), [TProtocol(STOP_PROTOCOL)]
        )
        request = StopMessage(
            type=StopMessage.CONNECT, peer=PbPeerId(id=ID.from_base58(stranger.peer_id).to_bytes())
        )
        await write_frame(stream, request.SerializeToString())
        reply = StopMessage()
        reply.ParseFromString(await read_frame(stream, 4096, frame_timeout=10))
        assert reply.status == PbStatus.PERMISSION_DENIED


async def test_closing_the_relay_cuts_its_circuits() -> None:
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(open_host(gossip=None))
        b = await stack.enter_async_context(open_host(gossip=None))
        a = await stack.enter_async_context(open_host(gossip=None))
        b.set_stream_handler(ECHO, echo)
        async with open_relay_server(relay, LOCAL) as server:
            client = await stack.enter_async_context(
                open_relay_client(b, [relay.listen_addrs()[0]])
            )
            with trio.fail_after(10):
                await client.wait_reserved()
            await a.connect(client.circuit_addrs()[0])
            assert server.circuit_count() == 1
        assert server.circuit_count() == 0
        await wait_until(lambda: b.peer_id not in a.connected_peers())
        with pytest.raises(DialError):
            await a.connect(client.circuit_addrs()[0])


# --- (c) across network namespaces ----------------------------------------------


@pytest.fixture
def topology() -> netns.Topology:
    try:
        netns.check_available()
    except netns.NetnsUnavailable as exc:
        pytest.skip(f"network namespaces unavailable: {exc}")
    with netns.Topology() as topo:
        yield topo


@pytest.mark.slow
def test_members_in_separate_namespaces_meet_through_the_relay(topology: netns.Topology) -> None:
    """A and B each route only to the relay's namespace; A still reaches B, through R."""
    ns_r, ns_a, ns_b = (topology.namespace(n) for n in ("r", "a", "b"))
    topology.link(ns_a, "10.231.1.1/24", ns_r, "10.231.1.2/24")
    topology.link(ns_b, "10.231.2.1/24", ns_r, "10.231.2.2/24")
    script = str(Path(__file__).with_name("relay_peer.py"))
    python = sys.executable
    children: list[netns.Child] = []
    try:
        relay = netns.Child(
            ns_r, python, script, "relay",
            "--listen", "/ip4/10.231.1.2/tcp/4001", "--listen", "/ip4/10.231.2.2/tcp/4001",
        )  # fmt: skip
        children.append(relay)
        relay_info = relay.read_json(timeout=30)
        relay_id = relay_info["peer_id"]
        member = netns.Child(
            ns_b, python, script, "member",
            "--listen", "/ip4/10.231.2.1/tcp/4002",
            "--relay", f"/ip4/10.231.2.2/tcp/4001/p2p/{relay_id}",
        )  # fmt: skip
        children.append(member)
        member_info = member.read_json(timeout=30)
        # R announces both its addresses; A dials through the one on its side.
        target = f"/ip4/10.231.1.2/tcp/4001/p2p/{relay_id}/p2p-circuit/p2p/{member_info['peer_id']}"
        assert target in member_info["circuit_addrs"]
        dialer = netns.Child(
            ns_a, python, script, "dial",
            "--listen", "/ip4/10.231.1.1/tcp/4003",
            "--target", target,
            "--direct", f"/ip4/10.231.2.1/tcp/4002/p2p/{member_info['peer_id']}",
        )  # fmt: skip
        children.append(dialer)
        result = dialer.read_json(timeout=30)
        assert dialer.wait(timeout=10) == 0
        assert result["direct"] != "connected"  # no route from A to B ...
        assert result["echoed"] == 64 * 1024  # ... yet the bytes went A -> R -> B -> R -> A
        assert result["peer_id"] == member_info["peer_id"]
    finally:
        for child in reversed(children):
            child.stop()
