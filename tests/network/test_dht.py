"""troc.net.dht between real hosts on 127.0.0.1: providers found, expiry, bounds."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace

import multiaddr
import pytest
import trio
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.peer.id import ID

from troc.net.dht import (
    DHT,
    PROTOCOL,
    DHTParams,
    ProviderStore,
    RoutingTable,
    community_key,
    open_dht,
)
from troc.net.p2p import (
    DialError,
    FrameError,
    P2PHost,
    close_stream,
    open_host,
    read_frame,
    write_frame,
)

C = b"\x01" * 32  # a community id
FAST = DHTParams(rpc_timeout=2.0, query_timeout=5.0, inbound_stream_seconds=3.0)


async def wait_until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``predicate`` every 20 ms; fail after ``within`` seconds."""
    with trio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 (state of other hosts: nothing to wait on)
            await trio.sleep(0.02)


@asynccontextmanager
async def dht_node(
    stack: AsyncExitStack,
    *,
    server: bool,
    bootstrap: tuple[str, ...] = (),
    params: DHTParams = FAST,
) -> AsyncIterator[tuple[P2PHost, DHT]]:
    async with (
        open_host(gossip=None) as host,
        open_dht(host, server=server, bootstrap=bootstrap, params=params) as dht,
    ):
        yield host, dht


async def start(
    stack: AsyncExitStack,
    *,
    server: bool,
    bootstrap: tuple[str, ...] = (),
    params: DHTParams = FAST,
) -> tuple[P2PHost, DHT]:
    return await stack.enter_async_context(
        dht_node(stack, server=server, bootstrap=bootstrap, params=params)
    )


async def dht_network(stack: AsyncExitStack, params: DHTParams = FAST) -> list[tuple[P2PHost, DHT]]:
    """Three DHT servers, the second and third bootstrapped to the first, tables converged."""
    first = await start(stack, server=True, params=params)
    boot = (first[0].listen_addrs()[0],)
    nodes = [first] + [
        await start(stack, server=True, bootstrap=boot, params=params) for _ in range(2)
    ]
    await wait_until(lambda: all(len(d.routing) == 2 for _, d in nodes))
    return nodes


def peer_of(addr: str) -> str:
    return addr.rsplit("/p2p/", 1)[1]


# --- unit: key, store, table -------------------------------------------------


def test_community_key_is_a_sha256_multihash_of_the_domain_separated_id() -> None:
    key = community_key(C)
    assert key == b"\x12\x20" + hashlib.sha256(b"troc/community/v1" + C).digest()
    assert community_key(b"\x02" * 32) != key


def test_provider_store_bounds_and_expiry() -> None:
    now = [0.0]
    params = DHTParams(
        max_records=10, max_providers_per_key=3, max_keys_per_peer=4, record_ttl=10.0
    )
    store = ProviderStore(params, clock=lambda: now[0])
    addrs = ["/ip4/127.0.0.1/tcp/1/p2p/x"]
    # One peer: four keys, not five.
    assert [store.add(bytes([i]), "spammer", addrs) for i in range(6)] == [True] * 4 + [False] * 2
    # One key: three providers, not four; refreshing an existing one is always allowed.
    assert [store.add(b"k", f"p{i}", addrs) for i in range(4)] == [True, True, True, False]
    assert store.add(b"k", "p0", addrs)
    # In total: ten.
    assert sum(store.add(bytes([100 + i]), f"q{i}", addrs) for i in range(10)) == 3
    assert len(store) == 10
    assert store.add(b"k", "p1", []) is False  # no address, no record
    # Expiry frees every slot and every count.
    now[0] = 10.0
    assert store.get(b"k") == []
    assert store.expire() == 7
    assert len(store) == 0
    assert store.keys() == 0
    assert store.count_for("spammer") == 0
    assert store.add(bytes([9]), "spammer", addrs)


