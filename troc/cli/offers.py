"""``troc offer``: publish, find and close offers and wants."""

from __future__ import annotations

import click

from troc.cli import render
from troc.cli.context import Context, community_option, pass_ctx

__all__ = ["offer"]


@click.group()
def offer() -> None:
    """Publish, find and close offers and wants."""


@offer.command("add")
@click.option("--title", required=True, help="At most 200 characters.")
@click.option("--description", default="", help="At most 4000 characters.")
@click.option("--want", is_flag=True, help="Publish a want instead of an offer.")
@click.option(
    "--price",
    metavar="AMOUNT",
    default=None,
    help="In the smallest unit: a whole number from 1 to 2^53 - 1 (digits 0-9).",
)
@click.option(
    "--tag", "tags", multiple=True, help="A tag of 1 to 40 characters (repeatable, at most 16)."
)
@click.option("--expires", default=None, help="Expiry date, YYYY-MM-DD.")
@community_option
@pass_ctx
def offer_add(
    ctx: Context,
    title: str,
    description: str,
    want: bool,
    price: str | None,
    tags: tuple[str, ...],
    expires: str | None,
    community_: str | None,
) -> None:
    """Publish an offer (or, with --want, a want)."""
    params = {
        "community": community_,
        "title": title,
        "description": description,
        "side": "want" if want else "offer",
        "price": price,
        "tags": list(tags),
        "expires_ms": render.parse_date_ms(expires) if expires else None,
    }
    ctx.emit(ctx.call("offer.add", params), render.created("offer"))


@offer.command("list")
@click.option("--tag", default=None)
@click.option("--wants", is_flag=True, help="Only wants.")
@click.option("--offers", "offers_only", is_flag=True, help="Only offers.")
@click.option("--all", "include_closed", is_flag=True, help="Include closed ones.")
@community_option
@pass_ctx
def offer_list(
    ctx: Context,
    tag: str | None,
    wants: bool,
    offers_only: bool,
    include_closed: bool,
    community_: str | None,
) -> None:
    """List open offers and wants."""
    side = "want" if wants else "offer" if offers_only else None
    params = {"community": community_, "tag": tag, "side": side, "include_closed": include_closed}
    ctx.emit(ctx.call("offer.list", params), render.offers(ctx.home))


@offer.command("search")
@click.argument("text")
@community_option
@pass_ctx
def offer_search(ctx: Context, text: str, community_: str | None) -> None:
    """Search offers and wants by words."""
    ctx.emit(
        ctx.call("offer.list", {"community": community_, "text": text}), render.offers(ctx.home)
    )


@offer.command("close")
@click.argument("offer_id", metavar="OFFER")
@community_option
@pass_ctx
def offer_close(ctx: Context, offer_id: str, community_: str | None) -> None:
    """Withdraw one of your offers (OFFER: its id, or its first 6 or more characters)."""
    ctx.emit(
        ctx.call("offer.close", {"community": community_, "offer": offer_id}),
        render.created("close"),
    )
