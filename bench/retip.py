"""The cost of store format 8's migration on a witnessed store.

Builds a witnessed community of ``--members`` members who pay each other in
turn (each round: every member pays the next one 1 unit, with an expiry if
``--expiring``, and the payee accepts), ``--rounds`` rounds, with only each
log's head certified (as a node that synced before format 6 holds them: the
final chain covers every entry, no accept has a certificate of its own).
Every accept is thus a candidate the migration's query returns; with
``--expiring`` every one is raceable and every log is cut (the worst case),
without it none is (the usual case: accepts of transfers that never expire).
The store is then marked format 7 and opened again; ``migrate_s`` is that
open. Usage:

    python bench/retip.py [--members 1000] [--rounds 25] [--expiring]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import T0, WITNESS_KEYS, certify, make_genesis
from troc.crypto.sign import SigningKey
from troc.node.store import Store
from troc.protocol.entry import Accept, CommunityId, Entry, Join, Transfer
from troc.protocol.ledger import Ledger
from troc.protocol.witness import default_quorum


def build(path: Path, members: int, rounds: int, expiring: bool) -> int:
    """Fill the store at ``path``; returns how many entries it holds."""
    f, q = default_quorum(len(WITNESS_KEYS))
    genesis = make_genesis(
        SigningKey.generate(),
        T0,
        credit_limit=10**6,
        finality="witnessed",
        witnesses=tuple(sorted(k.public for k in WITNESS_KEYS)),
        faults=f,
        quorum=q,
    )
    c = CommunityId(genesis.id)
    keys = [SigningKey.generate() for _ in range(members)]
    heads: dict[bytes, Entry] = {}
    now = T0
    count = 0

    def add(ledger: Ledger, key: SigningKey, body: object) -> Entry:
        nonlocal count
        prev = heads.get(key.public)
        entry = Entry.create(
            key,
            community=c,
            seq=1 if prev is None else prev.seq + 1,
            prev=None if prev is None else prev.id,
            timestamp_ms=now,
            body=body,  # type: ignore[arg-type]
        )
        assert ledger.ingest_entry(entry, now + 10**9).ok
        heads[key.public] = entry
        count += 1
        return entry

    def certify_heads(ledger: Ledger) -> None:
        for entry in heads.values():
            ledger.ingest_certificate(certify(entry), now + 10**9)

    with Store.open(path) as store:
        ledger = Ledger(store)
        with store.transaction():
            ledger.ingest(genesis.wire, now)
            for k in keys:
                add(ledger, k, Join())
            certify_heads(ledger)  # the transfers need final payers' logs
        for _ in range(rounds):
            with store.transaction():
                now += 1000
                paid = [
                    add(
                        ledger,
                        k,
                        Transfer(
                            to=keys[(i + 1) % members].public,
                            amount=1,
                            expires_ms=now + 10**8 if expiring else None,
                        ),
                    )
                    for i, k in enumerate(keys)
                ]
                certify_heads(ledger)  # an accept needs its transfer final
                for i, t in enumerate(paid):
                    add(ledger, keys[(i + 1) % members], Accept(transfer=t.ref))
                certify_heads(ledger)
        # Only the heads' certificates, as a node that synced them holds.
        tips = {(e.author, e.seq) for e in heads.values()}
        store._conn.execute("BEGIN")
        rows = store._conn.execute("SELECT author, seq FROM certificates").fetchall()
        store._conn.executemany(
            "DELETE FROM certificates WHERE community = ? AND author = ? AND seq = ?",
            [(c, a, s) for a, s in rows if (a, s) not in tips],
        )
        store._conn.execute("COMMIT")
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--expiring", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.sqlite"
        entries = build(path, args.members, args.rounds, args.expiring)
        conn = sqlite3.connect(path)
        conn.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
        conn.commit()
        conn.close()
        start = time.perf_counter()
        Store.open(path).close()
        migrate_s = time.perf_counter() - start
        conn = sqlite3.connect(path)
        cut = conn.execute(
            "SELECT count(*) FROM logs WHERE final_seq IS NOT NULL AND final_seq < seq"
        ).fetchone()[0]
        conn.close()
    print(
        json.dumps(
            {
                "entries": entries,
                "expiring": args.expiring,
                "logs_cut": cut,
                "migrate_s": round(migrate_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
