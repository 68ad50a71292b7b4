"""Server configuration for ``troc relay``: a TOML file, ``TROC_*`` variables, flags.

Theory of operation
-------------------
Every option has one dotted name (``sync_interval``, ``relay.max_circuits``),
which is its key in the TOML file (``relay.max_circuits`` is ``max_circuits``
in the ``[relay]`` table) and, upper-cased with ``.`` turned into ``_`` and
``TROC_`` in front, its environment variable (``TROC_RELAY_MAX_CIRCUITS``).
:data:`OPTIONS` lists them all, with their defaults and meaning;
docs/operations.md documents the same table and a test keeps the two equal.

Precedence, highest first: command-line flags, environment variables, the
file, the defaults. Each value is checked where it is read, and a bad one
raises :class:`ConfigError` with one line naming the source and the option:
``/etc/troc/relay.toml: relay.max_circuits: expected an integer from 0 to
100000, got -1``, or ``TROC_MDNS: expected true or false, got 'maybe'``.
Unknown keys in the file are errors (a typo must not silently fall back to a
default), and so are unknown ``TROC_RELAY_*`` and ``TROC_QUOTA_*`` variables.
Other ``TROC_*`` variables (``TROC_PASSPHRASE``, ``TROC_DEBUG`` …) belong to
the rest of troc and are left alone.

Values in the environment are text: booleans are ``true``/``false`` (also
``1``/``0``, ``yes``/``no``, ``on``/``off``), lists are separated by
whitespace (as ``TROC_LISTEN`` already is for ``troc run``). An empty
variable counts as unset (as click treats ``TROC_HOME``), except where empty
is a value: ``TROC_BOOTSTRAP`` and ``TROC_COMMUNITIES`` (the empty list) and
``TROC_METRICS_LISTEN`` (no endpoint). A relative ``home`` in the file is
relative to the file's folder.

The result is a :class:`ServerConfig`. :meth:`ServerConfig.node_config`
builds the :class:`~troc.node.node.NodeConfig` from the options it has
fields for; the others (``witness``, ``communities``, the relay limits and
the per-peer quotas) wait for hooks in the node, and
:meth:`ServerConfig.awaiting_hooks` names those an operator set although the
node does not honour them yet, so ``troc relay`` can say so at start-up.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from troc.errors import LocalProtocolError

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_METRICS_LISTEN",
    "OPTIONS",
    "RELAY_LIMITS_FIELDS",
    "ConfigError",
    "Option",
    "PeerQuotas",
    "RelayOptions",
    "ServerConfig",
    "load_config",
]

ENV_PREFIX = "TROC_"
DEFAULT_LISTEN = ("/ip4/0.0.0.0/tcp/4747",)
DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"
#: A config file larger than this is refused (it is a few hundred bytes).
MAX_FILE_BYTES = 1024 * 1024
#: Options for which an empty variable is a value (the empty list, or "off");
#: for every other option an empty variable counts as unset, as click does.
EMPTY_MEANS_SOMETHING = frozenset({"bootstrap", "communities", "metrics_listen"})
#: Tables of the file; a variable with one of these prefixes must be an option.
SECTIONS = ("relay", "quota")


class ConfigError(LocalProtocolError):
    """A bad configuration value, file or key. ``str()`` is one line that
    names the source (``file:key``, the variable, or the flag)."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


class _Bad(ValueError):
    """A value a parser refuses; the loader adds where it came from."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"


# -- parsers: (value, from_env) -> value; raise _Bad -------------------------------
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
    raise _Bad(f"expected true or false, got {_shown(value)}")


def _tristate(value: Any, from_env: bool) -> bool | None:
    """true, false or "auto" (None)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    try:
        return _boolean(value, from_env)
    except _Bad:
        raise _Bad(f"expected true, false or auto, got {_shown(value)}") from None


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
            raise _Bad(f"expected an integer from {lo} to {hi}, got {_shown(value)}")
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
            raise _Bad(f"expected a number from {lo:g} to {hi:g}, got {_shown(value)}")
        return number

    return parse


