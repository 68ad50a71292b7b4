"""Dead links: ping every connected peer, and close a connection that stops answering.

Why: a link that silently drops packets (a partition, a NAT or firewall that
forgot the mapping, a laptop that slept) leaves TCP connections that look
alive. Nothing is written on an idle one, so nothing fails; what is written
waits for the kernel's retransmission timer, which backs off with the cut's
length. Measured with three nodes in network namespaces, one cut off by
dropping its packets: after the heal the nodes agreed in ~2-3 s after a 20 s
cut, ~18 s after 30 s, ~45 s after 60 s, and the kernel gives such a
connection up only after ~15 minutes. Meanwhile ``troc peers`` listed every
connection as alive and nothing was redialled.

So each connected peer is pinged (libp2p's ``/ipfs/ping/1.0.0``, which every
py-libp2p host answers) every ``interval`` seconds; ``misses`` pings in a row
unanswered within ``timeout`` mark the peer unresponsive and then dead: its
connection is closed and it joins :attr:`Liveness.lost`, whose addresses the
node redials often for a while (:meth:`Liveness.recently_lost`). After a
heal the next redial gets through and the new connection syncs at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import trio

from troc.net.p2p import DialError, P2PHost

__all__ = ["Liveness", "LostPeer", "PeerHealth"]

logger = logging.getLogger(__name__)

#: Every connected peer is pinged this often (seconds) ...
PING_INTERVAL = 4.0
#: ... must answer within this ...
PING_TIMEOUT = 4.0
#: ... and is given up after this many unanswered pings in a row.
PING_MISSES = 2
#: Peers pinged in one round, at most (those pinged longest ago first): a
#: community server with hundreds of members would otherwise open a stream
#: (and negotiate its protocol) to every one of them every few seconds:
#: 100 members cost a server 25 pings/s, a constant load that, on a busy
#: machine, delayed the answers past PING_TIMEOUT, and the closes and
#: redials that followed cost more still (bench/relay.py). With more peers
#: than this, each is pinged less often and a dead one is found later
#: (at 100 peers: every ~10 s instead of every 4 s).
MAX_PINGS_PER_ROUND = 40
#: A peer lost less than this long ago is redialled every few seconds
#: (troc.node.peers.REDIAL_RECENT); after that, with the usual backoff.
RECENT = 600.0
#: Lost peers remembered (for ``troc peers`` and redials), at most; the oldest go first.
MAX_LOST = 256
#: Addresses kept per lost peer.
MAX_ADDRS = 4


@dataclass(slots=True)
class PeerHealth:
    """What the pings say of one connected peer (times are trio's clock)."""

    since: float
    pinged: float = float("-inf")
    rtt_ms: float | None = None
    last_ok: float | None = None
    misses: int = 0
    addrs: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LostPeer:
    since: float
    addrs: tuple[str, ...]
    why: str


class Liveness:
    """Pings the host's connected peers; closes the connections of dead ones.

    Run :meth:`run` in a nursery for as long as the host runs.
    """

    def __init__(
        self,
        host: P2PHost,
        *,
        interval: float = PING_INTERVAL,
        timeout: float = PING_TIMEOUT,
        misses: int = PING_MISSES,
        max_pings: int = MAX_PINGS_PER_ROUND,
    ) -> None:
        self.host = host
        self.interval = interval
        self.timeout = timeout
        self.misses = misses
        self.max_pings = max_pings
        self.health: dict[str, PeerHealth] = {}
        self.lost: dict[str, LostPeer] = {}

    async def run(self) -> None:
        while True:
            await trio.sleep(self.interval)
            await self.check()

    async def check(self) -> None:
        """One round: the ``max_pings`` connected peers pinged longest ago (all
        of them, usually) pinged at once (bounded by ``timeout``)."""
        connected = self.update()
        due = sorted(connected, key=lambda p: self.health[p].pinged)[: self.max_pings]
        now = trio.current_time()
        async with trio.open_nursery() as nursery:
            for peer in due:
                self.health[peer].pinged = now
                nursery.start_soon(self._probe, peer)

    def update(self) -> list[str]:
        """Note who connected and who went away since last time; returns the connected."""
        now = trio.current_time()
        connected = self.host.connected_peers()
        for peer in connected:
            if peer not in self.health:
                self.health[peer] = PeerHealth(now, addrs=self.host.peer_addrs(peer)[:MAX_ADDRS])
                self.lost.pop(peer, None)
        for peer in set(self.health) - set(connected):
            self._lose(peer, "disconnected")
        return connected

    def _lose(self, peer: str, why: str) -> None:
        health = self.health.pop(peer, None)
        addrs = tuple(health.addrs) if health is not None else ()
        self.lost.pop(peer, None)
        self.lost[peer] = LostPeer(trio.current_time(), addrs, why)
        while len(self.lost) > MAX_LOST:
            del self.lost[next(iter(self.lost))]

    async def _probe(self, peer: str) -> None:
        health = self.health.get(peer)
        if health is None:
            return
        try:
            rtt = await self.host.ping(peer, within=self.timeout)
        except DialError as exc:
            health.misses += 1
            logger.info("peer %s missed a ping (%d in a row): %s", peer, health.misses, exc)
            if health.misses >= self.misses:
                await self._close_dead(peer, health)
            return
        health.rtt_ms = rtt * 1000
        health.last_ok = trio.current_time()
        health.misses = 0

    async def _close_dead(self, peer: str, health: PeerHealth) -> None:
        silent = trio.current_time() - (health.last_ok or health.since)
        logger.warning("peer %s is unreachable (no answer for %.0f s): closing", peer, silent)
        self._lose(peer, f"no answer to {health.misses} pings")
        with trio.move_on_after(self.timeout):  # the link is dead: never wait on it long
            try:
                await self.host.disconnect(peer, abort=True)
            except Exception:  # closing a dead connection may fail in many ways
                logger.debug("closing the connection to %s failed", peer, exc_info=True)

    def recently_lost(self) -> dict[str, tuple[str, ...]]:
        """Peers lost less than RECENT seconds ago, with the addresses they had."""
        now = trio.current_time()
        return {p: lost.addrs for p, lost in self.lost.items() if now - lost.since < RECENT}

    def describe(self) -> list[dict[str, Any]]:
        """Every connected peer and every lost one, for ``troc peers``."""
        now = trio.current_time()
        out: list[dict[str, Any]] = []
        for peer in sorted(self.host.connected_peers()):
            health = self.health.get(peer)
            state = "alive"
            if health is not None and health.misses:
                state = "unresponsive"
            out.append(
                {
                    "peer_id": peer,
                    "state": state,
                    "addrs": self.host.peer_addrs(peer),
                    "rtt_ms": None if health is None else _round(health.rtt_ms),
                    "last_answer_s": None
                    if health is None or health.last_ok is None
                    else round(now - health.last_ok, 1),
                }
            )
        connected = {p["peer_id"] for p in out}
        for peer, lost in sorted(self.lost.items()):
            if peer in connected:  # back already (noted at the next round)
                continue
            out.append(
                {
                    "peer_id": peer,
                    "state": "dead",
                    "addrs": list(lost.addrs),
                    "lost_s": round(now - lost.since, 1),
                    "why": lost.why,
                }
            )
        return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
