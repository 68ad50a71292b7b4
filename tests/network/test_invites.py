"""Server-issued invitation codes over real libp2p hosts on 127.0.0.1 (in one
process): a server that follows a community issues a code, a fresh node joins
with it and the server sees the join; expired, used-up, unknown and revoked
codes, an unreachable server and a brute-force attempt each get their own
explicit error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from troc.crypto.sign import SigningKey
from troc.errors import NetworkError
from troc.net.p2p import open_host
from troc.node import invites, ops
from troc.node.invites import CodeRefused, InviteBook, Throttle, format_code
from troc.node.local import now_ms, open_local_node
from troc.node.node import Node, NodeConfig, open_node
from troc.protocol.entry import CommunityId, Kind


def config(home: Path) -> NodeConfig:
    return NodeConfig(
        home=home, sync_interval=0.5, control_socket=False, remember_peers=False, mdns=False
    )


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        with open_local_node(tmp / "founder", SigningKey.generate()) as f:
            self.community: CommunityId = f.create_community("Valley LETS", "hours", 20)
            self.vouch_community = f.create_community("Closed", "seeds", 5, admission="vouch")
            geneses = [f.community(c).genesis for c in (self.community, self.vouch_community)]
        self.server_key = SigningKey.generate()
        with open_local_node(tmp / "server", self.server_key) as s:
            for g in geneses:  # a server follows communities; it is no member
                s.ingest(g)

    @asynccontextmanager
    async def server(self, throttle: Throttle | None = None) -> AsyncIterator[Node]:
        async with open_node(config(self.tmp / "server"), self.server_key) as node:
            invites.attach(node, throttle or Throttle(per_peer=50, per_ip=500))
            yield node

    async def code(self, server: Node, **params: Any) -> str:
        params.setdefault("community", ops.cid(self.community))
        made = await server.run_op("invite.create", params)
        return str(made["code"])


async def eventually(check: Any, seconds: float = 15.0) -> None:
    with trio.fail_after(seconds):
        while not check():  # noqa: ASYNC110 - polls node state
            await trio.sleep(0.05)


async def refusal(node: Node, code: str) -> str:
    with pytest.raises(CodeRefused) as exc:
        await node.run_op("community.join", {"invitation": code})
    return exc.value.reason


async def test_a_fresh_node_joins_with_a_code_and_the_server_sees_it(tmp_path: Path) -> None:
    w = World(tmp_path)
    c = w.community
    key = SigningKey.generate()
    async with w.server() as server:
        code = await w.code(server, uses=1, label="for ada")
        assert code.startswith("troc-code:/ip4/127.0.0.1/")
        async with open_node(config(tmp_path / "ada"), key) as ada:
            result = await ada.run_op("community.join", {"invitation": code})
            assert result["community"] == ops.cid(c)
            assert result["addrs"][0] in code  # the server, to remember for the next run
            assert ada.local.store.genesis(c) is not None
            own = ada.local.history(c, key.public)
            assert [e.kind for e in own] == [Kind.JOIN]
            await eventually(lambda: server.local.balance(c, key.public).joined)
            assert ops.run_op(ada.local, "community.policy", {})["name"] == "Valley LETS"
        listed = await server.run_op("invite.list", {"all": True})
        assert [(x["label"], x["state"], x["redeemed"]) for x in listed["codes"]] == [
            ("for ada", "used_up", 1)
        ]
        assert server.invite_service.redeemed == 1  # type: ignore[attr-defined]
        # Used up: the next newcomer is told so, and joins nothing.
        async with open_node(config(tmp_path / "bruno"), SigningKey.generate()) as bruno:
            assert await refusal(bruno, code) == "used_up"
            assert bruno.local.communities() == []


async def test_expired_unknown_revoked_and_vouch_codes(tmp_path: Path) -> None:
    w = World(tmp_path)
    async with (
        w.server() as server,
        open_node(config(tmp_path / "bruno"), SigningKey.generate()) as bruno,
    ):
        addr = server.addrs()[0]
        book = InviteBook(tmp_path / "server" / invites.INVITES_FILE, lambda: now_ms() - 60_000)
        secret, _ = book.create(w.community, expires_s=30)  # expired 30 s ago
        assert await refusal(bruno, format_code(addr, secret)) == "expired"
        assert await refusal(bruno, format_code(addr, b"\x07" * 10)) == "unknown"
        code = await w.code(server, uses=5)
        await server.run_op("invite.revoke", {"code": code})
        assert await refusal(bruno, code) == "revoked"
        secret, _ = book.create(w.vouch_community, expires_s=3600)  # made behind its back
        assert await refusal(bruno, format_code(addr, secret)) == "needs_vouch"
        assert bruno.local.communities() == []


async def test_an_unreachable_server_or_one_without_codes(tmp_path: Path) -> None:
    w = World(tmp_path)
    async with open_node(config(tmp_path / "bruno"), SigningKey.generate()) as bruno:
        async with w.server() as server:
            code = await w.code(server)
            peer = server.peer_id
        # The server is gone: its address refuses connections.
        with pytest.raises(NetworkError, match="cannot reach the server"):
            await bruno.run_op("community.join", {"invitation": code})
        # A node that speaks troc but issues no codes.
        async with open_node(config(tmp_path / "other"), SigningKey.generate()) as other:
            stray = format_code(other.addrs()[0], b"\x01" * 10)
            assert await refusal(bruno, stray) == "no_invites"
        assert peer not in bruno.host.connected_peers()


async def test_brute_force_is_throttled(tmp_path: Path) -> None:
    w = World(tmp_path)
    async with w.server(Throttle(per_peer=3, per_ip=100)) as server, open_host() as guesser:
        addr = server.addrs()[0]
        reasons = []
        for i in range(5):
            with pytest.raises(CodeRefused) as exc:
                await invites.redeem(guesser, format_code(addr, bytes([i]) * 10))
            reasons.append(exc.value.reason)
        assert reasons == ["unknown"] * 3 + ["throttled"] * 2
        # Even the right code waits: a throttled attempt is not looked at.
        code = await w.code(server)
        with pytest.raises(CodeRefused, match=r"wait 6[01] s") as exc:
            await invites.redeem(guesser, code)
        assert exc.value.reason == "throttled"
        # Another peer is not held up by the guesser.
        async with open_host() as honest:
            assert (await invites.redeem(honest, code)).policy["name"] == "Valley LETS"


async def test_an_offline_node_joins_with_a_code(tmp_path: Path) -> None:
    """No node runs for the newcomer (the CLI's offline path): a throwaway
    host redeems the code, then the join is signed on the store directly."""
    w = World(tmp_path)
    key = SigningKey.generate()
    async with w.server() as server:
        code = await w.code(server, uses=2)

        def join_offline() -> dict[str, Any]:
            with open_local_node(tmp_path / "carla", key) as local:
                return ops.run_op(local, "community.join", {"invitation": code})

        result = await trio.to_thread.run_sync(join_offline)
        assert result["community"] == ops.cid(w.community)
        listed = await server.run_op("invite.list", {})
        assert listed["codes"][0]["uses_left"] == 1
    # Started later, the node reaches the server the code named and syncs its join.
    with open_local_node(tmp_path / "carla", key) as local:
        assert local.balance(w.community).joined


async def test_joining_again_with_a_used_up_code_by_the_same_member(tmp_path: Path) -> None:
    w = World(tmp_path)
    async with w.server() as server:
        code = await w.code(server, uses=1)
        key = SigningKey.generate()
        async with open_node(config(tmp_path / "ada"), key) as ada:
            for _ in range(2):  # the second join (idempotent) consumes nothing
                result = await ada.run_op("community.join", {"invitation": code})
                assert result["community"] == ops.cid(w.community)
        listed = await server.run_op("invite.list", {"all": True})
        assert [(x["state"], x["redeemed"]) for x in listed["codes"]] == [("used_up", 1)]
        async with open_node(config(tmp_path / "bruno"), SigningKey.generate()) as bruno:
            assert await refusal(bruno, code) == "used_up"
