"""The web app's one door to the node.

Every call the app makes to a running node goes through :class:`NodeDoor`:
operations by name (the same names and parameters the CLI sends over the
control socket), live entries, and the few facts about the node's home that
are not operations (is the key encrypted). When the operation table moves,
this file is the one to change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from troc.crypto.keystore import is_encrypted
from troc.errors import LocalProtocolError
from troc.node.operations import OPERATIONS
from troc.node.ops import describe_error, mid

__all__ = ["HTTP_STATUS", "NodeDoor", "OpFailed", "http_status"]

#: Error kind (troc.node.ops.describe_error) -> HTTP status: the one table.
HTTP_STATUS: dict[str, int] = {
    "usage": 400,
    "not_found": 404,
    "refused": 409,
    "key": 423,
    "store": 503,
    "network": 502,
    "error": 500,
    "bug": 500,
    # The web app's own kinds (docs/http-api.md).
    "auth": 401,
    "forbidden": 403,
}


def http_status(kind: str) -> int:
    return HTTP_STATUS.get(kind, 500)


class OpFailed(Exception):
    """An operation failed; ``error`` is the error document (as ``--json``)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", ""))
        self.error = error

    @property
    def status(self) -> int:
        return http_status(str(self.error.get("kind")))


class NodeDoor:
    """Operations and live entries of one running :class:`troc.node.node.Node`."""

    def __init__(self, node: Any) -> None:
        self.node = node

    @property
    def home(self) -> Any:
        return self.node.config.home

    @property
    def member(self) -> str:
        return mid(self.node.member)

    def operations(self) -> list[str]:
        return sorted(OPERATIONS)

    def is_operation(self, name: str) -> bool:
        return name in OPERATIONS

    def signs(self, name: str, params: dict[str, Any]) -> bool:
        """Whether ``name`` with ``params`` signs an entry (it needs the member key)."""
        return OPERATIONS[name].needs_key(params)

    async def call(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run operation ``name``; raises :class:`OpFailed` with the error document."""
        if not self.is_operation(name):
            raise OpFailed(describe_error(LocalProtocolError(f"unknown operation {name!r}")))
        try:
            result: dict[str, Any] = await self.node.run_op(name, dict(params))
            return result
        except trio.Cancelled:
            raise
        except Exception as exc:
            raise OpFailed(describe_error(exc)) from None

    async def try_call(self, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """``call``, or None if it failed (for screens that show what they can)."""
        try:
            return await self.call(name, params)
        except OpFailed:
            return None

    @asynccontextmanager
    async def entries(self) -> AsyncIterator[trio.MemoryReceiveChannel[Any]]:
        """Entries as the node stores them (own and others')."""
        async with self.node.subscribe(size=256) as channel:
            yield channel

    def key_facts(self) -> dict[str, Any]:
        """Whether the member key file is encrypted (the key itself stays in the node)."""
        path = self.home / "key"
        return {"encrypted": path.exists() and is_encrypted(path), "path": str(path)}
