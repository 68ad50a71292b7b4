"""Per-peer quotas: what one peer may make this node do, per second.

A server shares its CPU, disk and bandwidth among every member; one peer
that floods (gossip, sync frames, witness requests) must not starve the
others. Each peer gets two token buckets, bytes and entries, refilled at
the configured rate with one second of burst. Callers *charge* what a peer
sent and get back how long it is over budget:

* gossip drops a message from a peer over budget (gossip is lossy anyway;
  sync later carries what honest peers sent);
* a sync or witness stream waits that long before reading the peer's next
  frame, so a flooding peer is slowed to its rate (back-pressure through
  the muxer's flow control) while other peers' sessions go on.

Memory is bounded: at most ``max_peers`` peers are tracked; the least
recently charged is forgotten first (a forgotten peer starts with a full
bucket, which is what a new peer gets anyway).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["PeerQuota", "TokenBucket"]


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; may go into debt."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    def take(self, amount: float, now: float) -> float:
        """Take ``amount``; return the seconds until the balance is back to 0
        (0.0 when within budget)."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= amount
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class PeerQuota:
    """Byte and entry budgets per peer (rates of 0 turn a budget off)."""

    def __init__(
        self,
        bytes_per_s: float,
        entries_per_s: float,
        *,
        max_peers: int = 10_000,
        clock: object = time.monotonic,
    ) -> None:
        self.bytes_per_s = bytes_per_s
        self.entries_per_s = entries_per_s
        self.max_peers = max_peers
        self._clock = clock
        self._peers: OrderedDict[str, tuple[TokenBucket, TokenBucket]] = OrderedDict()
        self.throttled = 0  # how many charges went over budget

    def charge(self, peer: str, *, nbytes: int = 0, entries: int = 0) -> float:
        """Charge ``peer`` for what it sent; return the seconds it is over budget."""
        now = self._clock()  # type: ignore[operator]
        buckets = self._peers.get(peer)
        if buckets is None:
            buckets = (
                TokenBucket(self.bytes_per_s, self.bytes_per_s, self.bytes_per_s, now),
                TokenBucket(self.entries_per_s, self.entries_per_s, self.entries_per_s, now),
            )
            self._peers[peer] = buckets
            while len(self._peers) > self.max_peers:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(peer)
        wait = 0.0
        if self.bytes_per_s > 0 and nbytes:
            wait = max(wait, buckets[0].take(nbytes, now))
        if self.entries_per_s > 0 and entries:
            wait = max(wait, buckets[1].take(entries, now))
        if wait > 0:
            self.throttled += 1
        return wait

    def __len__(self) -> int:
        return len(self._peers)
