"""The ``troc`` command.

Every command prints data on stdout (one JSON document with ``--json``) and
messages on stderr. Exit codes are decided in one place,
:mod:`troc.cli.failures` (the table of codes is there), and the process
exits only here.

Commands reach a running node (``troc run``) through its control socket; with
no node running, they open the store themselves (it is locked against a
second writer) and say so on stderr. Libraries that take a second to import
(libp2p) are imported only by the commands that need them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from troc.cli import home as homes
from troc.cli import render
from troc.cli.campaigns import campaign
from troc.cli.context import Context, community_option, pass_ctx, wait_option
from troc.cli.directory import members, profile, statement, verify
from troc.cli.failures import EXIT_NOT_FOUND, EXIT_USAGE, Failure, classify
from troc.cli.offers import offer
from troc.cli.relay import relay
from troc.cli.running import connect, demo, peers, run, status, web


def fail(ctx: Context | None, failure: Failure) -> NoReturn:
    if ctx is not None and ctx.as_json:
        click.echo(
            json.dumps(
                {
                    "error": {
                        "kind": failure.kind,
                        "reason": failure.reason,
                        "message": str(failure),
                    }
                },
                sort_keys=True,
            )
        )
    click.echo(f"troc: {failure}", err=True)
    sys.exit(failure.code)


class TrocGroup(click.Group):
    """Turns every exception into one line and a documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("troc: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:
            obj = ctx.find_object(Context)
            if os.environ.get("TROC_DEBUG"):
                raise
            fail(obj, classify(exc))


@click.group(cls=TrocGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    envvar="TROC_HOME",
    help="The node's data folder (default: a per-user data folder). Env: TROC_HOME.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option(
    "--passphrase-file",
    type=click.Path(path_type=Path),
    envvar="TROC_PASSPHRASE_FILE",
    help="Read the key's passphrase from this file. Env: TROC_PASSPHRASE_FILE; "
    "or set TROC_PASSPHRASE.",
)
@click.version_option(package_name="troc")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, as_json: bool, passphrase_file: Path | None) -> None:
    """troc: a peer-to-peer exchange node for community currencies."""
    ctx.obj = Context(home or homes.default_home(), as_json, passphrase_file)


# -- identity -----------------------------------------------------------------


@cli.command()
@click.option(
    "--name", help="A name for yourself, shown to others when you join (at most 200 characters)."
)
@click.option(
    "--no-passphrase",
    is_flag=True,
    help="Store the key unencrypted (for unattended servers; file mode 0600).",
)
@pass_ctx
def init(ctx: Context, name: str | None, no_passphrase: bool) -> None:
    """Create this node's member key."""
    member = homes.init_key(
        ctx.home, name=name, encrypt=not no_passphrase, passphrase_file=ctx.passphrase_file
    )
    ctx.emit({"member": member}, render.whoami)


@cli.command()
@pass_ctx
def whoami(ctx: Context) -> None:
    """Show this node's member id."""
    ctx.emit({"member": homes.member_id(ctx.home)}, render.whoami)


# -- communities --------------------------------------------------------------


@cli.group()
def community() -> None:
    """Create, join and inspect communities."""


