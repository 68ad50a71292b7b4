"""The options of ``troc relay``: each one's name, parser, default and meaning.

:data:`OPTIONS` lists them all (docs/operations.md documents the same table
and a test keeps the two equal). Every option has one dotted name
(``sync_interval``, ``relay.max_circuits``), its key in the TOML file and,
upper-cased with ``TROC_`` in front, its environment variable
(:attr:`Option.env`). A parser takes ``(value, from_env)``: a file or flag
value is already typed (TOML has booleans, integers, floats, strings and
arrays), an environment value is always text; it returns the value or raises
an error the loader (:func:`troc.node.config.load_config`) names the source in.

The relay service's limits and the per-peer quotas are option groups
(:class:`RelayOptions`, :class:`PeerQuotas`) that the node takes whole.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from troc.crypto.ids import IdError, decode_id, encode_id

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_METRICS_LISTEN",
    "DEFAULT_WEB",
    "ENV_PREFIX",
    "OPTIONS",
    "RELAY_LIMITS_FIELDS",
    "BadValue",
    "Option",
    "PeerQuotas",
    "RelayOptions",
    "relay_limits",
    "relay_limits_kwargs",
    "shown",
    "split_host_port",
    "tristate",
]

ENV_PREFIX = "TROC_"
DEFAULT_LISTEN = ("/ip4/0.0.0.0/tcp/4747",)
DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"
DEFAULT_WEB = "127.0.0.1:8787"


class BadValue(ValueError):
    """A value a parser refuses; the loader adds where it came from."""


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


# -- parsers: (value, from_env) -> value; raise BadValue ------------------------------
# A file or flag value is already typed (TOML has booleans, integers, floats,
# strings and arrays); an environment value is always text.

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _boolean(value: Any, from_env: bool) -> bool:
    if from_env and isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    elif isinstance(value, bool):
        return value
    raise BadValue(f"expected true or false, got {shown(value)}")


def tristate(value: Any, from_env: bool) -> bool | None:
    """true, false or "auto" (None)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    try:
        return _boolean(value, from_env)
    except BadValue:
        raise BadValue(f"expected true, false or auto, got {shown(value)}") from None


def _integer(lo: int, hi: int) -> Callable[[Any, bool], int]:
    def parse(value: Any, from_env: bool) -> int:
        number: int | None = None
        if from_env and isinstance(value, str):
            text = value.strip()
            if re.fullmatch(r"[+-]?[0-9]{1,30}", text):
                number = int(text)
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        if number is None or not lo <= number <= hi:
            raise BadValue(f"expected an integer from {lo} to {hi}, got {shown(value)}")
        return number

    return parse


def _number(lo: float, hi: float) -> Callable[[Any, bool], float]:
    def parse(value: Any, from_env: bool) -> float:
        number: float | None = None
        if from_env and isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        elif isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        if number is None or not math.isfinite(number) or not lo <= number <= hi:
            raise BadValue(f"expected a number from {lo:g} to {hi:g}, got {shown(value)}")
        return number

    return parse


def _choice(*choices: str) -> Callable[[Any, bool], str]:
    def parse(value: Any, from_env: bool) -> str:
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        raise BadValue(f"expected one of {', '.join(choices)}, got {shown(value)}")

    return parse


def _path(value: Any, from_env: bool) -> Path:
    if not isinstance(value, str | Path) or not str(value).strip():
        raise BadValue(f"expected a folder path, got {shown(value)}")
    if "\x00" in str(value):
        raise BadValue("a path cannot contain a NUL character")
    try:
        return Path(str(value).strip()).expanduser()
    except RuntimeError:  # "~name" for a user this system does not know
        raise BadValue(f"cannot expand {shown(value)}: no such user's home folder") from None


def _string_list(
    item: Callable[[str], str], what: str, *, non_empty: bool = False
) -> Callable[[Any, bool], tuple[str, ...]]:
    def parse(value: Any, from_env: bool) -> tuple[str, ...]:
        if from_env and isinstance(value, str):
            items: list[Any] = value.split()
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            raise BadValue(f"expected a list of {what}, got {shown(value)}")
        out: list[str] = []
        for one in items:
            if not isinstance(one, str):
                raise BadValue(f"expected a list of {what}, got an item {shown(one)}")
            checked = item(one)
            if checked not in out:  # a repeated address or id means it once
                out.append(checked)
        if non_empty and not out:
            raise BadValue(f"expected at least one of {what}, got none")
        return tuple(out)

    return parse


