"""What a running server shows its operator: /metrics, /health, and structured logs.

Theory of operation
-------------------
:func:`serve_metrics` is a deliberately small HTTP/1.1 server on trio: one
request per connection (``Connection: close``), ``GET`` and ``HEAD`` only,
no request bodies, and strict bounds: the request head must arrive within
:data:`REQUEST_TIMEOUT` seconds and fit in :data:`MAX_REQUEST_HEAD` bytes,
the reply must be taken within :data:`SEND_TIMEOUT`, and at most
:data:`MAX_CONNECTIONS` clients are served at once (others are closed at
once). Nothing a client sends can make it allocate more or wait longer. It
is meant to listen on a loopback or private address for a Prometheus
scraper and a health checker, not on the public internet.

* ``GET /metrics`` renders :data:`METRICS` in the Prometheus text exposition
  format 0.0.4 (``# HELP``/``# TYPE`` lines, counters ending in ``_total``,
  gauges) from the mapping the ``snapshot`` callable returns. The server
  knows nothing of the node: the snapshot maps metric names to a number, or
  to a list of ``(labels, number)`` pairs; a metric the snapshot leaves out
  (or maps to None) is left out of the page, so a counter the node does not
  keep yet is absent rather than a misleading 0.
* ``GET /health`` calls ``health``, which returns ``(ok, body)``: 200 and
  the body as JSON when ok, 503 otherwise (and 503 when it raises).

:class:`Counters` is what the node should keep for the counters no public
API shows yet (docs/operations.md lists which metric reads which), and
:class:`ServedNode` reads a running node for ``troc relay``'s snapshot and
health.

:func:`configure_logging` sets up troc's logging on stderr: the classic text
line, or with ``json`` one JSON object per line (``ts``, ``level``,
``logger``, ``msg``, and ``exc`` for a traceback) for log shippers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from troc.errors import NetworkError
from troc.node.opdata import cid, mid

__all__ = [
    "METRICS",
    "Counters",
    "Metric",
    "ServedNode",
    "configure_logging",
    "open_metrics_listeners",
    "render",
    "serve_metrics",
]

logger = logging.getLogger("troc.metrics")

#: The request line and headers together may not be longer than this.
MAX_REQUEST_HEAD = 8192
#: The whole request head must arrive within this many seconds.
REQUEST_TIMEOUT = 5.0
#: The client must take the whole reply within this many seconds.
SEND_TIMEOUT = 5.0
#: After replying, unread request bytes are drained for at most this long.
LINGER_TIMEOUT = 1.0
#: Clients served at once; more are disconnected without a reply.
MAX_CONNECTIONS = 32

CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    kind: str  # "counter" or "gauge"
    help: str


METRICS: tuple[Metric, ...] = (
    Metric("troc_peers", "gauge", "Peers connected now."),
    Metric(
        "troc_entries_stored_total",
        "counter",
        "Entries in the store, by community (grows as entries arrive; never reset).",
    ),
    Metric(
        "troc_entries_served_total",
        "counter",
        "Entries sent to peers by sync since the node started.",
    ),
    Metric(
        "troc_entries_received_total",
        "counter",
        "Entries from other members stored since the node started (sync and gossip).",
    ),
    Metric(
        "troc_sync_lag_entries",
        "gauge",
        "Entries the sync in flight still expects from its peer (0 when idle).",
    ),
    Metric("troc_relay_circuits", "gauge", "Relayed connections open now."),
    Metric("troc_relay_reservations", "gauge", "Relay reservations held now."),
    Metric("troc_bytes_in_total", "counter", "Bytes received from peers since the node started."),
    Metric("troc_bytes_out_total", "counter", "Bytes sent to peers since the node started."),
    Metric("troc_communities", "gauge", "Communities this node serves."),
    Metric("troc_uptime_seconds", "gauge", "Seconds since the node started."),
    Metric(
        "troc_witness_lies_total",
        "counter",
        "Own entries a witness lied about (a false fork claim, a bad vote, garbage), by witness.",
    ),
)


@dataclass(slots=True)
class Counters:
    """Counters a node keeps for :data:`METRICS` (the hook: the node owns one
    and increments it; a snapshot reads it). The relay gauges come from the
    relay server itself (``circuit_count()``, ``reservations()``)."""

    entries_served: int = 0
    entries_received: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


Snapshot = Mapping[str, Any]


# -- the exposition format -----------------------------------------------------------


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _samples(value: Any) -> Iterable[tuple[Mapping[str, str], float]]:
    if isinstance(value, int | float):
        yield {}, value
        return
    yield from value


def render(snapshot: Snapshot, metrics: Iterable[Metric] = METRICS) -> str:
    """The Prometheus text exposition (format 0.0.4) of ``snapshot``."""
    lines: list[str] = []
    for metric in metrics:
        value = snapshot.get(metric.name)
        if value is None:
            continue
        help_text = metric.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"# HELP {metric.name} {help_text}")
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        for labels, number in _samples(value):
            if labels:
                inner = ",".join(f'{k}="{_label_value(str(v))}"' for k, v in sorted(labels.items()))
                lines.append(f"{metric.name}{{{inner}}} {_number(number)}")
            else:
                lines.append(f"{metric.name} {_number(number)}")
    return "\n".join(lines) + "\n"


# -- the HTTP server -----------------------------------------------------------------

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


class _HttpError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _is_token(data: bytes) -> bool:
    return bool(data) and all(33 <= c < 127 and c not in b'()<>@,;:\\"/[]?={}' for c in data)


def parse_request_head(head: bytes) -> tuple[str, str]:
    """``(method, path)`` of a request head (up to and without the blank line).

    Raises _HttpError(400 or 505) for anything that is not a plain HTTP/1.x
    request line followed by well-formed header lines.
    """
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _is_token(parts[0]) or not parts[1].startswith(b"/"):
        raise _HttpError(400)
    method, target, version = parts
    if not version.startswith(b"HTTP/"):
        raise _HttpError(400)
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise _HttpError(505)
    if any(c < 33 or c >= 127 for c in target):
        raise _HttpError(400)
    for line in lines[1:]:
        name, colon, _value = line.partition(b":")
        if not colon or not _is_token(name):
            raise _HttpError(400)
    return method.decode("ascii"), target.split(b"?", 1)[0].decode("ascii")


async def _read_head(stream: trio.abc.ReceiveStream) -> bytes | None:
    """The request head, or None if the client left first."""
    buf = b""
    while True:
        for end in (b"\r\n\r\n", b"\n\n"):
            at = buf.find(end)
            if at != -1:
                return buf[:at]
        if len(buf) > MAX_REQUEST_HEAD:
            raise _HttpError(431)
        chunk = await stream.receive_some(MAX_REQUEST_HEAD + 4 - len(buf) + 1)
        if not chunk:
            return None
        buf += chunk


def _response(status: int, body: bytes, content_type: str, *, head_only: bool) -> bytes:
    headers = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    if status == 405:
        headers.append("Allow: GET, HEAD")
    return ("\r\n".join(headers) + "\r\n\r\n").encode("ascii") + (b"" if head_only else body)


class _Handler:
    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        health: Callable[[], tuple[bool, Mapping[str, Any]]],
    ) -> None:
        self.snapshot = snapshot
        self.health = health
        self.open = 0

    def route(self, method: str, path: str) -> tuple[int, bytes, str]:
        if path not in ("/metrics", "/health"):
            return 404, b"not found\n", "text/plain; charset=utf-8"
        if method not in ("GET", "HEAD"):
            return 405, b"only GET and HEAD\n", "text/plain; charset=utf-8"
        if path == "/metrics":
            try:
                page = render(self.snapshot())
            except Exception:
                logger.exception("cannot take the metrics snapshot")
                return 503, b"metrics unavailable\n", "text/plain; charset=utf-8"
            return 200, page.encode("utf-8"), CONTENT_TYPE_METRICS
        try:
            ok, body = self.health()
        except Exception as exc:
            logger.warning("health check failed: %s", exc)
            ok, body = False, {"status": "unavailable", "error": str(exc)[:200]}
        data = json.dumps(body, sort_keys=True).encode() + b"\n"
        return (200 if ok else 503), data, "application/json"

    async def __call__(self, stream: trio.SocketStream) -> None:
        if self.open >= MAX_CONNECTIONS:
            await stream.aclose()
            return
        self.open += 1
        try:
            await self._serve(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away
        finally:
            self.open -= 1
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                await stream.aclose()

    async def _serve(self, stream: trio.SocketStream) -> None:
        method = "GET"
        try:
            head = None
            with trio.move_on_after(REQUEST_TIMEOUT):
                head = await _read_head(stream)
                if head is None:
                    return
            if head is None:
                raise _HttpError(408)
            method, path = parse_request_head(head)
            status, body, ctype = self.route(method, path)
        except _HttpError as exc:
            status, body, ctype = exc.status, f"{_REASONS[exc.status]}\n".encode(), "text/plain"
        reply = _response(status, body, ctype, head_only=method == "HEAD")
        with trio.move_on_after(SEND_TIMEOUT):
            await stream.send_all(reply)
            await stream.send_eof()
        # Lingering close: closing with unread bytes (a refused request's
        # rest) makes the kernel send a reset, which can destroy the reply
        # before the client reads it. Drain a little, for a short while.
        with trio.move_on_after(LINGER_TIMEOUT):
            drained = 0
            while drained < MAX_REQUEST_HEAD * 8:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                drained += len(chunk)


async def open_metrics_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Bind the endpoint's listeners (so a busy port fails before the node starts).

    Raises:
        NetworkError: the address is in use or cannot be bound.
    """
    try:
        return list(await trio.open_tcp_listeners(port, host=host))
    except OSError as exc:
        raise NetworkError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
            " (set metrics_listen to another address, or empty to turn it off)"
        ) from None


