"""The screens of the member web app: each GET renders a page from the
results of operations; each POST runs one operation and then shows where it
landed (post/redirect/get) or, refused, the same form again with the
ledger's reason in words and nothing changed."""

from __future__ import annotations

import csv
import datetime
import io
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from troc.web.adapter import OpFailed

__all__ = ["routes"]

#: The history screen reads at most this many of the member's latest entries.
HISTORY_LIMIT = 1000
#: The pending screen's answers: form verb -> (operation, message shown after it).
ANSWERS = {
    "accept": ("accept", "flash.accept"),
    "accept_late": ("accept", "flash.accept_late"),
    "decline": ("decline", "flash.decline"),
    "reclaim": ("reclaim", "flash.reclaim"),
    "take_back": ("take_back", "flash.take_back"),
}


def routes(web: Any) -> list[Route]:
    from troc.web import campaigns, everyday  # they build on this module

    s = Screens(web)

    def g(handler: Any) -> Any:
        return web.guarded(handler)

    def c(handler: Any) -> Any:
        return web.guarded(s.in_community(handler))

    return [
        Route("/", g(s.home), methods=["GET"]),
        Route("/pay", c(s.pay_form), methods=["GET"]),
        Route("/pay", c(s.pay), methods=["POST"]),
        Route("/pending", c(s.pending), methods=["GET"]),
        Route("/answer", c(s.answer), methods=["POST"]),
        Route("/history", c(s.history), methods=["GET"]),
        Route("/history.csv", c(s.history_csv), methods=["GET"]),
        Route("/offers", c(s.offers), methods=["GET"]),
        Route("/offers/add", c(s.offer_add), methods=["POST"]),
        Route("/offers/close", c(s.offer_close), methods=["POST"]),
        Route("/members", c(s.members), methods=["GET"]),
        Route("/invite", c(s.invite), methods=["POST"]),
        Route("/join", g(s.join_form), methods=["GET"]),
        Route("/join", g(s.join), methods=["POST"]),
        Route("/create", g(s.create_form), methods=["GET"]),
        Route("/create", g(s.create), methods=["POST"]),
        Route("/key", g(s.key), methods=["GET"]),
        Route("/node", g(s.node), methods=["GET"]),
        *everyday.routes(s, c),
        *campaigns.routes(s, c),
    ]


