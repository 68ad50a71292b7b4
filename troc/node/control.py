"""The control socket: how the ``troc`` command talks to the running node.

Both ends are here. The node serves a Unix socket, ``control.sock`` in its
home (owner-only: created under umask 0177); a home too long for AF_UNIX is
reached through ``/proc/self/fd`` (:func:`troc.node.homefiles.socket_address`).
One request per connection, one JSON line each way::

    -> {"op": "pay", "params": {"to": "m…", "amount": 3}}
    <- {"ok": true, "result": {"transfer": "e…"}}
    <- {"ok": false, "error": {"kind": "refused", "reason": "overdraft", "message": "…"}}

``op`` and ``params`` are those of the operation table
(:mod:`troc.node.operations`); ``error`` is
:func:`troc.node.opdata.describe_error`'s description, which the CLI maps to
an exit code (:mod:`troc.cli.failures`).

The client (:func:`request`) is plain blocking stdlib code, and this module
imports neither trio nor the store at the top: every CLI command that finds
a node running goes through it, and must stay quick.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from troc.errors import NetworkError, TrocError
from troc.node.homefiles import socket_address

__all__ = [
    "CONTROL_SOCKET",
    "MAX_CONTROL_REQUEST",
    "OperationFailed",
    "request",
    "serve_control",
    "socket_path",
]

logger = logging.getLogger("troc.node")

#: The socket's name in the home.
CONTROL_SOCKET = "control.sock"
#: The node reads at most this much per request.
MAX_CONTROL_REQUEST = 1024 * 1024
#: The node waits this long for a whole request.
REQUEST_TIMEOUT = 30.0
#: The client waits this long for the answer (a payment may wait for its payee's join).
ANSWER_TIMEOUT = 60.0
#: Connections the node holds before it accepts them. Each request is a
#: connection, and a busy node (a shop's tills, a web app, bench/finality.py's
#: clients) may be asked by dozens at once while its loop writes a group
#: commit; a full queue refuses the next client at once (EAGAIN). The
#: system's cap (net.core.somaxconn) bounds it further.
CONTROL_BACKLOG = socket.SOMAXCONN
#: The client retries a connection refused by a full queue this long.
CONNECT_TIMEOUT = 10.0


class OperationFailed(TrocError):
    """The running node answered with an error; ``error`` is its description
    (``kind``, ``reason``, ``message``: troc.node.opdata.describe_error)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(str(error.get("message", "")))
        self.error = error


def socket_path(home: Path) -> Path:
    return home / CONTROL_SOCKET


# -- the client (the CLI) ----------------------------------------------------------


def request(home: Path, op: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """Run ``op`` on the node running in ``home``; None if no node answers there.

    Raises OperationFailed (the node refused or failed), NetworkError (the
    node stopped before it answered: it may or may not have done it).
    """
    sock = _connect(home, op)
    if sock is None:
        return None
    data = b""
    with sock:
        try:
            sock.sendall(json.dumps({"op": op, "params": params}).encode() + b"\n")
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:  # reset, or no answer within the timeout
            data = b""
    try:
        reply = json.loads(data)
    except ValueError:
        # The node stopped (or was killed) while it worked on the request: what
        # it had signed before that is stored, so the member must look, not retry.
        raise NetworkError(
            f"the node stopped before it answered {op!r}: it may or may not have been done; "
            "check with `troc history` or `troc pending` before trying again"
        ) from None
    if reply.get("ok"):
        return dict(reply["result"])
    raise OperationFailed(dict(reply["error"]))


def _connect(home: Path, op: str) -> socket.socket | None:
    """A connection to the node running in ``home``; None if none runs there.
    While the node's queue of connections is full (it is busy), tries again
    for CONNECT_TIMEOUT, then raises NetworkError (nothing was asked)."""
    deadline = time.monotonic() + CONNECT_TIMEOUT
    pause = 0.001
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(ANSWER_TIMEOUT)  # (so connect does not block: a full queue says EAGAIN)
        try:
            with socket_address(socket_path(home)) as address:  # a home of any length
                sock.connect(address)
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            return None
        except BlockingIOError:  # the node's queue is full: it is busy, not gone
            sock.close()
        if time.monotonic() + pause > deadline:
            raise NetworkError(f"the node is too busy to take {op!r} (it was not asked): try again")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


# -- the server (the node) ---------------------------------------------------------

RunOp = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


async def serve_control(home: Path, run_op: RunOp, task_status: Any = None) -> None:
    """Answer requests on ``home``'s control socket with ``run_op`` until
    cancelled; the socket file is removed on the way out. For
    ``nursery.start``: started once the socket listens."""
    # Imported here, not at the top: the CLI imports this module for the
    # client, and trio (0.1 s) and the store have no business on that path.
    import trio

    from troc.node.opdata import describe_error

    path = socket_path(home)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket file is created owner-only
    try:
        with socket_address(path) as address:  # a long home fits too
            await sock.bind(address)
    finally:
        os.umask(old_umask)
    sock.listen(CONTROL_BACKLOG)
    listener = trio.SocketListener(sock)
    if task_status is not None:
        task_status.started()

    async def answer(stream: trio.SocketStream) -> None:
        """One request on ``stream``, one answer."""
        async with stream:
            data = b""
            with trio.move_on_after(REQUEST_TIMEOUT):
                while not data.endswith(b"\n") and len(data) < MAX_CONTROL_REQUEST:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    data += chunk
            try:
                asked = json.loads(data)
                result = await run_op(str(asked["op"]), dict(asked.get("params", {})))
                reply: dict[str, Any] = {"ok": True, "result": result}
            except Exception as exc:
                reply = {"ok": False, "error": describe_error(exc)}
                if reply["error"]["kind"] == "bug":
                    logger.exception("control request failed")
            try:
                await stream.send_all(json.dumps(reply).encode() + b"\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    try:
        await trio.serve_listeners(answer, [listener])
    finally:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