def test_routing_table_is_bounded_per_bucket() -> None:
    from libp2p.crypto.ed25519 import create_new_key_pair

    own = ID.from_pubkey(create_new_key_pair().public_key).to_base58()
    table = RoutingTable(own, k=2)
    peers = [ID.from_pubkey(create_new_key_pair().public_key).to_base58() for _ in range(200)]
    for p in peers:
        table.add(p)
    assert not table.add(own)
    # Half of random ids share no prefix bit with ours: bucket 256 holds only 2 of them.
    assert len(table) <= 2 * 20  # at most a few buckets are ever non-empty here
    assert len(table) < len(peers)
    kept = table.peers()
    table.remove(kept[0])
    assert kept[0] not in table


# --- network -----------------------------------------------------------------


@pytest.mark.slow
async def test_client_bootstrapped_to_one_server_finds_both_providers() -> None:
    async with AsyncExitStack() as stack:
        servers = await dht_network(stack)
        boot0 = (servers[0][0].listen_addrs()[0],)
        providers = [await start(stack, server=True, bootstrap=boot0) for _ in range(2)]
        await wait_until(lambda: all(len(d.routing) == 4 for _, d in providers))
        for _, dht in providers:
            assert await dht.provide(C) >= 3  # three servers and the other provider
        # The client knows only the third server.
        chost, cdht = await start(stack, server=False, bootstrap=(servers[2][0].listen_addrs()[0],))
        found = await cdht.find_providers(C)
        assert {peer_of(a) for a in found} == {h.peer_id for h, _ in providers}
        for host, _ in providers:
            assert host.listen_addrs()[0] in found
        # ... and connects to one of them.
        assert await chost.connect(found[0]) == peer_of(found[0])
        # The client asked but never entered a server's routing table, nor serves.
        assert all(chost.peer_id not in d.routing for _, d in servers + providers)
        assert await cdht.find_providers(b"\x09" * 32) == []
        assert len(cdht.store) == 0  # a client caches no third-party record
        with pytest.raises(DialError):
            await servers[0][0].open_stream(chost.peer_id, PROTOCOL)


@pytest.mark.slow
async def test_provider_that_stops_announcing_disappears_after_ttl() -> None:
    params = replace(FAST, record_ttl=1.5, republish_interval=0.4)
    async with AsyncExitStack() as stack:
        servers = await dht_network(stack, params)
        boot = (servers[0][0].listen_addrs()[0],)
        staying = await start(stack, server=False, bootstrap=boot, params=params)
        client = await start(stack, server=False, bootstrap=boot, params=params)
        async with AsyncExitStack() as leaving_stack:
            leaving = await start(leaving_stack, server=False, bootstrap=boot, params=params)
            assert await staying[1].provide(C) == 3
            assert await leaving[1].provide(C) == 3
            found = await client[1].find_providers(C)
            assert {peer_of(a) for a in found} == {staying[0].peer_id, leaving[0].peer_id}
        # "leaving" stopped (its node is gone): its records lapse, the other's are renewed.
        with trio.fail_after(5):
            while True:
                found = await client[1].find_providers(C)
                if {peer_of(a) for a in found} == {staying[0].peer_id}:
                    break
                await trio.sleep(0.1)
        await trio.sleep(1.6)  # more than a TTL: "staying" is still there thanks to republishing
        assert {peer_of(a) for a in await client[1].find_providers(C)} == {staying[0].peer_id}
        staying[1].stop_providing(C)
        await trio.sleep(1.6)
        assert await client[1].find_providers(C) == []
        assert all(len(d.store) == 0 for _, d in servers)


async def add_provider_raw(
    host: P2PHost, server: str, key: bytes, provider: bytes, addr: bytes
) -> None:
    msg = Message(type=Message.MessageType.ADD_PROVIDER, key=key)
    msg.providerPeers.add(id=provider, addrs=[addr])
    stream = await host.open_stream(server, PROTOCOL)
    try:
        await write_frame(stream, msg.SerializeToString())
        await read_frame(stream, 1 << 16)
    finally:
        await close_stream(stream, reset=False)


