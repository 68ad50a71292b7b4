"""Circuit relay v2, the client side: :func:`reserve` a slot on a relay,
:func:`dial_via_relay` to reach a peer through one, and
:func:`open_relay_client` to keep reservations on relays (refreshed before
they expire, renewed at once if the connection to the relay drops) and accept
the connections they forward to us (the STOP side). The why and how of
the protocol is in :mod:`troc.net.relay`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import multiaddr
import trio
from libp2p.abc import INetStream
from libp2p.connection_types import ConnectionType
from libp2p.custom_types import TProtocol
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, StopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as PbPeerId

from troc.errors import LocalProtocolError
from troc.net.circuit import (
    HOP_PROTOCOL,
    MALFORMED_MESSAGE,
    OK,
    PERMISSION_DENIED,
    STOP_PROTOCOL,
    RelayRefused,
    _circuit_ma,
    _read_hop,
    _read_stop,
    _send,
    parse_circuit_addr,
    status_name,
)
from troc.net.frames import (
    DEFAULT_IO_TIMEOUT,
    DialError,
    close_stream,
    remote_peer_id,
)

if TYPE_CHECKING:  # the host imports this module to dial relayed addresses
    from troc.net.p2p import P2PHost

__all__ = [
    "RelayClient",
    "Reservation",
    "dial_via_relay",
    "open_relay_client",
    "parse_peer_id",
    "reserve",
]

logger = logging.getLogger(__name__)

# --- client -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reservation:
    """A slot granted by a relay."""

    relay_peer_id: str
    #: Unix time (seconds) at which the relay forgets the reservation.
    expires: float
    #: The relay's own addresses as it announced them (``…/p2p/<relay>``).
    relay_addrs: tuple[str, ...]
    #: The circuit limits the relay applies (0 = unlimited, per the spec).
    max_duration: int
    max_bytes: int

    def circuit_addrs(self, peer_id: str) -> list[str]:
        """The addresses others dial to reach ``peer_id`` through this relay."""
        return [f"{a}/p2p-circuit/p2p/{peer_id}" for a in self.relay_addrs]


async def reserve(
    host: P2PHost, relay_addr: str, *, io_timeout: float = DEFAULT_IO_TIMEOUT
) -> Reservation:
    """Connect to the relay at ``relay_addr`` (``…/p2p/<relay>``) and take or refresh a slot.

    One round trip. Raises :class:`RelayRefused` if the relay says no (a
    limit, or no relay service: then ``status`` is ``"NO_RELAY"``), and
    :class:`DialError` if it cannot be reached.
    """
    relay = await host.connect(relay_addr)
    stream = await _open_hop(host, relay)
    try:
        await _send(stream, HopMessage(type=HopMessage.RESERVE), io_timeout)
        reply = await _read_hop(stream, io_timeout)
    except Exception as exc:  # FrameError or a protobuf DecodeError
        await close_stream(stream, reset=True)
        raise DialError(f"reservation with {relay} failed: {exc!r}") from exc
    await close_stream(stream, reset=False)
    if reply.type != HopMessage.STATUS or reply.status != OK:
        name = status_name(reply.status)
        raise RelayRefused(name, f"relay {relay} refused the reservation: {name}")
    addrs: list[str] = []
    for raw in reply.reservation.addrs:
        try:
            addr = str(multiaddr.Multiaddr(raw))
        except Exception:
            continue
        if not addr.endswith(f"/p2p/{relay}"):
            addr += f"/p2p/{relay}"
        addrs.append(addr)
    if not addrs:
        addrs = [relay_addr]
    return Reservation(
        relay_peer_id=relay,
        expires=float(reply.reservation.expire),
        relay_addrs=tuple(addrs),
        max_duration=reply.limit.duration,
        max_bytes=reply.limit.data,
    )


async def _open_hop(host: P2PHost, relay: str) -> INetStream:
    try:
        return await host.open_stream(relay, HOP_PROTOCOL)
    except DialError as exc:
        if relay in host.connected_peers():
            raise RelayRefused("NO_RELAY", f"{relay} does not serve circuit relay v2") from exc
        raise


async def dial_via_relay(
    host: P2PHost, addr: str, *, dial_timeout: float = DEFAULT_IO_TIMEOUT
) -> str:
    """Connect to the peer at relayed address ``addr``; return its peer id.

    ``addr`` is ``[<relay transport>]/p2p/<relay>/p2p-circuit/p2p/<target>``;
    without a transport part we must already be connected to the relay.
    Returns at once if already connected to the target. Afterwards
    :meth:`P2PHost.open_stream` reaches the target over the relayed
    connection, which lasts until either end closes it or the relay cuts it.

    Raises :class:`RelayRefused` (``NO_RESERVATION``, ``RESOURCE_LIMIT_EXCEEDED``,
    ``CONNECTION_FAILED``…), :class:`DialError`, :class:`LocalProtocolError`
    for a malformed address.
    """
    circuit = parse_circuit_addr(addr)
    target = circuit.target_peer_id
    if target in host.connected_peers():
        return target
    try:
        with trio.fail_after(dial_timeout):
            if circuit.relay_addr is not None:
                await host.connect(circuit.relay_addr)
            stream = await _open_hop(host, circuit.relay_peer_id)
            try:
                request = HopMessage(
                    type=HopMessage.CONNECT, peer=PbPeerId(id=ID.from_base58(target).to_bytes())
                )
                await _send(stream, request, dial_timeout)
                reply = await _read_hop(stream, dial_timeout)
                if reply.type != HopMessage.STATUS or reply.status != OK:
                    name = status_name(reply.status)
                    raise RelayRefused(name, f"relay refused the circuit to {target}: {name}")
                raw = RawConnection(
                    stream=stream,
                    initiator=True,
                    connection_type=ConnectionType.RELAYED,
                    addresses=[_circuit_ma(circuit.relay_peer_id, target)],
                )
                await host.libp2p.upgrade_outbound_connection(raw, ID.from_base58(target))
            except BaseException:
                with trio.CancelScope(shield=True):
                    await close_stream(stream, reset=True)
                raise
    except RelayRefused:
        raise
    except (DialError, LocalProtocolError):
        raise
    except trio.TooSlowError as exc:
        raise DialError(f"relayed dial to {addr} timed out after {dial_timeout} s") from exc
    except Exception as exc:  # FrameError, DecodeError, SwarmException from the upgrade
        raise DialError(f"relayed dial to {addr} failed: {exc!r}") from exc
    return target


class RelayClient:
    """Reservations held on relays, and the STOP side. Obtain from :func:`open_relay_client`."""

    def __init__(self, host: P2PHost, timeout: float) -> None:
        self.host = host
        self._timeout = timeout
        self._reservations: dict[str, Reservation] = {}
        self._trusted: set[str] = set()
        self._accept_any = False
        self._changed = trio.Event()
        #: The last error per relay address, for status displays.
        self.errors: dict[str, str] = {}

    def reservations(self) -> dict[str, Reservation]:
        """Live reservations by relay peer id."""
        now = time.time()
        return {r: v for r, v in self._reservations.items() if v.expires > now}

    def circuit_addrs(self) -> list[str]:
        """Our addresses through every relay holding a reservation for us: advertise these."""
        me = self.host.peer_id
        return [a for r in self.reservations().values() for a in r.circuit_addrs(me)]

    async def wait_reserved(self, count: int = 1) -> None:
        """Wait for ``count`` live reservations (bound the wait with ``trio.fail_after``)."""
        while len(self.reservations()) < count:
            await self._changed.wait()

    async def dial(self, addr: str) -> str:
        """:func:`dial_via_relay` with this client's timeout."""
        return await dial_via_relay(self.host, addr, dial_timeout=self._timeout)

    def _set(self, relay_addr: str, relay: str | None, value: Reservation | None) -> None:
        if value is not None:
            self._reservations[value.relay_peer_id] = value
            self.errors.pop(relay_addr, None)
        elif relay is not None:
            self._reservations.pop(relay, None)
        self._changed.set()
        self._changed = trio.Event()

    async def _keep(self, relay_addr: str, refresh: float, check: float) -> None:
        """Hold a reservation on one relay for as long as the client runs."""
        relay = parse_peer_id(relay_addr)
        self._trusted.add(relay)
        backoff = 1.0
        while True:
            try:
                value = await reserve(self.host, relay_addr, io_timeout=self._timeout)
            except DialError as exc:  # RelayRefused included
                logger.info("relay: no reservation on %s: %s", relay_addr, exc)
                self.errors[relay_addr] = str(exc)
                self._set(relay_addr, relay, None)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            backoff = 1.0
            self._set(relay_addr, relay, value)
            # Refresh at half the remaining time (at most every `refresh` s);
            # re-reserve at once if the connection to the relay drops, since
            # the relay then forgets us.
            due = trio.current_time() + max(1.0, min(refresh, (value.expires - time.time()) / 2))
            while trio.current_time() < due and relay in self.host.connected_peers():  # noqa: ASYNC110
                await trio.sleep(min(check, max(0.0, due - trio.current_time())))

    async def handle_stop(self, stream: INetStream) -> None:
        """A relay forwards a connection to us: accept it and hand it to the swarm."""
        relay = remote_peer_id(stream)
        timeout = self._timeout
        try:
            if not self._accept_any and relay not in self._trusted:
                await _send(
                    stream, StopMessage(type=StopMessage.STATUS, status=PERMISSION_DENIED), timeout
                )
                await close_stream(stream, reset=False)
                return
            msg = await _read_stop(stream, timeout)
            src = ID(msg.peer.id) if msg.HasField("peer") else None
            if msg.type != StopMessage.CONNECT or src is None:
                await _send(
                    stream, StopMessage(type=StopMessage.STATUS, status=MALFORMED_MESSAGE), timeout
                )
                await close_stream(stream, reset=False)
                return
            await _send(stream, StopMessage(type=StopMessage.STATUS, status=OK), timeout)
            ma = _circuit_ma(relay, src.to_base58())
            raw = RawConnection(
                stream=stream,
                initiator=False,
                connection_type=ConnectionType.RELAYED,
                addresses=[ma],
            )
            with trio.fail_after(timeout):
                # Noise authenticates the far end; the swarm then owns the stream.
                await self.host.libp2p.upgrade_inbound_connection(raw, ma)
        except Exception as exc:
            logger.info("relay: relayed connection via %s failed: %r", relay, exc)
            await close_stream(stream, reset=True)


