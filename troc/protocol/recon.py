"""Range-based set reconciliation of per-author sync records (``/troc/sync/3``).

Theory of operation
-------------------
In ``/troc/sync/2`` a session that differs by one entry still sends every
author's head both ways: 1.4 MB at 10,000 members. Version 3 first finds
*which* authors differ, in a few round trips and bytes that grow with the
difference, by reconciling ranges of a sorted set (Aljoscha Meyer's
range-based set reconciliation, the idea behind Nostr's negentropy; this is
our own design and wire format, docs/sync.md).

Each side holds one :class:`Record` per author it knows: the head it reports
to sync (seq, id), its final seq and its fork point (0 when none): exactly
what the session digest covers, per author. Records are sorted by author
(32 bytes); a *range* ``[lo, hi)`` holds the records whose author ``a`` has
``lo <= a < hi`` (bytes order; a bound is at most 33 bytes, ``TOP`` is above
every author). The *fingerprint* of a range is the first 16 bytes of
SHA-256 over its count and the items' hashes in order (a plain hash, not an
incremental sum: no sum to steer, and a message costs one pass over the set).

A ``recon`` message lists ranges in increasing order, each starting where
the previous ended (the first at ``b""``); a gap is a *skip* (nothing to say).
For each range it gives one of

* ``fp``: my fingerprint of it; the peer compares. Equal: done. Otherwise, if
  the peer holds at most RECON_LEAF records there it sends them all (a
  ``list``); else it splits its records there into up to RECON_BRANCHES
  ranges of about equal count and sends their fingerprints.
* ``list``: all my records in the range (at most RECON_LEAF). The peer now
  knows, for this range, which authors differ and my records of them, and
  answers with a ``diff``.
* ``diff``: (answers a ``list``) my records of the authors that differ there,
  and the authors of the list I lack. Both sides now know the range. When
  the answer would pass MAX_RECORDS in one message, the diff covers a first
  part and an ``fp`` of the rest follows (the peer lists the rest again).

Every message answers all of the previous one; the first (the responder's
answer to a ``hello`` whose digest differed) treats the whole set as an
unequal range. Reconciliation ends with a message that opens no range (no
``fp`` nor ``list``): then both sides know the set of differing authors and
the peer's record of each (:attr:`Reconciler.peer`; ``None``: the peer has
no record of that author). One differing author among 10,000 takes five
messages and about 1.5 KB.

Bounds (each side checks the peer's): RECON_LEAF records in a list,
MAX_RANGES ranges (skips aside) and MAX_RECORDS records (with lacks) in a
message, MAX_RECON_ROUNDS messages per side per session (the last one a side
may send opens no range: what is still open stays for the next session),
ranges in increasing order and each inside a range of our previous message.
A message thus costs its receiver one pass over its set, whatever it holds.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from troc.crypto.sign import MemberId, is_valid_public_key
from troc.errors import RemoteProtocolError

__all__ = [
    "FP_SIZE",
    "MAX_RANGES",
    "MAX_RECON_ROUNDS",
    "MAX_RECORDS",
    "RECON_BRANCHES",
    "RECON_LEAF",
    "TOP",
    "Reconciler",
    "Record",
]

#: Sub-ranges a side splits an unequal range into, at most.
RECON_BRANCHES = 16
#: A side holding at most this many records in an unequal range lists them.
RECON_LEAF = 4
#: Ranges (``fp``, ``list`` and ``diff``; skips aside) in one message, at most.
MAX_RANGES = 4096
#: Records (in lists and diffs) plus lacked authors in one message, at most.
MAX_RECORDS = 4096
#: ``recon`` messages one side sends per session, at most; the last may open
#: no range.
MAX_RECON_ROUNDS = 32
#: Bytes of a fingerprint.
FP_SIZE = 16
#: The upper bound of the whole set: above every 32-byte author.
TOP = b"\xff" * 33
_MAX_BOUND = len(TOP)
_ITEM_DOMAIN = b"troc/recon/item/v1"
_FP_DOMAIN = b"troc/recon/fp/v1"


def _bad(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"bad sync message: {what}")


@dataclass(frozen=True, slots=True)
class Record:
    """What a node reports to sync about one author: its head (seq, id; 0 and
    ``b""`` when it reports none, an author frozen at seq 1), final seq and
    fork point (0: none)."""

    author: MemberId
    seq: int
    id: bytes
    final: int = 0
    frozen: int = 0

    def item_hash(self) -> bytes:
        return hashlib.sha256(
            _ITEM_DOMAIN
            + self.author
            + self.seq.to_bytes(8, "big")
            + self.id.rjust(32, b"\0")
            + self.final.to_bytes(8, "big")
            + self.frozen.to_bytes(8, "big")
        ).digest()

    def to_wire(self) -> list[Any]:
        return [self.author, self.seq, self.id, self.final, self.frozen]

    @classmethod
    def from_wire(cls, raw: Any) -> Record:
        """Parse ``[author, seq, id, final, frozen]``; RemoteProtocolError if
        it is not one."""
        if not isinstance(raw, list) or len(raw) != 5:
            raise _bad("record")
        author, seq, eid, final, frozen = raw
        if (
            not isinstance(author, bytes)
            or not all(type(n) is int and 0 <= n < 1 << 63 for n in (seq, final, frozen))
            or not isinstance(eid, bytes)
            or len(eid) != (32 if seq else 0)
            or not is_valid_public_key(author)
        ):
            raise _bad("record")
        return cls(MemberId(author), seq, eid, final, frozen)


def _fingerprint(count: int, hashes: list[bytes]) -> bytes:
    h = hashlib.sha256(_FP_DOMAIN + count.to_bytes(4, "big"))
    h.update(b"".join(hashes))
    return h.digest()[:FP_SIZE]


def _between(low: bytes, high: bytes) -> bytes:
    """The shortest prefix ``b`` of ``high`` with ``low < b <= high``."""
    n = 0
    while n < len(low) and low[n] == high[n]:
        n += 1
    return high[: n + 1]


@dataclass(slots=True)
class _Open:
    """A range of our last message that awaits the peer's answer."""

    lo: bytes
    hi: bytes
    listed: bool