async def test_provider_spam_stays_within_the_bounds() -> None:
    params = replace(FAST, max_records=40, max_keys_per_peer=8)
    async with AsyncExitStack() as stack:
        (server, sdht), *_ = await dht_network(stack, params)
        spammers = [await stack.enter_async_context(open_host(gossip=None)) for _ in range(6)]
        for spammer in spammers:
            await spammer.connect(server.listen_addrs()[0])
            addr = multiaddr.Multiaddr(spammer.listen_addrs()[0].rsplit("/p2p/", 1)[0]).to_bytes()
            own = ID.from_base58(spammer.peer_id).to_bytes()
            for i in range(30):  # bounded: 30 keys each
                await add_provider_raw(spammer, server.peer_id, i.to_bytes(4, "big"), own, addr)
            # Records naming another peer as provider are ignored.
            other = ID.from_base58(server.peer_id).to_bytes()
            await add_provider_raw(spammer, server.peer_id, b"victim", other, addr)
        # Eight records per peer, forty in all: the sixth spammer found the store full.
        assert [sdht.store.count_for(s.peer_id) for s in spammers] == [8] * 5 + [0]
        assert len(sdht.store) == 40
        assert sdht.store.get(b"victim") == []
        assert sdht.info()["records_refused"] >= 6 * 22


async def test_idle_and_flooding_streams_do_not_silence_the_server() -> None:
    params = replace(FAST, max_inbound_per_peer=2, inbound_stream_seconds=1.0)
    async with AsyncExitStack() as stack:
        (server, sdht), (_, odht), _ = await dht_network(stack, params)
        attacker = await stack.enter_async_context(open_host(gossip=None))
        await attacker.connect(server.listen_addrs()[0])
        idle = []
        for _ in range(5):  # bounded
            try:
                idle.append(await attacker.open_stream(server.peer_id, PROTOCOL))
            except DialError:
                pass
        await trio.sleep(0.2)
        assert sdht.info()["inbound_refused"] >= 3 or len(idle) <= 2
        # An honest server is still answered at once.
        find = Message(type=Message.MessageType.FIND_NODE, key=b"\x00" * 34)
        reply = await odht._rpc(server.peer_id, find)
        assert reply is not None
        assert reply.type == Message.MessageType.FIND_NODE
        # Idle streams are cut at inbound_stream_seconds.
        await wait_until(lambda: sdht.info()["inbound_streams"] == 0, within=3)
        # Garbage, an oversized frame and a value request reset the stream, nothing more.
        for payload in (b"\xff\xfe garbage", b"x" * (params.max_request_bytes + 1)):
            stream = await attacker.open_stream(server.peer_id, PROTOCOL)
            try:
                await write_frame(stream, payload)
                with pytest.raises(FrameError):
                    await read_frame(stream, 1 << 16, frame_timeout=2)
            finally:
                await close_stream(stream, reset=True)
        put = Message(type=Message.MessageType.PUT_VALUE, key=b"/pk/x")
        assert await odht._rpc(server.peer_id, put) is None
        reply = await odht._rpc(server.peer_id, find)
        assert reply is not None


@pytest.mark.slow
async def test_find_node_flood_is_answered_within_bounds() -> None:
    async with AsyncExitStack() as stack:
        (server, sdht), (_, odht), _ = await dht_network(stack)
        attacker = await stack.enter_async_context(open_host(gossip=None))
        await attacker.connect(server.listen_addrs()[0])
        find = Message(type=Message.MessageType.FIND_NODE, key=b"\x00" * 34).SerializeToString()

        async def flood() -> None:
            for _ in range(200):  # bounded
                try:
                    stream = await attacker.open_stream(server.peer_id, PROTOCOL)
                    await write_frame(stream, find)
                    await read_frame(stream, 1 << 16, frame_timeout=2)
                    await close_stream(stream, reset=False)
                except (DialError, FrameError):
                    pass

        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(flood)
            await trio.sleep(0.5)
            t0 = trio.current_time()
            reply = await odht._rpc(
                server.peer_id, Message(type=Message.MessageType.FIND_NODE, key=b"\x01" * 34)
            )
            assert reply is not None
            assert trio.current_time() - t0 < 2.0
        assert sdht.info()["inbound_refused"] > 0
        assert attacker.peer_id not in sdht.routing
