"""``troc profile``, ``troc members``, ``troc statement`` and ``troc verify``
(issue 14 parts 3 and 4).

The commands are registered on the ``troc`` group by :mod:`troc.cli.main`. ``troc
verify`` needs no home, no key and no network: it reads one file and runs
the protocol's own rules on it (docs/protocol.md §9).
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import sys
import time
from pathlib import Path
from typing import Any

import click

from troc.cli import render
from troc.cli.context import Context, community_option, pass_ctx
from troc.node.notices import PROFILE_IS_PUBLIC

__all__ = ["members", "profile", "statement", "statement_csv", "verify"]

PUBLIC = PROFILE_IS_PUBLIC
_DAY_MS = 24 * 3600 * 1000


def _resolve(ctx: Context, member: str | None) -> str | None:
    from troc.cli import home as homes

    return homes.resolve_member(ctx.home, member) if member else None


def _date(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _signed(n: int) -> str:
    return f"+{n}" if n > 0 else str(n)


# -- profiles --------------------------------------------------------------------


@click.group(help="Your profile: how you present yourself to your community.\n\n" + PUBLIC)
def profile() -> None:
    pass


@profile.command("set", help="Sign a new profile; fields not given keep their value.\n\n" + PUBLIC)
@click.option("--name", help="The name others see (1 to 200 characters).")
@click.option("--about", help="A few words about you (at most 1000 characters).")
@click.option("--place", help="A town or district, never an address (at most 200 characters).")
@click.option(
    "--language", "languages", multiple=True, help="A language you speak, e.g. en (repeatable)."
)
@click.option("--contact", help="How members may reach you: public (at most 200 characters).")
@community_option
@pass_ctx
def profile_set(
    ctx: Context,
    name: str | None,
    about: str | None,
    place: str | None,
    languages: tuple[str, ...],
    contact: str | None,
    community_: str | None,
) -> None:
    params: dict[str, Any] = {
        "community": community_,
        "name": name,
        "about": about,
        "place": place,
        "languages": list(languages) or None,
        "contact": contact,
    }
    if all(params[f] is None for f in ("name", "about", "place", "languages", "contact")):
        # Nothing given: ask, and say first who will read it.
        if ctx.as_json or not sys.stdin.isatty():
            raise click.UsageError("give at least one field (--name, --about, …)")
        click.echo(PUBLIC, err=True)
        params["name"] = click.prompt("Name", err=True)
        params["about"] = click.prompt("About you", default="", err=True)
        params["place"] = click.prompt("Town or district", default="", err=True)
        spoken = click.prompt("Languages (e.g. en fr)", default="", err=True)
        params["languages"] = spoken.split()
        params["contact"] = click.prompt("Contact (public)", default="", err=True)
    elif not ctx.as_json:
        click.echo(f"troc: {PUBLIC}", err=True)
    ctx.emit(ctx.sign("profile.set", params, "profile"), render.created("profile"))


@profile.command("show")
@click.argument("member", required=False)
@community_option
@pass_ctx
def profile_show(ctx: Context, member: str | None, community_: str | None) -> None:
    """Show your profile, or MEMBER's."""
    params = {"community": community_, "member": _resolve(ctx, member)}
    ctx.emit(ctx.call("profile.show", params), _profile_text)


def _profile_text(data: dict[str, Any]) -> str:
    p = data["profile"]
    since = "-" if data["since_ms"] is None else _date(data["since_ms"])[:10]
    lines = [f"member:    {data['member']}", f"since:     {since}"]
    if p is None:
        name = data["name"] or "(none)"
        lines.insert(0, f"name:      ~{render.safe(name)} (no profile yet)")
        return "\n".join(lines)
    lines.insert(0, f"name:      ~{render.safe(p['name'])}")
    lines += [
        f"place:     {render.safe(p['place'])}",
        f"languages: {' '.join(p['languages'])}",
        f"contact:   {render.safe(p['contact'])}",
        f"about:     {render.safe(p['about'])}",
        f"updated:   {_date(p['timestamp_ms'])[:10]} (seq {p['seq']})",
    ]
    return "\n".join(lines)


# -- the directory -----------------------------------------------------------------


