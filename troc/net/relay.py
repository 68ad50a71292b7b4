"""Circuit relay v2: members behind NAT reach each other through a community server.

Theory of operation
-------------------
A member behind NAT cannot accept connections, so it keeps a *reservation*
on a relay it can reach (a community server): a standing permission for the
relay to forward connections to it. Another member then dials
``<relay addr>/p2p/<relay>/p2p-circuit/p2p/<member>``: it opens a stream to the
relay, the relay opens a stream to the member, and from then on the relay
copies bytes between the two streams. Both ends run Noise and Yamux over that
spliced pair as over a TCP socket, so the relay sees only ciphertext, and
everything above (sync, gossip, streams) works unchanged.

This module speaks the libp2p circuit relay v2 wire protocol
(``/libp2p/circuit/relay/0.2.0/hop`` and ``/stop``, the spec's protobuf
messages, each prefixed with its varint length), so other libp2p
implementations can use a troc relay and the reverse. It has three parts:

* :func:`open_relay_server` (this module) runs the HOP (server) side on a
  host, with the limits of :class:`RelayLimits`;
* :func:`~troc.net.relay_client.open_relay_client` keeps reservations on one or more relays
  (refreshed before they expire, renewed at once if the connection to the
  relay drops) and accepts the connections relays forward to us;
* :func:`~troc.net.relay_client.dial_via_relay` (also reached through :meth:`P2PHost.connect
  <troc.net.p2p.P2PHost.connect>` for any address containing
  ``/p2p-circuit``) connects to a peer through a relay.

The wire messages both sides share are :mod:`troc.net.circuit`; this
module re-exports the client's names.

Limits, all enforced by the relay (:class:`RelayLimits`): reservations in
all and per source IP (a peer holds at most one: reserving again refreshes
it), circuits in all and per peer, and per circuit a duration and a byte
budget in each direction. A circuit over its duration or its bytes is cut:
both streams are reset, so both ends see their connection to each other
drop, and reconnect if they still care.

Why troc's own HOP/STOP code and not ``libp2p.relay.circuit_v2``
-----------------------------------------------------------------
py-libp2p 0.8.1's circuit v2 runs under trio and relays bytes (measured: a
round trip A -> R -> B works), but its HOP side cannot be trusted with
limits on a server. Each point was reproduced against real hosts on
127.0.0.1 (details in ``docs/relay.md``):

1. **One peer can take every reservation slot.** ``_handle_reserve`` reserves
   for the peer id named *in the RESERVE message* (``msg.peer``), not for the
   authenticated remote peer. A connected peer sending three RESERVEs naming
   three made-up peer ids filled ``max_reservations=3``; each was answered
   ``MALFORMED_MESSAGE`` (400), yet each left a reservation behind, and an
   honest member was then refused ``RESOURCE_LIMIT_EXCEEDED`` (201) for the
   whole reservation TTL (1 hour by default). Here a reservation always
   belongs to the Noise-authenticated remote peer; the message's peer field
   is ignored, as the spec says.
2. **The circuit duration is only checked when bytes flow.** ``_relay_data``
   compares the clock after each read returns, and reads have no deadline:
   a circuit with ``duration=2`` stayed up, idle, for 4 s (and would for
   ever), and was cut only when the next byte arrived. Here a timer cuts
   the circuit at its deadline whatever the traffic.
3. **No cap on circuits in all.** ``max_circuit_conns`` counts circuits per
   reservation (per destination); nothing bounds the relay's total or the
   circuits one source opens to many members. Here both are capped.
4. **Reservations outlive their peer's connection.** The reservation count
   that ``can_accept_reservation`` compares with the maximum includes peers
   that disconnected, until the TTL (1 h) passes: slots leak. Here a
   reservation ends when its holder's connection to the relay does (the
   spec's rule), checked before each admission decision.
5. Smaller ones: a duration/byte cut writes a HOP ``STATUS`` message into
   the middle of the spliced (Noise-encrypted) byte stream; Yamux's
   ``StreamEOF`` is not one of the EOF types it expects (it expects Mplex's),
   so each clean close goes through three "unexpected error" retries with
   sleeps; one error path calls a ``NetStream.is_open`` that does not exist
   (``AttributeError`` logged); the byte limit counts both directions
   together where the spec's ``Limit.data`` is per direction; and the
   client transport (``CircuitV2Transport.dial``) makes a reservation on the
   relay just to *dial* through it when the client role is on, taking a
   slot a NATed member needs.

What we do use from py-libp2p: the spec's protobuf classes
(``libp2p.relay.circuit_v2.pb.circuit_pb2``), :class:`RawConnection` to wrap
a relayed stream as a connection, and the host's
``upgrade_outbound_connection`` / ``upgrade_inbound_connection`` to run
Noise + Yamux over it and register it with the swarm (both measured to
work: streams opened over the result carry sync traffic like any other).

Two more py-libp2p traps met here: an exception escaping a stream handler
tears down the connection's whole task group (so both handlers here catch
everything), and ``host.disconnect()`` awaits the close before popping the
peer from the swarm's table, so a peer that reconnects at once is served on
a connection the swarm no longer lists (``get_connected_peers()`` omits it).

Other facts that shape the code: py-libp2p's swarm drops ``/p2p-circuit``
addresses when it dials from the peerstore (``swarm.py``: "this node has no
relay transport"), so a peer reachable only through a relay must be dialed
explicitly (:func:`dial_via_relay`) before streams are opened to it; and a
stream handler's stream is not closed when the handler returns, which the
STOP side relies on (the stream *is* the new connection).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import multiaddr
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF, StreamError
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, Limit, StopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as PbPeerId
from libp2p.relay.circuit_v2.pb.circuit_pb2 import Reservation as PbReservation
from libp2p.relay.circuit_v2.pb.circuit_pb2 import Status as PbStatus

from troc.errors import LocalProtocolError
from troc.net.circuit import (
    CONNECTION_FAILED,
    HOP_PROTOCOL,
    MALFORMED_MESSAGE,
    NO_RESERVATION,
    OK,
    PERMISSION_DENIED,
    RESERVATION_REFUSED,
    RESOURCE_LIMIT_EXCEEDED,
    STOP_PROTOCOL,
    UNEXPECTED_MESSAGE,
    CircuitAddr,
    RelayRefused,
    _is_relayed,
    _read_hop,
    _read_stop,
    _remote_ip,
    _send,
    parse_circuit_addr,
    status_name,
)
from troc.net.frames import (
    DEFAULT_IO_TIMEOUT,
    DialError,
    FrameError,
    close_stream,
    remote_peer_id,
)
from troc.net.p2p import P2PHost
from troc.net.quota import TokenBucket
from troc.net.relay_client import (
    RelayClient,
    Reservation,
    dial_via_relay,
    open_relay_client,
    parse_peer_id,
    reserve,
)

__all__ = [
    "HOP_PROTOCOL",
    "STOP_PROTOCOL",
    "CircuitAddr",
    "RelayClient",
    "RelayLimits",
    "RelayRefused",
    "RelayServer",
    "RelayStats",
    "Reservation",
    "dial_via_relay",
    "open_relay_client",
    "open_relay_server",
    "parse_circuit_addr",
    "parse_peer_id",
    "reserve",
]

logger = logging.getLogger(__name__)
_CHUNK = 64 * 1024  # one Yamux frame
_MiB = 1024 * 1024
#: Peers whose reservation requests are counted at once, at most.
MAX_TRACKED_PEERS = 10_000

# --- limits -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelayLimits:
    """What a relay grants. The defaults suit a community server.

    A member's reservation costs the relay one table entry; what costs is a
    circuit (two streams and the bytes copied between them), so circuits are
    bounded in number, in time and in bytes, and reservations mostly in
    number. A cut circuit is not an error for troc: anti-entropy sync resumes
    where it stopped on the next connection.
    """

    #: Reservations held at once, in all.
    max_reservations: int = 1024
    #: Reservations from one source IP address. A peer holds at most one
    #: reservation (reserving again refreshes it), but one machine can mint
    #: peer ids at will; members behind one household NAT share an address.
    max_reservations_per_ip: int = 16
    #: Circuits open at once, in all.
    max_circuits: int = 256
    #: Circuits one peer takes part in at once, as dialer or as target.
    max_circuits_per_peer: int = 16
    #: Seconds a circuit may stay open; it is cut after, busy or idle.
    circuit_seconds: float = 600.0
    #: Bytes a circuit may carry in each direction (the spec's ``Limit.data``);
    #: counted as relayed, Noise and Yamux framing included.
    circuit_bytes: int = 16 * _MiB
    #: Seconds a reservation lasts unless refreshed (the client refreshes it
    #: well before), and ends at once when its holder disconnects.
    reservation_ttl: float = 3600.0
    #: Bound on each handshake step (reading a request, reaching the target).
    io_timeout: float = DEFAULT_IO_TIMEOUT
    #: Reservation requests (new or refreshed) one peer may make per minute,
    #: with that many in a burst; more are refused. 0: no such limit.
    reservations_per_minute: int = 10

    def __post_init__(self) -> None:
        for name in (
            "max_reservations",
            "max_reservations_per_ip",
            "max_circuits",
            "max_circuits_per_peer",
            "circuit_bytes",
        ):
            if getattr(self, name) < 1:
                raise LocalProtocolError(f"RelayLimits.{name} must be at least 1")
        for name in ("circuit_seconds", "reservation_ttl", "io_timeout"):
            if not getattr(self, name) > 0:
                raise LocalProtocolError(f"RelayLimits.{name} must be positive")

    def to_proto(self) -> Limit:
        return Limit(duration=math.ceil(self.circuit_seconds), data=self.circuit_bytes)


# --- server (HOP) -------------------------------------------------------------


@dataclass(slots=True)
class RelayStats:
    """Counters since the relay started (for ``troc status`` and metrics)."""

    reservations_granted: int = 0
    reservations_refused: int = 0
    circuits_opened: int = 0
    circuits_refused: int = 0
    circuits_cut_duration: int = 0
    circuits_cut_bytes: int = 0
    bytes_relayed: int = 0


@dataclass(slots=True)
class _Held:
    expires: float  # time.monotonic()
    ip: str


@dataclass(eq=False, slots=True)  # eq=False: hashed by identity, kept in a set
class _Circuit:
    src: str
    dst: str
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class _Cut(Exception):
    pass


class RelayServer:
    """The HOP side on one host. Obtain it from :func:`open_relay_server`."""

    def __init__(self, host: P2PHost, limits: RelayLimits, announce: Sequence[str]) -> None:
        self.host = host
        self.limits = limits
        self.stats = RelayStats()
        self._announce = tuple(announce)
        self._held: dict[str, _Held] = {}
        self._circuits: set[_Circuit] = set()
        # Per peer: reservation requests, as a token bucket (bounded map).
        self._asks: OrderedDict[str, TokenBucket] = OrderedDict()
        self._closing = False

    # -- views

    def reservations(self) -> list[str]:
        """Peer ids holding a live reservation."""
        self._prune()
        return sorted(self._held)

    def circuit_count(self) -> int:
        return len(self._circuits)

    def relay_addrs(self) -> list[str]:
        """The addresses given to reserving peers: ``announce``, else our listen addresses."""
        if self._announce:
            return list(self._announce)
        return [
            a for a in self.host.listen_addrs() if "/ip4/0.0.0.0/" not in a and "/ip6/::/" not in a
        ]

    # -- admission

    def _prune(self) -> None:
        now = time.monotonic()
        connected = set(self.host.connected_peers())
        for peer in [p for p, h in self._held.items() if h.expires <= now or p not in connected]:
            del self._held[peer]

    def _admit_reservation(self, peer: str, ip: str) -> PbStatus.ValueType:
        if self._closing:
            return RESERVATION_REFUSED
        per_minute = self.limits.reservations_per_minute
        if per_minute > 0:
            now = time.monotonic()
            bucket = self._asks.pop(peer, None) or TokenBucket(
                per_minute / 60, per_minute, per_minute, now
            )
            self._asks[peer] = bucket
            while len(self._asks) > MAX_TRACKED_PEERS:
                self._asks.popitem(last=False)
            if bucket.take(1, now) > 0:
                return RESOURCE_LIMIT_EXCEEDED
        self._prune()
        if peer not in self._held:
            if len(self._held) >= self.limits.max_reservations:
                return RESOURCE_LIMIT_EXCEEDED
            if sum(h.ip == ip for h in self._held.values()) >= self.limits.max_reservations_per_ip:
                return RESOURCE_LIMIT_EXCEEDED
        self._held[peer] = _Held(time.monotonic() + self.limits.reservation_ttl, ip)
        return OK

    def _admit_circuit(self, src: str, dst: str) -> PbStatus.ValueType:
        if self._closing:
            return CONNECTION_FAILED
        self._prune()
        if dst not in self._held:
            return NO_RESERVATION
        if len(self._circuits) >= self.limits.max_circuits:
            return RESOURCE_LIMIT_EXCEEDED
        per_peer = self.limits.max_circuits_per_peer
        for peer in (src, dst):
            if sum(peer in (c.src, c.dst) for c in self._circuits) >= per_peer:
                return RESOURCE_LIMIT_EXCEEDED
        return OK

    # -- protocol

    async def handle_hop(self, stream: INetStream) -> None:
        """One HOP stream: one RESERVE or one CONNECT (then the circuit's whole life).

        Never raises: an exception escaping a py-libp2p stream handler tears
        down the whole connection's task group (measured: the host's swarm
        task dies with the ``ExceptionGroup``).
        """
        try:
            await self._handle_hop(stream)
        except Exception:
            logger.warning("relay: HOP handler failed", exc_info=True)
            await close_stream(stream, reset=True)

    async def _handle_hop(self, stream: INetStream) -> None:
        peer = remote_peer_id(stream)
        timeout = self.limits.io_timeout
        try:
            try:
                msg = await _read_hop(stream, timeout)
            except Exception:  # FrameError or a protobuf DecodeError
                await _send(
                    stream, HopMessage(type=HopMessage.STATUS, status=MALFORMED_MESSAGE), timeout
                )
                await close_stream(stream, reset=True)
                return
            if _is_relayed(stream):
                await self._status(stream, PERMISSION_DENIED)
            elif msg.type == HopMessage.RESERVE:
                await self._reserve(stream, peer)
            elif msg.type == HopMessage.CONNECT:
                await self._connect(stream, peer, msg)
                return  # _connect disposed of the stream
            else:
                await self._status(stream, UNEXPECTED_MESSAGE)
            await close_stream(stream, reset=False)
        except FrameError as exc:
            logger.debug("relay: HOP stream from %s failed: %s", peer, exc)
            await close_stream(stream, reset=True)

    async def _status(self, stream: INetStream, status: PbStatus.ValueType) -> None:
        await _send(
            stream, HopMessage(type=HopMessage.STATUS, status=status), self.limits.io_timeout
        )

    async def _reserve(self, stream: INetStream, peer: str) -> None:
        # The RESERVE's own peer field (if any) is ignored: a reservation is for
        # the authenticated remote peer, never for an id the message names.
        status = self._admit_reservation(peer, _remote_ip(stream))
        if status != OK:
            self.stats.reservations_refused += 1
            logger.info("relay: reservation for %s refused (%s)", peer, status_name(status))
            await self._status(stream, status)
            return
        self.stats.reservations_granted += 1
        expire = int(time.time() + self.limits.reservation_ttl)
        addrs = [multiaddr.Multiaddr(a).to_bytes() for a in self.relay_addrs()]
        reply = HopMessage(
            type=HopMessage.STATUS,
            status=OK,
            reservation=PbReservation(expire=expire, addrs=addrs),
            limit=self.limits.to_proto(),
        )
        await _send(stream, reply, self.limits.io_timeout)

    async def _connect(self, stream: INetStream, src: str, msg: HopMessage) -> None:
        timeout = self.limits.io_timeout
        try:
            dst = ID(msg.peer.id).to_base58() if msg.HasField("peer") else ""
            ID.from_base58(dst)
        except Exception:
            dst = ""
        if not dst or dst == src:
            await self._status(stream, MALFORMED_MESSAGE)
            await close_stream(stream, reset=False)
            return
        status = self._admit_circuit(src, dst)
        if status != OK:
            self.stats.circuits_refused += 1
            logger.info("relay: circuit %s -> %s refused (%s)", src, dst, status_name(status))
            await self._status(stream, status)
            await close_stream(stream, reset=False)
            return
        circuit = _Circuit(src, dst)
        self._circuits.add(circuit)  # holds the slot from here on
        target: INetStream | None = None
        try:
            with circuit.scope:
                target = await self._open_stop(src, dst)
                if target is None:
                    self.stats.circuits_refused += 1
                    await self._status(stream, CONNECTION_FAILED)
                    await close_stream(stream, reset=False)
                    return
                await _send(
                    stream,
                    HopMessage(type=HopMessage.STATUS, status=OK, limit=self.limits.to_proto()),
                    timeout,
                )
                self.stats.circuits_opened += 1
                await self._splice(stream, target)
                return
            # Cancelled from outside (the relay is closing).
            await close_stream(stream, reset=True)
            if target is not None:
                await close_stream(target, reset=True)
        finally:
            self._circuits.discard(circuit)

    async def _open_stop(self, src: str, dst: str) -> INetStream | None:
        timeout = self.limits.io_timeout
        try:
            target = await self.host.open_stream(dst, STOP_PROTOCOL)
        except DialError as exc:
            logger.info("relay: cannot reach %s for %s: %s", dst, src, exc)
            return None
        try:
            request = StopMessage(
                type=StopMessage.CONNECT,
                peer=PbPeerId(id=ID.from_base58(src).to_bytes()),
                limit=self.limits.to_proto(),
            )
            await _send(target, request, timeout)
            reply = await _read_stop(target, timeout)
        except Exception as exc:  # FrameError or a protobuf DecodeError
            logger.info("relay: STOP handshake with %s failed: %r", dst, exc)
            await close_stream(target, reset=True)
            return None
        if reply.type != StopMessage.STATUS or reply.status != OK:
            logger.info("relay: %s refused the circuit from %s", dst, src)
            await close_stream(target, reset=True)
            return None
        return target

    async def _splice(self, a: INetStream, b: INetStream) -> None:
        """Copy both ways until both ends close, or cut at the duration or byte limit."""
        limits = self.limits
        outcome = "closed"

        async def pump(src: INetStream, dst: INetStream, cancel: trio.CancelScope) -> None:
            nonlocal outcome
            budget = limits.circuit_bytes
            try:
                while True:
                    try:
                        data = await src.read(_CHUNK)
                    except StreamEOF:
                        data = b""
                    if not data:
                        await dst.close()  # half-close: pass the EOF on
                        return
                    if len(data) > budget:
                        raise _Cut("bytes")
                    budget -= len(data)
                    self.stats.bytes_relayed += len(data)
                    await dst.write(data)
            except _Cut:
                outcome = "bytes"
                cancel.cancel()
            except (StreamError, OSError, Exception) as exc:  # a side reset or vanished
                if outcome == "closed":
                    outcome = f"reset ({type(exc).__name__})"
                cancel.cancel()

        with trio.move_on_after(limits.circuit_seconds) as timer:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, a, b, nursery.cancel_scope)
                nursery.start_soon(pump, b, a, nursery.cancel_scope)
        if timer.cancelled_caught:
            outcome = "duration"
        if outcome == "duration":
            self.stats.circuits_cut_duration += 1
        elif outcome == "bytes":
            self.stats.circuits_cut_bytes += 1
        # A cut resets both streams: the ends' connection drops at once (the
        # spec says so; writing a STATUS here would corrupt their Noise stream).
        reset = outcome != "closed"
        if reset:
            logger.info("relay: circuit cut (%s)", outcome)
        with trio.CancelScope(shield=True):
            await close_stream(a, reset=reset)
            await close_stream(b, reset=reset)

    async def _close(self) -> None:
        self._closing = True
        for circuit in list(self._circuits):
            circuit.scope.cancel()
        # The circuits' handlers reset their streams; give them a moment.
        with trio.move_on_after(5):
            while self._circuits:  # noqa: ASYNC110 (handlers run in the swarm's tasks)
                await trio.sleep(0.01)


@asynccontextmanager
async def open_relay_server(
    host: P2PHost,
    limits: RelayLimits = RelayLimits(),
    *,
    announce: Sequence[str] = (),
) -> AsyncIterator[RelayServer]:
    """Serve circuit relay v2 (HOP) on ``host`` for the length of the block.

    Args:
        host: a running host (:func:`troc.net.p2p.open_host`).
        limits: what the relay grants.
        announce: full multiaddrs (``/ip4/…/tcp/…/p2p/<id>``) sent to reserving
            peers as the relay's addresses, e.g. the public address a port
            forward exposes; default: the host's listen addresses (wildcards
            left out).

    On exit, open circuits are cut (reset) and the protocol handler removed.
    """
    server = RelayServer(host, limits, announce)
    host.libp2p.set_stream_handler(TProtocol(HOP_PROTOCOL), server.handle_hop)
    try:
        yield server
    finally:
        host.libp2p.remove_stream_handler(TProtocol(HOP_PROTOCOL))
        with trio.CancelScope(shield=True):
            await server._close()