@community.command("create")
@click.option("--name", required=True, help="At most 200 characters.")
@click.option(
    "--unit",
    required=True,
    help="The unit's name, e.g. 'hours' or 'seeds' (at most 40 characters).",
)
@click.option(
    "--credit-limit",
    type=click.IntRange(min=0),
    required=True,
    help="How far below zero a member may go, in the smallest unit.",
)
@click.option(
    "--admission", type=click.Choice(["open", "vouch"]), default="open", show_default=True
)
@click.option(
    "--finality",
    type=click.Choice(["optimistic", "witnessed"]),
    default="optimistic",
    show_default=True,
)
@click.option("--witness", "witnesses", multiple=True, help="A witness member id (repeatable).")
@click.option(
    "--faults", type=click.IntRange(min=0), default=0, help="How many witnesses may be faulty."
)
@click.option("--quorum", type=click.IntRange(min=1), default=None)
@click.option(
    "--ceiling",
    type=click.IntRange(min=1),
    default=None,
    help="The highest balance a member may hold.",
)
@click.option(
    "--allow-duplicate-name",
    is_flag=True,
    help="Create it even if this node already has a community of that name.",
)
@click.option(
    "--transfer-expiry",
    metavar="DURATION",
    default=None,
    help="Transfers expire this long after they are made unless they say otherwise"
    " (14d, 48h …); after it the payer may take back one its payee never answered.",
)
@pass_ctx
def community_create(
    ctx: Context,
    name: str,
    unit: str,
    credit_limit: int,
    admission: str,
    finality: str,
    witnesses: tuple[str, ...],
    faults: int,
    quorum: int | None,
    ceiling: int | None,
    allow_duplicate_name: bool,
    transfer_expiry: str | None,
) -> None:
    """Found a community, with you as its first member."""
    params = {
        "name": name,
        "unit": unit,
        "credit_limit": credit_limit,
        "admission": admission,
        "finality": finality,
        "witnesses": [homes.resolve_member(ctx.home, w) for w in witnesses],
        "faults": faults,
        "quorum": quorum,
        "ceiling": ceiling,
        "member_name": homes.member_name(ctx.home),
        "allow_duplicate_name": allow_duplicate_name,
        "transfer_expiry_ms": render.parse_duration_ms(transfer_expiry)
        if transfer_expiry
        else None,
    }
    ctx.emit(ctx.call("community.create", params), render.created("community"))


@community.command("invite")
@click.argument("community_", metavar="[COMMUNITY]", required=False)
@click.option(
    "--for",
    "for_",
    metavar="MEMBER",
    help="Vouch for this newcomer (id or contact) and put the vouch in the "
    "invitation: needed where the community admits by vouch.",
)
@pass_ctx
def community_invite(ctx: Context, community_: str | None, for_: str | None) -> None:
    """Print an invitation a newcomer passes to `troc community join`."""
    params = {
        "community": community_,
        "addrs": homes.known_addrs(ctx.home),
        "for": homes.resolve_member(ctx.home, for_) if for_ else None,
    }
    result = ctx.call("community.invite", params)
    if result.get("warning"):
        click.echo(f"troc: warning: {result['warning']}", err=True)
    ctx.emit(result, render.invitation)


@community.command("join")
@click.argument("invitation")
@pass_ctx
def community_join(ctx: Context, invitation: str) -> None:
    """Join the community an invitation names: a member's `troc-invite:…` text,
    or a server's `troc-code:…` (redeemed at the server first; docs/invitations.md)."""
    params = {"invitation": invitation, "member_name": homes.member_name(ctx.home)}
    result = ctx.call("community.join", params)
    homes.remember_addrs(ctx.home, result.get("addrs", []))
    ctx.emit(result, render.created("community"))


@community.command("follow")
@click.argument("invitation")
@pass_ctx
def community_follow(ctx: Context, invitation: str) -> None:
    """Follow a community without joining it (servers, witnesses): keep and serve its logs."""
    result = ctx.call("community.follow", {"invitation": invitation})
    homes.remember_addrs(ctx.home, result.get("addrs", []))
    ctx.emit(result, render.created("community"))


@community.command("show")
@click.argument("community_", metavar="[COMMUNITY]", required=False)
@pass_ctx
def community_show(ctx: Context, community_: str | None) -> None:
    """Show a community's rules."""
    ctx.emit(ctx.call("community.show", {"community": community_}), render.community)


@community.command("list")
@pass_ctx
def community_list(ctx: Context) -> None:
    """List the communities this node follows."""
    ctx.emit(ctx.call("community.list", {}), render.communities)


@community.command("policy")
@click.argument("community_", metavar="[COMMUNITY]", required=False)
@pass_ctx
def community_policy(ctx: Context, community_: str | None) -> None:
    """Show a community's policy as its genesis states it (what servers publish)."""
    from troc.cli.relay import render_policy

    ctx.emit(ctx.call("community.policy", {"community": community_}), render_policy)


