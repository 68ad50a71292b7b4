"""Fixtures of the web app tests: an in-process node with its app, and an
HTTP client logged in to it (httpx over the ASGI app, no socket)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from troc.crypto.sign import SigningKey
from troc.node.local import open_local_node
from troc.node.node import Node, NodeConfig, open_node
from troc.node.ops import mid
from troc.protocol.entry import CommunityId
from troc.web.adapter import NodeDoor
from troc.web.app import create_app
from troc.web.auth import WebAuth, allowed_hosts

BASE = "http://127.0.0.1:8787"


@dataclass
class WebNode:
    node: Node
    auth: WebAuth
    app: Any
    client: httpx.AsyncClient
    community: CommunityId
    other: SigningKey  # a second member (joined offline, no node running)
    me: SigningKey
    home: Path  # tmp_path: a's home is home / "a", b's home / "b"

    @property
    def other_id(self) -> str:
        return mid(self.other.public)

    @property
    def my_id(self) -> str:
        return mid(self.me.public)

    def as_b(self) -> Any:
        """b's LocalNode (``with``), holding a's log as sync would have brought it."""
        b = open_local_node(self.home / "b", self.other)
        local = b.__enter__()
        copy_log(self.node.local, local, self.community)
        return _Closing(b, local)

    def from_b(self, b_local: Any) -> int:
        """Bring b's log to a's running node (as sync would)."""
        return copy_log(b_local, self.node.local, self.community)

    async def login(self, client: httpx.AsyncClient | None = None) -> str:
        """Log ``client`` (default: ours) in; returns the session's CSRF token."""
        client = client or self.client
        r = await client.get(f"/login?token={self.auth.mint_login()}")
        assert r.status_code == 303, r.text
        page = await client.get("/")
        found = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert found is not None
        return found.group(1)


class _Closing:
    def __init__(self, cm: Any, value: Any) -> None:
        self.cm, self.value = cm, value

    def __enter__(self) -> Any:
        return self.value

    def __exit__(self, *exc: Any) -> None:
        self.cm.__exit__(*exc)


def client_of(app: Any, **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE, **kw)


@pytest.fixture
async def web(tmp_path: Path) -> AsyncIterator[WebNode]:
    """Member ``a``, founder of a community (unit "h", credit limit 10), with
    its node and web app running; member ``b`` joined it (no node running:
    its join was copied into a's store)."""
    async with web_node(tmp_path) as made:
        yield made


@asynccontextmanager
async def web_node(tmp_path: Path, **config: Any) -> AsyncIterator[WebNode]:
    ka, kb = SigningKey.generate(), SigningKey.generate()
    with open_local_node(tmp_path / "a", ka) as a:
        community = a.create_community("Test", "h", 10, member_name="Ana")
        genesis = a.community(community).genesis
    with open_local_node(tmp_path / "b", kb) as b:
        b.join(genesis, name="Bruno")
        b_log = [e.wire for e in reversed(b.history(community))]
    with open_local_node(tmp_path / "a", ka) as a:
        for wire in b_log:
            assert a.ingest(wire).ok
    config = {"sync_interval": 600, "control_socket": False, **config}
    async with open_node(NodeConfig(home=tmp_path / "a", **config), ka) as node:
        auth = WebAuth()
        app = create_app(NodeDoor(node), auth, allowed_hosts("127.0.0.1", 8787))
        async with client_of(app) as client:
            yield WebNode(node, auth, app, client, community, kb, ka, tmp_path)


def copy_log(src: Any, dst: Any, community: CommunityId) -> int:
    """Copy the own log of LocalNode ``src``'s member into LocalNode ``dst``
    (what sync would do); returns how many entries were new there."""
    wires = [
        e.wire for e in reversed(src.history(community, limit=10_000)) if e.author == src.member
    ]
    return sum(1 for w in wires if dst.ingest(w).ok)
