"""Witnessed communities in the store: certificates, final chains, witness
faults, and a witness's own vote log.

:class:`StoreFinality` is mixed into :class:`troc.node.store.Store`: these
are the Backend methods the witnessed rules (:mod:`troc.protocol.witness`)
read and write, and the vote log a witness keeps
(:class:`troc.node.witness.StoreVoteLog`), on the tables ``certificates``,
``final_chain``, ``witness_faults`` and ``votes``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING

from troc.crypto.sign import MemberId
from troc.errors import LocalProtocolError
from troc.node._store_cache import LogRow
from troc.protocol.entry import CommunityId, EntryId

__all__ = ["StoreFinality"]

#: Certificate seqs a cached log row keeps (:meth:`StoreFinality._may_be_certified`)
#: before it forgets those at or below its top.
MAX_CERTS_CACHED = 256


class StoreFinality:
    """Certificates, final chains and votes (mixed into :class:`~troc.node.store.Store`)."""

    _cur: sqlite3.Cursor
    _certs_cached: bool

    if TYPE_CHECKING:  # provided by Store

        def _write(self) -> None: ...
        def _flush(self) -> None: ...
        def _lid(self, community: CommunityId, author: MemberId) -> int: ...
        def _log(
            self, community: CommunityId, author: MemberId, create: bool = False
        ) -> LogRow | None: ...

    # -- Backend: certificates (witnessed communities) ----------------------------

    def certificate(
        self, community: CommunityId, author: MemberId, seq: int
    ) -> tuple[EntryId, bytes] | None:
        if not self._may_be_certified(community, author, seq):
            return None  # the usual answer for an entry a catch-up stores, without a query
        row = self._cur.execute(
            "SELECT id, data FROM certificates WHERE community = ? AND author = ? AND seq = ?",
            (community, author, seq),
        ).fetchone()
        return None if row is None else (EntryId(row[0]), row[1])

    def put_certificate(
        self, community: CommunityId, author: MemberId, seq: int, eid: EntryId, data: bytes
    ) -> None:
        self._write()
        self._cur.execute(
            "INSERT OR IGNORE INTO certificates VALUES (?, ?, ?, ?, ?)",
            (community, author, seq, eid, data),
        )
        log = self._log(community, author)
        if log is not None and log.certs is not None and seq > log.certs_from:
            log.certs.add(seq)
            if len(log.certs) > MAX_CERTS_CACHED:
                # Bounded: forget the seqs at or below the top (asked of
                # SQLite from now on), the ones a catch-up no longer asks for.
                log.certs_from = max(log.certs_from, log.top)
                log.certs = {s for s in log.certs if s > log.certs_from}

    def _may_be_certified(self, community: CommunityId, author: MemberId, seq: int) -> bool:
        """False only if no certificate of ``author``'s log is held at
        ``seq``, as its cached row knows without a query. Every ingested
        entry of a witnessed community asks whether it is certified
        (``Ledger._apply``), nearly always in vain at a newcomer, as does
        every certificate received (a replay?): ~1.7 certificate reads per
        entry at a newcomer's catch-up, most of them misses, each a seek in
        a B-tree keyed by two 32-byte ids. The cached row's ``certs`` (read
        once, then kept up by :meth:`put_certificate`) answers those above
        ``certs_from``: the seqs read then, from the log's top up, and
        every one stored since (a superset once a transaction rolls back: the
        cached rows are dropped then anyway)."""
        if not self._certs_cached:
            return True  # another process writes, or no log row stays cached
        log = self._log(community, author)
        if log is None:
            return True
        if log.certs is None:
            # From below the top: the ledger asks of an entry once it has
            # stored it (its log's top, then).
            log.certs_from = max(0, log.top - 1)
            rows = self._cur.execute(
                "SELECT seq FROM certificates WHERE community = ? AND author = ? AND seq > ?",
                (community, author, log.certs_from),
            ).fetchall()
            log.certs = {r[0] for r in rows}
        return seq <= log.certs_from or seq in log.certs

    def put_witness_fault(
        self, community: CommunityId, author: MemberId, seq: int, first: bytes, second: bytes
    ) -> bool:
        self._write()
        self._cur.execute(
            "INSERT OR IGNORE INTO witness_faults VALUES (?, ?, ?, ?, ?)",
            (community, author, seq, first, second),
        )
        return self._cur.rowcount == 1

    def certified_between(
        self, community: CommunityId, author: MemberId, low: int, high: int
    ) -> list[tuple[int, EntryId]]:
        rows = self._cur.execute(
            "SELECT seq, id FROM certificates"
            " WHERE community = ? AND author = ? AND seq > ? AND seq < ? ORDER BY seq",
            (community, author, low, high),
        ).fetchall()
        return [(r[0], EntryId(r[1])) for r in rows]

    def final_at(self, community: CommunityId, author: MemberId, seq: int) -> EntryId | None:
        log = self._log(community, author)
        if log is None or log.head is None or not log.head.final_seq or seq > log.head.final_seq:
            return None  # no query: above the final tip, nothing is final
        row = self._cur.execute(
            "SELECT id FROM final_chain WHERE lid = ? AND seq = ?", (log.lid, seq)
        ).fetchone()
        return None if row is None else EntryId(row[0])

    def put_final(
        self, community: CommunityId, author: MemberId, chain: Iterable[tuple[int, EntryId]]
    ) -> None:
        self._write()
        lid = self._lid(community, author)
        self._cur.executemany(
            "INSERT INTO final_chain VALUES (?, ?, ?)", [(lid, seq, eid) for seq, eid in chain]
        )

    def finals(self, community: CommunityId) -> list[tuple[MemberId, int, bytes]]:
        """(author, final seq, certificate of the final tip entry) of every
        author of ``community`` whose final tip is above 0, by author."""
        self._flush()
        rows = self._cur.execute(
            "SELECT l.author, l.final_seq, c.data FROM logs l JOIN certificates c"
            " ON c.community = l.community AND c.author = l.author AND c.seq = l.final_seq"
            " WHERE l.community = ? AND l.final_seq > 0 AND c.id = l.final_id"
            " ORDER BY l.author",
            (community,),
        ).fetchall()
        return [(MemberId(r[0]), r[1], r[2]) for r in rows]

    def witness_faults(self, community: CommunityId) -> list[tuple[MemberId, int, bytes, bytes]]:
        rows = self._cur.execute(
            "SELECT author, seq, first, second FROM witness_faults WHERE community = ?"
            " ORDER BY author, seq",
            (community,),
        ).fetchall()
        return [(MemberId(r[0]), r[1], r[2], r[3]) for r in rows]

    # -- the vote log of a witness (see troc.node.witness.StoreVoteLog) -----------

    def voted(self, community: CommunityId, author: MemberId, seq: int) -> EntryId | None:
        """The id this node, as a witness, recorded at (author, seq)."""
        row = self._cur.execute(
            "SELECT id FROM votes WHERE community = ? AND author = ? AND seq = ?",
            (community, author, seq),
        ).fetchone()
        return None if row is None else EntryId(row[0])

    def votes_last(self, community: CommunityId, author: MemberId) -> int:
        row = self._cur.execute(
            "SELECT max(seq) FROM votes WHERE community = ? AND author = ?", (community, author)
        ).fetchone()
        return int(row[0] or 0)

    def put_votes(
        self, community: CommunityId, author: MemberId, records: Iterable[tuple[int, EntryId]]
    ) -> None:
        """Record vote ids at seqs last+1, last+2, … (a record already held
        with the same id is skipped). Durable once the enclosing transaction
        commits; raises LocalProtocolError, recording nothing of this call,
        for a gap or a seq recorded with another id."""
        self._write()
        last = self.votes_last(community, author)
        rows = []
        for seq, eid in records:
            if seq <= last:
                if self.voted(community, author, seq) != eid:
                    raise LocalProtocolError(f"vote log: seq {seq} is recorded with another id")
                continue
            if seq != last + 1:
                raise LocalProtocolError(f"vote log: seq {seq} would leave a gap after {last}")
            rows.append((community, author, seq, eid))
            last = seq
        self._cur.executemany("INSERT INTO votes VALUES (?, ?, ?, ?)", rows)

    def void_votes(self, community: CommunityId, author: MemberId) -> dict[int, EntryId]:
        """The entries this node, as a witness, holds void (docs/witness.md §3.6)."""
        rows = self._cur.execute(
            "SELECT seq, id FROM void_votes WHERE community = ? AND author = ?",
            (community, author),
        ).fetchall()
        return {int(seq): EntryId(eid) for seq, eid in rows}

    def put_void_vote(
        self, community: CommunityId, author: MemberId, seq: int, eid: EntryId
    ) -> None:
        """Mark ``eid`` at ``seq`` void for good (durable once the enclosing
        transaction commits); marking it again changes nothing."""
        self._write()
        self._cur.execute(
            "INSERT OR IGNORE INTO void_votes VALUES (?, ?, ?, ?)", (community, author, seq, eid)
        )