# -- money --------------------------------------------------------------------


@cli.command()
@click.argument("member", required=False)
@click.argument("amount", required=False)
@click.option("--memo", default="", help="What the payment is for (at most 200 characters).")
@click.option(
    "--offer", help="The offer this pays for (its id, or the first 6 or more characters of it)."
)
@click.option(
    "--any-amount", is_flag=True, help="With --offer: pay an amount other than its price."
)
@click.option(
    "--to-unknown",
    is_flag=True,
    help="Pay MEMBER even though this node has not seen them join (their join"
    " has not reached it yet); without it such a payment is refused (exit 4).",
)
@click.option(
    "--request",
    "request_",
    metavar="REQUEST",
    help="Pay a payment request instead of MEMBER AMOUNT: its id (or first 6 or more"
    " characters, see troc pending), or its troc-request: text, which pays it even if"
    " this node has never seen it.",
)
@click.option(
    "--expires",
    default=None,
    help="After this (a duration such as 2h or 7d, or a date YYYY-MM-DD) you may take"
    " the payment back if it is still unanswered (default: the community's, if any).",
)
@community_option
@wait_option
@pass_ctx
def pay(
    ctx: Context,
    member: str | None,
    amount: str | None,
    memo: str,
    offer: str | None,
    any_amount: bool,
    to_unknown: bool,
    request_: str | None,
    expires: str | None,
    community_: str | None,
    wait: float,
) -> None:
    """Pay AMOUNT (in the smallest unit: a whole number from 1 to 2^53 - 1)
    to MEMBER (an id or a contact name), or pay a request (--request).

    MEMBER must be known to this node as a member of the community (see
    --to-unknown). In a witnessed community the running node then waits (up
    to --wait seconds) until the witnesses have made the payment final."""
    if request_ is not None:
        if member is not None or amount is not None or offer or memo:
            raise click.UsageError(
                "--request pays what the request asks: give no MEMBER, AMOUNT, --memo or --offer"
            )
        params = {"community": community_, "request": request_, "wait": wait}
        ctx.emit(ctx.sign("request.pay", params, "transfer"), render.created("transfer"))
        return
    if member is None or amount is None:
        raise click.UsageError(f"Missing argument '{'MEMBER' if member is None else 'AMOUNT'}'.")
    params = {
        "community": community_,
        "to": homes.resolve_member(ctx.home, member),
        "amount": amount,
        "memo": memo,
        "offer": offer,
        "any_amount": any_amount,
        "wait": wait,
        "to_unknown": to_unknown,
        "expires_ms": render.parse_expiry_ms(expires) if expires else None,
    }
    ctx.emit(ctx.sign("pay", params, "transfer"), render.created("transfer"))


