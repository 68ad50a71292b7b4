"""Store format 8: every witnessed log's final tip under today's rule.

Private to :mod:`troc.node._schema` (its migration to format 8).

Before store format 6 the ledger moved a log's final tip through a
*raceable* entry (:func:`troc.protocol.witness.raceable`: a take-back, an
accept of a transfer that expires, a lapse, a successful close) on the
strength of a later entry's certificate alone. Format 6 made the tip wait
for that entry's own certificate, normal or void (docs/witness.md §6.1),
but kept the tips already stored: an upgraded node could show a final tip
and final balance that a fresh node holding the same entries and
certificates would not, for good (sync saw both at the same final seq).

Format 8 finds, in each witnessed community, the logs whose final chain
passes a raceable entry with no certificate of its own, clears their tip
and final chain, and has the ledger move the tip up towards the old one
again (:meth:`troc.protocol.ledger.Ledger.finalise_up_to`): the rule and
the final balance (void credits) are the ledger's, not a copy of them. A
log whose tip is right is not written at all.

Cost: a store without witnessed communities reads only its genesis table.
In a witnessed one, one query per community lists the final chains' entries
of the kinds :func:`raceable` may accept and that have no certificate of
their own (by keys: final_chain, then entries and certificates by primary
key); :func:`raceable` decides on those, reading each and what it names
(~20 us an entry of the community: ``bench/retip.py``), and the ledger
walks only the logs it cuts.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

from troc.crypto.sign import MemberId
from troc.errors import StoreError
from troc.protocol.entry import CommunityId, Entry, EntryId, Kind, Ref
from troc.protocol.ledger import Ledger

__all__ = ["recompute_final_tips", "witnessed_communities"]

#: The kinds :func:`troc.protocol.witness.raceable` may say yes to: the
#: query's first filter (raceable decides, entry by entry).
_RACE_KINDS = (Kind.ACCEPT, Kind.TAKE_BACK, Kind.WITHDRAW, Kind.CAMPAIGN_CLOSE)

# The entries of a community's final chains, of a raceable kind, with no
# certificate of their own (a void one is one), lowest first per log.
_UNCERTIFIED_RACES = f"""
SELECT l.lid, l.author, f.seq, f.id FROM logs l
JOIN final_chain f ON f.lid = l.lid
JOIN entries e ON e.lid = f.lid AND e.seq = f.seq AND e.id = f.id
WHERE l.community = ? AND l.final_seq > 0
  AND e.kind IN ({", ".join("?" * len(_RACE_KINDS))})
  AND NOT EXISTS (
    SELECT 1 FROM certificates c
    WHERE c.community = l.community AND c.author = l.author AND c.seq = f.seq AND c.id = f.id
  )
ORDER BY l.lid, f.seq
"""


def witnessed_communities(conn: sqlite3.Connection) -> list[CommunityId]:
    """The store's witnessed communities, read from their genesis entries."""
    return [
        CommunityId(community)
        for community, wire in conn.execute("SELECT community, wire FROM genesis").fetchall()
        if getattr(Entry.decode(wire, check_signature=False).body, "finality", None) == "witnessed"
    ]


def recompute_final_tips(conn: sqlite3.Connection, path: Path) -> int:
    """Cut back, inside the migration's open transaction on ``conn``, every
    witnessed log's final tip that passes a raceable entry lacking its own
    certificate (see the module docstring). Returns how many logs changed."""
    witnessed = witnessed_communities(conn)
    if not witnessed:
        return 0
    # Imported here: the store imports the schema module, which calls this.
    from troc.node.store import Store

    changed = 0
    with Store.migrating(conn, path) as store:
        ledger = Ledger(store)
        for c in witnessed:
            rows = conn.execute(_UNCERTIFIED_RACES, (c, *(k.value for k in _RACE_KINDS)))
            cut: dict[MemberId, int] = {}
            for lid, author, seq, eid in rows.fetchall():
                a = MemberId(author)
                if a not in cut and ledger.is_raceable(c, Ref(a, seq, EntryId(eid))):
                    cut[a] = lid
            for a, lid in cut.items():
                head = store.head(c, a)
                if head is None or not head.final_seq or head.final_id is None:
                    raise StoreError(f"log {lid}: a final chain but no final tip: store damaged")
                tip = Ref(a, head.final_seq, head.final_id)
                store.put_head(c, a, replace(head, final_seq=0, final_id=None, final_balance=0))
                conn.execute("DELETE FROM final_chain WHERE lid = ?", (lid,))
                ledger.finalise_up_to(c, tip)
                changed += 1
    return changed
