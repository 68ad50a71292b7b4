"""A ping over a link that stalled ends, and liveness goes on pinging.

py-libp2p 0.8.1 resets a stream that failed to open in a shielded scope
with no deadline; on a link that stalled (a write blocked in the kernel,
holding the connection's write lock) that reset waited for as long as the
link stayed up, and so did :meth:`P2PHost.ping`: a liveness round never
ended, no peer was pinged again and the dead link was never closed.
``P2PHost._new_stream`` closes the link's TCP connections once the call
outlives its deadline by ``STALLED_CLEANUP`` seconds. Real hosts on
127.0.0.1, the link through tests/network/test_witness_stalled_link.py's
relay that, once frozen, neither reads nor closes.
"""

from __future__ import annotations

import pytest
import trio
from libp2p.peer.id import ID

from tests.network.test_witness_stalled_link import StallingLink
from troc.net.liveness import Liveness
from troc.net.p2p import PING_PROTOCOL, STALLED_CLEANUP, DialError, open_host

pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)

PING_WITHIN = 1.0


async def test_a_ping_over_a_stalled_link_ends_and_the_link_is_closed() -> None:
    async with open_host(gossip=None) as a, open_host(gossip=None) as b, trio.open_nursery() as n:
        port = int(b.listen_addrs()[0].split("/tcp/")[1].split("/")[0])
        link = StallingLink(port)
        relay_port = await n.start(link.serve)
        await a.connect(f"/ip4/127.0.0.1/tcp/{relay_port}/p2p/{b.peer_id}")
        await a.ping(b.peer_id, within=PING_WITHIN)  # the link works
        bulk = await a.libp2p.new_stream(ID.from_base58(b.peer_id), [PING_PROTOCOL])
        link.frozen.set()

        async def back_up() -> None:
            # Once the ping below is in its negotiation: a write that
            # blocks on the stalled link, the write lock held.
            await trio.sleep(PING_WITHIN / 3)
            try:
                await bulk.write(b"x" * 200_000)
            except Exception:  # the link closed under it
                pass

        n.start_soon(back_up)
        bound = PING_WITHIN + STALLED_CLEANUP + 5
        freed: list[float] = []

        async def watchdog() -> None:
            # A shielded wait ignores fail_after: after the bound, cutting
            # the link is what frees it, and the test then fails.
            await trio.sleep(bound)
            freed.append(trio.current_time())
            link.cut()

        n.start_soon(watchdog)
        liveness = Liveness(a, timeout=PING_WITHIN)
        try:
            with pytest.raises(DialError):
                await a.ping(b.peer_id, within=PING_WITHIN)
            assert not freed, "the ping waited on the stalled link until the test cut it"
            # A liveness round ends too: it does not wait on that link.
            await liveness.check()
            assert not freed, "the liveness round waited until the test cut the link"
            # And the stalled link is closed.
            with trio.fail_after(bound):
                while b.peer_id in a.connected_peers():  # noqa: ASYNC110
                    await trio.sleep(0.05)
            assert not freed
        finally:
            link.cut()
        n.cancel_scope.cancel()
