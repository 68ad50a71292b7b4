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
builds the :class:`NodeConfig` (beside it here) from the options it has
fields for; the others (``witness``, ``communities``, the relay limits and
the per-peer quotas) wait for hooks in the node, and
:meth:`ServerConfig.awaiting_hooks` names those an operator set although the
node does not honour them yet, so ``troc relay`` can say so at start-up.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from troc.crypto.ids import decode_id
from troc.errors import LocalProtocolError
from troc.node.options import (
    DEFAULT_LISTEN,
    DEFAULT_METRICS_LISTEN,
    DEFAULT_WEB,
    ENV_PREFIX,
    OPTIONS,
    RELAY_LIMITS_FIELDS,
    BadValue,
    Option,
    PeerQuotas,
    RelayOptions,
    relay_limits,
    relay_limits_kwargs,
    shown,
    split_host_port,
    tristate,
)

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_METRICS_LISTEN",
    "MAX_FILE_BYTES",
    "OPTIONS",
    "RELAY_LIMITS_FIELDS",
    "ConfigError",
    "NodeConfig",
    "Option",
    "PeerQuotas",
    "RelayOptions",
    "ServerConfig",
    "load_config",
    "relay_limits",
    "relay_limits_kwargs",
    "split_host_port",
]

#: A config file larger than this is refused (it is a few hundred bytes).
MAX_FILE_BYTES = 1024 * 1024
#: Options for which an empty variable is a value (the empty list, or "off");
#: for every other option an empty variable counts as unset, as click does.
EMPTY_MEANS_SOMETHING = frozenset({"bootstrap", "communities", "metrics_listen", "web"})
#: Tables of the file; a variable with one of these prefixes must be an option.
SECTIONS = ("relay", "quota")


class ConfigError(LocalProtocolError):
    """A bad configuration value, file or key. ``str()`` is one line that
    names the source (``file:key``, the variable, or the flag)."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """How to run a node (:func:`troc.node.node.open_node`). Every field has a
    default but ``home``; ``troc run`` fills it from its flags, ``troc relay``
    from a :class:`ServerConfig` (:meth:`ServerConfig.node_config`)."""

    home: Path
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()
    mdns: bool = False
    sync_interval: float = 2.0
    control_socket: bool = True
    ban_seconds: float = 600.0
    restore_guard_seconds: float = 10.0
    remember_peers: bool = True
    #: Answer ``/troc/witness/1`` for the communities that name this member a witness.
    witness: bool = False
    #: Serve only these communities (ids); empty: every community followed.
    communities: tuple[bytes, ...] = ()
    #: Run a circuit relay v2 with these limits; None or ``enabled=False``: no relay service.
    relay: RelayOptions | None = None
    #: Per-peer budgets; None: the node's defaults (generous: quotas are for servers).
    quotas: PeerQuotas | None = None
    #: Relays to hold reservations on, for a node behind NAT (full multiaddrs
    #: with /p2p/): peers then reach it at its /p2p-circuit addresses.
    relays: tuple[str, ...] = ()
    #: Kademlia DHT (troc.net.dht): "server" answers and announces this node
    #: as a provider of each community it serves; "client" looks servers up
    #: when no peer is connected; "off". Bootstraps from ``bootstrap``.
    dht: str = "off"
    #: Peer ids banned for as long as the node runs (the operator's ban list).
    banned: tuple[str, ...] = ()


_NODE_FIELDS = {f.name for f in dataclasses.fields(NodeConfig)}
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
    web: str = DEFAULT_WEB
    log_format: str = "text"
    log_level: str = "info"
    relay: RelayOptions = field(default_factory=RelayOptions)
    quotas: PeerQuotas = field(default_factory=PeerQuotas)
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
            fields = _NODE_FIELDS
        if self.home is None:
            raise LocalProtocolError("the server configuration has no home folder yet")
        return {k: v for k, v in self.node_values().items() if k in fields}

    def node_config(self) -> NodeConfig:
        """A :class:`NodeConfig` with every field it has."""
        return NodeConfig(**self.node_config_kwargs())

    def awaiting_hooks(self, fields: set[str] | None = None) -> list[str]:
        """Options set away from their defaults that the node does not honour yet."""
        if fields is None:
            fields = _NODE_FIELDS
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
            elif v is None and o.parse is tristate:
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
                raise ConfigError(f"{path}:{key}", f"expected a [{key}] table, got {shown(value)}")
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
    except BadValue as exc:
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