def _choice(*choices: str) -> Callable[[Any, bool], str]:
    def parse(value: Any, from_env: bool) -> str:
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        raise _Bad(f"expected one of {', '.join(choices)}, got {_shown(value)}")

    return parse


def _path(value: Any, from_env: bool) -> Path:
    if not isinstance(value, str | Path) or not str(value).strip():
        raise _Bad(f"expected a folder path, got {_shown(value)}")
    if "\x00" in str(value):
        raise _Bad("a path cannot contain a NUL character")
    try:
        return Path(str(value).strip()).expanduser()
    except RuntimeError:  # "~name" for a user this system does not know
        raise _Bad(f"cannot expand {_shown(value)}: no such user's home folder") from None


def _string_list(
    item: Callable[[str], str], what: str, *, non_empty: bool = False
) -> Callable[[Any, bool], tuple[str, ...]]:
    def parse(value: Any, from_env: bool) -> tuple[str, ...]:
        if from_env and isinstance(value, str):
            items: list[Any] = value.split()
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            raise _Bad(f"expected a list of {what}, got {_shown(value)}")
        out: list[str] = []
        for one in items:
            if not isinstance(one, str):
                raise _Bad(f"expected a list of {what}, got an item {_shown(one)}")
            checked = item(one)
            if checked not in out:  # a repeated address or id means it once
                out.append(checked)
        if non_empty and not out:
            raise _Bad(f"expected at least one of {what}, got none")
        return tuple(out)

    return parse


def _multiaddr_protocols(text: str) -> list[str]:
    import multiaddr

    try:
        return [p.name for p in multiaddr.Multiaddr(text).protocols()]
    except Exception:  # multiaddr raises a zoo of types for bad input
        raise _Bad(f"not a multiaddr: {_shown(text)}") from None


def _listen_addr(text: str) -> str:
    text = text.strip()
    # The same rule as troc.net.p2p._listen_addr (without importing libp2p).
    if _multiaddr_protocols(text) not in (["ip4", "tcp"], ["ip6", "tcp"]):
        raise _Bad(f"expected /ip4/<addr>/tcp/<port> or /ip6/<addr>/tcp/<port>, got {_shown(text)}")
    return text


def _peer_addr(text: str) -> str:
    text = text.strip()
    names = _multiaddr_protocols(text)
    if not names or names[-1] != "p2p" or "tcp" not in names:
        raise _Bad(f"expected a full peer address /ip4/…/tcp/…/p2p/<peer id>, got {_shown(text)}")
    return text


def _peer_id(text: str) -> str:
    from libp2p.peer.id import ID

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
        raise _Bad(f"expected a peer id (12D3Koo…), got {_shown(text)}")
    return text


def _community_id(text: str) -> str:
    from troc.crypto.ids import IdError, decode_id, encode_id

    try:
        return encode_id("c", decode_id("c", text))
    except IdError as exc:
        raise _Bad(str(exc)) from None


def _host_port(value: Any, from_env: bool) -> str:
    """``host:port`` or ``[v6]:port``; the empty string turns the endpoint off."""
    if not isinstance(value, str):
        raise _Bad(f"expected host:port or an empty string, got {_shown(value)}")
    text = value.strip()
    if not text:
        return ""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        sep = ""  # an IPv6 address must be bracketed: [::1]:9464
    if not sep or not host or not port.isdigit() or not port.isascii() or int(port) > 65535:
        raise _Bad(f"expected host:port (IPv6 as [addr]:port) or empty, got {_shown(value)}")
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
    from troc.net.relay import RelayLimits

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
        _tristate,
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

