"""Web app benchmark: a node with a community of 100 members and 10,000
entries, its web app served by hypercorn on 127.0.0.1 inside the node's
trio loop, driven over real HTTP by an httpx client in the same process.

    python bench/web.py [--entries 10000] [--seed 1] [--rounds 60]

The entries are bench/ingest.py's (signed directly, cached under bench/out/);
the node runs as member 0 (the founder), whose log holds ~100 entries.
Measured:

- ``home_p50_ms`` (and ``home_p99_ms``): GET / (balance, credit, pending,
  needs-action), the whole response;
- ``pages_p50_ms``: GET of /pay, /pending, /history, /offers, /members;
- ``api_p99_ms`` (and ``api_p50_ms``): POST /api/op/NAME for balance,
  pending, offer.list and history, mixed;
- ``live_update_p99_ms`` (and p50): an entry stored (the node's commit
  hook) -> its server-sent event read by the client -> the page fetched
  again (what static/app.js does before the member sees it).

Aims (issue 13): home under 300 ms, API p99 under 50 ms, live p99 under 1 s.
The last line of output is one JSON object with those keys.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import ingest as ingest_bench
import trio

from troc.crypto.sign import SigningKey
from troc.node.local import open_local_node
from troc.node.node import NodeConfig, open_node
from troc.node.ops import eid
from troc.web.server import serve_web


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


async def timed(client: httpx.AsyncClient, method: str, url: str, **kw: Any) -> float:
    t0 = time.perf_counter()
    r = await client.request(method, url, **kw)
    r.raise_for_status()
    return (time.perf_counter() - t0) * 1000


async def run(entries: int, seed: int, rounds: int, home: Path) -> dict[str, Any]:
    wires = ingest_bench.load(entries, seed)
    key = SigningKey(hashlib.sha256(b"troc-bench-%d-%d" % (seed, 0)).digest())
    t0 = time.perf_counter()
    with open_local_node(home, key) as local:
        for start in range(0, len(wires), 1000):
            local.ingest_many(wires[start : start + 1000])
        community = local.communities()[0].id
        stored = local.store.entry_count(community)
        members = sum(1 for _ in local.store.heads(community))
    print(
        f"stored {stored} entries, {members} members in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    config = NodeConfig(home=home, sync_interval=3600, control_socket=False)
    async with open_node(config, key) as node, trio.open_nursery() as nursery:
        server = await nursery.start(serve_web, node, "127.0.0.1", 0)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            await client.get(server.login_url().removeprefix(server.base_url))
            page = (await client.get("/")).text
            csrf = page.split('name="csrf-token" content="')[1].split('"')[0]
            home_ms = [await timed(client, "GET", "/") for _ in range(rounds)]
            pages_ms = [
                await timed(client, "GET", page)
                for _ in range(max(1, rounds // 5))
                for page in ("/pay", "/pending", "/history", "/offers", "/members")
            ]
            api_ms = []
            for i in range(rounds * 4):
                op, params = [
                    ("balance", {}),
                    ("pending", {}),
                    ("offer.list", {"limit": 50}),
                    ("history", {"limit": 50}),
                ][i % 4]
                api_ms.append(
                    await timed(
                        client,
                        "POST",
                        f"/api/op/{op}",
                        json=params,
                        headers={"x-csrf-token": csrf},
                    )
                )
            live_ms = await measure_live(node, client, rounds)
        nursery.cancel_scope.cancel()
    return {
        "entries": stored,
        "members": members,
        "home_p50_ms": pct(home_ms, 0.5),
        "home_p99_ms": pct(home_ms, 0.99),
        "pages_p50_ms": pct(pages_ms, 0.5),
        "api_p50_ms": pct(api_ms, 0.5),
        "api_p99_ms": pct(api_ms, 0.99),
        "live_update_p50_ms": pct(live_ms, 0.5),
        "live_update_p99_ms": pct(live_ms, 0.99),
        "rounds": rounds,
    }


async def measure_live(node: Any, client: httpx.AsyncClient, rounds: int) -> list[float]:
    """Stored -> event read -> page fetched again, for ``rounds`` own offers."""
    stored_at: dict[str, float] = {}

    def on_stored(entry: Any, own: bool) -> None:
        stored_at[eid(entry.id)] = time.perf_counter()

    node.local.listeners.append(on_stored)
    out: list[float] = []
    async with client.stream("GET", "/events") as events:
        lines = events.aiter_lines()
        await lines.__anext__()  # "retry:": subscribed
        for i in range(rounds):
            await node.run_op("offer.add", {"title": f"bench offer {i}"})
            with trio.fail_after(10):
                async for line in lines:
                    if line.startswith("data:"):
                        entry = json.loads(line[5:])["entry"]
                        break
            (await client.get("/offers")).raise_for_status()
            out.append((time.perf_counter() - stored_at[entry]) * 1000)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="troc-bench-web-"))
    try:
        result = trio.run(run, args.entries, args.seed, args.rounds, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
