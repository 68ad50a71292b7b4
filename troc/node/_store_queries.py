"""The queries of the node's API on the store's tables.

:class:`StoreQueries` is mixed into :class:`troc.node.store.Store`: the
Backend half of the store is what the ledger writes and reads; this half is
what a member asks (logs, history, pending transfers, offers, counts), read
from the derived tables the Backend half keeps (``timeline``, ``pending``,
``offers``; see :mod:`troc.node._schema`).
"""

from __future__ import annotations

import re
import sqlite3
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from troc.crypto.sign import MemberId
from troc.node._schema import NO_BOUND
from troc.node._store_cache import Cache, LogRow
from troc.node._store_files import decode_trusted
from troc.protocol.backend import RefRow, Stored
from troc.protocol.entry import CommunityId, Entry, EntryId, Genesis, Kind, Ref, expiry_of

__all__ = ["RequestState", "StoreQueries", "TransferState"]

_WORD = re.compile(r"\w+")


class TransferState(StrEnum):
    """Where a transfer stands, from its payee's answers and its payer's reclaim."""

    OPEN = "open"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    RECLAIMED = "reclaimed"


class RequestState(StrEnum):
    """Where a payment request stands, from its payer's log."""

    OPEN = "open"
    PAID = "paid"
    REFUSED = "refused"


_STATES = {s.value: s for s in TransferState}


