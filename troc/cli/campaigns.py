"""``troc campaign``: all-or-nothing crowdfunding in the community's unit
(docs/protocol.md §10). Every command goes through the operation table
(``campaign.*`` in :mod:`troc.node.operations`)."""

from __future__ import annotations

import time
from typing import Any

import click

from troc.cli import render
from troc.cli.context import Context, community_option, pass_ctx

__all__ = ["campaign"]

_DAY_MS = 24 * 3600 * 1000


@click.group()
def campaign() -> None:
    """All-or-nothing campaigns: pledge towards a goal; if the pledges the
    close names reach it, each is paid to the author, else all come back."""


def _progress(c: dict[str, Any]) -> str:
    share = 100 * c["pledged"] // c["goal"]
    return (
        f"{render.amount(c['pledged'], c['unit'])} of {render.amount(c['goal'], c['unit'])}"
        f" ({share}%, {render.plural(c['pledges'], 'pledge')}), {c['state']}"
    )


def _deadline(ms: int) -> str:
    left = ms - int(time.time() * 1000)
    when = render.ago(ms) if left < 0 else f"in {left // _DAY_MS} days"
    return f"deadline {when}"


def _list_text(data: dict[str, Any]) -> str:
    rows = [
        [
            c["campaign"][:10],
            render.safe(c["title"])[:40],
            _progress(c),
            _deadline(c["deadline_ms"]),
        ]
        for c in data["campaigns"]
    ]
    return render.table(rows, ["id", "title", "progress", "deadline"]) if rows else "no campaigns"


def _show_text(c: dict[str, Any]) -> str:
    lines = [
        f"{render.safe(c['title'])}  ({c['campaign']})",
        f"by {c['author']}",
        _progress(c),
        _deadline(c["deadline_ms"]),
    ]
    if c["min_pledge"]:
        lines.append(f"pledges of {render.amount(c['min_pledge'], c['unit'])} or more")
    if c["reward"]:
        lines.append(f"backers receive: {render.safe(c['reward'])}")
    if c["description"]:
        lines += ["", render.safe(c["description"])]
    if c["forked_author"]:
        lines.append("WARNING: the author's log is forked: its closes do not count")
    if c["state"] == "open" and c["deadline_passed"]:
        lines.append("past the deadline with no close: pledgers may take their pledges back")
    for p in c["pledge_list"]:
        flag = "" if p["counts"] else " (forked pledger: does not count)"
        if p["lapse"]:
            flag += " (lapsed: undone, the close won)" if p["status"] == "paid" else " (lapsed)"
        lines.append(
            f"  {p['pledger'][:14]}…  {render.amount(p['amount'], c['unit'])}  {p['status']}{flag}"
        )
    return "\n".join(lines)


@campaign.command("create")
@click.option("--title", required=True, help="At most 200 characters.")
@click.option("--goal", required=True, metavar="AMOUNT", help="What the campaign needs.")
@click.option(
    "--deadline",
    default=None,
    help="YYYY-MM-DD: when you promise to close it (a promise, not a rule).",
)
@click.option("--days", type=int, default=None, help="Or: the deadline in this many days.")
@click.option("--description", default="", help="At most 4000 characters.")
@click.option("--reward", default="", help="What backers receive (at most 1000 characters).")
@click.option("--min-pledge", default=None, metavar="AMOUNT", help="The smallest pledge taken.")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable, at most 16).")
@community_option
@pass_ctx
def campaign_create(
    ctx: Context,
    title: str,
    goal: str,
    deadline: str | None,
    days: int | None,
    description: str,
    reward: str,
    min_pledge: str | None,
    tags: tuple[str, ...],
    community_: str | None,
) -> None:
    """Open a campaign."""
    if (deadline is None) == (days is None):
        raise click.UsageError("give the deadline: --deadline YYYY-MM-DD or --days N")
    if days is not None:
        deadline_ms = int(time.time() * 1000) + days * _DAY_MS
    else:
        assert deadline is not None
        deadline_ms = render.parse_date_ms(deadline)
    params = {
        "community": community_,
        "title": title,
        "goal": goal,
        "deadline_ms": deadline_ms,
        "description": description,
        "reward": reward,
        "min_pledge": min_pledge,
        "tags": list(tags),
    }
    ctx.emit(ctx.sign("campaign.create", params, "campaign"), render.created("campaign"))


@campaign.command("list")
@click.argument("text", required=False)
@click.option("--open", "open_", is_flag=True, help="Only campaigns not closed yet.")
@community_option
@pass_ctx
def campaign_list(ctx: Context, text: str | None, open_: bool, community_: str | None) -> None:
    """List campaigns, newest first (TEXT: words to look for)."""
    params = {"community": community_, "text": text, "open": open_}
    ctx.emit(ctx.call("campaign.list", params), _list_text)


@campaign.command("show")
@click.argument("campaign_id", metavar="CAMPAIGN")
@community_option
@pass_ctx
def campaign_show(ctx: Context, campaign_id: str, community_: str | None) -> None:
    """A campaign, its progress and its pledges (CAMPAIGN: its id or first characters)."""
    ctx.emit(
        ctx.call("campaign.show", {"community": community_, "campaign": campaign_id}), _show_text
    )


@campaign.command("pledge")
@click.argument("campaign_id", metavar="CAMPAIGN")
@click.argument("amount")
@click.option("--late", is_flag=True, help="Pledge even though the deadline has passed.")
@community_option
@pass_ctx
def campaign_pledge(
    ctx: Context, campaign_id: str, amount: str, late: bool, community_: str | None
) -> None:
    """Pledge AMOUNT: reserved now, paid only if the campaign succeeds."""
    params = {"community": community_, "campaign": campaign_id, "amount": amount, "late": late}
    ctx.emit(ctx.sign("campaign.pledge", params, "pledge"), render.created("pledge"))


@campaign.command("close")
@click.argument("campaign_id", metavar="CAMPAIGN")
@click.option("--early", is_flag=True, help="Close before the deadline.")
@community_option
@pass_ctx
def campaign_close(ctx: Context, campaign_id: str, early: bool, community_: str | None) -> None:
    """Close your campaign, counting every pledge this node holds."""
    params = {"community": community_, "campaign": campaign_id, "early": early}
    ctx.emit(
        ctx.sign("campaign.close", params, "close"),
        lambda d: (
            f"{d['close']}\n{d['state']}: {render.plural(d['pledges'], 'pledge')}, {d['pledged']}"
        ),
    )


@campaign.command("withdraw")
@click.argument("campaign_id", metavar="CAMPAIGN")
@community_option
@pass_ctx
def campaign_withdraw(ctx: Context, campaign_id: str, community_: str | None) -> None:
    """Take back your pledge: once the campaign's close leaves it out, or
    after the deadline with no close (a lapse: a close counting the pledge,
    if one comes, still wins and takes the amount again)."""
    params = {"community": community_, "campaign": campaign_id}
    ctx.emit(ctx.sign("campaign.withdraw", params, "withdraw"), _withdrawn_text)


def _withdrawn_text(d: dict[str, Any]) -> str:
    if not d["lapse"]:
        return str(d["withdraw"])
    return f"{d['withdraw']}\nlapsed after the deadline: a close counting it would still win"
