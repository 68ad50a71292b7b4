"""One table of the operations a node does for its member (and its operator).

Every way in uses it: the ``troc`` command with no node running
(:func:`run_offline`, on the store the CLI opens), the control socket of a
running node (:func:`run_online`, through ``Node.run_op``), and the member
web app. An :class:`Operation` says what it is, so a caller can ask before
running it: whether it signs (it needs the member key, and a running node
waits for the restore guard), whether it needs a running node (``network``),
whether it works on the store alone (``offline``), and whether it only reads
(``read_only``: it works on a home that cannot be written).

Theory of operation
-------------------
An operation is, at its core, a *store step* (:mod:`troc.node.steps`): plain
code on the member's :class:`~troc.node.local.LocalNode`, JSON parameters in,
a :class:`~troc.node.opdata.Done` out (the result, and the entry it signed).
Around it, the two runners do the same things in the same order:

1. a ``troc-code:`` in ``invitation`` (operations with ``redeems``) is
   redeemed at its server first, by :func:`troc.node.invites.redeem`: through
   the running node's host, or, with no node running, through a host opened
   for the length of the call;
2. an operation that signs checks the store may sign (offline) or waits for
   the restore guard (online);
3. online only, ``prepare`` asks the network first (a payee's join, the
   inviter's vouch, the addresses an invitation carries);
4. the store step (online, the payment family's share a durable
   transaction with other requests waiting at the same moment: group
   commit, :mod:`troc.node.groupcommit`);
5. online only, ``settle`` (serve invitation codes once one is made), and
   with ``wait`` in the parameters, the wait for the signed entry's
   certificate (witnessed communities).

Operations only a running node can answer (``status``, ``peers``,
``finality``, ``connect``) have no store step but a ``serve`` step.

This module imports no trio and no libp2p: offline commands import it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from troc.errors import LocalProtocolError, TrocError
from troc.node import campaigns, directory, requests, steps
from troc.node.invitation import decode_invitation
from troc.node.invites import (
    Redeemed,
    is_code,
    op_create,
    op_list,
    op_revoke,
    redeem,
    redeem_offline,
)
from troc.node.invites import attach as serve_invites
from troc.node.local import LocalNode
from troc.node.opdata import Done, community_of, member_of

if TYPE_CHECKING:
    from troc.crypto.sign import MemberId
    from troc.net.p2p import P2PHost
    from troc.node.groupcommit import GroupCommit
    from troc.node.witness import Certifier, Progress
    from troc.protocol.entry import CommunityId

__all__ = [
    "OPERATIONS",
    "Done",
    "Operation",
    "RunningNode",
    "operation",
    "run_offline",
    "run_online",
]

Params = dict[str, Any]


class RunningNode(Protocol):
    """What the operations ask of a running node (:class:`troc.node.node.Node`)."""

    local: LocalNode
    host: P2PHost
    certifier: Certifier
    group_commit: GroupCommit

    def addrs(self) -> list[str]: ...
    def status(self) -> dict[str, Any]: ...
    def peers(self) -> dict[str, Any]: ...
    def finality(self, entry: str) -> dict[str, Any]: ...
    def witness_addrs(self, community: CommunityId) -> list[str]: ...
    def refresh_subscriptions(self) -> None: ...
    async def connect(self, addr: str, *, redial: bool = False) -> str: ...
    async def wait_restore_guard(self) -> None: ...
    async def learn_member(self, community: CommunityId, member: MemberId) -> None: ...
    async def reach_inviters(self, genesis: bytes, addrs: list[str]) -> None: ...
    async def wait_final(self, progress: Progress, seconds: Any = None) -> dict[str, Any]: ...


StoreStep = Callable[[LocalNode, Params], Done]
Prepare = Callable[[RunningNode, Params], Awaitable[Params]]
Serve = Callable[[RunningNode, Params], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation: its name, its steps, and what it needs."""

    name: str
    #: The store step (troc.node.steps); None for the ones only a running node answers.
    run: StoreStep | None = None
    #: The parameters it cannot do without (the others have defaults).
    needs: tuple[str, ...] = ()
    #: It signs an entry: it needs the member key (and, online, the restore guard).
    signs: bool = False
    #: It needs a running node (it asks the network, or the node's own state).
    network: bool = False
    #: It works on the store alone, with no node running.
    offline: bool = True
    #: It only reads the store (it works on a home that cannot be written).
    read_only: bool = False
    #: It signs only when this parameter is set (``community.invite --for``).
    signs_if: str | None = None
    #: Its ``invitation`` may be a server's code, redeemed first.
    redeems: bool = False
    #: A running node's steps before the store step: may rewrite the parameters.
    prepare: Prepare | None = None
    #: A running node's step after the store step.
    settle: Callable[[RunningNode], object] | None = None
    #: The whole operation, on a running node (``network`` operations).
    serve: Serve | None = None
    #: Its store step only appends own entries (``LocalNode._append``): a
    #: running node may run it with other requests' in one durable
    #: transaction (:mod:`troc.node.groupcommit`).
    groups: bool = False

    def needs_key(self, params: Params) -> bool:
        """True if, with these parameters, the operation signs an entry."""
        return self.signs and (self.signs_if is None or bool(params.get(self.signs_if)))

    def check(self, params: Params) -> None:
        """LocalProtocolError unless ``params`` holds every parameter it needs
        (a caller's mistake, not a bug: a request on the control socket or
        over HTTP may leave one out)."""
        missing = [repr(n) for n in self.needs if params.get(n) is None]
        if missing:
            plural = "s" if len(missing) > 1 else ""
            raise LocalProtocolError(f"missing parameter{plural} {', '.join(missing)}")