@click.command()
@click.option("--search", default=None, help="Only members whose name or place contains TEXT.")
@click.option("--balances", is_flag=True, help="Show each member's balance too.")
@community_option
@pass_ctx
def members(ctx: Context, search: str | None, balances: bool, community_: str | None) -> None:
    """The community's members: name, id, since when, vouches, open offers."""
    params = {"community": community_, "search": search, "balances": balances}
    ctx.emit(ctx.call("members", params), _members_text)


def _members_text(data: dict[str, Any]) -> str:
    rows = []
    for m in data["members"]:
        row = [
            "~" + m["name"] if m["name"] else "",
            m["member"][:14] + "…",
            m["place"],
            "-" if m["since_ms"] is None else _date(m["since_ms"])[:10],
            str(m["vouches"]),
            str(m["offers"]),
        ]
        if "balance" in m:
            row.append(str(m["balance"]))
        rows.append(row)
    header = ["name", "member", "place", "since", "vouches", "offers"]
    if data["members"] and "balance" in data["members"][0]:
        header.append("balance")
    return render.table(rows, header)


# -- statements ----------------------------------------------------------------------


@click.command()
@click.argument("member", required=False)
@click.option("--from", "from_", metavar="DATE", help="First day, YYYY-MM-DD (UTC).")
@click.option("--to", metavar="DATE", help="Last day, YYYY-MM-DD (UTC), included.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: one row per movement.")
@click.option(
    "--bundle",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a signed file that proves your statement to anyone (troc verify FILE).",
)
@community_option
@pass_ctx
def statement(
    ctx: Context,
    member: str | None,
    from_: str | None,
    to: str | None,
    as_csv: bool,
    bundle: Path | None,
    community_: str | None,
) -> None:
    """Your movements over a period (or MEMBER's, as this node knows them):
    date, counterparty, memo, amount, running balance, and totals."""
    params: dict[str, Any] = {
        "community": community_,
        "member": _resolve(ctx, member),
        "from_ms": render.parse_date_ms(from_) - _DAY_MS + 1000 if from_ else None,
        "to_ms": render.parse_date_ms(to) if to else None,
    }
    if bundle is not None:
        if member:
            raise click.UsageError("a bundle proves your own statement: leave MEMBER out")
        reply = ctx.call("statement.bundle", params)
        bundle.write_bytes(base64.b64decode(reply.pop("bundle")))
        reply["file"] = str(bundle)
        ctx.emit(
            reply,
            lambda d: (
                f"wrote {d['file']} ({d['bytes']} bytes): seq {d['from_seq']}..{d['to_seq']}"
                f"; anyone can check it with `troc verify {d['file']}`"
            ),
        )
        return
    data = ctx.call("statement", params)
    if as_csv and not ctx.as_json:
        click.echo(statement_csv(data), nl=False)
        return
    ctx.emit(data, _statement_text)


