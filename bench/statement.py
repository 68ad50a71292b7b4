"""A verifiable statement of many movements: build its bundle, verify it.

One member trades with ten others in an optimistic community: it pays each
in turn, and each pays it back (it accepts), until its log holds N movements
(half transfers out, half accepts). The bundle carries its log and the
causal past of it: the counterparties' logs up to their last payment to it,
with their accepts of its payments. ``verify_s`` is :func:`verify_bundle`
alone, on the bundle's bytes (decode, every signature, every rule), as
``troc verify`` runs it; ``build_s`` is :func:`build_bundle` on the
in-memory ledger that made the history.

    python bench/statement.py [--movements 10000]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time

from troc.crypto.sign import SigningKey
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import Accept, AnyBody, CommunityId, Entry, Genesis, Join, Ref, Transfer
from troc.protocol.ledger import Ledger, Status
from troc.protocol.statement import build_bundle, chain_of, verify_bundle

T0 = 1_700_000_000_000


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movements", type=int, default=10_000)
    parser.add_argument("--counterparties", type=int, default=10)
    args = parser.parse_args(argv)
    keys = [
        SigningKey(hashlib.sha256(b"troc bench statement %d" % i).digest())
        for i in range(args.counterparties + 1)
    ]
    me, others = keys[0], keys[1:]
    ledger = Ledger(MemoryBackend())
    clock = T0
    genesis = Entry.create(
        me,
        community=None,
        seq=0,
        prev=None,
        timestamp_ms=T0,
        body=Genesis(name="Bench valley", unit="hour", credit_limit=1000),
    )
    assert ledger.ingest(genesis.wire, T0).status is Status.ACCEPTED
    c = CommunityId(genesis.id)

    def add(key: SigningKey, body: AnyBody) -> Entry:
        nonlocal clock
        clock += 1000
        entry = ledger.prepare(key, c, body, clock)
        assert ledger.ingest_entry(entry, clock).status is Status.ACCEPTED
        return entry

    started = time.perf_counter()
    for k in keys:
        add(k, Join(name=f"member {keys.index(k)}"))
    movements = 0
    while movements < args.movements:
        other = others[movements % len(others)]
        t = add(me, Transfer(to=other.public, amount=3, memo=f"out {movements}"))
        add(other, Accept(transfer=t.ref))
        movements += 1
        if movements < args.movements:
            back = add(other, Transfer(to=me.public, amount=3, memo=f"in {movements}"))
            add(me, Accept(transfer=back.ref))
            movements += 1
    made_s = time.perf_counter() - started
    head = ledger.head(c, me.public)
    assert head is not None

    started = time.perf_counter()
    bundle = build_bundle(ledger, me, c, Ref(me.public, head.seq, head.id), 1, clock)
    build_s = time.perf_counter() - started

    started = time.perf_counter()
    verified = verify_bundle(bundle, clock)
    verify_s = time.perf_counter() - started
    # The floor on the same machine in the same run: one signature check per
    # entry and nothing else (shared machines drift: compare the ratio).
    wires = ledger_wires(ledger, c)
    started = time.perf_counter()
    for e in wires:
        assert e.signature_ok()
    signatures_s = time.perf_counter() - started
    assert len(verified.statement.movements) == movements
    assert verified.statement.closing == ledger.balance(c, me.public)
    print(
        f"{movements} movements, {verified.entries} entries in the bundle, "
        f"{len(bundle) / 1024:.0f} KiB; history made in {made_s:.1f} s",
        file=sys.stderr,
    )
    print(
        json.dumps(
            {
                "movements": movements,
                "entries": verified.entries,
                "bundle_kb": round(len(bundle) / 1024),
                "build_s": round(build_s, 2),
                "verify_s": round(verify_s, 2),
                "signatures_only_s": round(signatures_s, 2),
            }
        )
    )
    return 0


def ledger_wires(ledger: Ledger, community: CommunityId) -> list[Entry]:
    """Every entry the ledger holds in ``community``, decoded."""
    backend = ledger.backend
    assert isinstance(backend, MemoryBackend)
    return [
        s.entry
        for member, head in backend.heads(community)
        for s in chain_of(backend, community, Ref(member, head.seq, head.id))
    ]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
