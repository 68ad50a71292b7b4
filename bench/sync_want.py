"""The cost of one max-size sync ``want`` frame against a forked certified log.

The attack of issue 10 (item 4): in a witnessed community a member makes a
long log, all of it final (certified), then forks it at seq 2. A peer then
sends one ``want`` of certificates (``k``) naming MAX_WANTS refs at seqs
along that log with random ids. Before the fix each ref cost a walk back
from the final tip (linear in the log); after it, a few lookups.

For chain lengths 1k, 3k and 10k (by default) the log is built in a real
SQLite store (Store, default caches), a responder :class:`SyncSession` is
brought to the point where wants are answered, and we time (best of
``--repeat``) and count the SQL statements of:

* ``random``: one want frame of MAX_WANTS random ids (the attack);
* ``final``: one want frame of MAX_WANTS entries that are final but have no
  certificate of their own (the honest worst case: each is answered with
  the certificate of the lowest certified entry above it);
* ``entries``: one want of entries (``r``) naming MAX_WANTS random ids, for
  comparison (an entry want was a keyed read per ref already).

Runs on any troc that has SyncSession and certificate_for (so also on the
code before the fix: ``PYTHONPATH=<old checkout> python bench/sync_want.py``).
Usage:

    python bench/sync_want.py [--lengths 1000,3000,10000] [--repeat 3]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from troc.crypto.sign import MemberId, SigningKey
from troc.node.store import Store
from troc.protocol.entry import CommunityId, Entry, EntryId, Genesis, Join, Offer, Ref
from troc.protocol.ledger import Ledger
from troc.protocol.sim import MemoryView
from troc.protocol.sync import SyncSession
from troc.protocol.sync_wire import MAX_WANTS, encode_message
from troc.protocol.witness import Certificate, Vote

T0 = 1_700_000_000_000
WITNESSES = [SigningKey(bytes([200 + i]) * 32) for i in range(4)]


class StoreView(MemoryView):
    """MemoryView's sync answers, with the fork proofs read from the store."""

    def forks(self, community: CommunityId) -> list[tuple[MemberId, int, bytes, bytes]]:
        store = self.ledger.backend
        assert isinstance(store, Store)
        return store.forks(community)


def certify(entry: Entry) -> bytes:
    assert entry.community is not None
    votes = (Vote.sign(k, entry.community, entry.ref) for k in WITNESSES[:3])
    return Certificate.from_votes(votes).encode()


def build(path: Path, length: int) -> tuple[Ledger, Store, CommunityId, list[Entry]]:
    """A store holding ``a``'s log of ``length`` entries, final by the
    certificate of its last, forked at seq 2."""
    founder = SigningKey(b"\1" * 32)
    a = SigningKey(b"\2" * 32)
    genesis = Entry.create(
        founder,
        community=None,
        seq=0,
        prev=None,
        timestamp_ms=T0,
        body=Genesis(
            name="Bench",
            unit="h",
            credit_limit=100,
            finality="witnessed",
            witnesses=tuple(sorted(k.public for k in WITNESSES)),
            faults=1,
            quorum=3,
        ),
    )
    c = CommunityId(genesis.id)
    chain: list[Entry] = []
    prev: EntryId | None = None
    for seq in range(1, length + 1):
        body: Any = Join() if seq == 1 else Offer(side="offer", title=f"o{seq}")
        e = Entry.create(a, community=c, seq=seq, prev=prev, timestamp_ms=T0 + seq, body=body)
        chain.append(e)
        prev = e.id
    fork = Entry.create(
        a,
        community=c,
        seq=2,
        prev=chain[0].id,
        timestamp_ms=T0 + 2,
        body=Offer(side="want", title="fork"),
    )
    store = Store.open(path)
    ledger = Ledger(store)
    now = T0 + 10**6
    with store.transaction():
        for e in [genesis, *chain, fork]:
            assert ledger.ingest_entry(e, now).ok
        assert ledger.ingest_certificate(certify(chain[-1]), now).final
    return ledger, store, c, chain


def responder(ledger: Ledger, c: CommunityId) -> SyncSession:
    """A responder past the heads (the peer's equal to its own): wants next."""
    session = SyncSession(StoreView(ledger, c, lambda: T0 + 10**6), c, initiator=False)
    (heads,) = session.receive({"t": "hello", "c": c, "d": b"\0" * 32, "n": 0})
    list(session.receive({"t": "heads", "h": heads["h"], "k": heads.get("k", [])}))
    return session


def one_frame(
    ledger: Ledger, store: Store, c: CommunityId, refs: list[Ref], kind: str = "k"
) -> dict[str, Any]:
    want = {"t": "want", kind: [r.to_wire() for r in refs]}
    frame = len(encode_message(want))
    session = responder(ledger, c)
    seen: list[str] = []
    store._conn.set_trace_callback(seen.append)
    t0 = time.perf_counter()
    (reply,) = session.receive(want)
    ms = (time.perf_counter() - t0) * 1000
    store._conn.set_trace_callback(None)
    items = len(reply["k"] if kind == "k" else reply["e"])
    return {"ms": ms, "statements": len(seen), "frame_bytes": frame, "items": items}


def measure(length: int, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ledger, store, c, chain = build(Path(tmp) / "s.sqlite", length)
        build_s = time.perf_counter() - t0
        try:
            author = chain[0].author
            step = max(1, (length - 1) // MAX_WANTS)
            random_refs = [
                Ref(author, 2 + (i * step) % (length - 1), EntryId(os.urandom(32)))
                for i in range(MAX_WANTS)
            ]
            final_refs = [e.ref for e in chain[-MAX_WANTS - 1 : -1]]
            out: dict[str, Any] = {"length": length, "build_s": round(build_s, 1)}
            modes = (
                ("random", random_refs, "k"),
                ("final", final_refs, "k"),
                ("entries", random_refs, "r"),
            )
            for name, refs, kind in modes:
                runs = [one_frame(ledger, store, c, refs, kind) for _ in range(repeat)]
                best = min(runs, key=lambda r: r["ms"])
                out[name] = {**best, "ms": round(best["ms"], 2)}
            assert out["final"]["items"] == 1  # all answered by the tip's certificate
            return out
        finally:
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="1000,3000,10000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = []
    for length in (int(n) for n in args.lengths.split(",")):
        r = measure(length, args.repeat)
        print(
            f"chain {length:>6}: random-id want {r['random']['ms']:>9.2f} ms"
            f" ({r['random']['statements']} statements), final-entry want"
            f" {r['final']['ms']:>8.2f} ms ({r['final']['statements']} statements),"
            f" entry want {r['entries']['ms']:>7.2f} ms ({r['entries']['statements']}"
            f" statements), frame {r['random']['frame_bytes']} bytes",
            file=sys.stderr,
        )
        results.append(r)
    print(json.dumps({"bench": "sync_want", "max_wants": MAX_WANTS, "results": results}))


if __name__ == "__main__":
    main()
