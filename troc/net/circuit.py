"""Circuit relay v2 on the wire, shared by the relay (:mod:`troc.net.relay`)
and its clients (:mod:`troc.net.relay_client`): the protocol ids, the spec's
status codes, :class:`RelayRefused`, relayed addresses
(:func:`parse_circuit_addr`) and the length-prefixed HOP / STOP messages.
"""

from __future__ import annotations

from dataclasses import dataclass

import multiaddr
from libp2p.abc import INetStream
from libp2p.connection_types import ConnectionType
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, StopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import Status as PbStatus

from troc.errors import LocalProtocolError
from troc.net.frames import (
    DialError,
    read_frame,
    write_frame,
)

__all__ = [
    "HOP_PROTOCOL",
    "STOP_PROTOCOL",
    "CircuitAddr",
    "RelayRefused",
    "parse_circuit_addr",
    "status_name",
]

HOP_PROTOCOL = "/libp2p/circuit/relay/0.2.0/hop"
STOP_PROTOCOL = "/libp2p/circuit/relay/0.2.0/stop"
#: HOP and STOP messages are a few hundred bytes; go-libp2p caps them at 4 KiB too.
MAX_MESSAGE = 4096

OK = PbStatus.OK
RESERVATION_REFUSED = PbStatus.RESERVATION_REFUSED
RESOURCE_LIMIT_EXCEEDED = PbStatus.RESOURCE_LIMIT_EXCEEDED
PERMISSION_DENIED = PbStatus.PERMISSION_DENIED
CONNECTION_FAILED = PbStatus.CONNECTION_FAILED
NO_RESERVATION = PbStatus.NO_RESERVATION
MALFORMED_MESSAGE = PbStatus.MALFORMED_MESSAGE
UNEXPECTED_MESSAGE = PbStatus.UNEXPECTED_MESSAGE


def status_name(code: int) -> str:
    """The spec's name for a status code (``"NO_RESERVATION"``), or the number."""
    try:
        return str(PbStatus.Name(code))  # type: ignore[arg-type]
    except ValueError:
        return str(code)


class RelayRefused(DialError):
    """The relay (or the peer behind it) answered with a status other than OK.

    ``status`` is the spec's name: ``RESOURCE_LIMIT_EXCEEDED`` (a limit is
    reached), ``NO_RESERVATION`` (the target holds no reservation there),
    ``CONNECTION_FAILED`` (the relay could not reach the target),
    ``PERMISSION_DENIED``, ``RESERVATION_REFUSED``, ``MALFORMED_MESSAGE``…
    """

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


# --- addresses ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CircuitAddr:
    """A parsed ``[<relay transport>]/p2p/<relay>/p2p-circuit/p2p/<target>``."""

    relay_peer_id: str
    target_peer_id: str
    #: ``<transport>/p2p/<relay>`` if the address names how to reach the relay,
    #: else ``None`` (then we must already be connected to it).
    relay_addr: str | None

    def __str__(self) -> str:
        prefix = self.relay_addr or f"/p2p/{self.relay_peer_id}"
        return f"{prefix}/p2p-circuit/p2p/{self.target_peer_id}"


def parse_circuit_addr(addr: str) -> CircuitAddr:
    """Parse a relayed address; raises :class:`LocalProtocolError` if it is not one."""
    try:
        text = str(multiaddr.Multiaddr(addr))
        relay_part, sep, target_part = text.partition("/p2p-circuit")
        if not sep:
            raise ValueError("no /p2p-circuit")
        target_ma = multiaddr.Multiaddr(target_part)
        if [p.name for p in target_ma.protocols()] != ["p2p"]:
            raise ValueError("expected /p2p/<target> after /p2p-circuit")
        target = ID.from_base58(target_ma.value_for_protocol("p2p")).to_base58()
        relay_ma = multiaddr.Multiaddr(relay_part)
        names = [p.name for p in relay_ma.protocols()]
        if not names or names[-1] != "p2p" or names.count("p2p") != 1:
            raise ValueError("expected .../p2p/<relay> before /p2p-circuit")
        relay = ID.from_base58(relay_ma.value_for_protocol("p2p")).to_base58()
    except Exception as exc:  # multiaddr raises a zoo of types for bad input
        raise LocalProtocolError(f"not a /p2p-circuit address: {addr!r} ({exc})") from exc
    if relay == target:
        raise LocalProtocolError(f"relay and target are the same peer in {addr!r}")
    return CircuitAddr(relay, target, relay_part if len(names) > 1 else None)


def _circuit_ma(relay: str, target: str) -> multiaddr.Multiaddr:
    return multiaddr.Multiaddr(f"/p2p/{relay}/p2p-circuit/p2p/{target}")


# --- messages -----------------------------------------------------------------


async def _read_hop(stream: INetStream, io_timeout: float) -> HopMessage:
    msg = HopMessage()
    msg.ParseFromString(await read_frame(stream, MAX_MESSAGE, frame_timeout=io_timeout))
    return msg


async def _read_stop(stream: INetStream, io_timeout: float) -> StopMessage:
    msg = StopMessage()
    msg.ParseFromString(await read_frame(stream, MAX_MESSAGE, frame_timeout=io_timeout))
    return msg


async def _send(stream: INetStream, msg: HopMessage | StopMessage, io_timeout: float) -> None:
    await write_frame(stream, msg.SerializeToString(), frame_timeout=io_timeout)


def _is_relayed(stream: INetStream) -> bool:
    """Whether ``stream`` runs over a relayed connection (spec: no HOP over those)."""
    try:
        return stream.muxed_conn.get_connection_type() == ConnectionType.RELAYED
    except Exception:  # a muxer without the accessor carries a direct connection
        return False


def _remote_ip(stream: INetStream) -> str:
    try:
        address = stream.get_remote_address()
    except Exception:
        address = None
    return address[0] if address else "?"
