"""The thin libp2p shell: one host, length-prefixed frames, and gossip.

Theory of operation
-------------------
Everything troc says to a peer goes through this module, and nothing here
knows what the bytes mean. :func:`open_host` owns one py-libp2p host for the
length of an ``async with`` block: TCP, Noise, Yamux, an optional GossipSub
router, and a clean shutdown that closes every socket before the block exits.

Streams carry frames (:mod:`troc.net.frames`: a varint length, then the
bytes, every read and write under a deadline).
GossipSub lives in :mod:`troc.net.gossip`; this module only runs it.

py-libp2p 0.8.1 behaviours this module works around, each measured:

- ``new_host`` offers plaintext, secio and TLS next to Noise unless told
  otherwise; we pass Noise alone.
- A dial waits a fixed 250 ms for a second connection unless
  ``max_connections_per_peer`` is already reached; we set it to 1.
- Hosts stopped together can leak a dialed socket unless the host is closed
  explicitly before its service stops; we always close it.
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import multiaddr
import outcome
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair as new_ed25519_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service
from libp2p.transport.tcp.tcp import TCP

from troc.errors import LocalProtocolError, NetworkError
from troc.net.frames import (
    _CLOSE_TIMEOUT,
    DEFAULT_IO_TIMEOUT,
    DialError,
    FrameError,
    FrameReader,
    close_stream,
    encode_frame,
    read_frame,
    remote_peer_id,
    write_frame,
    write_frames,
)
from troc.net.gossip import Gossip, GossipParams
from troc.net.msg_signatures import install as _install_msg_signatures
from troc.net.peer_records import install as _install_peer_records
from troc.net.yamux_window import install as _install_yamux_window

__all__ = [
    "DEFAULT_LISTEN",
    "PING_PROTOCOL",
    "DialError",
    "FrameError",
    "FrameReader",
    "P2PHost",
    "StreamHandler",
    "close_stream",
    "encode_frame",
    "open_host",
    "peer_id_from_seed",
    "read_frame",
    "remote_peer_id",
    "write_frame",
    "write_frames",
]

logger = logging.getLogger(__name__)
# One WINDOW_UPDATE per half window, not per read (troc/net/yamux_window.py).
_install_yamux_window()
# A gossip RPC's signed peer record checked once, not per RPC (troc/net/peer_records.py).
_install_peer_records()
# A gossip publisher's key read from its peer id once, not per message
# (troc/net/msg_signatures.py).
_install_msg_signatures()

DEFAULT_LISTEN: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
#: Default deadline for one whole frame (read or write), a connect, a stream open.
_PING_SIZE = 32  # /ipfs/ping/1.0.0 echoes 32 bytes

StreamHandler = Callable[[INetStream, str], Awaitable[None]]
"""Called with an inbound stream and the remote peer id (base58)."""

# --- identity ---------------------------------------------------------------


def _key_pair(seed: bytes | None) -> KeyPair:
    if seed is None:
        return new_ed25519_key_pair()
    if len(seed) != 32:
        raise LocalProtocolError(f"key seed must be 32 bytes, got {len(seed)}")
    return new_ed25519_key_pair(seed)


def peer_id_from_seed(seed: bytes) -> str:
    """Return the base58 libp2p peer id a host started with ``key_seed=seed`` will have.

    The id is the identity multihash of the Ed25519 public key, so it is stable
    across restarts and computable without starting a host.
    """
    return ID.from_pubkey(_key_pair(seed).public_key).to_base58()


# --- host -------------------------------------------------------------------


class P2PHost:
    """A running libp2p host. Obtain it from :func:`open_host`; do not construct.

    ``connect`` and ``open_stream`` give up after the host's ``connect_timeout``
    (py-libp2p retries a failed dial three times, each attempt with its own
    timeout); wrap a call in ``trio.fail_after`` for a tighter bound.
    """

    def __init__(self, host: IHost, gossip: Gossip | None, connect_timeout: float) -> None:
        self.libp2p = host  # escape hatch for what this shell does not wrap
        self._gossip = gossip
        self._connect_timeout = connect_timeout
        self._closing = trio.Event()

    def closing(self) -> None:
        """Say that the host's owner is stopping: a stream still stuck
        opening on a stalled link (:meth:`_new_stream`) then has its link
        closed after ``CLOSING_GRACE`` seconds, not only once its deadline
        and ``STALLED_CLEANUP`` have passed, so a node stops in about a
        second. Call it before cancelling the tasks that use the host."""
        self._closing.set()

    @property
    def peer_id(self) -> str:
        return str(self.libp2p.get_id().to_base58())

    @property
    def gossip(self) -> Gossip:
        if self._gossip is None:
            raise LocalProtocolError("this host was opened with gossip=None")
        return self._gossip

    def listen_addrs(self) -> list[str]:
        """Where we listen, each ending in ``/p2p/<peer id>``: give these to peers."""
        suffix = f"/p2p/{self.peer_id}"
        return [str(a) + suffix for a in self.libp2p.get_transport_addrs()]

    def connected_peers(self) -> list[str]:
        return [p.to_base58() for p in self.libp2p.get_connected_peers()]

    def peer_addrs(self, peer_id: str) -> list[str]:
        """The peer's known addresses, as full multiaddrs ending in ``/p2p/<peer id>``."""
        try:
            addrs = self.libp2p.get_peerstore().addrs(ID.from_base58(peer_id))
        except Exception:  # unknown peer (py-libp2p raises its own PeerStoreError)
            return []
        suffix = f"/p2p/{peer_id}"
        return [a if a.endswith(suffix) else a + suffix for a in map(str, addrs)]

    async def ping(self, peer_id: str, *, within: float) -> float:
        """One ``/ipfs/ping/1.0.0`` round trip on the connection to ``peer_id``
        (every py-libp2p host answers it); returns its duration in seconds.

        Raises :class:`DialError` if no answer came ``within`` seconds (a dead
        link looks exactly like that: writes are buffered, nothing comes
        back), the stream could not be opened, or the answer is wrong.
        """
        payload = secrets.token_bytes(_PING_SIZE)
        start = trio.current_time()
        stream = None
        try:
            with trio.fail_after(within):
                stream = await self._new_stream(ID.from_base58(peer_id), [PING_PROTOCOL], within)
                await stream.write(payload)
                answer = b""
                while len(answer) < _PING_SIZE:
                    chunk = await stream.read(_PING_SIZE - len(answer))
                    if not chunk:
                        break
                    answer += chunk
        except (BaseLibp2pError, OSError, ValueError, trio.TooSlowError) as exc:
            if stream is not None:
                await close_stream(stream, reset=True)
            raise DialError(f"no ping answer from {peer_id}: {exc!r}") from exc
        await close_stream(stream, reset=False)
        if answer != payload:
            raise DialError(f"wrong ping answer from {peer_id}")
        return trio.current_time() - start

    async def connect(self, addr: str, *, redial: bool = False) -> str:
        """Connect to the peer at full multiaddr ``addr``; return its peer id.

        Returns at once if already connected. Raises :class:`LocalProtocolError`
        for an address without ``/p2p/<id>``, :class:`DialError` if the dial,
        Noise handshake or muxer negotiation fails or times out.

        A relayed address (``…/p2p/<relay>/p2p-circuit/p2p/<id>``) is dialed
        through the relay (:func:`troc.net.relay_client.dial_via_relay`).
        """
        if "/p2p-circuit" in addr:
            from troc.net.relay_client import dial_via_relay  # it imports this module

            return await dial_via_relay(self, addr, dial_timeout=self._connect_timeout)
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as exc:  # multiaddr raises a zoo of types for bad input
            raise LocalProtocolError(f"not a /p2p multiaddr: {addr!r} ({exc})") from exc
        try:
            with trio.fail_after(self._connect_timeout):
                if redial:  # forget a recent failure (see open_stream)
                    self.libp2p.get_network().unblock_peer(info.peer_id)  # type: ignore[attr-defined]
                await self._dial_named(info)
        except (BaseLibp2pError, OSError, trio.TooSlowError) as exc:
            raise DialError(f"cannot connect to {addr}: {exc!r}") from exc
        return str(info.peer_id.to_base58())

    async def _dial_named(self, info: PeerInfo) -> None:
        """Connect to ``info.peer_id`` through the address the caller named.

        py-libp2p's own ``connect`` dials at most one address per transport,
        the first its peerstore lists; once identify has run, that is often
        another of the peer's addresses, one this node may have no route to
        (a peer listening on two links, a LAN and a public address). Every
        redial then failed on that address while the named one, which
        worked, was never tried (tests/e2e/test_partition.py). So the named
        address goes first in the peerstore's list (py-libp2p 0.8.1 keeps a
        plain list per peer), and ``connect`` does the rest as it always has.
        """
        store = self.libp2p.get_peerstore()
        store.add_addrs(info.peer_id, info.addrs, 120)
        data = getattr(store, "peer_data_map", {}).get(info.peer_id)
        known = getattr(data, "addrs", None)
        named = info.addrs[0]
        if isinstance(known, list) and named in known and known[0] != named:
            known.remove(named)
            known.insert(0, named)
        await self.libp2p.connect(info)

    async def disconnect(self, peer_id: str, *, abort: bool = False) -> None:
        """Close every connection to ``peer_id``.

        ``abort`` is for a dead link: the TCP sockets are closed first. A
        plain close sends the muxer's goodbye, which waits behind any write
        already stuck on the dead link (Yamux's write lock) for as long as
        the kernel keeps retrying (~15 minutes); cancelled, it leaves the
        connection listed as open. With the socket gone the goodbye fails at
        once and py-libp2p cleans the connection up and tells its users.
        """
        peer = ID.from_base58(peer_id)
        if abort:
            for conn in self.libp2p.get_network().get_connections(peer):
                _abort_tcp(conn)
        await self.libp2p.disconnect(peer)

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        """Serve ``protocol``: ``handler(stream, peer_id)`` runs per inbound stream.

        This is the per-peer boundary: when the handler returns the stream is
        closed; when it raises, the error is logged and the stream reset.
        Peers connected before this call learn of the protocol only by trying
        it (py-libp2p sends no identify-push for new handlers).
        """

        async def serve(stream: INetStream) -> None:
            peer = remote_peer_id(stream)
            try:
                await handler(stream, peer)
            except Exception:
                logger.warning("%s handler failed for peer %s", protocol, peer, exc_info=True)
                await close_stream(stream, reset=True)
            else:
                await close_stream(stream, reset=False)

        self.libp2p.set_stream_handler(TProtocol(protocol), serve)

    def remove_stream_handler(self, protocol: str) -> None:
        self.libp2p.remove_stream_handler(TProtocol(protocol))

    async def open_stream(
        self, peer_id: str, protocol: str | Sequence[str], *, redial: bool = False
    ) -> INetStream:
        """Open a stream to ``peer_id`` for ``protocol``, dialing known addresses if need be.

        ``protocol`` may be several ids, preferred first: the stream speaks
        the first the peer serves (``stream.get_protocol()`` says which).

        Raises :class:`DialError` if the peer is unreachable, does not speak
        ``protocol``, or negotiation times out. Close the stream when done
        (``close_write()`` to half-close and still read the reply).

        py-libp2p 0.8.1 refuses, for 60 s, to dial a peer whose addresses
        all failed once (its "negative cache"): a witness or server that
        restarts within that minute stays unreachable. ``redial=True``
        forgets that failure first (for callers that retry with their own
        backoff).
        """
        try:
            with trio.fail_after(self._connect_timeout):
                peer = ID.from_base58(peer_id)
                if redial:
                    self.libp2p.get_network().unblock_peer(peer)  # type: ignore[attr-defined]
                ids = [protocol] if isinstance(protocol, str) else list(protocol)
                return await self._new_stream(
                    peer, [TProtocol(p) for p in ids], self._connect_timeout
                )
        except _DIAL_FAILURES as exc:
            raise DialError(f"cannot open {protocol} to {peer_id}: {exc!r}") from exc
        except BaseExceptionGroup as group:
            # py-libp2p's negotiation can fail from inside its own nursery: a
            # group of ordinary dial failures is one failed dial (seen as
            # `troc demo` crashing on a multiselect error under load); anything
            # else in the group (a cancellation, a bug) goes on up.
            _, rest = group.split(_DIAL_FAILURES)
            if rest is not None:
                raise
            raise DialError(f"cannot open {protocol} to {peer_id}: {group!r}") from group

    async def _new_stream(self, peer: ID, protocols: list[TProtocol], within: float) -> INetStream:
        """py-libp2p's ``new_stream``, for a caller whose deadline is
        ``within`` seconds away, that cannot outlive it for long.

        py-libp2p 0.8.1 resets a stream whose negotiation failed or was
        cancelled in a shielded scope with no deadline, and the reset needs
        the connection's write lock. On a link that stalled (a frozen peer,
        a dead route) a write blocked in the kernel holds that lock, so the
        reset, and the caller with it, waited for as long as the link stayed
        up: a liveness round stopped pinging every peer, and so never closed
        the dead link; a witness exchange held up its round. If the call
        still runs STALLED_CLEANUP seconds past the deadline, the link is
        taken for stalled and its TCP connections are closed (as
        :meth:`disconnect` with ``abort``): the blocked write fails, the
        reset ends, and the caller gets the timeout it asked for.
        """
        async with trio.open_nursery() as nursery:
            watch = await nursery.start(self._abort_if_stuck, peer, within + STALLED_CLEANUP)
            # Captured, so that what it raises reaches the caller as itself,
            # not inside the nursery's exception group.
            result = await outcome.acapture(self.libp2p.new_stream, peer, protocols)
            watch.cancel()
        return result.unwrap()

    async def _abort_if_stuck(
        self, peer: ID, after: float, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        # Shielded: the caller's deadline cancels everything inside it, this
        # too, at the very moment this is for. The caller cancels it itself.
        with trio.CancelScope(shield=True) as watch:
            task_status.started(watch)
            with trio.move_on_after(after):
                await self._closing.wait()
                await trio.sleep(CLOSING_GRACE)
        if watch.cancelled_caught:
            return
        if self._closing.is_set():
            logger.info("stopping: a stream to %s is stuck on a stalled link, closed", peer)
        else:
            logger.warning(
                "opening a stream to %s outlived its deadline by %.0f s: "
                "its link is stalled, closed",
                peer,
                STALLED_CLEANUP,
            )
        for conn in self.libp2p.get_network().get_connections(peer):
            _abort_tcp(conn)


#: How long py-libp2p's cleanup of a stream that failed to open may outlast
#: its caller's deadline before the link is taken for stalled
#: (:meth:`P2PHost._new_stream`).
STALLED_CLEANUP = 3.0

#: How long such a cleanup may run once the host is stopping (:meth:`P2PHost.closing`).
CLOSING_GRACE = 0.5

#: What a failed dial or negotiation raises in py-libp2p 0.8.1.
_DIAL_FAILURES = (BaseLibp2pError, OSError, ValueError, trio.TooSlowError)


def _abort_tcp(conn: object) -> None:
    """Close the TCP socket under a py-libp2p 0.8.1 connection (SwarmConn ->
    Yamux -> Noise session -> its reader-writer -> RawConnection ->
    TrioTCPStream -> trio SocketStream); any other kind (a relayed circuit)
    is left to the ordinary close."""
    try:
        sock = conn.muxed_conn.secured_conn.conn.conn.stream.stream.socket  # type: ignore[attr-defined]
    except AttributeError:
        return
    sock.close()  # trio wakes whoever waits on it with ClosedResourceError


def _listen_addr(addr: str) -> multiaddr.Multiaddr:
    """Parse and vet one listen address, since py-libp2p fails open on both counts.

    It skips an address no transport serves (``/udp/…/quic-v1``) with a log
    line, and binds its TCP listeners with SO_REUSEPORT, so a second node on a
    busy port starts fine and then receives a share of the first one's
    connections. A probe bind without SO_REUSEPORT refuses a busy port instead.
    """
    try:
        maddr = multiaddr.Multiaddr(addr)
        names = [p.name for p in maddr.protocols()]
        if names not in (["ip4", "tcp"], ["ip6", "tcp"]):
            raise ValueError("expected /ip4/<addr>/tcp/<port> or /ip6/<addr>/tcp/<port>")
        family = socket.AF_INET if names[0] == "ip4" else socket.AF_INET6
        ip, port = maddr.value_for_protocol(names[0]), int(maddr.value_for_protocol("tcp"))
    except Exception as exc:  # multiaddr raises a zoo of types for bad input
        raise LocalProtocolError(f"bad listen address {addr!r}: {exc}") from exc
    if port:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
            try:
                probe.bind((ip, port))
            except OSError as exc:
                raise NetworkError(f"cannot listen on {addr}: {exc.strerror}") from exc
    return maddr


@asynccontextmanager
async def open_host(
    *,
    key_seed: bytes | None = None,
    listen: Sequence[str] = DEFAULT_LISTEN,
    gossip: GossipParams | None = GossipParams(),  # noqa: B008 (frozen, so safe)
    enable_mdns: bool = False,
    connect_timeout: float = DEFAULT_IO_TIMEOUT,
) -> AsyncIterator[P2PHost]:
    """Run a libp2p host for the length of the ``async with`` block.

    Args:
        key_seed: 32-byte Ed25519 seed fixing the peer id
            (:func:`peer_id_from_seed`); ``None`` for a throwaway identity.
        listen: multiaddrs to listen on; port 0 picks a free port, read the
            result from :meth:`P2PHost.listen_addrs`.
        gossip: GossipSub settings, or ``None`` for no pubsub at all.
        enable_mdns: announce and discover peers on the LAN (py-libp2p's
            zeroconf). Discovered peers only land in the peerstore; nothing
            dials them.
        connect_timeout: bound on :meth:`P2PHost.connect` and
            :meth:`P2PHost.open_stream`, and py-libp2p's own dial limit.

    Raises:
        LocalProtocolError: a bad seed, a listen address that is not plain
            IP + TCP, or one already in use.
    """
    key_pair = _key_pair(key_seed)
    listen_addrs = [_listen_addr(a) for a in listen]
    noise = NoiseTransport(key_pair, noise_privkey=new_x25519_key_pair().private_key)
    host = new_host(
        key_pair=key_pair,
        # Noise only: the default also offers /plaintext/2.0.0, secio and TLS.
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        transports=[TCP()],
        listen_addrs=listen_addrs,
        enable_mDNS=enable_mdns,
        # One connection per peer: with the default (3) every dial also waits
        # 250 ms for a "happy eyeballs" second connection that never comes.
        connection_config=ConnectionConfig(
            max_connections_per_peer=1, dial_timeout=connect_timeout
        ),
    )
    gossip_ = Gossip(host, gossip) if gossip is not None else None
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(host.run(listen_addrs))
        if gossip_ is not None:
            await stack.enter_async_context(background_trio_service(gossip_.pubsub))
            await stack.enter_async_context(background_trio_service(gossip_.router))
            await gossip_.pubsub.wait_until_ready()
        p2p = P2PHost(host, gossip_, connect_timeout)
        try:
            yield p2p
        finally:
            p2p.closing()
            # Without this explicit close, stopping two hosts together can leave
            # a dialed socket open (ResourceWarning at garbage collection).
            with trio.move_on_after(_CLOSE_TIMEOUT) as scope:
                scope.shield = True  # (trio-typing's stale stubs lack the shield= keyword)
                await host.close()