# -- what a running node does first --------------------------------------------


async def _learn_payee(node: RunningNode, p: Params) -> Params:
    """A payee this node has not seen join may have joined where its peers
    heard of it first: the node syncs with them (bounded) before the store
    step decides."""
    if p.get("to_unknown"):
        return p
    try:
        community = community_of(node.local, p.get("community"))
        payee = member_of(p.get("to"))
    except TrocError:
        return p  # the store step says what is wrong
    await node.learn_member(community, payee)
    return p


async def _reach_inviters(node: RunningNode, p: Params) -> Params:
    """Follow the community and sync with the inviter's nodes first, so the
    join can name a vouch that lives in the inviter's log."""
    genesis, addrs, _vouch = decode_invitation(str(p["invitation"]))
    await node.reach_inviters(genesis, addrs)
    return p


async def _invitation_addrs(node: RunningNode, p: Params) -> Params:
    """Where this node listens now (the home's record may be an older run's),
    and where the community's witnesses are."""
    try:
        witnesses = node.witness_addrs(community_of(node.local, p.get("community")))
    except TrocError:
        witnesses = []  # the store step says what is wrong
    return {**p, "addrs": node.addrs() or p.get("addrs", []), "witness_addrs": witnesses}


async def _code_addrs(node: RunningNode, p: Params) -> Params:
    """A code names the server's address: the node's own, now."""
    return {**p, "addrs": node.addrs()}


# -- what only a running node answers ----------------------------------------------


async def _status(node: RunningNode, p: Params) -> dict[str, Any]:
    return node.status()


async def _peers(node: RunningNode, p: Params) -> dict[str, Any]:
    return node.peers()


async def _finality(node: RunningNode, p: Params) -> dict[str, Any]:
    return node.finality(str(p["entry"]))


async def _connect(node: RunningNode, p: Params) -> dict[str, Any]:
    # Asked for by the member: now, even if a dial failed a moment ago.
    return {"peer_id": await node.connect(str(p["addr"]), redial=True)}


def _table(*operations: Operation) -> dict[str, Operation]:
    for op in operations:
        # Exactly one way to run it, and a network operation never offline.
        assert (op.run is None) != (op.serve is None), op.name
        assert not (op.network and op.offline), op.name
    return {op.name: op for op in operations}


def _reads(name: str, run: StoreStep) -> Operation:
    return Operation(name, run, read_only=True)


def _signs(name: str, run: StoreStep, *needs: str, **more: Any) -> Operation:
    return Operation(name, run, needs, signs=True, **more)


def _served(name: str, serve: Serve, *needs: str) -> Operation:
    return Operation(name, needs=needs, serve=serve, network=True, offline=False)


