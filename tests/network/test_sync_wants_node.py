"""A peer that asks a real node for more than a session allows
(docs/sync.md, "Limits on wants"): past MAX_WANT_ROUNDS wants the node
resets the stream and bans the peer, having answered the first ones, and
goes on syncing with honest peers. Real libp2p hosts on 127.0.0.1, the
victim and its honest peer from tests/network/test_hostile.py."""

from __future__ import annotations

import os
from pathlib import Path

from tests.network.test_hostile import (
    CUT_WAIT,
    NO_HEADS,
    frame,
    hello,
    kinds,
    open_net,
    read_until_cut,
    reset,
    until,
)
from troc.net.p2p import FrameReader
from troc.protocol.sync_wire import MAX_FRAME, MAX_WANT_ROUNDS, MAX_WANTS, decode_message
from troc.protocol.sync_wire import PROTOCOL_ID as SYNC


async def test_too_many_wants_in_a_session_are_cut_off_and_banned(tmp_path: Path) -> None:
    async with open_net(tmp_path) as net, net.attacker() as x:
        author = net.b.local.member
        want = frame(
            {"t": "want", "r": [[author, 1 + i, os.urandom(32)] for i in range(MAX_WANTS)]}
        )
        stream = await x.open_stream(net.a.peer_id, SYNC)
        try:
            await stream.write(hello(net.community))
            reader = FrameReader(stream, max_size=MAX_FRAME, frame_timeout=CUT_WAIT)
            assert decode_message(await reader.read_frame())["t"] == "heads"
            await stream.write(NO_HEADS + want * (MAX_WANT_ROUNDS + 1))
            got = await read_until_cut(stream, reader=reader)
        finally:
            await reset(stream)
        replies = [m for m in got if m["t"] == "entries" and m.get("r")]
        assert len(replies) == MAX_WANT_ROUNDS  # answered (nothing held), then cut
        assert all(m["e"] == [] for m in replies)
        assert "end" in kinds(got)
        await until("X is banned", lambda: net.banned(x.peer_id))
        await net.honest_ok()
