"""What one sync session costs when two stores barely differ, by community size.

For communities of 100, 1,000 and 10,000 members (by default) two in-memory
nodes (the simulator's :class:`~troc.protocol.sim.MemoryView` over real
ledgers, frames encoded and decoded with the real codec) hold the same
history: the genesis and every member's join. Then

* ``1_diff``: the responder holds one entry more (a payment by a random
  member: what a lost gossip message leaves behind);
* ``1pct``: the responder holds 1 % of the entries more (one payment each by
  1 % of the members, chosen at random with a fixed seed).

One session runs (:func:`~troc.protocol.sim.sync_pair` in lockstep: every
frame in flight one way is delivered before any the other way), and we
report its bytes (every frame, length prefix excluded) and round trips
(``ceil(flights / 2)``, a flight being a run of frames one way), for each
protocol version the node speaks. The session must leave both stores equal.

Usage:

    python bench/sync_cost.py [--sizes 100,1000,10000] [--versions 2,3]

The last line printed is one JSON object: ``bytes_1_diff_10k``,
``rounds_1_diff_10k``, ``bytes_1pct_10k``, ``rounds_1pct_10k`` (and ``_100``,
``_1k``) for the newest version, the same keys with a ``_v2`` suffix for
``/troc/sync/2``, and per-run details under ``runs``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import random
import sys
import time
from typing import Any

from troc.crypto.sign import SigningKey
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import CommunityId, Entry, Genesis, Join, Transfer
from troc.protocol.ledger import Ledger
from troc.protocol.sim import BASE_TIME_MS, MemoryView, sync_pair

NOW = BASE_TIME_MS + 10**9


def _label(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


class Community:
    """A genesis and ``members`` joins, signed once; views are built from them."""

    def __init__(self, members: int, seed: int) -> None:
        rng = random.Random(seed)
        self.keys = [SigningKey(rng.randbytes(32)) for _ in range(members)]
        self.genesis = Entry.create(
            self.keys[0],
            community=None,
            seq=0,
            prev=None,
            timestamp_ms=BASE_TIME_MS,
            body=Genesis(name="bench", unit="hour", credit_limit=100),
        )
        self.community = CommunityId(self.genesis.id)
        self.joins = [
            Entry.create(
                k,
                community=self.community,
                seq=1,
                prev=None,
                timestamp_ms=BASE_TIME_MS + 1 + i,
                body=Join(),
            )
            for i, k in enumerate(self.keys)
        ]
        self.decoded: dict[bytes, Entry] = {}

    def view(self, extra: list[Entry]) -> MemoryView:
        ledger = Ledger(MemoryBackend())
        assert ledger.ingest(self.genesis.wire, NOW).ok
        view = MemoryView(ledger, self.community, lambda: NOW, self.decoded)
        for e in [*self.joins, *extra]:
            assert view.ingest(e.wire).ok
        return view

    def payments(self, count: int, seed: int) -> list[Entry]:
        """One payment each by ``count`` distinct random members."""
        rng = random.Random(seed)
        payers = rng.sample(range(len(self.keys)), count)
        out = []
        for i in payers:
            payee = self.keys[(i + 1) % len(self.keys)].public
            join = self.joins[i]
            out.append(
                Entry.create(
                    self.keys[i],
                    community=self.community,
                    seq=2,
                    prev=join.id,
                    timestamp_ms=BASE_TIME_MS + 10**6 + i,
                    body=Transfer(to=payee, amount=1, memo="lunch"),
                )
            )
        return out


def one_session(community: Community, extra: list[Entry], version: int | None) -> dict[str, Any]:
    ini, res = community.view([]), community.view(extra)
    kwargs: dict[str, Any] = {"lockstep": True}
    if version is not None:
        kwargs["version"] = version
    t0 = time.perf_counter()
    result = sync_pair(ini, res, **kwargs)
    ms = (time.perf_counter() - t0) * 1000
    assert result.done
    assert ini.digest() == res.digest(), "the session did not make the stores equal"
    return {
        "bytes": result.bytes_exchanged,
        "frames": len(result.frames),
        "flights": result.flights,
        "rounds": (result.flights + 1) // 2,
        "ms": round(ms, 1),
        "kinds": result.kinds() if len(result.frames) <= 16 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--versions", default=None, help="default: every version spoken")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    has_versions = "version" in inspect.signature(sync_pair).parameters
    if args.versions:
        versions: list[int | None] = [int(v) for v in args.versions.split(",")]
    elif has_versions:
        from troc.protocol.sync_wire import VERSIONS

        versions = sorted(VERSIONS)
    else:
        versions = [None]  # the code before versions: /troc/sync/2 only
    newest = max((v or 2) for v in versions)
    out: dict[str, Any] = {"bench": "sync_cost"}
    runs = []
    for size in (int(n) for n in args.sizes.split(",")):
        t0 = time.perf_counter()
        community = Community(size, args.seed)
        cases = {
            "1_diff": community.payments(1, args.seed),
            "1pct": community.payments(max(1, size // 100), args.seed),
        }
        build_s = time.perf_counter() - t0
        for case, extra in cases.items():
            for version in versions:
                r = one_session(community, extra, version)
                v = version or 2
                runs.append({"members": size, "case": case, "version": v, **r})
                print(
                    f"v{v} {size:>6} members, {case:>6}: {r['bytes']:>9} bytes,"
                    f" {r['rounds']} round trips ({r['frames']} frames), {r['ms']} ms"
                    f" (stores built in {build_s:.1f} s)",
                    file=sys.stderr,
                )
                suffix = "" if v == newest else f"_v{v}"
                out[f"bytes_{case}_{_label(size)}{suffix}"] = r["bytes"]
                out[f"rounds_{case}_{_label(size)}{suffix}"] = r["rounds"]
    out["version"] = newest
    out["runs"] = runs
    print(json.dumps(out))


if __name__ == "__main__":
    main()
