"""The store's caches (see :mod:`troc.node.store`, "Caches").

:class:`Cache` bounds every cache of the store; :class:`LogRow` is one log's
row of ``logs`` as cached, written back at commit.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from troc.protocol.backend import Head

__all__ = ["Cache", "LogRow"]

_K = TypeVar("_K")
_V = TypeVar("_V")


class Cache(Generic[_K, _V]):
    """A bounded mapping: two generations of dicts, at most ``2 * size`` keys.

    New keys go to the young generation; when it is full it becomes the old
    one and the previous old one is dropped. A hit in the old generation moves
    the key back to the young one. Cheaper than an LRU (no reordering on each
    hit) and as good for our pattern: recent entries, recent logs.
    """

    __slots__ = ("_new", "_old", "_size")

    def __init__(self, size: int) -> None:
        self._new: dict[_K, _V] = {}
        self._old: dict[_K, _V] = {}
        self._size = size

    def get(self, key: _K) -> _V | None:
        value = self._new.get(key)
        if value is None:
            value = self._old.get(key)
            if value is not None:
                self.put(key, value)
        return value

    def put(self, key: _K, value: _V) -> None:
        if self._size <= 0:
            return
        new = self._new
        new[key] = value
        if len(new) >= self._size:
            self._old = new
            self._new = {}

    def pop(self, key: _K) -> None:
        self._new.pop(key, None)
        self._old.pop(key, None)

    def clear(self) -> None:
        self._new = {}
        self._old = {}


class LogRow:
    """One log's row of ``logs``, as cached: its id, head and highest seq;
    and, once read, the seqs above ``certs_from`` at which a certificate
    of the log is held (:class:`troc.node._store_finality.StoreFinality`)."""

    __slots__ = ("certs", "certs_from", "head", "lid", "top")

    def __init__(self, lid: int, head: Head | None, top: int) -> None:
        self.lid = lid
        self.head = head
        self.top = top  # highest seq stored on any branch; 0 if none
        # Every seq above certs_from at which a certificate is held, and
        # maybe more (a superset); None: not read yet.
        self.certs: set[int] | None = None
        self.certs_from = 0
