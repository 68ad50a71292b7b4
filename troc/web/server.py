"""Serving the web app inside the node's trio nursery (hypercorn's trio worker).

``troc run`` calls :func:`serve_web` in its nursery: the app answers on
127.0.0.1:8787 unless told otherwise. A busy port does not stop the node: the
next ports are tried (a few), and if none is free the node runs without its
web app and says so. The running server registers ``web.login`` with the
node, so ``troc web`` (over the control socket) gets a fresh login URL.
"""

from __future__ import annotations

import errno
import logging
import socket
from dataclasses import dataclass
from typing import Any

import trio

from troc.errors import LocalProtocolError

__all__ = ["DEFAULT_WEB", "WebServer", "parse_web_addr", "serve_web"]

logger = logging.getLogger("troc.web")

DEFAULT_WEB = "127.0.0.1:8787"
#: A busy port: this many following ports are tried before giving up.
PORT_TRIES = 10
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def parse_web_addr(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8787`` for IPv6; ``:PORT`` or ``PORT`` for loopback)."""
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host.strip("[]") or "127.0.0.1"
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise LocalProtocolError(
            f"bad web address {text!r}: expected HOST:PORT, e.g. {DEFAULT_WEB}"
        )
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


@dataclass
class WebServer:
    """A running web app: where it answers, and its sessions."""

    host: str
    port: int
    auth: Any  # troc.web.auth.WebAuth

    @property
    def base_url(self) -> str:
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        shown = "[::1]" if self.host == "::" else shown
        if ":" in shown and not shown.startswith("["):
            shown = f"[{shown}]"
        return f"http://{shown}:{self.port}"

    def login_url(self) -> str:
        """A URL with a new one-time login token."""
        return f"{self.base_url}/login?token={self.auth.mint_login()}"

    def login_op(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"url": self.login_url(), "base_url": self.base_url}


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` or the next free port (``port`` 0: any)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    last: OSError | None = None
    for candidate in range(port, port + (PORT_TRIES if port else 1)):
        if candidate > 65535:
            break
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, candidate))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            last = exc
            if exc.errno != errno.EADDRINUSE:
                break
            continue
        if candidate != port:
            logger.warning("web: port %d is busy, serving on %d instead", port, candidate)
        return sock
    raise last or OSError(errno.EADDRINUSE, "no free port")


def hypercorn_config(sock: socket.socket) -> Any:
    """hypercorn's configuration for serving on the listening socket ``sock`` (taken over)."""
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = logger
    config.graceful_timeout = 0.5
    return config


async def serve_web(
    node: Any,
    host: str,
    port: int,
    *,
    auth: Any = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the web app of ``node`` until cancelled; ``task_status.started``
    gets the :class:`WebServer`, or None if it could not listen (the node
    goes on without its web app: that is logged). ``auth``: the sessions to
    keep (a :class:`~troc.web.auth.WebAuth`; default: new ones)."""
    from hypercorn.trio import serve

    from troc.web.adapter import NodeDoor
    from troc.web.app import create_app
    from troc.web.auth import WebAuth, allowed_hosts

    try:
        sock = _bind(host, port)
    except OSError as exc:
        logger.warning(
            "web: cannot listen on %s:%d (%s): the node runs without its web app",
            host,
            port,
            exc.strerror or exc,
        )
        task_status.started(None)
        return
    bound_port = sock.getsockname()[1]
    if not is_loopback(host):
        logger.warning(
            "web: serving on %s:%d, beyond this computer: anyone holding a login link can act"
            " as you, so keep the links secret",
            host,
            bound_port,
        )
    server = WebServer(host, bound_port, auth or WebAuth())
    app = create_app(NodeDoor(node), server.auth, allowed_hosts(host, bound_port))
    config = hypercorn_config(sock)
    node.extra_ops["web.login"] = server.login_op
    task_status.started(server)
    try:
        await serve(app, config, mode="asgi")
    finally:
        node.extra_ops.pop("web.login", None)
