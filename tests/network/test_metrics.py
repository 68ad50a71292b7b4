"""The server's /metrics and /health: the HTTP endpoint in-process, then a real
`troc relay` process scraped over a real socket.

Every process is stopped by its own PID (SIGTERM, SIGKILL after a grace
period); every wait is bounded.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from troc.node import metrics
from troc.node.metrics import (
    METRICS,
    Counters,
    Metric,
    bound_address,
    configure_logging,
    open_metrics_listeners,
    render,
    serve_metrics,
)

TROC = [sys.executable, "-m", "troc"]
PASSPHRASE = "metrics test passphrase"

# -- the exposition format ---------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|$)')


def parse_exposition(text: str) -> dict[str, dict[str, Any]]:
    """Prometheus text format 0.0.4 -> {name: {help, type, samples: [(labels, value)]}};
    fails on anything a scraper would refuse."""
    assert text.endswith("\n")
    families: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in families, f"{name} declared twice"
            families[name] = {"help": help_text, "type": None, "samples": []}
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert families[name]["type"] is None, f"{name}: two TYPE lines"
            assert not families[name]["samples"], f"{name}: TYPE after samples"
            assert kind in ("counter", "gauge"), line
            families[name]["type"] = kind
        else:
            match = _SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, labels_text, value = match.groups()
            labels: dict[str, str] = {}
            if labels_text:
                pairs = _LABEL.findall(labels_text)
                assert ",".join(f'{k}="{v}"' for k, v in pairs) == labels_text, line
                labels = dict(pairs)
            assert families[name]["type"] is not None, f"{name} has no TYPE"
            families[name]["samples"].append((labels, float(value)))
    for name, family in families.items():
        if family["type"] == "counter":
            assert name.endswith("_total"), f"counter {name} must end in _total"
    return families


def value(families: dict[str, dict[str, Any]], name: str) -> float:
    samples = families[name]["samples"]
    assert len(samples) == 1, samples
    return float(samples[0][1])


def test_the_metric_names() -> None:
    names = [m.name for m in METRICS]
    assert names == [
        "troc_peers",
        "troc_entries_stored_total",
        "troc_entries_served_total",
        "troc_entries_received_total",
        "troc_sync_lag_entries",
        "troc_relay_circuits",
        "troc_relay_reservations",
        "troc_bytes_in_total",
        "troc_bytes_out_total",
        "troc_communities",
        "troc_uptime_seconds",
        "troc_witness_lies_total",
    ]
    for m in METRICS:
        assert (m.kind == "counter") == m.name.endswith("_total"), m.name
    assert {f.name for f in dataclasses.fields(Counters)} == {
        "entries_served",
        "entries_received",
        "bytes_in",
        "bytes_out",
    }


def test_render_escapes_and_leaves_out_what_is_missing() -> None:
    tricky = Metric("x_total", "counter", "a \\ help\nline")
    text = render(
        {
            "x_total": [({"community": 'a"b\\c\nd'}, 3), ({"community": "e"}, 4)],
            "troc_peers": 2,
            "troc_uptime_seconds": 1.5,
            "troc_sync_lag_entries": None,
        },
        [*METRICS, tricky],
    )
    families = parse_exposition(text)
    assert set(families) == {"troc_peers", "troc_uptime_seconds", "x_total"}
    assert families["x_total"]["help"] == "a \\\\ help\\nline"
    assert families["x_total"]["samples"] == [
        ({"community": 'a\\"b\\\\c\\nd'}, 3.0),
        ({"community": "e"}, 4.0),
    ]
    assert value(families, "troc_peers") == 2
    assert "troc_uptime_seconds 1.5\n" in text
    special = render({"troc_peers": float("nan"), "troc_uptime_seconds": float("inf")})
    assert "troc_peers NaN\n" in special
    assert "troc_uptime_seconds +Inf\n" in special


def test_json_logs_are_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers = []
    try:
        configure_logging("json", "info")
        log = logging.getLogger("troc.test")
        log.info("hello %s", "world")
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            log.exception("it failed")
        log.debug("not shown")
    finally:
        root.handlers, level = saved
        root.setLevel(level)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["msg"] == "hello world"
    assert first["level"] == "info"
    assert first["logger"] == "troc.test"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert "ValueError: boom" in second["exc"]
    with pytest.raises(ValueError, match="text or json"):
        configure_logging("xml")


# -- the HTTP endpoint, in-process -------------------------------------------------------


class Fake:
    def __init__(self) -> None:
        self.ok = True
        self.fail_snapshot = False
        self.fail_health = False

    def snapshot(self) -> dict[str, Any]:
        if self.fail_snapshot:
            raise RuntimeError("store gone")
        return {"troc_peers": 3, "troc_entries_stored_total": [({"community": "c1"}, 7)]}

    def health(self) -> tuple[bool, dict[str, Any]]:
        if self.fail_health:
            raise RuntimeError("database is locked")
        return self.ok, {"status": "ok" if self.ok else "unavailable"}


async def _exchange(
    port: int, data: bytes, *, close: bool = True
) -> tuple[int, dict[str, str], bytes]:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(data)
            if close:
                await stream.send_eof()
            reply = b""
            while chunk := await stream.receive_some(65536):
                reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    if "content-length" in headers:
        assert int(headers["content-length"]) == len(body) or data.startswith(b"HEAD")
    return int(status_line.split()[1]), headers, body


async def test_endpoint_answers_and_refuses(nursery: trio.Nursery) -> None:
    fake = Fake()
    listeners = await open_metrics_listeners("127.0.0.1", 0)
    nursery.start_soon(serve_metrics, listeners, fake.snapshot, fake.health)
    port = int(bound_address(listeners).rsplit(":", 1)[1])

    status, headers, body = await _exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert headers["connection"] == "close"
    families = parse_exposition(body.decode())
    assert value(families, "troc_peers") == 3
    assert families["troc_entries_stored_total"]["samples"] == [({"community": "c1"}, 7.0)]

    status, headers, body = await _exchange(port, b"GET /health?x=1 HTTP/1.0\n\n")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert headers["content-type"] == "application/json"
    fake.ok = False
    status, _h, body = await _exchange(port, b"GET /health HTTP/1.1\r\n\r\n")
    assert (status, json.loads(body)["status"]) == (503, "unavailable")
    fake.fail_health = True
    status, _h, body = await _exchange(port, b"GET /health HTTP/1.1\r\n\r\n")
    assert status == 503
    assert json.loads(body) == {"status": "unavailable", "error": "database is locked"}
    fake.fail_snapshot = True
    status, _h, _b = await _exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")
    assert status == 503

    status, headers, body = await _exchange(port, b"HEAD /health HTTP/1.1\r\n\r\n")
    assert status == 503
    assert body == b""
    assert int(headers["content-length"]) > 0
    assert (await _exchange(port, b"POST /metrics HTTP/1.1\r\n\r\n"))[0] == 405
    assert (await _exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n"))[1].get("allow") is None
    assert (await _exchange(port, b"GET / HTTP/1.1\r\n\r\n"))[0] == 404
    assert (await _exchange(port, b"GET /metrics HTTP/2.0\r\n\r\n"))[0] == 505
    for garbage in (
        b"GET /metrics\r\n\r\n",
        b"GET metrics HTTP/1.1\r\n\r\n",
        b"GET  /metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics FTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nbad name: x\r\n\r\n",
        b"G\x00T /metrics HTTP/1.1\r\n\r\n",
        b"GET /m\xffetrics HTTP/1.1\r\n\r\n",
    ):
        assert (await _exchange(port, garbage))[0] == 400, garbage
    big = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (metrics.MAX_REQUEST_HEAD + 10) + b"\r\n\r\n"
    assert (await _exchange(port, big))[0] == 431
    # A client that leaves before a whole request head gets nothing and costs nothing.
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /met")
        await stream.aclose()
    fake.fail_snapshot = False
    assert (await _exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n"))[0] == 200


async def test_a_slow_client_is_cut_off(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "REQUEST_TIMEOUT", 0.3)
    fake = Fake()
    listeners = await open_metrics_listeners("127.0.0.1", 0)
    nursery.start_soon(serve_metrics, listeners, fake.snapshot, fake.health)
    port = int(bound_address(listeners).rsplit(":", 1)[1])
    started = trio.current_time()
    status, _h, _b = await _exchange(port, b"GET /metrics HTTP/1.1\r\n", close=False)
    assert status == 408
    assert trio.current_time() - started < 5


async def test_connections_beyond_the_limit_are_closed(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "MAX_CONNECTIONS", 2)
    fake = Fake()
    listeners = await open_metrics_listeners("127.0.0.1", 0)
    nursery.start_soon(serve_metrics, listeners, fake.snapshot, fake.health)
    port = int(bound_address(listeners).rsplit(":", 1)[1])
    with trio.fail_after(10):
        idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        await trio.sleep(0.2)  # both are being served (waiting for a request)
        third = await trio.open_tcp_stream("127.0.0.1", port)
        await third.send_all(b"GET /metrics HTTP/1.1\r\n\r\n")
        try:  # closed without a reply (a reset, if our request was unread)
            assert await third.receive_some(100) == b""
        except trio.BrokenResourceError:
            pass
        for s in [*idle, third]:
            await s.aclose()
        await trio.sleep(0.2)
    assert (await _exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n"))[0] == 200


async def test_a_busy_port_is_a_network_error() -> None:
    from troc.errors import NetworkError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(NetworkError, match=rf"cannot serve metrics on 127.0.0.1:{port}"):
            await open_metrics_listeners("127.0.0.1", port)


# -- a real `troc relay` -------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TROC_")}
    env["TROC_PASSPHRASE"] = PASSPHRASE
    env.update(extra)
    return env


def _troc(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TROC, "--home", str(home), "--json", *args],
        capture_output=True,
        text=True,
        env=env or _env(),
        timeout=60,
    )


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    deadline = time.monotonic() + timeout
    buf = ""
    while time.monotonic() < deadline:
        buf += proc.stdout.readline()
        if buf.endswith("\n"):
            return buf
        if proc.poll() is not None:
            raise AssertionError(f"troc relay exited with {proc.returncode} before starting")
        time.sleep(0.05)
    raise AssertionError("troc relay did not print its info line in time")


@contextmanager
def relay_process(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    log = open(home / "relay.log", "a")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [*TROC, "--home", str(home), "--json", "relay", *args],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env or _env(),
    )
    log.close()
    try:
        info = json.loads(_read_line(proc, timeout=30))
        yield proc, info
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _get(address: str, path: str) -> tuple[int, str, str]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        return reply.status, reply.getheader("Content-Type") or "", reply.read().decode()
    finally:
        conn.close()


def test_troc_relay_serves_metrics_and_health(tmp_path: Path) -> None:
    home = tmp_path / "server"
    assert _troc(home, "init", "--name", "server").returncode == 0
    created = _troc(
        home, "community", "create", "--name", "Valley", "--unit", "h", "--credit-limit", "5"
    )
    assert created.returncode == 0, created.stderr
    community = json.loads(created.stdout)["community"]
    offer = _troc(home, "offer", "add", "--title", "Ladder", "-c", community)
    assert offer.returncode == 0, offer.stderr
    member = json.loads(_troc(home, "whoami").stdout)["member"]

    args = ["--listen", "/ip4/127.0.0.1/tcp/0", "--metrics-listen", "127.0.0.1:0"]
    with relay_process(home, *args, "--log-format", "json") as (proc, info):
        assert info["member"] == member
        assert info["witness"] is False  # auto: not a witness of Valley
        assert info["addrs"][0].startswith("/ip4/127.0.0.1/tcp/")
        address = info["metrics"]
        assert re.fullmatch(r"127\.0\.0\.1:\d+", address)

        status, ctype, body = _get(address, "/metrics")
        assert status == 200
        assert ctype.startswith("text/plain; version=0.0.4")
        families = parse_exposition(body)
        assert value(families, "troc_peers") == 0
        assert value(families, "troc_communities") == 1
        assert families["troc_entries_stored_total"]["samples"] == [
            ({"community": community}, 2.0)  # the founder's join and the offer
        ]
        assert value(families, "troc_entries_received_total") == 0
        assert value(families, "troc_sync_lag_entries") == 0
        assert value(families, "troc_uptime_seconds") >= 0
        for family in families.values():
            assert family["help"]

        status, ctype, body = _get(address, "/health")
        assert (status, ctype) == (200, "application/json")
        health = json.loads(body)
        assert health["status"] == "ok"
        assert health["member"] == member
        assert health["peer_id"] == info["peer_id"]
        assert health["communities"] == 1

        # `troc status` reaches the server through its control socket, as for `troc run`.
        running = _troc(home, "status")
        assert running.returncode == 0, running.stderr
        assert json.loads(running.stdout)["peer_id"] == info["peer_id"]

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    logs = (home / "relay.log").read_text().splitlines()
    records = [json.loads(line) for line in logs if line.startswith("{")]
    assert any(r["logger"] == "troc.relay" and "metrics on" in r["msg"] for r in records)
    assert not (home / "control.sock").exists()


def test_troc_relay_reads_its_config_file_and_environment(tmp_path: Path) -> None:
    home = tmp_path / "server"
    config = tmp_path / "relay.toml"
    config.write_text(
        'home = "server"\nlisten = ["/ip4/127.0.0.1/tcp/0"]\nmetrics_listen = "127.0.0.1:1"\n'
        "[quota]\nstreams = 4\n"
    )
    env = _env(TROC_METRICS_LISTEN="127.0.0.1:0", TROC_WITNESS="true")
    checked = subprocess.run(
        [*TROC, "--json", "relay", "--config", str(config), "--check"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    described = json.loads(checked.stdout)
    assert described["config"]["home"] == {
        "value": str(home),
        "source": f"{config}:home",
        "env": "TROC_HOME",
    }
    assert described["config"]["metrics_listen"]["source"] == "TROC_METRICS_LISTEN"
    from troc.node.config import OPTIONS
    from troc.node.node import NodeConfig

    fields = {f.name for f in dataclasses.fields(NodeConfig)}
    hooked = {o.name for o in OPTIONS if o.node_field in fields}
    expected = [n for n in ("witness", "quota.streams") if n not in hooked]
    assert described["awaiting_hooks"] == expected

    proc = subprocess.Popen(
        [*TROC, "--json", "relay", "--config", str(config), "--no-passphrase"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        info = json.loads(_read_line(proc, timeout=30))
        assert info["witness"] is True  # forced by TROC_WITNESS
        status, _c, _b = _get(info["metrics"], "/health")
        assert status == 200
        assert (home / "key").exists()  # created on first run, unencrypted
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    # Every option the file sets is honoured by the node now: no warning.
    assert expected == []
    assert "not enforced by this node yet" not in err


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (["--listen", "nonsense"], {}, 2, "--listen: not a multiaddr: 'nonsense'"),
        (
            [],
            {"TROC_RELAY_MAX_CIRCUITS": "lots"},
            2,
            "TROC_RELAY_MAX_CIRCUITS: expected an integer",
        ),
        (["--config", "/nonexistent/relay.toml"], {}, 2, "cannot read the config file"),
    ],
)
def test_bad_configuration_exits_2_with_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], code: int, message: str
) -> None:
    result = _troc(tmp_path / "h", "relay", *args, env=_env(**env))
    assert result.returncode == code
    error = json.loads(result.stdout)["error"]
    assert error["kind"] == "usage"
    assert message in error["message"]
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("troc: ")


def test_a_busy_metrics_port_exits_7_before_the_node_starts(tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert _troc(home, "init").returncode == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _troc(
            home,
            "relay",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--metrics-listen",
            f"127.0.0.1:{port}",
        )
    assert result.returncode == 7, result.stderr
    assert (
        f"cannot serve metrics on 127.0.0.1:{port}" in json.loads(result.stdout)["error"]["message"]
    )
