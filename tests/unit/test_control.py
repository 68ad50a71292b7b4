"""Both ends of the control socket (troc.node.control) in one process: the
server of a running node and the client the CLI uses."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from troc.cli.failures import EXIT_REFUSED, Failure
from troc.cli.home import call_if_running
from troc.errors import RefusedError
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