def _multiaddr_protocols(text: str) -> list[str]:
    import multiaddr  # here: `troc relay --check` of a file with no address needs none of libp2p

    try:
        return [p.name for p in multiaddr.Multiaddr(text).protocols()]
    except Exception:  # multiaddr raises a zoo of types for bad input
        raise BadValue(f"not a multiaddr: {shown(text)}") from None


def _listen_addr(text: str) -> str:
    text = text.strip()
    # The same rule as troc.net.p2p._listen_addr (without importing libp2p).
    if _multiaddr_protocols(text) not in (["ip4", "tcp"], ["ip6", "tcp"]):
        raise BadValue(
            f"expected /ip4/<addr>/tcp/<port> or /ip6/<addr>/tcp/<port>, got {shown(text)}"
        )
    return text


def _peer_addr(text: str) -> str:
    text = text.strip()
    names = _multiaddr_protocols(text)
    if not names or names[-1] != "p2p" or "tcp" not in names:
        raise BadValue(
            f"expected a full peer address /ip4/…/tcp/…/p2p/<peer id>, got {shown(text)}"
        )
    return text


def _peer_id(text: str) -> str:
    from libp2p.peer.id import ID  # here, as multiaddr above: libp2p only when a ban list is read

    text = text.strip()
    try:
        raw = ID.from_base58(text).to_bytes()
    except Exception:  # base58 errors come in many types
        raw = b""
    # A multihash: identity of a public key (0x00, length), or sha2-256 (0x12 0x20).
    if not (
        (len(raw) > 2 and raw[0] == 0x00 and raw[1] == len(raw) - 2)
        or (len(raw) == 34 and raw[:2] == b"\x12\x20")
    ):
        raise BadValue(f"expected a peer id (12D3Koo…), got {shown(text)}")
    return text


def _community_id(text: str) -> str:
    try:
        return encode_id("c", decode_id("c", text))
    except IdError as exc:
        raise BadValue(str(exc)) from None


def _host_port(value: Any, from_env: bool) -> str:
    """``host:port`` or ``[v6]:port``; the empty string turns the endpoint off."""
    if not isinstance(value, str):
        raise BadValue(f"expected host:port or an empty string, got {shown(value)}")
    text = value.strip()
    if not text:
        return ""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        sep = ""  # an IPv6 address must be bracketed: [::1]:9464
    if not sep or not host or not port.isdigit() or not port.isascii() or int(port) > 65535:
        raise BadValue(f"expected host:port (IPv6 as [addr]:port) or empty, got {shown(value)}")
    return text


