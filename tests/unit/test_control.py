"""Both ends of the control socket (troc.node.control) in one process: the
server of a running node and the client the CLI uses."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from troc.cli.failures import EXIT_REFUSED, Failure
from troc.cli.home import call_if_running
from troc.errors import NetworkError, RefusedError
from troc.node import control


async def _run_op(name: str, params: dict[str, Any]) -> dict[str, Any]:
    if name == "echo":
        return {"echo": params}
    raise RefusedError("overdraft", "that would take ada below her credit limit")


async def test_a_request_and_its_answer_or_its_error(tmp_path: Path) -> None:
    home = tmp_path / "ada"
    home.mkdir()
    # No node: no answer, and no error (the CLI then opens the store itself).
    assert await trio.to_thread.run_sync(control.request, home, "echo", {}) is None
    async with trio.open_nursery() as nursery:
        await nursery.start(control.serve_control, home, _run_op)
        sock = home / control.CONTROL_SOCKET
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600  # owner-only
        reply = await trio.to_thread.run_sync(control.request, home, "echo", {"a": 1})
        assert reply == {"echo": {"a": 1}}
        with pytest.raises(control.OperationFailed) as failed:
            await trio.to_thread.run_sync(control.request, home, "pay", {})
        assert failed.value.error["kind"] == "refused"
        assert failed.value.error["reason"] == "overdraft"
        # The CLI's end: the node's description becomes the exit code.
        with pytest.raises(Failure) as cli_failure:
            await trio.to_thread.run_sync(call_if_running, home, "pay", {})
        assert cli_failure.value.code == EXIT_REFUSED
        assert "credit limit" in str(cli_failure.value)
        nursery.cancel_scope.cancel()
    assert not sock.exists()  # removed on the way out


async def test_many_clients_at_once_are_queued_not_refused(tmp_path: Path) -> None:
    """A busy node is asked by many clients at once (a shop's tills, a web
    app): each connection waits in the socket's queue until the node's loop
    comes round to accept it. The queue held 16, and the 18th client was
    refused at once (EAGAIN, bench/finality.py --clients 32)."""
    home = tmp_path / "ada"
    home.mkdir()
    async with trio.open_nursery() as nursery:
        await nursery.start(control.serve_control, home, _run_op)
        clients = []
        try:
            # No checkpoint in this loop: the node accepts none of them meanwhile.
            for _ in range(64):
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                clients.append(client)
                client.settimeout(5)  # as the CLI's client: connect does not block
                client.connect(str(home / control.CONTROL_SOCKET))
        finally:
            for client in clients:
                client.close()
        nursery.cancel_scope.cancel()


def test_a_client_waits_while_the_queue_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full queue (the node is busy) is not an error for the client: it
    tries again until the node takes it, and after CONNECT_TIMEOUT says the
    node is busy (a TrocError: nothing was asked), not BlockingIOError."""
    home = tmp_path / "ada"
    home.mkdir()
    path = str(home / control.CONTROL_SOCKET)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(0)
        fillers = []
        for _ in range(8):  # until the queue is full
            filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            filler.settimeout(1)
            try:
                filler.connect(path)
            except BlockingIOError:
                filler.close()
                break
            fillers.append(filler)
        else:
            pytest.fail("the queue never filled")

        monkeypatch.setattr(control, "CONNECT_TIMEOUT", 0.1)
        with pytest.raises(NetworkError, match="too busy"):
            control.request(home, "echo", {})

        monkeypatch.setattr(control, "CONNECT_TIMEOUT", 10.0)
        outcome: list[object] = []
        asking = threading.Thread(
            target=lambda: outcome.append(control.request(home, "echo", {"a": 1}))
        )
        asking.start()
        time.sleep(0.2)  # it finds the queue full, and tries again
        assert not outcome
        listener.settimeout(5)
        for filler in fillers:  # the node comes round: the queue empties
            filler.close()
            listener.accept()[0].close()
        conn = listener.accept()[0]
        with conn:
            conn.settimeout(5)
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                assert chunk, "the client hung up"
                data += chunk
            assert json.loads(data) == {"op": "echo", "params": {"a": 1}}
            conn.sendall(b'{"ok": true, "result": {"echo": {"a": 1}}}\n')
        asking.join(timeout=10)
    assert outcome == [{"echo": {"a": 1}}]
