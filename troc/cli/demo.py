"""``troc demo``: a small community on this machine, trading, then agreeing.

Each member gets a real node: its own key, its own SQLite store in a
temporary folder, its own libp2p host on 127.0.0.1. The founder creates a
community and invites the others, who join and connect; they publish offers
and wants, pay, accept and decline, and the entries travel by gossip and
sync. At the end every node computes every member's balance and the demo
checks they all agree. The temporary folders are removed afterwards.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

from troc.errors import NetworkError

NAMES = ["ada", "bruno", "chiara", "dmitri", "esi", "farid", "gaia", "hugo"]
OFFERS = [
    ("offer", "Bicycle repair", ["bikes", "repair"]),
    ("offer", "Sourdough bread, weekly", ["food"]),
    ("want", "Help moving a piano", ["moving"]),
    ("offer", "Guitar lessons", ["music", "teaching"]),
    ("want", "Tomato seedlings", ["garden", "food"]),
    ("offer", "Sewing and mending", ["clothes", "repair"]),
    ("want", "Lift to the station", ["transport"]),
    ("offer", "Python tutoring", ["teaching"]),
]
TIMEOUT = 30.0
CREDIT_LIMIT = 20


def plan_payments(names: list[str], rng: random.Random) -> list[tuple[str, str, int]]:
    """Two payments per member, between random members, of 1 to 6 hours.

    What a payer has sent counts against its credit limit until it is accepted
    or reclaimed, and the demo pays before anyone accepts: so each payer's
    total stays within the limit, or the demo would stop on its own refusal.
    """
    room = dict.fromkeys(names, CREDIT_LIMIT)
    payments = []
    for _round in range(2 * len(names)):
        payer = rng.choice([name for name in names if room[name] > 0])
        payee = rng.choice([name for name in names if name != payer])
        amount = rng.randint(1, min(6, room[payer]))
        room[payer] -= amount
        payments.append((payer, payee, amount))
    return payments


@contextmanager
def _in_time(stage_of: Callable[[], str]) -> Iterator[None]:
    """Within TIMEOUT seconds, or a NetworkError naming the stage that was
    still waiting (on a very busy machine gossip and sync are slow)."""
    import trio

    try:
        with trio.fail_after(TIMEOUT):
            yield
    except trio.TooSlowError:
        raise NetworkError(
            f"the demo's nodes were still waiting for {stage_of()} after {TIMEOUT:.0f} s"
        ) from None


def run_demo(
    members: int = 3, *, seed: int | None = None, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the demo; return the final balances and whether all nodes agree."""
    import trio

    say = progress or (lambda _msg: None)
    with tempfile.TemporaryDirectory(prefix="troc-demo-") as tmp:
        return trio.run(_demo, members, Path(tmp), random.Random(seed), say)


async def _demo(
    members: int, tmp: Path, rng: random.Random, say: Callable[[str], None]
) -> dict[str, Any]:
    import trio

    from troc.crypto.sign import SigningKey
    from troc.node.config import NodeConfig
    from troc.node.node import Node, open_node
    from troc.node.opdata import mid

    names = NAMES[:members]
    async with AsyncExitStack() as stack:
        nodes: list[Node] = []
        for name in names:
            config = NodeConfig(
                home=tmp / name, sync_interval=0.5, control_socket=False, remember_peers=False
            )
            nodes.append(await stack.enter_async_context(open_node(config, SigningKey.generate())))
        who = {mid(n.member): name for n, name in zip(nodes, names, strict=True)}
        ids = {name: mid(n.member) for n, name in zip(nodes, names, strict=True)}
        founder = nodes[0]
        say(f"started {members} nodes on 127.0.0.1, each with its own key and store")
        await founder.run_op(
            "community.create",
            {
                "name": "Demo Valley LETS",
                "unit": "hours",
                "credit_limit": CREDIT_LIMIT,
                "member_name": names[0],
            },
        )
        say(f"{names[0]} founded 'Demo Valley LETS' (unit: hours, credit limit {CREDIT_LIMIT})")
        invitation = (await founder.run_op("community.invite", {}))["invitation"]
        for node, name in zip(nodes[1:], names[1:], strict=True):
            await node.run_op("community.join", {"invitation": invitation, "member_name": name})
            say(f"{name} joined with the invitation and connected to {names[0]}")
        for i, node in enumerate(nodes):
            side, title, tags = OFFERS[i % len(OFFERS)]
            await node.run_op("offer.add", {"title": title, "side": side, "tags": tags})
            say(f"{names[i]} published {'an offer' if side == 'offer' else 'a want'}: {title}")
        payments = plan_payments(names, rng)
        for payer, payee, amount in payments:
            node = nodes[names.index(payer)]
            await node.run_op("pay", {"to": ids[payee], "amount": amount, "memo": "thanks"})
            say(f"{payer} paid {amount} hours to {payee}")
        # Each payee answers what reached it: accept most, decline some.
        expected = {name: [p for p in payments if p[1] == name] for name in names}
        stage = "payments reaching their payees"
        with _in_time(stage_of=lambda: stage):
            for node, name in zip(nodes, names, strict=True):
                while len((await node.run_op("pending", {}))["incoming"]) < len(expected[name]):  # noqa: ASYNC110 - polls another node's state
                    await trio.sleep(0.1)
                for i, t in enumerate((await node.run_op("pending", {}))["incoming"]):
                    verb = "decline" if (i + names.index(name)) % 3 == 2 else "accept"
                    await node.run_op(verb, {"transfer": t["transfer"]})
                    done = {"accept": "accepted", "decline": "declined"}[verb]
                    say(f"{name} {done} {t['amount']} hours from {who[t['from']]}")
            # Payers take back what was declined, once they see the decline.
            stage = "declines reaching their payers"
            for node, name in zip(nodes, names, strict=True):
                for t in (await node.run_op("pending", {}))["outgoing"]:
                    while True:
                        try:
                            await node.run_op("reclaim", {"transfer": t["transfer"]})
                            say(f"{name} reclaimed {t['amount']} declined hours")
                            break
                        except Exception:  # the decline has not arrived yet
                            await trio.sleep(0.1)
                            if t["transfer"] not in {
                                x["transfer"]
                                for x in (await node.run_op("pending", {}))["outgoing"]
                            }:
                                break
            # Wait until every node computes the same balances.
            stage = "every node computing the same balances"
            while True:
                views = [
                    {who[m]: b for m, b in (await n.run_op("balances", {}))["balances"].items()}
                    for n in nodes
                ]
                if all(v == views[0] for v in views) and len(views[0]) == members:
                    outgoing = [(await n.run_op("pending", {}))["outgoing"] for n in nodes]
                    if not any(outgoing):
                        break
                await trio.sleep(0.1)
        say(f"{members} nodes compared balances: they all agree")
        return {
            "community": founder.local.communities()[0].id.hex(),
            "unit": "hours",
            "members": members,
            "payments": len(payments),
            "balances": dict(sorted(views[0].items())),
            "sum": sum(views[0].values()),
            "converged": True,
        }