#: Every operation, by name.
OPERATIONS: dict[str, Operation] = _table(
    _reads("whoami", steps.op_whoami),
    _signs("community.create", steps.op_community_create, "name", "unit", "credit_limit"),
    _reads("community.list", steps.op_community_list),
    _reads("community.show", steps.op_community_show),
    _reads("community.policy", steps.op_community_policy),
    _signs(
        "community.invite", steps.op_community_invite, signs_if="for", prepare=_invitation_addrs
    ),
    _signs(
        "community.join",
        steps.op_community_join,
        "invitation",
        redeems=True,
        prepare=_reach_inviters,
    ),
    Operation("community.follow", steps.op_community_follow, ("invitation",)),
    _signs("pay", steps.op_pay, "to", "amount", prepare=_learn_payee, groups=True),
    _signs("accept", steps.op_answer("accept"), "transfer", groups=True),
    _signs("decline", steps.op_answer("decline"), "transfer", groups=True),
    _signs("reclaim", steps.op_answer("reclaim"), "transfer", groups=True),
    _signs("take_back", steps.op_answer("take_back"), "transfer", groups=True),
    _reads("pending", steps.op_pending),
    _reads("balance", steps.op_balance),
    _reads("balances", steps.op_balances),
    _reads("history", steps.op_history),
    _signs("offer.add", steps.op_offer_add, "title"),
    _reads("offer.list", steps.op_offer_list),
    _signs("offer.close", steps.op_offer_close, "offer"),
    _signs("vouch", steps.op_vouch, "member"),
    _reads("forks", steps.op_forks),
    _signs("request.create", requests.op_request_create, "to", "amount"),
    _reads("request.list", requests.op_request_list),
    _signs("request.refuse", requests.op_request_refuse, "request"),
    _signs("request.pay", requests.op_request_pay, "request"),
    _signs("profile.set", directory.op_profile_set),
    _reads("profile.show", directory.op_profile_show),
    _reads("members", directory.op_members),
    _reads("statement", directory.op_statement),
    # Signs no entry, but the statement with the member key.
    _signs("statement.bundle", directory.op_statement_bundle),
    _signs("campaign.create", campaigns.op_campaign_create, "title", "goal", "deadline_ms"),
    _reads("campaign.list", campaigns.op_campaign_list),
    _reads("campaign.show", campaigns.op_campaign_show),
    _signs("campaign.pledge", campaigns.op_campaign_pledge, "campaign", "amount"),
    _signs("campaign.close", campaigns.op_campaign_close, "campaign"),
    _signs("campaign.withdraw", campaigns.op_campaign_withdraw, "campaign"),
    Operation("invite.create", op_create, prepare=_code_addrs, settle=serve_invites),
    Operation("invite.list", op_list),
    Operation("invite.revoke", op_revoke, ("code",)),
    _served("status", _status),
    _served("peers", _peers),
    _served("finality", _finality, "entry"),
    _served("connect", _connect, "addr"),
)


def operation(name: str) -> Operation:
    """The operation called ``name``; LocalProtocolError if there is none."""
    op = OPERATIONS.get(name)
    if op is None:
        raise LocalProtocolError(f"unknown operation {name!r}")
    return op


def _code(op: Operation, params: Params) -> str | None:
    """The server's code in ``params`` to redeem first, if any."""
    text = str(params.get("invitation", ""))
    return text if op.redeems and is_code(text) else None


def _redeemed(params: Params, redeemed: Redeemed) -> Params:
    return {**params, "invitation": redeemed.invitation()}


def run_offline(local: LocalNode, name: str, params: Params) -> dict[str, Any]:
    """Run operation ``name`` on a store with no node running; its result.

    Raises TrocError subclasses for the caller's mistakes (and
    LocalProtocolError for an operation that needs a running node).
    """
    op = operation(name)
    if op.run is None or not op.offline:
        raise LocalProtocolError(f"{name!r} needs a running node: start one with `troc run`")
    op.check(params)
    if op.needs_key(params):
        # Before anything else: a store that lost the member's log must say
        # so, not "no community yet" (whose advice, joining, would fork it).
        local.check_can_sign()
    code = _code(op, params)
    if code is not None:
        # With the member key's peer id, so that the server knows a second
        # redemption by the same member (and the node that runs later, too).
        seed = None if local.key is None else local.key.seed
        params = _redeemed(params, redeem_offline(code, key_seed=seed))
    return op.run(local, params).result


async def run_online(node: RunningNode, name: str, params: Params) -> dict[str, Any]:
    """Run operation ``name`` on a running node; its result (with
    ``finality`` when ``wait`` is in ``params`` and the entry it signed
    needs witnesses). Raises TrocError subclasses."""
    op = operation(name)
    op.check(params)
    if op.serve is not None:
        return await op.serve(node, params)
    assert op.run is not None
    code = _code(op, params)
    if code is not None:
        params = _redeemed(params, await redeem(node.host, code))
    if op.needs_key(params):
        await node.wait_restore_guard()
    if op.prepare is not None:
        params = await op.prepare(node, params)
    if op.groups:
        # A payment or an answer follows no new community: no topic to join
        # (refreshing reads every community followed, on each payment).
        run, local = op.run, node.local
        done = await node.group_commit.run(lambda: run(local, params))
    else:
        done = op.run(node.local, params)
        node.refresh_subscriptions()
    if op.settle is not None:
        op.settle(node)
    result, entry = done.result, done.signed
    if entry is not None and entry.community is not None and "wait" in params:
        progress = node.certifier.track(entry)
        if progress is not None:
            result["finality"] = await node.wait_final(progress, params.get("wait"))
    return result