class Reconciler:
    """One side's part of reconciling its records with a peer's.

    Feed the peer's ``recon`` items to :meth:`receive`; send what it returns.
    Once :attr:`done`, :attr:`peer` maps every author found to differ to the
    peer's record of it (``None``: the peer has none).
    """

    def __init__(self, records: Iterable[Record]) -> None:
        self.records = sorted(records, key=lambda r: r.author)
        self._keys = [r.author for r in self.records]
        self._hashes = [r.item_hash() for r in self.records]
        self.peer: dict[MemberId, Record | None] = {}
        self.sent = 0
        self.received = 0
        self.done = False
        self._open: list[_Open] = []

    # -- our side -------------------------------------------------------------

    def _span(self, lo: bytes, hi: bytes) -> tuple[int, int]:
        return bisect_left(self._keys, lo), bisect_left(self._keys, hi)

    def fingerprint(self, lo: bytes, hi: bytes) -> bytes:
        i, j = self._span(lo, hi)
        return _fingerprint(j - i, self._hashes[i:j])

    def opening(self) -> dict[str, Any]:
        """The responder's first message: the whole set, as an unequal range."""
        out = _Out(last=self.sent + 1 >= MAX_RECON_ROUNDS)
        self._unequal(out, b"", TOP)
        return self._send(out)

    def _unequal(self, out: _Out, lo: bytes, hi: bytes) -> None:
        """Answer a range whose fingerprints differ: list or split ours."""
        i, j = self._span(lo, hi)
        count = j - i
        if out.last:
            return  # no range may open: left for the next session
        if count <= RECON_LEAF:
            if out.room(1, count):
                out.add(lo, hi, "list", self.records[i:j])
            elif out.room(1, 0):
                out.add(lo, hi, "fp", _fingerprint(count, self._hashes[i:j]))
            # else no range is left (a split earlier in this message took the
            # last): this one waits for the next session, as the bound says.
            return
        # As many parts as the message has room for, keeping one range for
        # each of the peer's still to answer; but the first split of a
        # message always happens (two parts, past what is kept if need be:
        # a range of the peer's then goes unanswered, left for the next
        # session), so that a full message still makes progress.
        room = out.ranges_left()
        if not out.split and room < 2:
            room = min(2, MAX_RANGES - out.ranges)
        parts = min(RECON_BRANCHES, -(-count // RECON_LEAF), room)
        if parts < 2:
            if out.room(1, 0):
                out.add(lo, hi, "fp", _fingerprint(count, self._hashes[i:j]))
            return
        out.split = True
        start, low = i, lo
        for k in range(1, parts + 1):
            end = i + (count * k) // parts
            high = hi if k == parts else _between(self._keys[end - 1], self._keys[end])
            out.add(low, high, "fp", _fingerprint(end - start, self._hashes[start:end]))
            start, low = end, high

    def _diff(self, out: _Out, lo: bytes, hi: bytes, theirs: list[Record]) -> None:
        """Answer the peer's list of ``[lo, hi)``: who differs, and our records."""
        i, j = self._span(lo, hi)
        mine = {r.author: r for r in self.records[i:j]}
        listed = {r.author: r for r in theirs}
        differ = sorted(a for a in mine.keys() | listed.keys() if mine.get(a) != listed.get(a))
        fit = min(len(differ), out.records_left()) if out.room(1, 0) else 0
        if fit < len(differ) and not out.last and not out.room(2, 0):
            fit = 0  # no room for the fingerprint of the rest
        if fit == 0 and differ:
            if not out.last and out.room(1, 0):
                out.add(lo, hi, "fp", self.fingerprint(lo, hi))  # the peer lists it again
            return
        if not out.room(1, 0):
            return  # equal here: nothing the peer needs to learn
        cut = hi if fit == len(differ) else _between(differ[fit - 1], differ[fit])
        part = differ[:fit]
        for a in part:
            self.peer[a] = listed.get(a)
        out.add(
            lo,
            cut,
            "diff",
            [mine[a] for a in part if a in mine],
            [a for a in part if a not in mine],
        )
        if cut != hi and not out.last:
            out.add(cut, hi, "fp", self.fingerprint(cut, hi))

    def _send(self, out: _Out) -> dict[str, Any]:
        self.sent += 1
        self._open = [
            _Open(lo, hi, kind == "list")
            for lo, hi, kind, *_ in out.items
            if kind in ("fp", "list")
        ]
        if not self._open:
            self.done = True
        return out.message()

    # -- the peer's side ------------------------------------------------------

    def receive(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """Take the peer's ``recon`` message; return ours, or None when the
        peer's opened no range (then reconciliation is over: :attr:`done`).
        Raises RemoteProtocolError for a message out of protocol."""
        if self.done:
            raise _bad("recon after the end of reconciliation")
        self.received += 1
        if self.received > MAX_RECON_ROUNDS:
            raise _bad(f"more than {MAX_RECON_ROUNDS} recon messages")
        ranges, records, lacks = msg.get("r"), msg.get("h", []), msg.get("x", [])
        if (
            not isinstance(ranges, list)
            or not isinstance(records, list)
            or not isinstance(lacks, list)
        ):
            raise _bad("recon")
        if len(records) + len(lacks) > MAX_RECORDS:
            raise _bad("too many records")
        first = self.sent == 0
        out = _Out(last=self.sent + 1 >= MAX_RECON_ROUNDS)
        lo = b""
        opened = counted = 0
        r_at = x_at = 0
        opens = iter(self._open)
        current: _Open | None = next(opens, None)
        out.reserved = sum(1 for i in ranges if isinstance(i, list) and len(i) == 2)
        for item in ranges:
            if not isinstance(item, list) or not 1 <= len(item) <= 3:
                raise _bad("recon range")
            hi = item[0]
            if not isinstance(hi, bytes) or not lo < hi or len(hi) > _MAX_BOUND:
                raise _bad("recon bound")
            if len(item) > 1:
                counted += 1
                if counted > MAX_RANGES:
                    raise _bad("too many ranges")
                # Inside a range we opened (our last message), if any.
                while current is not None and current.hi <= lo:
                    current = next(opens, None)
                inside = current is not None and current.lo <= lo and hi <= current.hi
                if not first and not inside:
                    raise _bad("a range we did not open")
            if len(item) == 2:
                out.reserved -= 1  # answered now
            if len(item) == 2 and isinstance(item[1], bytes):
                if len(item[1]) != FP_SIZE:
                    raise _bad("fingerprint")
                opened += 1
                if item[1] != self.fingerprint(lo, hi):
                    self._unequal(out, lo, hi)
            elif len(item) == 2:
                n = item[1]
                if type(n) is not int or not 0 <= n <= RECON_LEAF:
                    raise _bad("list")
                theirs = _records(records[r_at : r_at + n], lo, hi, n)
                r_at += n
                opened += 1
                self._diff(out, lo, hi, theirs)
            elif len(item) == 3:
                n, m = item[1], item[2]
                if type(n) is not int or type(m) is not int or n < 0 or m < 0:
                    raise _bad("diff")
                if first or current is None or not current.listed:
                    raise _bad("a diff of a range we did not list")
                theirs = _records(records[r_at : r_at + n], lo, hi, n)
                r_at += n
                missing = lacks[x_at : x_at + m]
                x_at += m
                i, j = self._span(lo, hi)
                ours = set(self._keys[i:j])
                if len(missing) != m or not all(a in ours for a in missing):
                    raise _bad("lacks")
                for r in theirs:
                    self.peer[r.author] = r
                for a in missing:
                    self.peer[MemberId(a)] = None
            lo = hi
        if r_at != len(records) or x_at != len(lacks):
            raise _bad("records that no range names")
        if self.received == MAX_RECON_ROUNDS and opened:
            raise _bad("ranges opened in the last recon message")
        if not opened:
            self.done = True
            return None
        return self._send(out)


def _records(raw: list[Any], lo: bytes, hi: bytes, n: int) -> list[Record]:
    """``n`` records, in increasing author order, all in ``[lo, hi)``."""
    if len(raw) != n:
        raise _bad("records")
    out = [Record.from_wire(r) for r in raw]
    prev = lo
    for k, r in enumerate(out):
        if not (prev <= r.author if k == 0 else prev < r.author) or not r.author < hi:
            raise _bad("records out of range or order")
        prev = r.author
    return out


class _Out:
    """A message being built: ranges in order, within the per-message bounds."""

    def __init__(self, *, last: bool) -> None:
        self.last = last
        self.items: list[tuple[Any, ...]] = []
        self.ranges = 0
        self.records = 0
        #: Ranges kept for the answers to the peer's ranges still to come
        #: (one each at least), so that none goes unanswered.
        self.reserved = 0
        self.split = False  # whether a range was split in this message

    def records_left(self) -> int:
        return MAX_RECORDS - self.records

    def ranges_left(self) -> int:
        return MAX_RANGES - self.reserved - self.ranges

    def room(self, ranges: int, records: int) -> bool:
        return ranges <= self.ranges_left() and self.records + records <= MAX_RECORDS

    def add(self, lo: bytes, hi: bytes, kind: str, *payload: Any) -> None:
        self.ranges += 1
        if kind in ("list", "diff"):
            self.records += sum(len(p) for p in payload)
        self.items.append((lo, hi, kind, *payload))

    def message(self) -> dict[str, Any]:
        ranges: list[list[Any]] = []
        records: list[list[Any]] = []
        lacks: list[bytes] = []
        at = b""
        for lo, hi, kind, *payload in self.items:
            if lo != at:
                ranges.append([lo])  # a skip up to where this range starts
            if kind == "fp":
                ranges.append([hi, payload[0]])
            elif kind == "list":
                ranges.append([hi, len(payload[0])])
                records += [r.to_wire() for r in payload[0]]
            else:
                ranges.append([hi, len(payload[0]), len(payload[1])])
                records += [r.to_wire() for r in payload[0]]
                lacks += payload[1]
            at = hi
        msg: dict[str, Any] = {"t": "recon", "r": ranges}
        if records:
            msg["h"] = records
        if lacks:
            msg["x"] = lacks
        return msg