def statement_csv(data: dict[str, Any]) -> str:
    """A statement (the ``statement`` operation's result) as CSV, with the
    opening and closing rows: `troc statement --csv` and the web app's download."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["date", "seq", "kind", "counterparty", "name", "memo", "amount", "balance", "unit"])
    t = data["totals"]
    unit = data.get("unit", "")
    w.writerow(["", "", "opening", "", "", "", "", t["opening"], unit])
    for m in data["movements"]:
        w.writerow(
            [
                _date(m["timestamp_ms"]),
                m["seq"],
                m["kind"],
                m["counterparty"] or "",
                m["name"] or "",
                m["memo"],
                m["amount"],
                m["balance"],
                unit,
            ]
        )
    memo = f"in {t['in']}, out {t['out']}"
    w.writerow(["", "", "closing", "", "", memo, t["in"] - t["out"], t["closing"], unit])
    return out.getvalue()


def _who(m: dict[str, Any]) -> str:
    if m["counterparty"] is None:
        return ""
    name = f"~{m['name']} " if m["name"] else ""
    return f"{name}{m['counterparty'][:10]}…"


def _statement_text(data: dict[str, Any]) -> str:
    rows = [
        [
            _date(m["timestamp_ms"]),
            m["kind"],
            _who(m),
            m["memo"],
            _signed(m["amount"]),
            str(m["balance"]),
        ]
        for m in data["movements"]
    ]
    t = data["totals"]
    unit = data.get("unit", "")
    return "\n".join(
        [
            render.table(rows, ["date", "what", "counterparty", "memo", "amount", "balance"]),
            f"seq {data['from_seq']}..{data['to_seq']}: opening {t['opening']}, in {t['in']},"
            f" out {t['out']}, closing {t['closing']} {unit}".rstrip()
            + f" ({render.plural(t['movements'], 'movement')})",
        ]
    )


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_ctx
def verify(ctx: Context, file: Path) -> None:
    """Check a statement bundle (troc statement --bundle) on its own: every
    signature and rule, offline, with no home. Prints the verified totals;
    exit 4 with the first thing that does not check."""
    from troc.crypto.ids import encode_id
    from troc.errors import BundleError
    from troc.node.directory import statement_json
    from troc.node.opdata import taken_back_sentence
    from troc.protocol.statement import BUNDLE_LIMITS, verify_bundle

    size = file.stat().st_size
    if size > BUNDLE_LIMITS.max_size:  # refused before it is read into memory
        raise BundleError(
            "malformed", f"{size} bytes: a bundle is at most {BUNDLE_LIMITS.max_size}"
        )
    v = verify_bundle(file.read_bytes(), int(time.time() * 1000))
    s = v.statement
    data = {
        "verified": True,
        "community": encode_id("c", s.community),
        "community_name": v.rules.name,
        "unit": v.rules.unit,
        "finality": v.rules.finality,
        "final": v.final,
        "final_seq": v.final_seq,
        "frozen_at": v.frozen_at,
        "not_counted": v.not_counted,
        "undone": v.undone,
        "entries": v.entries,
        "certificates": v.certificates,
        "made_ms": v.made_ms,
        "member_name": v.names.get(s.member),
        # Take-backs certified with the witnesses' times (docs/witness.md §3.5).
        "witnesses_times": [
            {"seq": seq, "witnesses_time_ms": ms, "witnesses_time": taken_back_sentence(ms)}
            for seq, ms in v.witnesses_times
        ],
        **statement_json(s, v.names),
    }
    ctx.emit(data, _verified_text)


def _verified_text(data: dict[str, Any]) -> str:
    t, unit = data["totals"], data["unit"]
    name = data["member_name"]
    who = (f"~{render.safe(name)} " if name else "") + data["member"]
    if data["finality"] == "witnessed":
        proof = (
            "witnessed community: final (certified by the witnesses' quorum)"
            if data["final"]
            else f"witnessed community: final only up to seq {data['final_seq']}:"
            " the later entries are not certified yet"
        )
    else:
        proof = (
            "optimistic community: every entry is signed and valid, but a hidden fork by"
            " the member (another log shown to others) cannot be excluded"
        )
    lines = [
        _statement_text(data),
        "",
        f"VERIFIED statement of {who}",
        f"community: {render.safe(data['community_name'])} ({data['community']})"
        " - check it is the one you mean",
        f"closing balance after seq {data['to_seq']}: {t['closing']} {unit}"
        f" (in {t['in']}, out {t['out']}, opening {t['opening']})",
        f"proof: {proof}",
        f"bundle: {data['entries']} entries, {data['certificates']} certificates,"
        f" made {_date(data['made_ms'])}; dates are the members' own",
    ]
    for timed in data.get("witnesses_times", []):
        lines.append(f"seq {timed['seq']}: {timed['witnesses_time']}")
    if data["frozen_at"] is not None:
        lines.append(
            f"warning: the bundle proves the member forked at seq {data['frozen_at']}:"
            " its entries from there on do not count"
        )
    if data["undone"]:
        lines.append(
            f"warning: {data['undone']} {unit} taken back in it were undone: the payee's"
            " accept (or a campaign's close, for a pledge), in the bundle, won; they do not count"
        )
    if data["not_counted"]:
        lines.append(
            f"warning: {data['not_counted']} {unit} of it came from a forked payer's"
            " frozen part and does not count"
        )
    return "\n".join(lines)