def by_name(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Members with a name first, alphabetically, then the others by id."""
    return sorted(rows, key=lambda r: (r["name"] == "", r["name"].lower(), r["member"]))


def form_text(form: Any, name: str, most: int = 10_000) -> str:
    return str(form.get(name) or "").strip()[:most]


class Screens:
    def __init__(self, web: Any) -> None:
        self.web = web
        self.door = web.door

    def render(self, request: Request, template: str, code: int = 200, **ctx: Any) -> Response:
        session = request.state.session
        flashes, session.flash = list(session.flash), []
        ctx.setdefault("community", None)
        response: Response = self.web.page(request, template, {"flashes": flashes, **ctx}, code)
        return response

    def done(self, request: Request, where: str, message_key: str) -> Response:
        request.state.session.flash.append(("ok", message_key))
        return RedirectResponse(where, status_code=303)

    def in_community(self, handler: Any) -> Any:
        """``handler`` with ``request.state.community`` (the default
        community, as ``community.show`` gives it); none yet: to the home
        page, which offers to join or create one."""

        async def screen(request: Request) -> Response:
            request.state.community = await self.community()
            if request.state.community is None:
                return RedirectResponse("/", status_code=303)
            response: Response = await handler(request)
            return response

        return screen

    async def community(self) -> dict[str, Any] | None:
        shown: dict[str, Any] | None = await self.door.try_call("community.show", {})
        return shown

    def failure(self, request: Request, failed: OpFailed) -> dict[str, Any]:
        """An error document as the page shows it: the ledger's reason in the
        member's language when we have words for it, and the node's message."""
        from troc.web.i18n import Translator

        t = Translator(self.web.language(request))
        doc = failed.error
        reason = doc.get("reason")
        words = t(f"reason.{reason}") if reason and t.has(f"reason.{reason}") else None
        return {
            "kind": doc.get("kind"),
            "title": t(f"kind.{doc.get('kind')}"),
            "reason": reason,
            "words": words,
            "message": doc.get("message", ""),
        }

    # -- home ---------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        community = await self.community()
        if community is None:
            return self.render(request, "welcome.html")
        balance = await self.door.call("balance", {})
        pending = await self.door.call("pending", {})
        waiting = [p for p in pending["incoming"] if p["status"] == "pending"]
        declined = [p for p in pending["outgoing"] if p["status"] in ("declined", "expired")]
        return self.render(
            request,
            "home.html",
            community=community,
            b=balance,
            available=balance["balance"] + balance["credit_limit"],
            waiting=waiting,
            declined=declined,
            asked=pending["requests"],
            names=pending["names"],
        )

    # -- pay ----------------------------------------------------------------

    async def members_to_pay(self) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        """(contacts, the community's members), each ``{"member", "name"}``, without oneself."""
        from troc.cli import home as homes

        me = self.door.member
        try:
            book = homes.contacts(self.door.home)
        except Exception:  # a damaged contacts file: the members list still works
            book = {}
        contacts = [{"member": m, "name": n} for n, m in sorted(book.items()) if m != me]
        found = await self.door.try_call("members", {}) or {"members": []}
        members = [
            {"member": m["member"], "name": m["name"] or ""}
            for m in found["members"]
            if m["member"] != me
        ]
        return contacts, by_name(members)

    async def pay_form(
        self,
        request: Request,
        values: dict[str, str] | None = None,
        error: dict[str, Any] | None = None,
        status: int = 200,
    ) -> Response:
        community = request.state.community
        q = request.query_params
        values = values or {k: q.get(k, "") for k in ("to", "amount", "memo", "offer")}
        offer = await self.offer_named(values.get("offer"))
        contacts, members = await self.members_to_pay()
        balance = await self.door.call("balance", {})
        return self.render(
            request,
            "pay.html",
            status,
            community=community,
            values=values,
            error=error,
            contacts=contacts,
            members=members,
            offer=offer,
            available=balance["balance"] + balance["credit_limit"],
        )

    async def offer_named(self, offer_id: str | None) -> dict[str, Any] | None:
        """The offer (as ``offer.list`` gives it) with this id, if listed."""
        if not offer_id:
            return None
        found = await self.door.try_call("offer.list", {"text": None, "limit": 1000})
        for o in (found or {"offers": []})["offers"]:
            if o["offer"] == offer_id:
                return dict(o)
        return None

    async def pay(self, request: Request) -> Response:
        form = await request.form()
        values = {k: form_text(form, k) for k in ("to", "amount", "memo", "offer")}
        params: dict[str, Any] = {"to": values["to"], "amount": values["amount"]}
        if values["memo"]:
            params["memo"] = values["memo"]
        if values["offer"]:
            params["offer"] = values["offer"]
        try:
            await self.door.call("pay", params)
        except OpFailed as failed:
            error = self.failure(request, failed)
            return await self.pay_form(request, values, error, failed.status)
        return self.done(request, "/pending", "flash.paid")

    # -- pending ------------------------------------------------------------

    async def pending(self, request: Request, error: dict[str, Any] | None = None) -> Response:
        community = request.state.community
        pending = await self.door.call("pending", {})
        asked = await self.door.try_call("request.list", {}) or {"outgoing": [], "names": {}}
        return self.render(
            request,
            "pending.html",
            200 if error is None else 409,
            community=community,
            p=pending,
            names=pending["names"] | asked["names"],
            my_requests=[r for r in asked["outgoing"] if r["state"] == "open"],
            error=error,
        )

    async def answer(self, request: Request) -> Response:
        form = await request.form()
        verb = form_text(form, "verb")
        if verb not in ANSWERS:
            failed = OpFailed({"kind": "usage", "reason": None, "message": "unknown answer"})
            return await self.pending(request, self.failure(request, failed))
        params: dict[str, Any] = {"transfer": form_text(form, "transfer")}
        if verb == "decline" and form_text(form, "reason"):
            params["reason"] = form_text(form, "reason", 200)
        if verb == "accept_late":
            # An expired transfer the payer may have taken back (docs/protocol.md §4.11).
            params["late"] = True
        try:
            await self.door.call(ANSWERS[verb][0], params)
        except OpFailed as failed:
            return await self.pending(request, self.failure(request, failed))
        return self.done(request, "/pending", ANSWERS[verb][1])

    # -- history ------------------------------------------------------------

    async def history_rows(self, request: Request) -> list[dict[str, Any]]:
        """The member's movements (the ``statement`` operation: every entry
        that changed the balance, with the balance after it), newest first,
        for the query's period (``from``, ``to``: YYYY-MM-DD, UTC days) and
        counterparty (``with``: a member id)."""
        q = request.query_params
        statement = await self.door.call("statement", period_params(q))
        counterparty = (q.get("with") or "").strip()
        return [
            {**m, "when": utc_time(m["timestamp_ms"])}
            for m in reversed(statement["movements"])
            if not counterparty or m["counterparty"] == counterparty
        ]

    async def history(
        self, request: Request, error: dict[str, Any] | None = None, status: int = 200
    ) -> Response:
        rows = await self.history_rows(request)
        _contacts, members = await self.members_to_pay()
        return self.render(
            request,
            "history.html",
            status,
            error=error,
            community=request.state.community,
            rows=rows,
            members=members,
            q=dict(request.query_params),
            query=str(request.url.query),
        )

    async def history_csv(self, request: Request) -> Response:
        rows = await self.history_rows(request)
        out = io.StringIO()
        writer = csv.writer(out)
        columns = ["entry", "kind", "timestamp_ms", "counterparty", "name", "amount", "balance"]
        writer.writerow(["time_utc", *columns, "memo"])
        for r in rows:
            writer.writerow(
                [r["when"], *("" if r[c] is None else r[c] for c in columns), r["memo"]]
            )
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": 'attachment; filename="troc-history.csv"'},
        )

    # -- offers -------------------------------------------------------------

    async def offers(
        self,
        request: Request,
        error: dict[str, Any] | None = None,
        values: dict[str, str] | None = None,
        status: int = 200,
    ) -> Response:
        community = request.state.community
        q = request.query_params
        params: dict[str, Any] = {"limit": 200}
        if q.get("text"):
            params["text"] = q["text"][:200]
        if q.get("side") in ("offer", "want"):
            params["side"] = q["side"]
        if q.get("closed"):
            params["include_closed"] = True
        try:
            found = await self.door.call("offer.list", params)
        except OpFailed as failed:  # e.g. a search text the index cannot read
            error = error or self.failure(request, failed)
            found = {"offers": [], "names": {}}
        return self.render(
            request,
            "offers.html",
            status,
            community=community,
            offers=found["offers"],
            names=found["names"],
            q=dict(q),
            error=error,
            values=values or {},
        )

    async def offer_add(self, request: Request) -> Response:
        form = await request.form()
        keys = ("title", "description", "side", "price", "tags")
        values = {k: form_text(form, k) for k in keys}
        params: dict[str, Any] = {
            "title": values["title"],
            "description": values["description"],
            "side": "want" if values["side"] == "want" else "offer",
            "tags": [t.strip() for t in values["tags"].split(",") if t.strip()],
        }
        if values["price"]:
            params["price"] = values["price"]
        if not params["title"]:
            failed = OpFailed({"kind": "usage", "reason": None, "message": "title needed"})
            return await self.offers(request, self.failure(request, failed), values, 400)
        try:
            await self.door.call("offer.add", params)
        except OpFailed as failed:
            return await self.offers(request, self.failure(request, failed), values, failed.status)
        return self.done(request, "/offers", "flash.offer_added")

    async def offer_close(self, request: Request) -> Response:
        form = await request.form()
        try:
            await self.door.call("offer.close", {"offer": form_text(form, "offer")})
        except OpFailed as failed:
            return await self.offers(request, self.failure(request, failed), None, failed.status)
        return self.done(request, "/offers", "flash.offer_closed")

    # -- members and invitations --------------------------------------------

    async def members(
        self, request: Request, invitation: str | None = None, error: Any = None
    ) -> Response:
        community = request.state.community
        q = request.query_params
        params: dict[str, Any] = {"balances": True}
        if q.get("search"):
            params["search"] = q["search"][:200]
        found = await self.door.call("members", params)
        rows = by_name([{**m, "name": m["name"] or ""} for m in found["members"]])
        return self.render(
            request,
            "members.html",
            200 if error is None else 409,
            community=community,
            rows=rows,
            q=dict(q),
            invitation=invitation,
            error=error,
        )

    async def invite(self, request: Request) -> Response:
        form = await request.form()
        params = {"for": form_text(form, "for")} if form_text(form, "for") else {}
        try:
            made = await self.door.call("community.invite", params)
        except OpFailed as failed:
            return await self.members(request, error=self.failure(request, failed))
        return await self.members(request, invitation=made["invitation"])

    async def join_form(
        self, request: Request, values: Any = None, error: Any = None, status: int = 200
    ) -> Response:
        q = request.query_params
        values = values or {"invitation": q.get("invitation", ""), "member_name": ""}
        return self.render(request, "join.html", status, values=values, error=error)

    async def join(self, request: Request) -> Response:
        form = await request.form()
        values = {k: form_text(form, k) for k in ("invitation", "member_name")}
        params = {"invitation": values["invitation"]}
        if values["member_name"]:
            params["member_name"] = values["member_name"]
        try:
            await self.door.call("community.join", params)
        except OpFailed as failed:
            return await self.join_form(request, values, self.failure(request, failed), 400)
        return self.done(request, "/", "flash.joined")

    async def create_form(
        self, request: Request, values: Any = None, error: Any = None, status: int = 200
    ) -> Response:
        values = values or {"admission": "open", "finality": "optimistic", "faults": "0"}
        return self.render(request, "create.html", status, values=values, error=error)

    async def create(self, request: Request) -> Response:
        form = await request.form()
        keys = ("name", "unit", "credit_limit", "admission", "finality", "witnesses", "faults")
        values = {k: form_text(form, k) for k in (*keys, "quorum", "ceiling", "member_name")}
        try:
            params = _create_params(values)
            await self.door.call("community.create", params)
        except OpFailed as failed:
            return await self.create_form(
                request, values, self.failure(request, failed), failed.status
            )
        return self.done(request, "/", "flash.created")

    # -- key and node -------------------------------------------------------

    async def key(self, request: Request) -> Response:
        return self.render(request, "key.html", key=self.door.key_facts())

    async def node(self, request: Request) -> Response:
        status = await self.door.call("status", {})
        peers = await self.door.call("peers", {})
        forks = await self.door.try_call("forks", {})
        community = await self.community()
        return self.render(
            request,
            "node.html",
            community=community,
            status=status,
            peers=peers["peers"],
            forks=None if forks is None else forks["forks"],
        )


def _create_params(v: dict[str, str]) -> dict[str, Any]:
    """community.create's parameters from the form; OpFailed (usage) for a
    number that is not one (the operation checks everything else)."""

    def number(name: str, value: str) -> int:
        if not (value.isascii() and value.isdigit()):
            raise OpFailed(
                {"kind": "usage", "reason": None, "message": f"{name}: a whole number, please"}
            )
        return int(value)

    params: dict[str, Any] = {
        "name": v["name"],
        "unit": v["unit"],
        "credit_limit": number("credit limit", v["credit_limit"]),
        "admission": v["admission"] if v["admission"] in ("open", "vouch") else "open",
        "finality": v["finality"] if v["finality"] in ("optimistic", "witnessed") else "optimistic",
        "witnesses": [w.strip() for w in v["witnesses"].split() if w.strip()],
        "faults": number("faults", v["faults"] or "0"),
    }
    if v["quorum"]:
        params["quorum"] = number("quorum", v["quorum"])
    if v["ceiling"]:
        params["ceiling"] = number("ceiling", v["ceiling"])
    if v["member_name"]:
        params["member_name"] = v["member_name"]
    return params


def period_params(q: Any) -> dict[str, Any]:
    """The ``statement`` operation's period from a query's ``from`` and
    ``to`` (YYYY-MM-DD, UTC days, both included; a bad date is no bound)."""
    params: dict[str, Any] = {}
    start, end = _day_ms(q.get("from")), _day_ms(q.get("to"))
    if start is not None:
        params["from_ms"] = start
    if end is not None:
        params["to_ms"] = end + 86_400_000 - 1
    return params


def _day_ms(text: str | None) -> int | None:
    """Midnight UTC of a YYYY-MM-DD day, in ms; None for no or a bad date."""
    try:
        day = datetime.date.fromisoformat((text or "").strip())
    except ValueError:
        return None
    start = datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC)
    return int(start.timestamp() * 1000)


def utc_time(ms: int) -> str:
    """A time in ms as the pages show it: ``YYYY-MM-DD HH:MM`` (UTC)."""
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M")