def bound_address(listeners: list[trio.SocketListener]) -> str:
    """``host:port`` the first listener is bound to (``[v6]:port`` for IPv6)."""
    host, port = listeners[0].socket.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_metrics(
    listeners: list[trio.SocketListener],
    snapshot: Callable[[], Snapshot],
    health: Callable[[], tuple[bool, Mapping[str, Any]]],
) -> None:
    """Serve /metrics and /health on ``listeners`` until cancelled."""
    await trio.serve_listeners(_Handler(snapshot, health), listeners)


# -- what a running node shows -----------------------------------------------------


#: How long entry counts are reused between scrapes (counting is O(entries)).
COUNT_TTL = 15.0


class ServedNode:
    """What the metrics endpoint reads from a running :class:`~troc.node.node.Node`.

    It uses the node's public surface only (host, local, progress, subscribe);
    counters the node does not keep yet come from ``node.counters`` (a
    :class:`troc.node.metrics.Counters`) and the relay gauges from
    ``node.relay_server`` once the node has them, and are left out of the
    page until then.
    """

    def __init__(self, node: Any, communities: tuple[str, ...] = ()) -> None:
        self.node = node
        self.served = frozenset(communities)
        self.started = time.monotonic()
        self.received = 0  # entries by other members stored since start
        self._counts: list[tuple[dict[str, str], int]] = []
        self._counted_at = -COUNT_TTL

    def _communities(self) -> list[Any]:
        infos = self.node.local.communities()
        return [i for i in infos if not self.served or cid(i.id) in self.served]

    def is_witness(self) -> bool:
        """Whether this node's member is a witness of a community it serves."""
        return any(self.node.member in i.witnesses for i in self._communities())

    async def count_received(self) -> None:
        """Count other members' entries as the node stores them (until the
        node keeps ``counters.entries_received`` itself)."""
        async with self.node.subscribe(100_000) as stored:
            async for entry in stored:
                if entry.author != self.node.member:
                    self.received += 1

    def _entry_counts(self, communities: list[Any]) -> list[tuple[dict[str, str], int]]:
        now = time.monotonic()
        if now - self._counted_at >= COUNT_TTL:
            store = self.node.local.store
            self._counts = [
                ({"community": cid(i.id)}, store.entry_count(i.id)) for i in communities
            ]
            self._counted_at = now
        return self._counts

    def snapshot(self) -> dict[str, Any]:
        node = self.node
        communities = self._communities()
        progress = node.progress
        lag = progress.current_expected - progress.current_received if progress.current_peer else 0
        snap: dict[str, Any] = {
            "troc_peers": len(node.host.connected_peers()),
            "troc_communities": len(communities),
            "troc_entries_stored_total": self._entry_counts(communities),
            "troc_entries_received_total": self.received,
            "troc_sync_lag_entries": max(0, lag),
            "troc_uptime_seconds": round(time.monotonic() - self.started, 3),
        }
        counters = getattr(node, "counters", None)
        if counters is not None:
            snap.update(
                troc_entries_served_total=counters.entries_served,
                troc_entries_received_total=counters.entries_received,
                troc_bytes_in_total=counters.bytes_in,
                troc_bytes_out_total=counters.bytes_out,
            )
        certifier = getattr(node, "certifier", None)  # troc.node.certifier.Certifier
        if certifier is not None:
            snap["troc_witness_lies_total"] = [
                ({"witness": w.hex()}, n) for w, n in sorted(certifier.lies.items())
            ]
        relay = getattr(node, "relay_server", None)  # troc.net.relay.RelayServer
        if relay is not None:
            snap["troc_relay_circuits"] = relay.circuit_count()
            snap["troc_relay_reservations"] = len(relay.reservations())
        return snap

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy when the node listens and its store answers a query."""
        node = self.node
        try:
            communities = len(self._communities())  # reads the store
        except Exception as exc:
            return False, {"status": "unavailable", "error": f"store: {exc}"[:200]}
        if not node.host.listen_addrs():
            return False, {"status": "unavailable", "error": "not listening"}
        return True, {
            "status": "ok",
            "member": mid(node.member),
            "peer_id": node.peer_id,
            "peers": len(node.host.connected_peers()),
            "communities": communities,
            "uptime_seconds": round(time.monotonic() - self.started, 3),
        }


# -- logging --------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(format: str = "text", level: str = "info") -> None:  # noqa: A002
    """Log to stderr at ``level``: text lines, or with ``format="json"`` one JSON
    object per line. py-libp2p logs every failed dial and handshake at info, so
    it is held at warning at least."""
    if format not in ("text", "json"):
        raise ValueError(f"log format must be text or json, got {format!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    # Importing libp2p runs its own logging set-up: its loggers stop propagating
    # and have no handler, so Python's last-resort handler printed their records
    # raw (multi-line, never JSON). Import it first, then give them our format
    # (unless LIBP2P_DEBUG asks for libp2p's own debugging output). Its modules
    # set their own levels, so the handler holds them at warning at least.
    import libp2p  # noqa: F401

    libp2p_logger = logging.getLogger("libp2p")
    threshold = max(logging.WARNING, logging.getLevelName(level.upper()))
    if not os.environ.get("LIBP2P_DEBUG"):
        libp2p_handler = logging.StreamHandler(sys.stderr)
        libp2p_handler.setFormatter(handler.formatter)
        libp2p_handler.setLevel(threshold)
        libp2p_logger.handlers[:] = [libp2p_handler]
        libp2p_logger.propagate = False
    libp2p_logger.setLevel(threshold)