def split_host_port(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` -> ``("127.0.0.1", 9464)``; ``"[::1]:0"`` -> ``("::1", 0)``."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


# -- the options -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelayOptions:
    """Circuit relay v2 service and its limits (awaiting the hook that starts
    :func:`troc.net.relay.open_relay_server`; :meth:`ServerConfig.relay_limits_kwargs`
    maps these to that module's ``RelayLimits``)."""

    enabled: bool = True
    max_reservations: int = 1024
    max_reservations_per_peer: int = 1
    max_reservations_per_ip: int = 16
    max_circuits: int = 256
    max_circuits_per_peer: int = 16
    circuit_seconds: float = 600.0
    circuit_bytes: int = 16 * 1024 * 1024
    reservation_seconds: float = 3600.0


#: RelayOptions field -> troc.net.relay.RelayLimits field (None: no such limit there).
RELAY_LIMITS_FIELDS: dict[str, str | None] = {
    "max_reservations": "max_reservations",
    "max_reservations_per_peer": None,  # that relay keeps one per peer: reserving refreshes
    "max_reservations_per_ip": "max_reservations_per_ip",
    "max_circuits": "max_circuits",
    "max_circuits_per_peer": "max_circuits_per_peer",
    "circuit_seconds": "circuit_seconds",
    "circuit_bytes": "circuit_bytes",
    "reservation_seconds": "reservation_ttl",
}


@dataclass(frozen=True, slots=True)
class PeerQuotas:
    """What one peer may use of this server (awaiting enforcement in the node)."""

    bytes_per_s: int = 1_000_000
    entries_per_s: int = 2000
    streams: int = 16
    reservations: int = 10


def relay_limits_kwargs(options: RelayOptions, quotas: PeerQuotas | None = None) -> dict[str, Any]:
    """Keyword arguments for ``troc.net.relay.RelayLimits``: ``relay.*`` by
    RELAY_LIMITS_FIELDS, and ``quota.reservations`` (requests per minute)."""
    kwargs: dict[str, Any] = {
        target: getattr(options, name)
        for name, target in RELAY_LIMITS_FIELDS.items()
        if target is not None
    }
    if quotas is not None:
        kwargs["reservations_per_minute"] = quotas.reservations
    return kwargs


def relay_limits(options: RelayOptions, quotas: PeerQuotas | None = None) -> Any:
    """The :class:`troc.net.relay.RelayLimits` of ``options`` and ``quotas``."""
    from troc.net.relay import RelayLimits  # here: libp2p, only for a node that relays

    return RelayLimits(**relay_limits_kwargs(options, quotas))


@dataclass(frozen=True, slots=True)
class Option:
    """One option: its dotted name, parser, default, and where it goes."""

    name: str
    parse: Callable[[Any, bool], Any]
    default: Any
    help: str
    #: The NodeConfig field this feeds, now or once the node has the hook.
    node_field: str | None = None
    #: Whether NodeConfig must grow ``node_field`` before the node honours it.
    awaiting_hook: bool = False

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper().replace(".", "_")

    @property
    def attr(self) -> str:
        """The ServerConfig attribute (``relay.max_circuits`` -> ``relay_max_circuits``)."""
        return self.name.replace(".", "_")


_R, _Q = RelayOptions(), PeerQuotas()

OPTIONS: tuple[Option, ...] = (
    Option(
        "home",
        _path,
        None,
        "The node's data folder (key, store, control socket). "
        "Default: the per-user data folder. In the file, a relative path is relative to "
        "the file's folder.",
        node_field="home",
    ),
    Option(
        "listen",
        _string_list(_listen_addr, "/ip4/…/tcp/… multiaddrs", non_empty=True),
        DEFAULT_LISTEN,
        "Multiaddrs to listen on for peers (/ip4/<addr>/tcp/<port> or /ip6/…).",
        node_field="listen",
    ),
    Option(
        "bootstrap",
        _string_list(_peer_addr, "peer multiaddrs"),
        (),
        "Peers to connect to at start, full multiaddrs ending in /p2p/<peer id>.",
        node_field="bootstrap",
    ),
    Option(
        "mdns",
        _boolean,
        False,
        "Find and be found by peers on the local network (off for servers).",
        node_field="mdns",
    ),
    Option(
        "sync_interval",
        _number(0.1, 3600),
        5.0,
        "Seconds between anti-entropy rounds with a random peer.",
        node_field="sync_interval",
    ),
    Option(
        "ban_seconds",
        _number(0, 30 * 86400),
        600.0,
        "How long a peer that sent malformed data is cut off, in seconds.",
        node_field="ban_seconds",
    ),
    Option(
        "restore_guard_seconds",
        _number(0, 3600),
        10.0,
        "With bootstrap peers, how long to wait for a first sync before signing anything.",
        node_field="restore_guard_seconds",
    ),
    Option(
        "remember_peers",
        _boolean,
        True,
        "Record peers met in peers.json and dial them again on the next start.",
        node_field="remember_peers",
    ),
    Option(
        "witness",
        tristate,
        None,
        "Act as a witness (vote on entries): true, false, or auto = on when this "
        "node's member is a witness of a community it follows.",
        node_field="witness",
        awaiting_hook=True,
    ),
    Option(
        "banned",
        _string_list(_peer_id, "peer ids"),
        (),
        "Peers (ids) this server never talks to: disconnected whenever they"
        " connect, their streams and gossip refused, for as long as they are listed.",
        node_field="banned",
    ),
    Option(
        "dht",
        _choice("off", "client", "server"),
        "server",
        "Kademlia DHT (docs/dht.md): server = answer queries and announce this node as a"
        " provider of each community it serves; client = only look servers up; off.",
        node_field="dht",
    ),
    Option(
        "communities",
        _string_list(_community_id, "community ids (c…)"),
        (),
        "Communities served (ids, c…); empty: every community the node follows.",
        node_field="communities",
        awaiting_hook=True,
    ),
    Option(
        "metrics_listen",
        _host_port,
        DEFAULT_METRICS_LISTEN,
        "host:port of the HTTP endpoint for /metrics and /health ([addr]:port for "
        "IPv6, port 0: any free port); empty: no endpoint.",
    ),
    Option(
        "web",
        _host_port,
        DEFAULT_WEB,
        "host:port of the member web app (docs/http-api.md; a busy port: the next free"
        " one); beyond loopback only when asked (login links must then be kept secret);"
        " empty: no web app.",
    ),
    Option(
        "log_format",
        _choice("text", "json"),
        "text",
        "Logs on stderr: text, or json (one JSON object per line).",
    ),
    Option(
        "log_level", _choice("debug", "info", "warning", "error"), "info", "Lowest level logged."
    ),
    Option(
        "relay.enabled",
        _boolean,
        _R.enabled,
        "Serve as a circuit relay (members behind NAT reach each other through it).",
        node_field="relay",
        awaiting_hook=True,
    ),
    Option(
        "relay.max_reservations",
        _integer(1, 1_000_000),
        _R.max_reservations,
        "Relay reservations held at once, all peers together.",
        node_field="relay",
        awaiting_hook=True,
    ),
    Option(
        "relay.max_reservations_per_peer",
        _integer(1, 1000),
        _R.max_reservations_per_peer,
        "Reservations one peer id may hold at once (troc's relay keeps one per "
        "peer, reserving again refreshes it: values above 1 change nothing there).",
        node_field="relay",
        awaiting_hook=True,
    ),
    Option(
        "relay.max_reservations_per_ip",
        _integer(1, 1_000_000),
        _R.max_reservations_per_ip,
        "Reservations from one source IP address (one machine can mint peer ids at will).",
        node_field="relay",
        awaiting_hook=True,
    ),
    Option(
        "relay.max_circuits",
        _integer(1, 1_000_000),
        _R.max_circuits,
        "Relayed connections open at once, all peers together.",
        node_field="relay",
        awaiting_hook=True,
    ),
    Option(
        "relay.max_circuits_per_peer",
        _integer(1, 1_000_000),
        _R.max_circuits_per_peer,
        "Relayed connections one peer takes part in at once (as dialer or target).",
        node_field="relay",
        awaiting_hook=True,
    ),
    Option(
        "relay.circuit_seconds",
        _number(1, 86400),
        _R.circuit_seconds,
        "A relayed connection is cut after this many seconds, busy or idle.",
        node_field="relay",
        awaiting_hook=True,
    ),
    Option(
        "relay.circuit_bytes",
        _integer(1024, 2**40),
        _R.circuit_bytes,
        "A relayed connection is cut after carrying this many bytes in one direction.",
        node_field="relay",
        awaiting_hook=True,
    ),
    Option(
        "relay.reservation_seconds",
        _number(60, 86400),
        _R.reservation_seconds,
        "A reservation lasts this long unless refreshed (it ends when its holder disconnects).",
        node_field="relay",
        awaiting_hook=True,
    ),
    Option(
        "quota.bytes_per_s",
        _integer(1024, 2**40),
        _Q.bytes_per_s,
        "Bytes per second one peer may send to this node (sync, gossip, relayed), averaged.",
        node_field="quotas",
        awaiting_hook=True,
    ),
    Option(
        "quota.entries_per_s",
        _integer(1, 10_000_000),
        _Q.entries_per_s,
        "Entries per second this node takes from one peer, averaged.",
        node_field="quotas",
        awaiting_hook=True,
    ),
    Option(
        "quota.streams",
        _integer(2, 1024),
        _Q.streams,
        "Streams one peer may have open to this node at once.",
        node_field="quotas",
        awaiting_hook=True,
    ),
    Option(
        "quota.reservations",
        _integer(1, 1000),
        _Q.reservations,
        "Relay reservation requests (new or renewed) one peer may make per minute.",
        node_field="quotas",
        awaiting_hook=True,
    ),
)
