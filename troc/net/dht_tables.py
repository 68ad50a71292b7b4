"""What a Kademlia node of :mod:`troc.net.dht` keeps, with no I/O: its
bounds (:class:`DHTParams`), the provider records it stores for others
(:class:`ProviderStore`, bounded per key, per provider and in all), its
:class:`RoutingTable` of k-buckets by XOR distance, and the checks on the
peer addresses records carry. :mod:`troc.net.dht` re-exports these names.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import multiaddr
from libp2p.peer.id import ID

__all__ = ["DHTParams", "ProviderStore", "RoutingTable"]

_MAX_ADDR_BYTES = 256


@dataclass(frozen=True)
class DHTParams:
    """Bounds and timings. Defaults suit a few hundred servers and communities."""

    k: int = 20  # bucket size; servers a record is stored on; peers per response
    alpha: int = 3  # RPCs in flight in one lookup
    rpc_timeout: float = 5.0  # one request and its answer, dial included
    query_timeout: float = 30.0  # one provide() or find_providers(), lookup included
    max_lookup_rpcs: int = 60  # RPCs one lookup may send
    max_concurrent_queries: int = 8  # own provide/find_providers/refresh at once
    record_ttl: float = 3 * 3600.0  # a stored provider record lives this long
    republish_interval: float = 3600.0  # a provider re-announces this often
    refresh_interval: float = 600.0  # routing-table refresh (and re-bootstrap)
    max_records: int = 10_000  # provider records stored, all keys
    max_providers_per_key: int = 20
    max_keys_per_peer: int = 64  # records one provider peer may hold here
    max_provided: int = 1024  # communities this node announces
    max_addrs: int = 8  # addresses kept per peer or provider
    max_inbound_streams: int = 32  # served at once, all peers
    max_inbound_per_peer: int = 2
    max_requests_per_stream: int = 16
    inbound_stream_seconds: float = 10.0  # life of one inbound stream
    max_request_bytes: int = 16 * 1024
    max_response_bytes: int = 256 * 1024
    max_probes_pending: int = 16  # inbound peers waiting to be probed
    probe_memory: int = 1024  # recently probed peers remembered (not re-probed)
    probe_interval: float = 600.0  # re-probe the same peer at most this often


# --- provider store -----------------------------------------------------------


class ProviderStore:
    """Provider records, bounded per key, per provider peer and in total.

    A full key or a peer at its quota refuses new records (existing ones are
    refreshed), as does a full store after expired records are dropped.
    """

    def __init__(self, params: DHTParams, clock: Callable[[], float] = time.monotonic) -> None:
        self._p = params
        self._clock = clock
        # key -> provider peer id -> (expires at, full multiaddrs)
        self._by_key: dict[bytes, dict[str, tuple[float, tuple[str, ...]]]] = {}
        self._per_peer: dict[str, int] = {}
        self._total = 0

    def __len__(self) -> int:
        return self._total

    def keys(self) -> int:
        return len(self._by_key)

    def count_for(self, peer: str) -> int:
        return self._per_peer.get(peer, 0)

    def add(self, key: bytes, peer: str, addrs: Sequence[str]) -> bool:
        """Store or refresh ``peer`` as a provider of ``key``; False if a bound refuses it."""
        if not addrs:
            return False
        now = self._clock()
        expires = now + self._p.record_ttl
        records = self._by_key.get(key)
        if records is not None and peer in records:
            records[peer] = (expires, tuple(addrs))
            return True
        if records is not None:
            self._expire_key(key, now)
            records = self._by_key.get(key)
        if records is not None and len(records) >= self._p.max_providers_per_key:
            return False
        if self._per_peer.get(peer, 0) >= self._p.max_keys_per_peer:
            return False
        if self._total >= self._p.max_records:
            self.expire()
            if self._total >= self._p.max_records:
                return False
        self._by_key.setdefault(key, {})[peer] = (expires, tuple(addrs))
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        self._total += 1
        return True

    def remove(self, key: bytes, peer: str) -> None:
        records = self._by_key.get(key)
        if records is not None and peer in records:
            del records[peer]
            self._forget(key, peer, records)

    def get(self, key: bytes) -> list[tuple[str, tuple[str, ...]]]:
        """Live providers of ``key``: (peer id, full multiaddrs)."""
        self._expire_key(key, self._clock())
        return [(peer, addrs) for peer, (_, addrs) in self._by_key.get(key, {}).items()]

    def expire(self) -> int:
        """Drop every expired record; return how many."""
        now = self._clock()
        before = self._total
        for key in list(self._by_key):
            self._expire_key(key, now)
        return before - self._total

    def _expire_key(self, key: bytes, now: float) -> None:
        records = self._by_key.get(key)
        if records is None:
            return
        for peer in [p for p, (exp, _) in records.items() if exp <= now]:
            del records[peer]
            self._forget(key, peer, records)

    def _forget(
        self, key: bytes, peer: str, records: dict[str, tuple[float, tuple[str, ...]]]
    ) -> None:
        self._total -= 1
        left = self._per_peer[peer] - 1
        if left:
            self._per_peer[peer] = left
        else:
            del self._per_peer[peer]
        if not records:
            del self._by_key[key]


# --- routing table ------------------------------------------------------------


def _kad_id(data: bytes) -> int:
    return int.from_bytes(hashlib.sha256(data).digest(), "big")


class RoutingTable:
    """k-buckets by shared prefix length with our own id: at most 257 * k peers.

    A full bucket keeps its peers and refuses newcomers (long-lived peers are
    the reliable ones, and an attacker cannot push them out); peers leave
    when a query to them fails.
    """

    def __init__(self, self_id: str, k: int) -> None:
        self._self = _kad_id(ID.from_base58(self_id).to_bytes())
        self._self_id = self_id
        self._k = k
        self._buckets: dict[int, OrderedDict[str, int]] = {}  # bucket -> peer -> kad id

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets.values())

    def __contains__(self, peer: str) -> bool:
        return any(peer in b for b in self._buckets.values())

    def peers(self) -> list[str]:
        return [p for b in self._buckets.values() for p in b]

    def add(self, peer: str) -> bool:
        if peer == self._self_id:
            return False
        kid = _kad_id(ID.from_base58(peer).to_bytes())
        index = (self._self ^ kid).bit_length()  # 0 only for our own id
        bucket = self._buckets.setdefault(index, OrderedDict())
        if peer in bucket:
            bucket.move_to_end(peer)
            return True
        if len(bucket) >= self._k:
            return False
        bucket[peer] = kid
        return True

    def remove(self, peer: str) -> None:
        for index, bucket in list(self._buckets.items()):
            if bucket.pop(peer, None) is not None and not bucket:
                del self._buckets[index]

    def closest(self, key: bytes, n: int, exclude: str | None = None) -> list[str]:
        target = _kad_id(key)
        found = [(kid ^ target, p) for b in self._buckets.values() for p, kid in b.items()]
        return [p for _, p in sorted(found) if p != exclude][:n]


def _distance(key: bytes, peer: str) -> int:
    return _kad_id(key) ^ _kad_id(ID.from_base58(peer).to_bytes())


# --- addresses ----------------------------------------------------------------


def _full_addrs(peer: str, raw: Sequence[bytes], limit: int) -> list[str]:
    """Parse ``raw`` multiaddrs of ``peer``: each ends in ``/p2p/<peer>``, others dropped."""
    out: list[str] = []
    for b in raw:
        if len(out) >= limit:
            break
        if len(b) > _MAX_ADDR_BYTES:
            continue
        try:
            text = str(multiaddr.Multiaddr(b))
        except Exception:  # multiaddr raises a zoo of types for bad input
            continue
        last = text.rfind("/p2p/")
        if last >= 0 and "/p2p-circuit" not in text[last:]:
            if text[last + 5 :] != peer:
                continue  # claims to be somebody else's address
            text = text[:last]
        if "/tcp/" not in text:
            continue  # nothing troc can dial
        full = f"{text}/p2p/{peer}"
        if full not in out:
            out.append(full)
    return out


def _bare(addr: str) -> bytes:
    """``addr`` without its trailing ``/p2p/<id>``, as multiaddr bytes."""
    last = addr.rfind("/p2p/")
    if last >= 0 and "/p2p-circuit" not in addr[last:]:
        addr = addr[:last]
    return bytes(multiaddr.Multiaddr(addr).to_bytes())


def _peer_of(raw: bytes) -> str | None:
    try:
        return str(ID(raw).to_base58())
    except Exception:  # a malformed id from the wire
        return None