_BY_NAME = {o.name: o for o in OPTIONS}
_BY_ENV = {o.env: o for o in OPTIONS}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The effective server configuration; ``sources`` says where each value came
    from (``default``, ``<file>:<key>``, the variable or the flag)."""

    home: Path | None = None
    listen: tuple[str, ...] = DEFAULT_LISTEN
    bootstrap: tuple[str, ...] = ()
    mdns: bool = False
    sync_interval: float = 5.0
    ban_seconds: float = 600.0
    restore_guard_seconds: float = 10.0
    remember_peers: bool = True
    witness: bool | None = None
    dht: str = "server"
    banned: tuple[str, ...] = ()
    communities: tuple[str, ...] = ()
    metrics_listen: str = DEFAULT_METRICS_LISTEN
    log_format: str = "text"
    log_level: str = "info"
    relay: RelayOptions = RelayOptions()
    quotas: PeerQuotas = PeerQuotas()
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def value(self, name: str) -> Any:
        """An option's value by its dotted name."""
        section, _, key = name.rpartition(".")
        if section == "relay":
            return getattr(self.relay, key)
        if section == "quota":
            return getattr(self.quotas, key)
        return getattr(self, key)

    def source(self, name: str) -> str:
        return self.sources.get(name, "default")

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """Where to serve /metrics, or None if turned off."""
        return split_host_port(self.metrics_listen) if self.metrics_listen else None

    def with_home(self, home: Path) -> ServerConfig:
        return dataclasses.replace(self, home=home)

    def node_values(self) -> dict[str, Any]:
        """Every value meant for the node, by NodeConfig field name, including
        those NodeConfig has no field for yet."""
        from troc.crypto.ids import decode_id

        out: dict[str, Any] = {}
        for option in OPTIONS:
            if option.node_field is not None:
                out[option.node_field] = getattr(self, option.node_field)
        out["communities"] = tuple(decode_id("c", c) for c in self.communities)
        # auto: the node takes the witness role, which only answers for the
        # communities whose genesis names this member (now or joined later).
        out["witness"] = True if self.witness is None else self.witness
        return out

    def node_config_kwargs(self, fields: set[str] | None = None) -> dict[str, Any]:
        """The NodeConfig-compatible mapping: the values NodeConfig has fields for."""
        if fields is None:
            from troc.node.node import NodeConfig

            fields = {f.name for f in dataclasses.fields(NodeConfig)}
        if self.home is None:
            raise LocalProtocolError("the server configuration has no home folder yet")
        return {k: v for k, v in self.node_values().items() if k in fields}

    def node_config(self) -> Any:
        """A :class:`~troc.node.node.NodeConfig` with every field it has."""
        from troc.node.node import NodeConfig

        return NodeConfig(**self.node_config_kwargs())

    def awaiting_hooks(self, fields: set[str] | None = None) -> list[str]:
        """Options set away from their defaults that the node does not honour yet."""
        if fields is None:
            from troc.node.node import NodeConfig

            fields = {f.name for f in dataclasses.fields(NodeConfig)}
        return [
            o.name
            for o in OPTIONS
            if o.node_field is not None
            and o.node_field not in fields
            and self.source(o.name) != "default"
            and self.value(o.name) != o.default
        ]

    def relay_limits_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``troc.net.relay.RelayLimits`` (start the relay
        server only if ``relay.enabled``)."""
        return relay_limits_kwargs(self.relay, self.quotas)

    def describe(self) -> dict[str, Any]:
        """Every option's value and source, JSON-ready (``troc relay --check``)."""
        out = {}
        for o in OPTIONS:
            v = self.value(o.name)
            if isinstance(v, Path):
                v = str(v)
            elif isinstance(v, tuple):
                v = list(v)
            elif v is None and o.parse is _tristate:
                v = "auto"  # as written in the file and the docs, not null
            out[o.name] = {"value": v, "source": self.source(o.name), "env": o.env}
        return out


