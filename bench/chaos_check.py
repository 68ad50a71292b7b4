"""The end-of-run checks of bench/chaos.py, on the stores of stopped nodes.

Each node's store is read (read-only) for the community's entries, its fork
proofs and its logs' final seqs; :func:`recount` then adds the ledger up
again from the entries alone, following docs/protocol.md §4.7 (an author
frozen at F counts only its entries below F; a transfer at or after its
payer's fork point credits nobody when accepted) or, in a witnessed
community, docs/witness.md ("Balances": only the chain below each author's
final tip counts, and an accept credits only a counted, i.e. certified,
transfer), independently of the ledger code:

* each member's counted balance, to compare with what the node reports;
* the counted transfers no counted accept or reclaim credited (in flight),
  so that Σ reported balances + in flight = 0 can be checked;
* the transfers credited more than once (two counted accepts, or a counted
  accept and a counted reclaim).
"""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from troc.protocol.entry import Accept, Decline, Entry, Reclaim, Transfer


@dataclass
class StoreView:
    entries: dict[bytes, Entry]  # id -> entry
    frozen: dict[bytes, int]  # author -> fork seq F (the lowest proved)
    logs: dict[bytes, tuple[int, int | None]]  # author -> (head seq, final seq)
    final_tips: dict[bytes, bytes]  # author -> id of its final tip (witnessed)


@dataclass
class Recount:
    balances: dict[bytes, int]
    in_flight: int
    credited_twice: set[bytes]


def read_store(home: Path, community: bytes) -> StoreView:
    """What a stopped node's store holds for ``community``."""
    db = sqlite3.connect(f"file:{home / 'store.sqlite'}?mode=ro", uri=True)
    try:
        entries = {}
        for (wire,) in db.execute("SELECT wire FROM entries"):
            e = Entry.decode(wire)
            if e.community == community:
                entries[e.id] = e
        frozen: dict[bytes, int] = {}
        rows = db.execute("SELECT author, seq FROM forks WHERE community = ?", (community,))
        for author, seq in rows:
            frozen[author] = min(seq, frozen.get(author, seq))
        rows = db.execute(
            "SELECT author, seq, final_seq, final_id FROM logs WHERE community = ?", (community,)
        ).fetchall()
    finally:
        db.close()
    logs = {a: (s or 0, f) for a, s, f, _ in rows}
    tips = {a: i for a, _, _, i in rows if i is not None}
    return StoreView(entries, frozen, logs, tips)


def recount(view: StoreView, witnessed: bool) -> Recount:
    """The ledger of ``view`` added up from its entries (see the module docstring)."""
    if witnessed:
        counted = [e for tip in view.final_tips.values() for e in chain(view.entries, tip)]
    else:
        counted = [e for e in view.entries.values() if e.seq < view.frozen.get(e.author, e.seq + 1)]
    transfers = {e.id: e for e in counted if isinstance(e.body, Transfer)}
    declines = {e.id: e for e in view.entries.values() if isinstance(e.body, Decline)}
    balances: dict[bytes, int] = defaultdict(int)
    credited_by: Counter[bytes] = Counter()
    for e in counted:
        body = e.body
        if isinstance(body, Transfer):
            balances[e.author] -= body.amount
            continue
        if isinstance(body, Accept):
            tid = body.transfer.id
        elif isinstance(body, Reclaim) and body.decline.id in declines:
            tid = declines[body.decline.id].body.transfer.id  # type: ignore[attr-defined]
        else:
            continue
        t = transfers.get(tid)
        if t is not None:  # else: not counted (frozen credit) or not held
            credited_by[tid] += 1
            balances[e.author] += t.body.amount  # type: ignore[attr-defined]
    in_flight = sum(t.body.amount for tid, t in transfers.items() if not credited_by[tid])  # type: ignore[attr-defined]
    return Recount(dict(balances), in_flight, {t for t, n in credited_by.items() if n > 1})


def chain(entries: dict[bytes, Entry], tip: bytes) -> list[Entry]:
    """The entries from ``tip`` back along their prev links (as far as held)."""
    out = []
    at: bytes | None = tip
    while at is not None and at in entries:
        out.append(entries[at])
        at = entries[at].prev
    return out