def parse_peer_id(addr: str) -> str:
    """The ``/p2p/<id>`` of a plain (not relayed) full multiaddr."""
    try:
        ma = multiaddr.Multiaddr(addr)
        names = [p.name for p in ma.protocols()]
        if "p2p-circuit" in names or names[-1:] != ["p2p"]:
            raise ValueError("expected <transport>/p2p/<id>")
        return str(ID.from_base58(ma.value_for_protocol("p2p")).to_base58())
    except Exception as exc:
        raise LocalProtocolError(f"not a relay address: {addr!r} ({exc})") from exc


@asynccontextmanager
async def open_relay_client(
    host: P2PHost,
    relays: Sequence[str] = (),
    *,
    accept_any_relay: bool = False,
    refresh: float = 600.0,
    check: float = 5.0,
    io_timeout: float = DEFAULT_IO_TIMEOUT,
) -> AsyncIterator[RelayClient]:
    """Hold reservations on ``relays`` and accept relayed connections, for the block.

    Args:
        host: a running host.
        relays: full multiaddrs of relays (``/ip4/…/tcp/…/p2p/<relay>``). One
            background task per relay reserves, refreshes at half the
            remaining time (at most every ``refresh`` s), re-reserves within
            ``check`` s after the connection to the relay drops, and retries
            a refused or failed reservation with backoff (1 s doubling to 60 s).
        accept_any_relay: accept connections forwarded by any relay, not only
            by those in ``relays`` (a relay can only forward to peers holding
            a reservation there, so this matters only for reservations made
            outside this client).

    Returns at once; use :meth:`RelayClient.wait_reserved` to wait for the first
    reservation. On exit the STOP handler is removed; reservations lapse on
    the relays when their TTL passes or our connection to them closes.
    """
    ids = [parse_peer_id(a) for a in relays]  # fail fast on a bad address
    client = RelayClient(host, io_timeout)
    client._accept_any = accept_any_relay
    client._trusted.update(ids)
    host.libp2p.set_stream_handler(TProtocol(STOP_PROTOCOL), client.handle_stop)
    try:
        async with trio.open_nursery() as nursery:
            for addr in relays:
                nursery.start_soon(client._keep, addr, refresh, check)
            try:
                yield client
            finally:
                nursery.cancel_scope.cancel()
    finally:
        host.libp2p.remove_stream_handler(TProtocol(STOP_PROTOCOL))