# -- loading ----------------------------------------------------------------------


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            str(path), f"cannot read the config file: {exc.strerror or exc}"
        ) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(str(path), f"the config file is larger than {MAX_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), f"not UTF-8 text (byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None


def _unknown(where: str, key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(f"{where}:{key}", f"unknown option{hint}")


def _flatten(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """``{"relay": {"max_circuits": 4}}`` -> ``{"relay.max_circuits": 4}``, refusing
    unknown keys and misplaced tables."""
    out: dict[str, Any] = {}
    names = list(_BY_NAME)
    for key, value in data.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}:{key}", f"expected a [{key}] table, got {_shown(value)}")
            for sub, subvalue in value.items():
                name = f"{key}.{sub}"
                if name not in _BY_NAME:
                    raise _unknown(str(path), name, names)
                out[name] = subvalue
        elif key in _BY_NAME:
            out[key] = value
        else:
            raise _unknown(str(path), key, names)
    return out


def load_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> ServerConfig:
    """The effective configuration: ``flags`` (by dotted option name, typed values,
    ``None`` meaning not given) over ``environ`` (``TROC_*``) over the file at
    ``path`` over the defaults.

    Raises:
        ConfigError: one line naming the source and the option.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {o.name: o.default for o in OPTIONS}
    sources: dict[str, str] = {}

    if path is not None:
        for name, raw in _flatten(path, _read_file(path)).items():
            where = f"{path}:{name}"
            values[name] = _parse(_BY_NAME[name], raw, from_env=False, where=where)
            if name == "home":
                values[name] = path.parent / values[name]  # relative to the file
            sources[name] = where

    names = list(_BY_ENV)
    for var, raw in environ.items():
        option = _BY_ENV.get(var)
        if option is None:
            if any(var.startswith(f"{ENV_PREFIX}{s.upper()}_") for s in SECTIONS):
                raise _unknown("environment", var, names)
            continue
        if not raw.strip() and option.name not in EMPTY_MEANS_SOMETHING:
            continue  # as click does for TROC_HOME and `troc run`'s variables
        values[option.name] = _parse(option, raw, from_env=True, where=var)
        sources[option.name] = var

    for name, raw in (flags or {}).items():
        if raw is None:
            continue
        option = _BY_NAME[name]
        where = "--" + option.name.replace("_", "-")
        values[name] = _parse(option, raw, from_env=False, where=where)
        sources[name] = where

    _check_together(values, sources)
    return _build(values, sources)


def _parse(option: Option, raw: Any, *, from_env: bool, where: str) -> Any:
    try:
        return option.parse(raw, from_env)
    except _Bad as exc:
        raise ConfigError(where, str(exc)) from None


def _build(values: dict[str, Any], sources: dict[str, str]) -> ServerConfig:
    relay = RelayOptions(**{k[6:]: v for k, v in values.items() if k.startswith("relay.")})
    quotas = PeerQuotas(**{k[6:]: v for k, v in values.items() if k.startswith("quota.")})
    top = {k: v for k, v in values.items() if "." not in k}
    return ServerConfig(**top, relay=relay, quotas=quotas, sources=dict(sources))


#: (smaller, larger): the first may not exceed the second.
_AT_MOST = (
    ("relay.max_reservations_per_peer", "relay.max_reservations"),
    ("relay.max_reservations_per_ip", "relay.max_reservations"),
    ("relay.max_circuits_per_peer", "relay.max_circuits"),
)


def _check_together(values: dict[str, Any], sources: dict[str, str]) -> None:
    """A per-peer limit may not exceed its total. One left at its default
    shrinks to fit a smaller total; one set by hand is an error naming it."""
    for small, large in _AT_MOST:
        if values[small] <= values[large]:
            continue
        if small not in sources:
            values[small] = values[large]
            continue
        raise ConfigError(
            sources[small],
            f"{small} = {values[small]} is more than {large} = {values[large]} "
            f"({large} from {sources.get(large, 'default')})",
        )
