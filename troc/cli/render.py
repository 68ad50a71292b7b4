"""Human-readable output: aligned tables, the community's unit, relative times.

Each renderer takes the JSON document a command prints with ``--json`` and
returns text, so the two views never disagree about the facts.
"""

from __future__ import annotations

import datetime as dt
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from troc.errors import LocalProtocolError

Renderer = Callable[[dict[str, Any]], str]


def parse_date_ms(text: str) -> int:
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise LocalProtocolError(f"expected a date as YYYY-MM-DD, got {text!r}") from None
    moment = dt.datetime.combine(day, dt.time(23, 59, 59), tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


_UNITS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str) -> int:
    """A duration: digits and a unit (``90s``, ``30m``, ``2h``, ``14d``), in ms."""
    text = text.strip()
    if text[-1:] in _UNITS and text[:-1].isascii() and text[:-1].isdigit():
        return int(text[:-1]) * _UNITS[text[-1]]
    raise LocalProtocolError(f"expected a duration such as 90s, 30m, 2h or 14d, got {text!r}")


def parse_expiry_ms(text: str, now_ms: int | None = None) -> int:
    """An expiry: a duration from now (``30m``, ``2h``, ``7d``, ``90s``) or
    the end of a day (YYYY-MM-DD, UTC)."""
    text = text.strip()
    if text[-1:] in _UNITS:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        return now_ms + parse_duration_ms(text)
    try:
        return parse_date_ms(text)
    except LocalProtocolError:
        raise LocalProtocolError(
            f"expected a duration (30m, 2h, 7d) or a date (YYYY-MM-DD), got {text!r}"
        ) from None


def qr_code(text: str) -> str:
    """``text`` as a QR code drawn with block characters, for a terminal.

    Encoded in upper case: QR's alphanumeric mode then holds the base32
    text in ~30 % fewer modules, and decoders fold case.
    """
    import io

    import segno

    out = io.StringIO()
    segno.make(text.upper(), error="m").terminal(out=out, compact=True)
    return out.getvalue().rstrip("\n")


def request_created(qr: bool) -> Renderer:
    def render(data: dict[str, Any]) -> str:
        out = f"{data['request']}\n{data['text']}"
        if qr:
            out = qr_code(data["text"]) + "\n" + out
        return out

    return render


def requests(home: Path) -> Renderer:
    def render(data: dict[str, Any]) -> str:
        names = _names(home, data)
        out = []
        for title, key, who in (("To you", "incoming", "from"), ("By you", "outgoing", "to")):
            rows = [
                [
                    r["request"][:12],
                    short(r[who], names),
                    amount(r["amount"], r["unit"]),
                    r["memo"],
                    ago(r["timestamp_ms"]),
                    r["state"] + (f" by {r['by'][:12]}" if r["by"] else ""),
                ]
                for r in data[key]
            ]
            heads = ["request", who, "amount", "memo", "when", "state"]
            out.append(f"{title}:\n" + table(rows, heads))
        return "\n\n".join(out)

    return render