class _RequestGroup(TrocGroup):
    """``troc request MEMBER AMOUNT`` makes a request; ``troc request list``
    and ``troc request refuse`` are subcommands: anything that is not a
    subcommand's name goes to the hidden ``new``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["new", *args]
        return super().parse_args(ctx, args)


@cli.group(cls=_RequestGroup)
def request() -> None:
    """Ask a member for a payment: troc request MEMBER AMOUNT [--qr]; list and refuse requests."""


@request.command("new", hidden=True)
@click.argument("member")
@click.argument("amount")
@click.option("--memo", default="", help="What it is for (at most 200 characters).")
@click.option("--offer", help="The offer it is for (its id, or its first 6 or more characters).")
@click.option(
    "--expires",
    default=None,
    help="No payment after: a duration (30m, 2h, 7d) or a date (YYYY-MM-DD).",
)
@click.option("--qr", is_flag=True, help="Also print the request as a QR code for the payer.")
@community_option
@pass_ctx
def request_new(
    ctx: Context,
    member: str,
    amount: str,
    memo: str,
    offer: str | None,
    expires: str | None,
    qr: bool,
    community_: str | None,
) -> None:
    """Ask MEMBER to pay you AMOUNT. Prints the request's id and its
    troc-request: text, which the payer pays with `troc pay --request TEXT`."""
    params = {
        "community": community_,
        "to": homes.resolve_member(ctx.home, member),
        "amount": amount,
        "memo": memo,
        "offer": offer,
        "expires_ms": render.parse_expiry_ms(expires) if expires else None,
    }
    result = ctx.sign("request.create", params, "request")
    ctx.emit(result, render.request_created(qr))


@request.command("list")
@community_option
@pass_ctx
def request_list(ctx: Context, community_: str | None) -> None:
    """Requests made to you and by you, with their state."""
    ctx.emit(ctx.call("request.list", {"community": community_}), render.requests(ctx.home))


@request.command("refuse")
@click.argument("request_id", metavar="REQUEST")
@click.option("--reason", default="", help="Why (at most 200 characters).")
@community_option
@pass_ctx
def request_refuse(ctx: Context, request_id: str, reason: str, community_: str | None) -> None:
    """Refuse a request made to you (REQUEST: its id, or its first 6 or more characters)."""
    params = {"community": community_, "request": request_id, "reason": reason}
    ctx.emit(ctx.sign("request.refuse", params, "refusal"), render.created("refusal"))


@cli.command()
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="Print only the ids of incoming transfers, one a line (for `troc accept`).",
)
@community_option
@pass_ctx
def pending(ctx: Context, quiet: bool, community_: str | None) -> None:
    """Transfers waiting for an answer: to you, and from you."""
    result = ctx.call("pending", {"community": community_})
    if quiet and not ctx.as_json:
        for t in result["incoming"]:
            click.echo(t["transfer"])
        return
    ctx.emit(result, render.pending(ctx.home))


def _answer_command(verb: str, doc: str) -> None:
    op = verb.replace("-", "_")

    @cli.command(verb, help=doc)
    @click.argument("transfer")
    @community_option
    @wait_option
    @click.option(
        "--late",
        is_flag=True,
        hidden=verb != "accept",
        help="Accept a transfer that has expired, even one its payer has taken back:"
        " this accept then takes the amount from them again.",
    )
    @pass_ctx
    def command(
        ctx: Context, transfer: str, community_: str | None, wait: float, late: bool
    ) -> None:
        _one_transfer_named(ctx, transfer, community_)
        params = {"community": community_, "transfer": transfer, "wait": wait, "late": late}
        ctx.emit(ctx.sign(op, params, op), render.created(op))


def _one_transfer_named(ctx: Context, transfer: str, community_: str | None) -> None:
    """Clear errors for what `accept "$(troc pending -q)"` passes when not
    exactly one transfer is pending: nothing, or several ids."""
    named = transfer.split()
    if len(named) > 1:
        raise Failure(
            EXIT_USAGE, "usage", f"{len(named)} transfers named: name one (troc pending lists them)"
        )
    if not named:
        incoming = ctx.call("pending", {"community": community_})["incoming"]
        if not incoming:
            raise Failure(EXIT_NOT_FOUND, "not_found", "nothing pending: no transfer to answer")
        raise Failure(
            EXIT_USAGE,
            "usage",
            f"no transfer named; {len(incoming)} pending: name one (troc pending lists them)",
        )


_ID_HELP = " TRANSFER is its id, or the first 6 or more characters of it (troc pending)."
_answer_command("accept", "Accept a transfer made to you." + _ID_HELP)
_answer_command("decline", "Decline a transfer made to you; the payer can reclaim it." + _ID_HELP)
_answer_command("reclaim", "Take back a transfer of yours that its payee declined." + _ID_HELP)
_answer_command(
    "take-back",
    "Take back a transfer of yours that expired unanswered; if its payee's accept"
    " turns up later, the accept wins (troc balance shows it)." + _ID_HELP,
)


@cli.command()
@click.argument("member", required=False)
@community_option
@pass_ctx
def balance(ctx: Context, member: str | None, community_: str | None) -> None:
    """Show your balance, or MEMBER's."""
    params = {
        "community": community_,
        "member": homes.resolve_member(ctx.home, member) if member else None,
    }
    ctx.emit(ctx.call("balance", params), render.balance(ctx.home))


