"""`troc relay`'s configuration: file, environment, flags, and every refusal."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from troc.crypto.ids import encode_id
from troc.errors import LocalProtocolError
from troc.node.config import (
    MAX_FILE_BYTES,
    OPTIONS,
    ConfigError,
    ServerConfig,
    load_config,
    split_host_port,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
PEER = "/ip4/192.0.2.7/tcp/4747/p2p/12D3KooWMancCdECTZUSuZytpfGPEZtL81fYYyYYkUUTXkhN3e8Q"
CID = encode_id("c", bytes(range(32)))
BY_NAME = {o.name: o for o in OPTIONS}


def toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A TOML basic string: JSON's escapes, and DEL escaped too.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    raise TypeError(value)


def write(tmp: Path, values: dict[str, Any], name: str = "relay.toml") -> Path:
    """A config file with ``values`` by dotted name (``relay.x`` is a dotted TOML key)."""
    path = tmp / name
    path.write_text("".join(f"{k} = {toml(v)}\n" for k, v in values.items()), encoding="utf-8")
    return path


# One valid value per option: (in the file, in the environment, the result).
VALID: dict[str, tuple[Any, str, Any]] = {
    "home": ("/srv/troc", "/srv/troc", Path("/srv/troc")),
    "listen": (
        ["/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001"],
        "/ip4/0.0.0.0/tcp/4001  /ip6/::/tcp/4001",
        ("/ip4/0.0.0.0/tcp/4001", "/ip6/::/tcp/4001"),
    ),
    "bootstrap": ([PEER], PEER, (PEER,)),
    "mdns": (True, "yes", True),
    "sync_interval": (1.5, "1.5", 1.5),
    "ban_seconds": (60, "60", 60.0),
    "restore_guard_seconds": (0, "0", 0.0),
    "remember_peers": (False, "off", False),
    "witness": (True, "TRUE", True),
    "dht": ("client", "CLIENT", "client"),
    "banned": (
        ["12D3KooWD3kXTXrKrKctpWqGhsNZuLyteVSp3mGakyRLneyuNvWu"],
        "12D3KooWD3kXTXrKrKctpWqGhsNZuLyteVSp3mGakyRLneyuNvWu",
        ("12D3KooWD3kXTXrKrKctpWqGhsNZuLyteVSp3mGakyRLneyuNvWu",),
    ),
    "communities": ([CID], CID.upper(), (CID,)),
    "metrics_listen": ("[::1]:9100", "[::1]:9100", "[::1]:9100"),
    "web": ("[::1]:8788", "[::1]:8788", "[::1]:8788"),
    "log_format": ("json", "JSON", "json"),
    "log_level": ("debug", "debug", "debug"),
    "relay.enabled": (False, "0", False),
    "relay.max_reservations": (100, "100", 100),
    "relay.max_reservations_per_peer": (2, "2", 2),
    "relay.max_reservations_per_ip": (8, "8", 8),
    "relay.max_circuits": (50, "50", 50),
    "relay.max_circuits_per_peer": (5, "5", 5),
    "relay.circuit_seconds": (30, "30", 30.0),
    "relay.circuit_bytes": (65536, "65536", 65536),
    "relay.reservation_seconds": (600, "600", 600.0),
    "quota.bytes_per_s": (4096, "4096", 4096),
    "quota.entries_per_s": (10, "10", 10),
    "quota.streams": (4, "4", 4),
    "quota.reservations": (3, "3", 3),
}


def test_every_option_has_a_test_value_and_a_distinct_variable() -> None:
    assert set(VALID) == set(BY_NAME)
    assert len({o.env for o in OPTIONS}) == len(OPTIONS)
    assert BY_NAME["relay.max_circuits"].env == "TROC_RELAY_MAX_CIRCUITS"
    assert BY_NAME["home"].env == "TROC_HOME"  # the same variable as `troc --home`


def test_defaults_are_a_server() -> None:
    config = load_config(None, {})
    assert config == ServerConfig()
    assert config.listen == ("/ip4/0.0.0.0/tcp/4747",)
    assert config.mdns is False
    assert config.witness is None  # auto
    assert config.metrics_address == ("127.0.0.1", 9464)
    assert all(config.source(o.name) == "default" for o in OPTIONS)
    assert all(config.value(o.name) == o.default for o in OPTIONS)


def test_every_option_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, {name: file for name, (file, _e, _r) in VALID.items()})
    config = load_config(path, {})
    for name, (_f, _e, result) in VALID.items():
        assert config.value(name) == result, name
        assert config.source(name) == f"{path}:{name}"


def test_tables_work_as_well_as_dotted_keys(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("mdns = true\n[relay]\nmax_circuits = 7\n[quota]\nstreams = 3\n")
    config = load_config(path, {})
    assert (config.mdns, config.relay.max_circuits, config.quotas.streams) == (True, 7, 3)


@pytest.mark.parametrize("name", list(VALID))
def test_every_option_from_its_variable(name: str) -> None:
    option = BY_NAME[name]
    config = load_config(None, {option.env: VALID[name][1]})
    assert config.value(name) == VALID[name][2]
    assert config.source(name) == option.env


def test_flags_override_variables_which_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, {"sync_interval": 1, "ban_seconds": 2, "log_level": "error"})
    env = {"TROC_SYNC_INTERVAL": "3", "TROC_BAN_SECONDS": "4"}
    config = load_config(path, env, {"sync_interval": 5.0, "log_level": None})
    assert config.sync_interval == 5.0
    assert config.source("sync_interval") == "--sync-interval"
    assert config.ban_seconds == 4.0
    assert config.source("ban_seconds") == "TROC_BAN_SECONDS"
    assert config.log_level == "error"
    assert config.source("log_level") == f"{path}:log_level"


def test_a_relative_home_in_the_file_is_relative_to_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, {"home": "data"})
    assert load_config(path, {}).home == tmp_path / "data"
    assert load_config(None, {"TROC_HOME": "~/troc"}).home == Path("~/troc").expanduser()


def test_empty_variables(tmp_path: Path) -> None:
    path = write(tmp_path, {"bootstrap": [PEER], "sync_interval": 1, "metrics_listen": "[::]:1"})
    env = {"TROC_BOOTSTRAP": "", "TROC_SYNC_INTERVAL": " ", "TROC_METRICS_LISTEN": ""}
    config = load_config(path, env)
    assert config.bootstrap == ()  # empty list
    assert config.sync_interval == 1.0  # an empty variable is unset (as click does)
    assert config.metrics_address is None  # endpoint off


def test_other_troc_variables_are_left_alone() -> None:
    env = {"TROC_PASSPHRASE": "x", "TROC_DEBUG": "1", "TROC_CONFIG": "/x", "HOME": "/root"}
    assert load_config(None, env) == ServerConfig()


def test_repeats_collapse_and_host_ports_split() -> None:
    config = load_config(None, {"TROC_BOOTSTRAP": f"{PEER} {PEER}"})
    assert config.bootstrap == (PEER,)
    assert split_host_port("127.0.0.1:0") == ("127.0.0.1", 0)
    assert split_host_port("[::1]:9464") == ("::1", 9464)


# -- refusals: one line, naming the source and the option -------------------------

_ = object()  # "not tried in this source"

# (option, a bad value in the file, a bad variable, what the message says)
BAD: list[tuple[str, Any, Any, str]] = [
    ("home", 5, _, "expected a folder path"),
    ("home", _, "a\x00b", "a path cannot contain a NUL character"),
    ("home", "", _, "expected a folder path"),
    ("listen", "/ip4/1.2.3.4/tcp/1", _, "expected a list of"),
    ("listen", _, "nonsense", "not a multiaddr: 'nonsense'"),
    ("listen", ["/ip4/1.2.3.4/udp/1/quic-v1"], "/dns4/x/tcp/1", "expected /ip4/<addr>/tcp/<port>"),
    ("listen", [], _, "at least one"),
    ("listen", [7], _, "got an item 7"),
    ("bootstrap", ["/ip4/1.2.3.4/tcp/1"], "/ip4/1.2.3.4/tcp/1", "/p2p/<peer id>"),
    ("bootstrap", ["/p2p/nope"], "/ip4/x", "not a multiaddr"),
    ("mdns", "yes", "maybe", "expected true or false"),
    ("mdns", 1, _, "expected true or false"),
    ("sync_interval", 0.01, "0", "from 0.1 to 3600"),
    ("sync_interval", "5", "nan", "expected a number"),
    ("sync_interval", True, "inf", "expected a number"),
    ("ban_seconds", -1, "-1", "from 0 to"),
    ("restore_guard_seconds", 3601, "1e9", "from 0 to 3600"),
    ("remember_peers", "true", "2", "expected true or false"),
    ("witness", "sometimes", "sometimes", "expected true, false or auto"),
    ("dht", "both", "always", "one of off, client, server"),
    ("banned", ["not-a-peer"], "zz", "expected a peer id"),
    ("communities", ["c123"], "m" + CID[1:], "community id"),
    ("communities", CID, _, "list of community ids"),
    ("metrics_listen", 9464, "localhost", "host:port"),
    ("metrics_listen", "::1:9464", "host:99999", "host:port"),
    ("web", 8787, "localhost", "host:port"),
    ("metrics_listen", ":9464", "host:", "host:port"),
    ("log_format", "xml", "yaml", "one of text, json"),
    ("log_level", "trace", "verbose", "one of debug, info, warning, error"),
    ("relay.enabled", "no", "disabled", "expected true or false"),
    ("relay.max_reservations", 0, "ten", "integer from 1 to"),
    ("relay.max_reservations_per_peer", 1.5, "1.5", "integer from 1 to 1000"),
    ("relay.max_reservations_per_ip", -3, "0x10", "integer from 1 to"),
    ("relay.max_circuits", True, "", "integer from 1 to"),
    ("relay.max_circuits_per_peer", 0, "٣", "integer from 1 to"),  # a non-ASCII digit
    ("relay.circuit_seconds", 0, "forever", "number from 1 to 86400"),
    ("relay.circuit_bytes", 1023, "1k", "integer from 1024 to"),
    ("relay.reservation_seconds", 59, "59", "number from 60 to 86400"),
    ("quota.bytes_per_s", 100, "lots", "integer from 1024 to"),
    ("quota.entries_per_s", 0, "-5", "integer from 1 to"),
    ("quota.streams", 1, "1", "integer from 2 to 1024"),
    ("quota.reservations", 0, "1001", "integer from 1 to 1000"),
]


def test_every_option_has_a_bad_value_test() -> None:
    assert {name for name, *_ in BAD} == set(BY_NAME)


def _one_line(exc: ConfigError) -> str:
    text = str(exc)
    assert "\n" not in text, text
    assert len(text) < 300, text
    return text


@pytest.mark.parametrize(
    ("name", "bad", "fragment"), [(n, f, m) for n, f, _e, m in BAD if f is not _]
)
def test_bad_file_values_name_file_and_key(
    tmp_path: Path, name: str, bad: Any, fragment: str
) -> None:
    path = write(tmp_path, {name: bad})
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    text = _one_line(info.value)
    assert text.startswith(f"{path}:{name}: "), text
    assert fragment in text


@pytest.mark.parametrize(
    ("name", "bad", "fragment"), [(n, e, m) for n, _f, e, m in BAD if e is not _ and e != ""]
)
def test_bad_variables_name_the_variable(name: str, bad: str, fragment: str) -> None:
    var = BY_NAME[name].env
    with pytest.raises(ConfigError) as info:
        load_config(None, {var: bad})
    text = _one_line(info.value)
    assert text.startswith(f"{var}: "), text
    assert fragment in text


def test_bad_flags_name_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"^--listen: not a multiaddr: 'bad'$"):
        load_config(None, {}, {"listen": ("bad",)})
    with pytest.raises(ConfigError, match=r"^--metrics-listen: expected host:port"):
        load_config(None, {}, {"metrics_listen": "nope"})


def test_config_errors_are_usage_errors() -> None:
    # The CLI maps LocalProtocolError to exit code 2 (usage).
    assert issubclass(ConfigError, LocalProtocolError)


def test_unknown_keys_are_refused_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, {"sync_intervall": 3})
    with pytest.raises(ConfigError, match=r":sync_intervall: unknown option \(did you mean sync_"):
        load_config(path, {})
    path = write(tmp_path, {"relay.max_circuit": 3})
    with pytest.raises(ConfigError, match=r":relay.max_circuit: unknown option \(did you mean"):
        load_config(path, {})
    path = write(tmp_path, {"colour": "blue"})
    with pytest.raises(ConfigError, match=r":colour: unknown option$"):
        load_config(path, {})


def test_a_section_must_be_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, {"relay": 5})
    with pytest.raises(ConfigError, match=r":relay: expected a \[relay\] table, got 5"):
        load_config(path, {})


def test_unknown_section_variables_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"^environment:TROC_RELAY_MAX_CIRCUIT: unknown option"):
        load_config(None, {"TROC_RELAY_MAX_CIRCUIT": "3"})
    with pytest.raises(ConfigError, match=r"^environment:TROC_QUOTA_X: unknown option"):
        load_config(None, {"TROC_QUOTA_X": "3"})


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=r"missing.toml: cannot read the config file: No such"):
        load_config(missing, {})
    with pytest.raises(ConfigError, match=r": cannot read the config file"):
        load_config(tmp_path, {})  # a folder
    bad = tmp_path / "bad.toml"
    bad.write_text("mdns = true\nlisten = [\n")
    with pytest.raises(ConfigError, match=r"bad.toml: not valid TOML: .*\(at "):
        load_config(bad, {})
    bad.write_bytes(b"home = '\xff'\n")
    with pytest.raises(ConfigError, match=r"bad.toml: not UTF-8 text \(byte 8\)"):
        load_config(bad, {})
    bad.write_text("# " + "x" * MAX_FILE_BYTES)
    with pytest.raises(ConfigError, match=r"bad.toml: the config file is larger than"):
        load_config(bad, {})


def test_limits_that_must_fit_together(tmp_path: Path) -> None:
    # A per-peer limit left at its default shrinks to fit a smaller total.
    config = load_config(None, {"TROC_RELAY_MAX_CIRCUITS": "10"})
    assert config.relay.max_circuits_per_peer == 10
    # One set by hand is an error, naming it and where the total came from.
    path = write(tmp_path, {"relay.max_reservations_per_ip": 20})
    with pytest.raises(
        ConfigError,
        match=r"relay.toml:relay.max_reservations_per_ip: relay.max_reservations_per_ip = 20 "
        r"is more than relay.max_reservations = 10 \(relay.max_reservations from "
        r"TROC_RELAY_MAX_RESERVATIONS\)$",
    ):
        load_config(path, {"TROC_RELAY_MAX_RESERVATIONS": "10"})
    config = load_config(path, {"TROC_RELAY_MAX_RESERVATIONS": "20"})
    assert config.relay.max_reservations_per_ip == 20


# -- what the node gets ---------------------------------------------------------------


def test_node_config_takes_the_fields_node_config_has(tmp_path: Path) -> None:
    from troc.node.node import NodeConfig

    env = {"TROC_HOME": str(tmp_path), "TROC_BAN_SECONDS": "9", "TROC_QUOTA_STREAMS": "4"}
    config = load_config(None, env)
    node = config.node_config()
    assert isinstance(node, NodeConfig)
    assert (node.home, node.ban_seconds, node.listen) == (tmp_path, 9.0, config.listen)
    kwargs = config.node_config_kwargs()
    assert set(kwargs) <= {f.name for f in dataclasses.fields(NodeConfig)}
    values = config.node_values()
    assert values["witness"] is True  # auto: the node votes where the genesis names it
    assert load_config(None, {"TROC_WITNESS": "no"}).node_values()["witness"] is False
    assert values["quotas"].streams == 4
    assert values["communities"] == ()
    # Once NodeConfig grows a field, the same mapping carries it.
    assert "quotas" in config.node_config_kwargs({"home", "quotas"})


def test_node_config_needs_a_home() -> None:
    with pytest.raises(LocalProtocolError, match="no home folder"):
        load_config(None, {}).node_config()


def test_awaiting_hooks_names_only_options_set_by_hand() -> None:
    fields = {"home", "listen", "bootstrap", "mdns", "sync_interval", "ban_seconds"}
    assert load_config(None, {}).awaiting_hooks(fields) == []
    env = {"TROC_QUOTA_STREAMS": "4", "TROC_WITNESS": "auto", "TROC_COMMUNITIES": CID}
    assert load_config(None, env).awaiting_hooks(fields) == ["communities", "quota.streams"]
    assert load_config(None, env).awaiting_hooks(fields | {"quotas", "communities"}) == []


def test_communities_reach_the_node_as_raw_ids() -> None:
    config = load_config(None, {"TROC_COMMUNITIES": CID})
    assert config.node_values()["communities"] == (bytes(range(32)),)


def test_relay_limits_match_the_relay_module() -> None:
    relay = pytest.importorskip("troc.net.relay")
    limits = relay.RelayLimits(**load_config(None, {}).relay_limits_kwargs())
    assert limits.circuit_seconds == 600.0
    assert limits.reservation_ttl == 3600.0


def test_describe_is_json_and_names_every_variable() -> None:
    described = load_config(None, {"TROC_MDNS": "1"}).describe()
    assert json.loads(json.dumps(described)) == described
    assert described["mdns"] == {"value": True, "source": "TROC_MDNS", "env": "TROC_MDNS"}
    assert set(described) == set(BY_NAME)


# -- docs -------------------------------------------------------------------------------


def test_the_operations_guide_documents_every_option_and_variable() -> None:
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    for option in OPTIONS:
        assert f"`{option.name}`" in text, option.name
        assert f"`{option.env}`" in text, option.env


def test_the_example_config_is_valid_and_sets_every_option(tmp_path: Path) -> None:
    example = DOCS / "troc-relay.example.toml"
    config = load_config(example, {})
    assert {n for n in BY_NAME if config.source(n) != "default"} == set(BY_NAME)


# -- properties -------------------------------------------------------------------------


@given(data=st.data())
def test_integers_read_alike_from_file_and_environment(tmp_path_factory: Any, data: Any) -> None:
    option = data.draw(st.sampled_from([o for o in OPTIONS if "integer from" in _range_of(o)]))
    lo, hi = _bounds(option)
    n = data.draw(st.integers(lo - 3, hi + 3) | st.integers())
    env_text = data.draw(st.sampled_from([str(n), f" {n} ", f"+{n}" if n >= 0 else str(n)]))
    tmp = tmp_path_factory.mktemp("cfg")
    # Totals at their highest, so that no per-peer limit exceeds its total.
    roomy = {"TROC_RELAY_MAX_RESERVATIONS": "1000000", "TROC_RELAY_MAX_CIRCUITS": "1000000"}
    roomy.pop(option.env, None)
    if lo <= n <= hi:
        from_file = load_config(write(tmp, {option.name: n}), roomy).value(option.name)
        from_env = load_config(None, {**roomy, option.env: env_text}).value(option.name)
        assert from_file == from_env == n
    else:
        with pytest.raises(ConfigError, match=f"^{option.env}: expected an integer"):
            load_config(None, {**roomy, option.env: env_text})


def _range_of(option: Any) -> str:
    try:
        option.parse(object(), False)
    except ValueError as exc:
        return str(exc)
    raise AssertionError("object() parsed")


def _bounds(option: Any) -> tuple[int, int]:
    words = _range_of(option).split()
    return int(words[words.index("from") + 1]), int(words[words.index("to") + 1].rstrip(","))


@given(name=st.sampled_from([o.name for o in OPTIONS]), text=st.text(max_size=40))
def test_any_variable_text_is_a_value_or_one_config_error(name: str, text: str) -> None:
    option = BY_NAME[name]
    error: ConfigError | None = None
    try:
        config = load_config(None, {option.env: text})
    except ConfigError as exc:
        error = exc
    if error is not None:
        assert _one_line(error).startswith(f"{option.env}: ")
    else:
        assert config.source(name) in (option.env, "default")


@given(
    file=st.none() | st.floats(0.1, 3600),
    env=st.none() | st.floats(0.1, 3600),
    flag=st.none() | st.floats(0.1, 3600),
)
def test_the_highest_source_given_wins(
    tmp_path_factory: Any, file: float | None, env: float | None, flag: float | None
) -> None:
    path = None
    if file is not None:
        path = write(tmp_path_factory.mktemp("cfg"), {"sync_interval": file})
    environ = {} if env is None else {"TROC_SYNC_INTERVAL": repr(env)}
    config = load_config(path, environ, {"sync_interval": flag})
    expected = next((v for v in (flag, env, file) if v is not None), 5.0)
    assert config.sync_interval == expected


@given(st.lists(st.text(min_size=1, max_size=20), max_size=4))
def test_strings_survive_the_file(tmp_path_factory: Any, words: list[str]) -> None:
    # Any home path written to the file reads back (relative to the file).
    for word in words:
        if not word.strip() or "\x00" in word:
            continue
        tmp = tmp_path_factory.mktemp("cfg")
        try:
            expected = tmp / Path(word.strip()).expanduser()
        except RuntimeError:  # "~name" of no user here: a one-line error, not a crash
            with pytest.raises(ConfigError, match="no such user"):
                load_config(write(tmp, {"home": word}), {})
            continue
        config = load_config(write(tmp, {"home": word}), {})
        assert config.home == expected