def ago(ms: int | None, now_ms: int | None = None) -> str:
    if ms is None:
        return "-"
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    s = (now_ms - ms) // 1000
    if s < 0:
        return "in the future"
    for size, name in ((86400, "d"), (3600, "h"), (60, "min")):
        if s >= size:
            return f"{s // size} {name} ago"
    return f"{s} s ago"


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 entry``, ``2 entries``: ``many`` defaults to ``word`` + s."""
    return f"{n} {word if n == 1 else many or word + 's'}"


def unit_of(n: int, unit: str) -> str:
    """A community's unit for ``n`` of it, singular for one: a unit is
    whatever its founder typed, so only a plain final s is dropped."""
    if abs(n) == 1 and len(unit) > 2 and unit.endswith("s") and not unit.endswith(("ss", "us")):
        return safe(unit[:-1])
    return safe(unit)


def amount(n: int, unit: str) -> str:
    """``1 hour``, ``3 hours``."""
    return f"{n} {unit_of(n, unit)}"


def safe(text: object) -> str:
    """Text from others (memos, titles, names) made safe for one line of a
    terminal: control and format characters (newlines, escape sequences,
    bidi overrides) shown as escapes, so they cannot break a table or
    rewrite the screen."""
    return "".join(
        c if unicodedata.category(c) not in ("Cc", "Cf") else ascii(c)[1:-1] for c in str(text)
    )


def table(rows: list[list[str]], header: list[str]) -> str:
    if not rows:
        return "(none)"
    rows = [[safe(c) for c in r] for r in rows]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _names(home: Path, data: dict[str, Any] | None = None) -> dict[str, str]:
    """How to show member ids: ``me``, your contacts' names, else the name a
    member gave when joining (``data["names"]``, from their join entry),
    marked ``~`` with an id prefix since anyone may call themselves anything."""
    from troc.cli.home import contacts, profile

    names = {
        member: f"~{safe(name)} ({member[:7]})"
        for member, name in (data or {}).get("names", {}).items()
    }
    names.update({member: name for name, member in contacts(home).items()})
    try:
        names[profile(home)["member"]] = "me"
    except Exception:
        pass
    return names


def short(member: str, names: dict[str, str]) -> str:
    return names.get(member) or member[:14] + "…"


def generic(data: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in sorted(data.items()))


def whoami(data: dict[str, Any]) -> str:
    return str(data["member"])


def created(key: str) -> Renderer:
    def render(data: dict[str, Any]) -> str:
        out = str(data[key])
        fin = data.get("finality")
        if fin is None:
            return out
        if fin.get("void"):  # lost its race (docs/witness.md §3.6): final, no effect
            return out + f"\n{fin['void']} (final, with no effect; your log goes on)"
        if fin["final"]:
            # More than the quorum may have answered before the certificate was made.
            return out + f"\nfinal: certified by {fin['votes']} witnesses ({fin['quorum']} needed)"
        if fin["problem"]:
            return out + f"\nNOT FINAL: {fin['problem']}"
        for witness, lie in sorted(fin.get("witness_problems", {}).items()):
            out += f"\nwitness {witness[:16]}… misbehaves, ignored: {lie}"
        out += (
            f"\nnot final yet: {fin['votes']} of {fin['quorum']} witness votes;"
            " the node keeps asking the witnesses (see troc balance)"
        )
        for witness, why in sorted(fin.get("unreachable", {}).items()):
            out += f"\n  cannot reach witness {witness[:14]}…: {why}"
        return out

    return render


def finality_progress(fin: dict[str, Any], waited: float, limit: float) -> str:
    """One line, rewritten while ``pay``/``accept`` wait for the witnesses."""
    cannot = sorted(fin.get("unreachable", {}))
    unreachable = f", cannot reach {', '.join(w[:14] + '…' for w in cannot)}" if cannot else ""
    return (
        f"witnesses: {fin['votes']} of {fin['quorum']} votes needed"
        f" ({fin['witnesses']} witnesses{unreachable}); waited {waited:.0f} of {limit:.0f} s"
    )


def invitation(data: dict[str, Any]) -> str:
    return str(data["invitation"])


def community(data: dict[str, Any]) -> str:
    lines = [
        f"{safe(data['name'])}  ({data['community']})",
        f"  unit          {data['unit']}",
        f"  credit limit  {data['credit_limit']} {data['unit']}",
        f"  admission     {data['admission']}",
        f"  finality      {data['finality']}"
        + (
            f" ({data['quorum']} of {len(data['witnesses'])} witnesses)"
            if data["witnesses"]
            else ""
        ),
        f"  members       {data['members']}",
        f"  entries       {data['entries']}",
    ]
    if data.get("ceiling"):
        lines.insert(3, f"  ceiling       {data['ceiling']} {data['unit']}")
    return "\n".join(lines)


def communities(data: dict[str, Any]) -> str:
    rows = [
        [
            "*" if c["default"] else "",
            c["name"],
            c["unit"],
            str(c["members"]),
            c["community"][:16] + "…",
        ]
        for c in data["communities"]
    ]
    return table(rows, ["", "name", "unit", "members", "id"])


def balance(home: Path) -> Renderer:
    def render(data: dict[str, Any]) -> str:
        unit = data["unit"]
        who = short(data["member"], _names(home, data))
        final = " final" if data.get("finality") == "witnessed" else ""
        lines = [
            f"{who}: {amount(data['balance'], unit)}{final}  (credit limit {data['credit_limit']})"
        ]
        if data.get("unconfirmed"):
            lines.append(
                f"  not final yet (awaiting witnesses): {data['unconfirmed']:+}"
                f" {unit_of(data['unconfirmed'], unit)}"
            )
        if data["pending_in"]:
            lines.append(f"  incoming, not yet accepted: {amount(data['pending_in'], unit)}")
            waiting = data["pending_in"] - data.get("pending_in_final", data["pending_in"])
            if waiting:
                lines.append(
                    f"    of which not final yet (cannot be accepted): {amount(waiting, unit)}"
                )
            if data.get("pending_in_parked"):
                lines.append(
                    "    of which final, the payer's history still being fetched"
                    f" (can be accepted): {amount(data['pending_in_parked'], unit)}"
                )
        declined = data.get("declined_out", 0)
        if data["pending_out"] - declined:
            lines.append(
                f"  outgoing, not yet accepted: {amount(data['pending_out'] - declined, unit)}"
            )
        if declined:
            lines.append(
                f"  outgoing, declined by the payee: {amount(declined, unit)}"
                f" (`troc reclaim ID` takes it back: {', '.join(i[:12] for i in data['declined'])})"
            )
        if data.get("expired_out"):
            ids = ", ".join(i[:12] for i in data["expired"])
            lines.append(
                f"  outgoing, expired unanswered: {amount(data['expired_out'], unit)}"
                f" (`troc take-back ID` takes it back: {ids})"
            )
        for v in data.get("void", []):
            name = next(k for k in ("transfer", "pledge", "campaign") if k in v)
            lines.append(
                f"  {v['why']}: {name} {v[name][:12]}, {amount(v['amount'], unit)}"
                " (final, moved nothing)"
            )
        for v in data.get("taken_back_certified", []):
            took = f"transfer {v['transfer'][:12]}, {amount(v['amount'], unit)}"
            lines.append(f"  {took}: {v['witnesses_time']}")
        if data.get("taken_back"):
            lines.append(
                f"  taken back after expiry: {amount(data['taken_back'], unit)}, counted"
                " until a payee's accept arrives: it would win, and take it from you again"
            )
        if data.get("undone"):
            lines.append(
                f"  taken back, but the payee had accepted: {amount(data['undone'], unit)}"
                " (counted against you)"
            )
        if data.get("reserved"):
            lines.append(
                f"  reserved by pledges (campaigns not closed yet): "
                f"{amount(data['reserved'], unit)}, cannot be spent"
            )
        if data.get("lapsed"):
            lines.append(
                f"  pledges taken back after the deadline: {amount(data['lapsed'], unit)}, counted"
                " until a close counting them arrives: it would win, and take it from you again"
            )
        if data.get("lapse_undone"):
            lines.append(
                f"  pledges taken back, but a close had counted them: "
                f"{amount(data['lapse_undone'], unit)} (counted against you)"
            )
        if data["frozen"]:
            lines.append("  FROZEN: this member signed two conflicting entries (troc forks)")
        if not data["joined"]:
            lines.append("  (not seen joining this community)")
        return "\n".join(lines)

    return render


def pending(home: Path) -> Renderer:
    def render(data: dict[str, Any]) -> str:
        names = _names(home, data)
        out = []
        for title, key, who in (("Incoming", "incoming", "from"), ("Outgoing", "outgoing", "to")):
            rows = [
                [
                    t["transfer"][:12],
                    short(t[who], names),
                    amount(t["amount"], t["unit"]),
                    t["memo"],
                    ago(t["timestamp_ms"]),
                    _transfer_status(t),
                ]
                for t in data[key]
            ]
            heads = ["transfer", who, "amount", "memo", "when", "status"]
            out.append(f"{title}:\n" + table(rows, heads))
        if data.get("requests"):
            rows = [
                [
                    r["request"][:12],
                    short(r["from"], names),
                    amount(r["amount"], r["unit"]),
                    r["memo"],
                    ago(r["timestamp_ms"]),
                    f"`troc pay --request {r['request'][:12]}` pays it",
                ]
                for r in data["requests"]
            ]
            heads = ["request", "from", "amount", "memo", "when", ""]
            out.append("Requests to you:\n" + table(rows, heads))
        if data.get("taken_back"):  # certified take-backs (docs/witness.md §3.5)
            lines = [f"  {v['transfer'][:12]}: {v['witnesses_time']}" for v in data["taken_back"]]
            out.append("Taken back:\n" + "\n".join(lines))
        return "\n\n".join(out)

    return render


def _transfer_status(t: dict[str, Any]) -> str:
    if t.get("status") == "expired":
        return f"expired: `troc take-back {t['transfer'][:12]}` takes it back"
    if t.get("status") == "declined":
        return f"declined: `troc reclaim {t['transfer'][:12]}` takes it back"
    if t.get("history_checked") is False:  # held with its certificate (docs/witness.md §6.1)
        return f"final, payer's history still being fetched: `troc accept {t['transfer'][:12]}`"
    if "final" in t:
        return "final" if t["final"] else "not final"
    return "waiting for an answer"


def history(home: Path) -> Renderer:
    def render(data: dict[str, Any]) -> str:
        names = _names(home, data)
        rows = []
        for e in data["entries"]:
            b = e["body"]
            what = e["kind"]
            if e["kind"] == "transfer":
                what = f"paid {b['amount']} to {short(b['to'], names)}"
                if e["author"] != data["member"]:
                    what = f"{short(e['author'], names)} paid {b['amount']}"
            elif e["kind"] == "offer":
                what = f"{b['side']}: {b['title']}"
            elif e["kind"] in ("accept", "decline"):
                what = f"{e['kind'].rstrip('e')}ed {b['transfer'][:12]}"
            elif e["kind"] == "reclaim":
                what = f"reclaimed {e.get('transfer', b['decline'])[:12]}"
            if e.get("void"):  # lost its race (docs/witness.md §3.6)
                what += f" (void: {e['void']})"
            elif e.get("witnesses_time"):  # a certified take-back (docs/witness.md §3.5)
                what += f" ({e['witnesses_time']})"
            rows.append(
                [
                    str(e["seq"]) if e["author"] == data["member"] else "",
                    what,
                    b.get("memo", ""),
                    ago(e["timestamp_ms"]),
                ]
            )
        return table(rows, ["seq", "what", "memo", "when"])

    return render


def offers(home: Path) -> Renderer:
    def render(data: dict[str, Any]) -> str:
        names = _names(home, data)
        rows = [
            [
                o["offer"][:12],
                o["side"],
                o["title"],
                "" if o["price"] is None else str(o["price"]),
                ",".join(o["tags"]),
                short(o["author"], names),
                "closed" if o["closed"] else ago(o["timestamp_ms"]),
            ]
            for o in data["offers"]
        ]
        return table(rows, ["offer", "side", "title", "price", "tags", "by", "when"])

    return render


def forks(data: dict[str, Any]) -> str:
    if not data["forks"]:
        return "no forks known"
    return table([[f["member"], str(f["seq"])] for f in data["forks"]], ["member", "at seq"])


def contacts(data: dict[str, Any]) -> str:
    return table([[n, m] for n, m in sorted(data["contacts"].items())], ["name", "member"])


def demo(data: dict[str, Any]) -> str:
    rows = [[name, str(bal)] for name, bal in data["balances"].items()]
    verdict = "all nodes agree" if data["converged"] else "NODES DISAGREE"
    return table(rows, ["member", f"balance ({data['unit']})"]) + f"\n\n{verdict}."


def status(data: dict[str, Any]) -> str:
    lines = [f"member   {data['member']}", f"peer id  {data['peer_id']}", "listening"]
    lines += [f"  {a}" for a in data["addrs"]]
    lines.append(f"peers    {len(data['peers'])} connected")
    for c in data["communities"]:
        lines.append(
            f"community {safe(c['name'])}: {plural(c['members'], 'member')},"
            f" {plural(c['entries'], 'entry', 'entries')}"
        )
    s = data["sync"]
    line = (
        f"sync     {plural(s['sessions'], 'session')},"
        f" {plural(s['fetched'], 'entry', 'entries')} fetched, {s['failed']} failed"
    )
    if s["peer"]:
        line += f"; now with {s['peer'][:12]}… ({s['received']}/{s['expected']})"
    lines.append(line)
    k = data.get("counters")
    if k:
        lines.append(
            f"traffic  {plural(k['entries_received'], 'entry', 'entries')} in,"
            f" {k['entries_served']} served,"
            f" {k['bytes_in']} B in, {k['bytes_out']} B out, {k['throttled']} throttled"
        )
    relay = data.get("relay")
    if relay:
        lines.append(
            f"relay    {plural(relay['reservations'], 'reservation')},"
            f" {plural(relay['circuits'], 'circuit')}"
        )
    if data.get("relayed_addrs"):
        lines.append("reachable through relays")
        lines += [f"  {a}" for a in data["relayed_addrs"]]
    lines += [f"WARNING  {w}" for w in data.get("warnings", [])]
    w = data.get("witness")
    if w and (w["serving"] or w["certifying"]):
        lines.append(
            f"witness  {'serving, ' if w['serving'] else ''}"
            f"{plural(w['answered'], 'vote')} answered,"
            f" {plural(w['certifying'], 'own entry', 'own entries')} awaiting certificates"
        )
    for witness, n in sorted((w or {}).get("lies", {}).items()):
        lines.append(f"witness  {witness[:16]}… lied about {n} own entries (ignored)")
    return "\n".join(lines)


def peers(data: dict[str, Any]) -> str:
    return table(
        [[p["peer_id"], p.get("state", "alive"), " ".join(p["addrs"][:2])] for p in data["peers"]],
        ["peer id", "state", "addresses"],
    )


def balances(home: Path) -> Renderer:
    def render(data: dict[str, Any]) -> str:
        names = _names(home, data)
        rows = [[short(m, names), str(b)] for m, b in sorted(data["balances"].items())]
        return table(rows, ["member", "balance"])

    return render