@cli.command()
@community_option
@pass_ctx
def balances(ctx: Context, community_: str | None) -> None:
    """Every member's balance, as this node computes it."""
    ctx.emit(ctx.call("balances", {"community": community_}), render.balances(ctx.home))


@cli.command()
@click.argument("member", required=False)
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option(
    "--before",
    "before_ms",
    type=int,
    default=None,
    help="Page: show entries older than this timestamp (ms), as printed by --json.",
)
@community_option
@pass_ctx
def history(
    ctx: Context, member: str | None, limit: int, before_ms: int | None, community_: str | None
) -> None:
    """Show your history, or MEMBER's, newest first."""
    params = {
        "community": community_,
        "limit": limit,
        "before_ms": before_ms,
        "member": homes.resolve_member(ctx.home, member) if member else None,
    }
    ctx.emit(ctx.call("history", params), render.history(ctx.home))


@cli.command()
@click.argument("member")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=None,
    help="The credit limit this vouch grants (default: the community's).",
)
@community_option
@pass_ctx
def vouch(ctx: Context, member: str, limit: int | None, community_: str | None) -> None:
    """Vouch for MEMBER, so they can join a community that admits by vouches."""
    params = {
        "community": community_,
        "member": homes.resolve_member(ctx.home, member),
        "limit": limit,
    }
    ctx.emit(ctx.call("vouch", params), render.created("vouch"))


@cli.command()
@community_option
@pass_ctx
def forks(ctx: Context, community_: str | None) -> None:
    """Members caught signing two entries at one place in their log."""
    ctx.emit(ctx.call("forks", {"community": community_}), render.forks)


# -- contacts -----------------------------------------------------------------


@cli.group()
def contact() -> None:
    """Local names for member ids, usable wherever an id is."""


@contact.command("add")
@click.argument("name")
@click.argument("member")
@pass_ctx
def contact_add(ctx: Context, name: str, member: str) -> None:
    """Name MEMBER (an id) as NAME."""
    ctx.emit(homes.add_contact(ctx.home, name, member), render.generic)


@contact.command("list")
@pass_ctx
def contact_list(ctx: Context) -> None:
    """List contacts."""
    ctx.emit({"contacts": homes.contacts(ctx.home)}, render.contacts)


# -- the commands in files of their own ----------------------------------------

cli.add_command(offer)
cli.add_command(campaign)
for _command in (
    run,
    relay,
    status,
    peers,
    connect,
    demo,
    profile,
    members,
    statement,
    verify,
    web,
):
    cli.add_command(_command)


def _json_after_subcommand(click_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    obj = click_ctx.find_object(Context)
    if value and obj is not None:
        obj.as_json = True


def _accept_json_everywhere(group: click.Group) -> None:
    """Give every subcommand its own ``--json``, so ``troc balance --json``
    works as well as ``troc --json balance`` (the README promises both)."""
    for command in group.commands.values():
        if not any(p.name == "as_json" for p in command.params):
            command.params.append(
                click.Option(
                    ["--json", "as_json"],
                    is_flag=True,
                    expose_value=False,
                    callback=_json_after_subcommand,
                    help="Print one JSON document on stdout.",
                )
            )
        if isinstance(command, click.Group):
            _accept_json_everywhere(command)


_accept_json_everywhere(cli)


def main() -> None:
    try:
        cli.main(prog_name="troc", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("troc: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        # Usage errors: click's own message, and for scripts one JSON line too.
        if "--json" in sys.argv[1:]:
            click.echo(
                json.dumps(
                    {"error": {"kind": "usage", "reason": None, "message": exc.format_message()}}
                )
            )
        exc.show()
        sys.exit(EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code)