class StoreQueries:
    """What a member asks of the store (mixed into :class:`~troc.node.store.Store`)."""

    _cur: sqlite3.Cursor
    _entry_counts: dict[CommunityId, int] | None
    _communities: list[Entry] | None
    # A transfer's expiry by its id (in a 1-tuple: None is "never"); see
    # pending_out_expiries.
    _expiries: Cache[tuple[CommunityId, EntryId], tuple[int | None]]

    if TYPE_CHECKING:  # provided by Store

        def _log(
            self, community: CommunityId, author: MemberId, create: bool = False
        ) -> LogRow | None: ...
        def _refs(self, where: str, params: tuple[Any, ...]) -> list[RefRow]: ...
        def _flush(self) -> None: ...
        def entry(
            self, community: CommunityId, author: MemberId, seq: int, eid: EntryId
        ) -> Stored | None: ...

    def communities(self) -> list[Entry]:
        """The genesis entries of every community this store holds (kept
        once read, but in a read-only store: another process writes)."""
        if self._communities is not None:
            return list(self._communities)
        rows = self._cur.execute("SELECT wire FROM genesis ORDER BY community").fetchall()
        found = [decode_trusted(r[0]) for r in rows]
        if self._entry_counts is not None:  # not read-only
            self._communities = found
        return list(found)

    def log(
        self, community: CommunityId, author: MemberId, after_seq: int = 0, limit: int = 1000
    ) -> list[Stored]:
        """``author``'s log along its first-seen branch, seq > ``after_seq``,
        in seq order, at most ``limit`` entries.

        Below a known fork a log has one entry per seq; from the fork on, the
        branch that ends at the author's head is followed (the other branches
        are in :meth:`entries_since` and :meth:`forks`).
        """
        log = self._log(community, author)
        if log is None or log.head is None or limit <= 0:
            return []
        head = log.head
        cut = head.seq + 1 if head.frozen_at is None else head.frozen_at
        rows = self._cur.execute(
            "SELECT balance, lim, wire FROM entries WHERE lid = ? AND seq > ? AND seq < ?"
            " ORDER BY seq LIMIT ?",
            (log.lid, after_seq, cut, limit),
        ).fetchall()
        out = [Stored(decode_trusted(r[2]), r[0], r[1]) for r in rows]
        if len(out) < limit and head.seq >= cut:
            # Past the fork: walk back from the head (at most MAX_BEYOND_FORK steps).
            branch: list[Stored] = []
            seq, eid = head.seq, head.id
            while seq >= cut and seq > after_seq:
                s = self.entry(community, author, seq, eid)
                if s is None:  # pragma: no cover - the head's chain is stored
                    break
                branch.append(s)
                assert s.entry.prev is not None
                seq, eid = seq - 1, s.entry.prev
            out.extend(reversed(branch))
        return out[:limit]

    def entries_since(
        self, community: CommunityId, author: MemberId, after_seq: int, limit: int = 1000
    ) -> list[bytes]:
        """Wire bytes of ``author``'s entries with seq > ``after_seq``, in seq
        order (every branch of a forked log, ties by id), at most ``limit``."""
        return [wire for _ts, wire in self.timed_entries_since(community, author, after_seq, limit)]

    def timed_entries_since(
        self, community: CommunityId, author: MemberId, after_seq: int, limit: int = 1000
    ) -> list[tuple[int, bytes]]:
        """(timestamp_ms, wire) pairs, as :meth:`entries_since` (what sync streams)."""
        log = self._log(community, author)
        if log is None:
            return []
        rows = self._cur.execute(
            "SELECT ts, wire FROM entries WHERE lid = ? AND seq > ? ORDER BY seq, id LIMIT ?",
            (log.lid, after_seq, limit),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def history(
        self,
        community: CommunityId,
        member: MemberId,
        before_ts: int | None = None,
        limit: int = 50,
        *,
        before_id: EntryId | None = None,
    ) -> list[Entry]:
        """``member``'s own entries and the transfers addressed to it, newest
        first (by timestamp, then id), at most ``limit``.

        Paging: pass the last entry's ``timestamp_ms`` as ``before_ts`` and its
        ``id`` as ``before_id`` to get the next page exactly. ``before_ts``
        alone returns entries stamped strictly earlier (entries stamped the
        same millisecond as the cursor are skipped).
        """
        log = self._log(community, member)
        if log is None or limit <= 0:
            return []
        self._flush()  # timeline rows of an open transaction
        rows = self._cur.execute(
            "SELECT e.wire FROM timeline h"
            " JOIN entries e ON e.lid = h.src_lid AND e.seq = h.src_seq AND e.id = h.id"
            " WHERE h.lid = ? AND (h.ts, h.id) < (?, ?) ORDER BY h.ts DESC, h.id DESC LIMIT ?",
            (
                log.lid,
                NO_BOUND if before_ts is None else before_ts,
                b"" if before_id is None else before_id,
                limit,
            ),
        ).fetchall()
        return [decode_trusted(r[0]) for r in rows]

    def pending_in(self, community: CommunityId, member: MemberId) -> list[Entry]:
        """Transfers to ``member`` it has neither accepted nor declined, oldest first."""
        log = self._log(community, member)
        if log is None:
            return []
        self._flush()  # pending rows of an open transaction
        rows = self._cur.execute(
            "SELECT e.wire FROM pending p"
            " JOIN entries e ON e.lid = p.payer_lid AND e.seq = p.seq AND e.id = p.id"
            " WHERE p.payee_lid = ? AND p.state = 'open' ORDER BY e.ts, p.payer_lid, p.seq",
            (log.lid,),
        ).fetchall()
        return [decode_trusted(r[0]) for r in rows]

    def taken_back_in(self, community: CommunityId, member: MemberId) -> list[Entry]:
        """Transfers to ``member`` that their payers took back after expiry
        (docs/protocol.md §4.11), newest take-back first. The payee may still
        accept one (``troc accept --late``): the accept wins. Scans the
        community's take-backs: for that rare command, not for a screen."""
        rows = self._cur.execute(
            "SELECT t.wire FROM entries k JOIN logs l ON l.lid = k.lid"
            " JOIN entries t ON t.lid = k.target_lid AND t.seq = k.target_seq"
            " AND t.id = k.target_id"
            " WHERE l.community = ? AND k.kind = ? ORDER BY k.ts DESC",
            (community, Kind.TAKE_BACK.value),
        ).fetchall()
        transfers = (decode_trusted(r[0]) for r in rows)
        return [e for e in transfers if getattr(e.body, "to", None) == member]

    def pending_sums(self, community: CommunityId, member: MemberId) -> tuple[int, int]:
        """(incoming, outgoing): the amounts :meth:`pending_in` and
        :meth:`pending_out` would list, summed in SQL (no entry decoded)."""
        log = self._log(community, member)
        if log is None:
            return 0, 0
        # Incoming transfers come from any number of payers: their total can
        # pass 2**63 - 1, where SQLite's sum() raises "integer overflow". So
        # the high and low 32 bits of the amounts (1 … 2**53 - 1) are summed
        # apart, which cannot overflow, and joined in Python, exactly.
        self._flush()  # pending rows of an open transaction
        row = self._cur.execute(
            "SELECT (SELECT coalesce(sum(amount >> 32), 0) FROM pending"
            "        WHERE payee_lid = ? AND state = 'open'),"
            " (SELECT coalesce(sum(amount & 4294967295), 0) FROM pending"
            "        WHERE payee_lid = ? AND state = 'open'),"
            " (SELECT coalesce(sum(amount), 0) FROM pending WHERE payer_lid = ?)",
            (log.lid, log.lid, log.lid),
        ).fetchone()
        return (int(row[0]) << 32) + int(row[1]), int(row[2])

    def pending_out(self, community: CommunityId, member: MemberId) -> list[Entry]:
        """``member``'s transfers not settled yet, in log order: still open
        (unanswered), or declined and not reclaimed yet (see
        :meth:`pending_out_states` for which)."""
        return [e for e, _ in self.pending_out_states(community, member)]

    def pending_out_states(
        self, community: CommunityId, member: MemberId
    ) -> list[tuple[Entry, TransferState]]:
        """:meth:`pending_out` with each transfer's state (open or declined)."""
        log = self._log(community, member)
        if log is None:
            return []
        self._flush()  # pending rows of an open transaction
        rows = self._cur.execute(
            "SELECT e.wire, p.state FROM pending p"
            " JOIN entries e ON e.lid = p.payer_lid AND e.seq = p.seq AND e.id = p.id"
            " WHERE p.payer_lid = ? ORDER BY p.seq, p.id",
            (log.lid,),
        ).fetchall()
        return [(decode_trusted(r[0]), TransferState(r[1])) for r in rows]

    def pending_out_expiries(
        self, community: CommunityId, member: MemberId, rules: Genesis
    ) -> list[tuple[int, EntryId, TransferState, int | None]]:
        """What :meth:`pending_out_states` lists, without the entries: each
        transfer's seq, id, state and expiry (:func:`expiry_of` under
        ``rules``, the community's genesis), in log order.

        A payer with many unanswered payments asks for its balance often (a
        shop's day; bench/finality.py polls it 20 times a second), and
        decoding every pending transfer for its expiry made each read cost
        ~9 ms at 1,000 of them. This reads the pending table alone: an
        expiry never changes (it is the transfer's own, or its timestamp
        plus the genesis's delay), so each transfer is decoded once and its
        expiry remembered by id (an id is the hash of the entry: a transfer
        rolled back and stored again has the same). Transfers not
        remembered yet (a payer's newest) are read in one query, from the
        oldest of them up, not one by one."""
        log = self._log(community, member)
        if log is None:
            return []
        self._flush()  # pending rows of an open transaction
        rows = self._cur.execute(
            "SELECT seq, id, state FROM pending WHERE payer_lid = ? ORDER BY seq, id",
            (log.lid,),
        ).fetchall()
        known = self._expiries
        expiries = [known.get((community, r[1])) for r in rows]
        fresh: dict[bytes, tuple[int | None]] = {}
        if None in expiries:
            # Those not remembered are mostly the newest: read from the
            # oldest of them up.
            lowest = min(r[0] for r, e in zip(rows, expiries, strict=True) if e is None)
            for eid, wire in self._cur.execute(
                "SELECT p.id, e.wire FROM pending p"
                " JOIN entries e ON e.lid = p.payer_lid AND e.seq = p.seq AND e.id = p.id"
                " WHERE p.payer_lid = ? AND p.seq >= ?",
                (log.lid, lowest),
            ).fetchall():
                fresh[eid] = (expiry_of(decode_trusted(wire), rules),)
                known.put((community, eid), fresh[eid])
        out = []
        for (seq, eid, state), expiry in zip(rows, expiries, strict=True):
            if expiry is None:
                expiry = fresh[eid]
            out.append((seq, eid, _STATES[state], expiry[0]))
        return out

    def requests(
        self, community: CommunityId, member: MemberId, *, to_member: bool
    ) -> list[tuple[Entry, RequestState, Ref | None]]:
        """Payment requests naming ``member`` as payer (``to_member``), or
        signed by it, oldest first, each with its state and the payer's
        transfer or refusal that settled it (the first on the payer's log)."""
        log = self._log(community, member)
        if log is None:
            return []
        column = "q.payer_lid" if to_member else "q.lid"
        rows = self._cur.execute(
            "SELECT e.wire, q.payer_lid, q.lid, q.seq, q.id FROM requests q"
            " JOIN entries e ON e.lid = q.lid AND e.seq = q.seq AND e.id = q.id"
            f" WHERE {column} = ? ORDER BY e.ts, q.lid, q.seq",
            (log.lid,),
        ).fetchall()
        out: list[tuple[Entry, RequestState, Ref | None]] = []
        for wire, payer_lid, lid, seq, eid in rows:
            answers = self._refs(
                "r.target_lid = ? AND r.target_seq = ? AND r.kind IN (?, ?) AND r.target_id = ?"
                " AND r.lid = ?",
                (lid, seq, Kind.TRANSFER.value, Kind.REFUSAL.value, eid, payer_lid),
            )
            entry = decode_trusted(wire)
            if not answers:
                out.append((entry, RequestState.OPEN, None))
                continue
            first = min(answers, key=lambda r: (r.by_seq, r.by_id))
            state = RequestState.PAID if first.kind is Kind.TRANSFER else RequestState.REFUSED
            out.append((entry, state, Ref(first.by_author, first.by_seq, first.by_id)))
        return out

    def decline_of(self, community: CommunityId, transfer: Ref) -> Ref | None:
        """The decline that answered ``transfer`` (for the payer's reclaim), or None."""
        target = self._log(community, transfer.author)
        if target is None:
            return None
        rows = self._refs(
            "r.target_lid = ? AND r.target_seq = ? AND r.kind = ? AND r.target_id = ?",
            (target.lid, transfer.seq, Kind.DECLINE.value, transfer.id),
        )
        return None if not rows else Ref(rows[0].by_author, rows[0].by_seq, rows[0].by_id)

    def transfer_state(
        self, community: CommunityId, payer: MemberId, seq: int, eid: EntryId
    ) -> TransferState | None:
        """Where one transfer stands; None if this store holds no such transfer."""
        log = self._log(community, payer)
        if log is None:
            return None
        self._flush()  # pending rows of an open transaction
        cur = self._cur
        row = cur.execute(
            "SELECT state FROM pending WHERE payer_lid = ? AND seq = ? AND id = ?",
            (log.lid, seq, eid),
        ).fetchone()
        if row is not None:
            return TransferState(row[0])
        row = cur.execute(
            "SELECT kind FROM entries WHERE lid = ? AND seq = ? AND id = ?", (log.lid, seq, eid)
        ).fetchone()
        if row is None or row[0] != Kind.TRANSFER.value:
            return None
        reclaims = self._refs(
            "r.target_lid = ? AND r.target_seq = ? AND r.kind = ? AND r.target_id = ?",
            (log.lid, seq, Kind.RECLAIM.value, eid),
        )
        if reclaims:
            return TransferState.RECLAIMED
        return TransferState.ACCEPTED  # left the pending table unreclaimed: accepted

    def offers(
        self,
        community: CommunityId,
        *,
        text: str | None = None,
        tag: str | None = None,
        side: str | None = None,
        author: MemberId | None = None,
        include_closed: bool = False,
        now_ms: int | None = None,
        limit: int = 50,
    ) -> list[tuple[Entry, bool]]:
        """Offers and wants of ``community`` as ``(entry, closed)``.

        ``text``: every word must match the title, description or tags as a
        word prefix, case and accents ignored; results are then ranked by
        relevance, else newest first. ``tag``: an exact tag (case ignored).
        ``side``: ``"offer"`` or ``"want"``. ``now_ms``: if given, offers
        expired by then are left out. Closed offers are left out unless
        ``include_closed``.
        """
        if limit <= 0:
            return []
        where = ["o.community = ?"]
        params: list[Any] = [community]
        if not include_closed:
            where.append("o.closed = 0")
        if side is not None:
            where.append("o.side = ?")
            params.append(side)
        if author is not None:
            where.append("o.author = ?")
            params.append(author)
        if tag is not None:
            where.append("o.oid IN (SELECT oid FROM offer_tags WHERE community = ? AND tag = ?)")
            params += [community, tag.casefold()]
        if now_ms is not None:
            where.append("(o.expires_ms IS NULL OR o.expires_ms > ?)")
            params.append(now_ms)
        # The wire is read through the log id, one lookup per result row.
        select = (
            "SELECT e.wire, o.closed FROM {src}"
            " JOIN logs l ON l.community = o.community AND l.author = o.author"
            " JOIN entries e ON e.lid = l.lid AND e.seq = o.seq AND e.id = o.id"
            " WHERE {where} ORDER BY {order} LIMIT ?"
        )
        words = _WORD.findall(text) if text else []
        if words:
            # Each word quoted, so no FTS syntax gets through, and matched as a prefix.
            query = " ".join('"' + w.replace('"', '""') + '"*' for w in words)
            sql = select.format(
                src="offers_fts f JOIN offers o ON o.oid = f.rowid",
                where="offers_fts MATCH ? AND " + " AND ".join(where),
                order="f.rank, o.ts DESC, o.oid DESC",
            )
            params.insert(0, query)
        elif text is not None and text.strip():
            return []  # punctuation only: nothing can match
        else:
            sql = select.format(
                src="offers o", where=" AND ".join(where), order="o.ts DESC, o.oid DESC"
            )
        params.append(limit)
        rows = self._cur.execute(sql, params).fetchall()
        return [(decode_trusted(r[0]), bool(r[1])) for r in rows]

    def of_kind(self, community: CommunityId, kind: Kind) -> list[Entry]:
        """Every stored entry of ``kind`` in ``community``, every branch, by
        author and seq. A scan of the community's entries (no index on kind):
        for directory views, not for the ingest path."""
        rows = self._cur.execute(
            "SELECT e.wire FROM logs l JOIN entries e ON e.lid = l.lid"
            " WHERE l.community = ? AND e.kind = ? ORDER BY l.author, e.seq, e.id",
            (community, kind.value),
        ).fetchall()
        return [decode_trusted(r[0]) for r in rows]

    def forks(self, community: CommunityId) -> list[tuple[MemberId, int, bytes, bytes]]:
        """Fork proofs known in ``community``: (author, seq, first wire, second wire)."""
        rows = self._cur.execute(
            "SELECT author, seq, first, second FROM forks WHERE community = ? ORDER BY author, seq",
            (community,),
        ).fetchall()
        return [(MemberId(r[0]), r[1], r[2], r[3]) for r in rows]

    def entry_count(self, community: CommunityId) -> int:
        """How many entries of ``community`` are stored (genesis not counted).

        Counts rows once, O(entries): then the store keeps
        the count as it stores entries, so ``troc status`` and the metrics,
        asked every few seconds while a newcomer takes a long history, do
        not cost more as it grows.
        """
        counts = self._entry_counts
        if counts is not None and community in counts:
            return counts[community]
        row = self._cur.execute(
            "SELECT count(*) FROM entries WHERE lid IN (SELECT lid FROM logs WHERE community = ?)",
            (community,),
        ).fetchone()
        if counts is not None:
            counts[community] = int(row[0])
        return int(row[0])
