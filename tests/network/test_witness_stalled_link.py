"""A witness behind a link that stalls cannot stop a payer's certificates
(docs/witness.md §6.3), over real libp2p hosts on 127.0.0.1 (in one process).

Four witnesses (f = 1, q = 3); the payer reaches the fourth through a relay
in the test that, once frozen, neither reads nor closes (a frozen witness,
a dead route): the payer's writes to it back up in the kernel until one
blocks with the connection's write lock held. An ask to that witness then
sits in the stream negotiation; when the other three vote, py-libp2p 0.8.1
resets the cancelled stream in a shielded scope, and that reset waits for
the write lock for as long as the link stays stalled. The certifier must
not wait for it: the next payments still become final with the other three.
And the payer, stopped while the link is still stalled, stops at once.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID

from tests.network.test_witnessed import Cluster, answer_late, pay
from troc.net.p2p import PING_PROTOCOL

#: A node stops in about CLOSING_GRACE plus the host's close; before
#: P2PHost.closing it waited for the stuck ask's deadline plus STALLED_CLEANUP.
STOP_WITHIN = 4.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]


class StallingLink:
    """A TCP relay to ``port`` that forwards both ways until :attr:`frozen`
    is set, then reads nothing more (its receive buffer is kept small, so
    a sender's writes back up soon) and closes nothing until :meth:`cut`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.frozen = trio.Event()
        self._streams: list[trio.SocketStream] = []

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.bind(("127.0.0.1", 0))
        sock.listen()
        listener = trio.SocketListener(sock)
        async with trio.open_nursery() as nursery:
            task_status.started(sock.getsockname()[1])
            for _ in range(100):  # bounded: a few connections in a test
                near = await listener.accept()
                far = await trio.open_tcp_stream("127.0.0.1", self.port)
                self._streams += [near, far]
                nursery.start_soon(self._pump, near, far)
                nursery.start_soon(self._pump, far, near)

    async def _pump(self, src: trio.SocketStream, dst: trio.SocketStream) -> None:
        try:
            while not self.frozen.is_set():
                data = None
                with trio.move_on_after(0.05):  # (a cancelled receive loses nothing)
                    data = await src.receive_some(65536)
                if data == b"":
                    return
                if data:
                    await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        await trio.sleep_forever()

    def cut(self) -> None:
        """Close every relayed socket (what frees a write stuck on the link)."""
        for s in self._streams:
            s.socket.close()


async def test_a_witness_behind_a_stalled_link_does_not_stop_certificates(
    tmp_path: Path,
) -> None:
    cl = Cluster(tmp_path)
    c = cl.community
    async with trio.open_nursery() as nursery:
        for i in range(4):
            await cl.start_witness(nursery, i)
        real = cl.addrs[3]
        port = int(real.split("/tcp/")[1].split("/")[0])
        link = StallingLink(port)
        relay_port = await nursery.start(link.serve)
        cl.addrs[3] = real.replace(f"/tcp/{port}/", f"/tcp/{relay_port}/")
        async with cl.member("a", cl.a) as a:
            far = ID.from_base58(cl.witnesses[3][0].host.peer_id)
            with trio.fail_after(10):  # connected to it, through the link
                while not a.host.libp2p.get_network().get_connections(far):  # noqa: ASYNC110
                    await trio.sleep(0.05)
            bulk = await a.host.libp2p.new_stream(far, [PING_PROTOCOL])
            for i in range(3):  # the others vote once the ask to the fourth is stuck
                answer_late(cl.witnesses[i][0], 1.5)
            link.frozen.set()

            async def back_up() -> None:
                # Once the payer's ask to the fourth is in its negotiation:
                # a write that blocks on the stalled link, the write lock held.
                await trio.sleep(0.5)
                try:
                    await bulk.write(b"x" * 200_000)
                except Exception:  # the link cut at the end
                    pass

            nursery.start_soon(back_up)
            cut_by_test: list[float] = []

            async def cut_late() -> None:
                # Frees what is stuck on the link, should the node not stop
                # by itself; the test then fails.
                await trio.sleep(60)
                cut_by_test.append(trio.current_time())
                link.cut()

            nursery.start_soon(cut_late)
            for amount in (1, 2, 3):
                result = await pay(a, c, cl.b.public, amount, wait=15)
                assert result["finality"]["final"], result
            assert a.local.balance(c).balance == -6
            # The payer stops while the link is still stalled (an ask to the
            # fourth witness stuck in py-libp2p's shielded reset): it must not
            # wait for that ask's deadline (it took 9 s), nor for the link.
            stopping = trio.current_time()
        stopped_in = trio.current_time() - stopping
        assert not cut_by_test
        assert stopped_in < STOP_WITHIN, stopped_in
        link.cut()
        nursery.cancel_scope.cancel()
