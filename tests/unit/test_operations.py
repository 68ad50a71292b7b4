"""The operation table (troc.node.operations): what each operation declares,
and what its store step says it signed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import key, two_members
from troc.errors import LocalProtocolError, RefusedError
from troc.node import ops, steps
from troc.node.invitation import encode_invitation
from troc.node.local import LocalNode
from troc.node.opdata import describe_error, mid
from troc.node.operations import OPERATIONS, operation, run_offline
from troc.protocol.entry import CommunityId, Kind


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[LocalNode, LocalNode, CommunityId]]:
    """ada founded a community; bruno joined it; ada holds bruno's join."""
    with ExitStack() as stack:
        yield two_members(stack, tmp_path)


def test_the_table_declares_what_each_operation_needs() -> None:
    # The CLI's old lists, now read off the table (the web app asks it too).
    assert {
        "community.create",
        "community.join",
        "pay",
        "accept",
        "decline",
        "reclaim",
        "offer.add",
        "offer.close",
        "vouch",
        "profile.set",
        "statement.bundle",  # no entry: the statement, with the member key
        "take_back",
        "request.create",
        "request.refuse",
        "request.pay",
        "campaign.create",
        "campaign.pledge",
        "campaign.close",
        "campaign.withdraw",
    } == ops.SIGNING_OPS
    assert {n for n, op in OPERATIONS.items() if op.network} == {
        "status",
        "peers",
        "finality",
        "connect",
    }
    for op in OPERATIONS.values():
        assert op.offline != op.network  # a store step, or only a running node
        assert not (op.read_only and op.signs)
    invite = operation("community.invite")  # signs only when it vouches
    assert not invite.needs_key({})
    assert invite.needs_key({"for": "m…"})
    assert operation("community.join").redeems


def test_unknown_and_node_only_operations_are_usage_errors(
    pair: tuple[LocalNode, LocalNode, CommunityId],
) -> None:
    ada, _bruno, _community = pair
    with pytest.raises(LocalProtocolError, match="unknown operation 'nope'"):
        operation("nope")
    with pytest.raises(LocalProtocolError, match="needs a running node"):
        run_offline(ada, "status", {})


def test_each_store_step_returns_the_entry_it_signed(
    pair: tuple[LocalNode, LocalNode, CommunityId],
) -> None:
    """What a running node follows for ``wait``: the entry the step made,
    not whatever the node stored last."""
    ada, bruno, community = pair
    paid = steps.op_pay(ada, {"to": mid(bruno.member), "amount": 3})
    assert paid.signed is not None
    assert paid.signed.kind is Kind.TRANSFER
    assert mid(paid.signed.author) == mid(ada.member)
    assert paid.result["transfer"].startswith("e")
    offer = steps.op_offer_add(ada, {"title": "bread"})
    assert offer.signed is not None
    assert offer.signed.kind is Kind.OFFER
    # Reads sign nothing; nor does an invitation that vouches for no one.
    assert steps.op_balance(ada, {}).signed is None
    assert steps.op_community_invite(ada, {"addrs": ["/ip4/1/tcp/2"]}).signed is None
    vouching = steps.op_community_invite(ada, {"for": mid(key(3).public), "addrs": []})
    assert vouching.signed is not None
    assert vouching.signed.kind is Kind.VOUCH
    # A join signs its join entry; joining again (idempotent) signs nothing.
    genesis = ada.community(community).genesis
    again = steps.op_community_join(bruno, {"invitation": encode_invitation(genesis, [])})
    assert again.signed is None
    created = steps.op_community_create(ada, {"name": "Second", "unit": "seeds", "credit_limit": 5})
    assert created.signed is not None
    assert created.signed.kind is Kind.JOIN


@pytest.mark.parametrize(
    ("name", "params", "missing"),
    [
        ("pay", {"amount": 1}, "'to'"),
        ("accept", {}, "'transfer'"),
        ("community.create", {"name": "x", "unit": None}, "'unit', 'credit_limit'"),
        ("invite.revoke", {}, "'code'"),
    ],
)
def test_a_missing_parameter_is_a_usage_error_not_a_bug(
    pair: tuple[LocalNode, LocalNode, CommunityId], name: str, params: dict[str, Any], missing: str
) -> None:
    """A request on the control socket (or over HTTP) may leave a parameter
    out: the caller hears which (exit 2, HTTP 400), not 'unexpected KeyError'."""
    ada, _bruno, _community = pair
    with pytest.raises(LocalProtocolError) as exc:
        run_offline(ada, name, params)
    assert describe_error(exc.value) == {
        "kind": "usage",
        "reason": None,
        "message": f"missing parameter{'s' if ',' in missing else ''} {missing}",
    }


def test_accept_late_names_a_transfer_its_payer_took_back(
    pair: tuple[LocalNode, LocalNode, CommunityId],
) -> None:
    """Once the payee's node holds the payer's take-back, the transfer is no
    longer pending there; `accept --late` still names it, and the accept wins
    (docs/protocol.md §4.11). Without --late it is not offered at all."""
    ada, bruno, community = pair
    paid = run_offline(ada, "pay", {"to": mid(bruno.member), "amount": "3", "expires_ms": 0})
    took = run_offline(ada, "take_back", {"transfer": paid["transfer"]})
    for entry in ada.history(community):  # the payment and the take-back reach bruno
        bruno.ingest(entry.wire)
    assert bruno.pending(community) == []
    with pytest.raises(LocalProtocolError):
        run_offline(bruno, "accept", {"transfer": paid["transfer"]})
    done = run_offline(bruno, "accept", {"transfer": paid["transfer"], "late": True})
    assert done["transfer"] == paid["transfer"] == took["transfer"]
    assert ada.balance(community).balance == 0  # taken back, as far as ada knows
    ada.ingest(bruno.history(community)[0].wire)  # bruno's accept
    assert ada.balance(community).balance == -3  # the accept won: the take-back is undone
    assert bruno.balance(community).balance == 3


def test_an_error_a_trio_nursery_wrapped_is_described_as_itself() -> None:
    """trio wraps what a task raised in an ExceptionGroup; the member hears the
    error itself (its kind and exit code), not 'unexpected ExceptionGroup'."""
    refused = RefusedError("overdraft", "balance would pass the credit limit")
    wrapped = BaseExceptionGroup("nursery", [ExceptionGroup("inner", [refused])])
    assert describe_error(wrapped) == describe_error(refused)
    assert describe_error(wrapped)["kind"] == "refused"
    two = ExceptionGroup("nursery", [refused, ValueError("x")])
    assert describe_error(two)["kind"] == "bug"  # two errors: no one of them is the answer
