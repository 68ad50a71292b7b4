"""The web app's screens for everyday exchange (issue 14): payment
requests with their ``troc-request:`` text and QR code, the member's
profile, and statements to download (CSV, and the signed bundle anyone can
check with ``troc verify``).

Like :mod:`troc.web.screens`, every screen runs the operations the CLI
runs (``request.*``, ``profile.*``, ``statement``, ``statement.bundle``)
through the one door, :class:`~troc.web.adapter.NodeDoor`; a refusal shows
the same form again with the ledger's reason in words.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from troc.errors import TrocError
from troc.web.adapter import OpFailed
from troc.web.screens import Screens, form_text, period_params

__all__ = ["routes"]

#: The request form's fields, as the page keeps them after a refusal.
REQUEST_FIELDS = ("to", "amount", "memo", "offer", "expires")
#: The profile form's fields (the ``profile.set`` parameters).
PROFILE_FIELDS = ("name", "about", "place", "languages", "contact")


def routes(screens: Screens, c: Any) -> list[Route]:
    """The routes; ``c`` wraps a handler for a logged-in member of a community."""
    e = Everyday(screens)
    return [
        Route("/request", c(e.request_form), methods=["GET"]),
        Route("/request", c(e.request_create), methods=["POST"]),
        Route("/request/pay", c(e.request_pay), methods=["POST"]),
        Route("/request/refuse", c(e.request_refuse), methods=["POST"]),
        Route("/request/{id:str}/qr.svg", c(e.request_qr), methods=["GET"]),
        Route("/request/{id:str}", c(e.request_page), methods=["GET"]),
        Route("/profile", c(e.profile_form), methods=["GET"]),
        Route("/profile", c(e.profile_set), methods=["POST"]),
        Route("/statement.csv", c(e.statement_csv), methods=["GET"]),
        Route("/statement.troc", c(e.statement_bundle), methods=["GET"]),
    ]


def usage(message: str) -> OpFailed:
    return OpFailed({"kind": "usage", "reason": None, "message": message})


def qr_svg(text: str) -> bytes:
    """``text`` as a QR code in SVG, drawn on the server (no script).

    Upper case, as ``troc request --qr`` draws it: QR's alphanumeric mode
    holds the base32 text in fewer modules, and decoders fold case."""
    import segno

    out = io.BytesIO()
    segno.make(text.upper(), error="m").save(
        out, kind="svg", scale=4, border=4, xmldecl=False, svgclass=None, lineclass=None
    )
    return out.getvalue()


class Everyday:
    def __init__(self, screens: Screens) -> None:
        self.s = screens
        self.door = screens.door

    # -- payment requests -----------------------------------------------------

    async def requests(self) -> dict[str, Any]:
        found: dict[str, Any] = await self.door.call("request.list", {})
        return found

    async def request_form(
        self,
        request: Request,
        values: dict[str, str] | None = None,
        error: dict[str, Any] | None = None,
        status: int = 200,
    ) -> Response:
        q = request.query_params
        values = values or {k: q.get(k, "") for k in (*REQUEST_FIELDS, "text")}
        _contacts, members = await self.s.members_to_pay()
        listed = await self.requests()
        return self.s.render(
            request,
            "request.html",
            status,
            community=request.state.community,
            values=values,
            error=error,
            members=members,
            offer=await self.s.offer_named(values.get("offer")),
            mine=listed["outgoing"],
            names=listed["names"],
        )

    async def request_create(self, request: Request) -> Response:
        from troc.cli.render import parse_expiry_ms
        from troc.node.ops import describe_error

        form = await request.form()
        values = {k: form_text(form, k) for k in REQUEST_FIELDS}
        params: dict[str, Any] = {"to": values["to"], "amount": values["amount"]}
        if values["memo"]:
            params["memo"] = values["memo"][:200]
        if values["offer"]:
            params["offer"] = values["offer"]
        try:
            if values["expires"]:
                try:
                    params["expires_ms"] = parse_expiry_ms(values["expires"])
                except TrocError as exc:
                    raise OpFailed(describe_error(exc)) from None
            made = await self.door.call("request.create", params)
        except OpFailed as failed:
            error = self.s.failure(request, failed)
            return await self.request_form(request, values, error, failed.status)
        return self.s.done(request, f"/request/{made['request']}", "flash.requested")

    async def find(self, request_id: str) -> tuple[dict[str, Any], dict[str, str]] | None:
        """The request (made to or by this member) with exactly this id, and names."""
        listed = await self.requests()
        for row in (*listed["incoming"], *listed["outgoing"]):
            if row["request"] == request_id:
                return row, listed["names"]
        return None

    async def request_page(self, request: Request) -> Response:
        found = await self.find(request.path_params["id"])
        if found is None:
            error = self.s.failure(request, usage("no such request made to you or by you"))
            return await self.request_form(request, error=error, status=404)
        row, names = found
        return self.s.render(
            request,
            "request_one.html",
            community=request.state.community,
            r=row,
            names=names,
            mine=row["from"] == self.door.member,
        )

    async def request_qr(self, request: Request) -> Response:
        found = await self.find(request.path_params["id"])
        if found is None:
            return Response("no such request", status_code=404, media_type="text/plain")
        return Response(qr_svg(found[0]["text"]), media_type="image/svg+xml")

    async def request_pay(self, request: Request) -> Response:
        """Pay a request: by id (the pending screen's button) or by its
        pasted ``troc-request:`` text, even one this node never held."""
        form = await request.form()
        text = form_text(form, "request", 8000)
        try:
            if not text:
                raise usage("paste the troc-request: text the member gave you")
            await self.door.call("request.pay", {"request": text})
        except OpFailed as failed:
            error = self.s.failure(request, failed)
            return await self.request_form(request, {"text": text}, error, failed.status)
        return self.s.done(request, "/pending", "flash.request_paid")

    async def request_refuse(self, request: Request) -> Response:
        form = await request.form()
        params = {"request": form_text(form, "request")}
        if form_text(form, "reason"):
            params["reason"] = form_text(form, "reason", 200)
        try:
            await self.door.call("request.refuse", params)
        except OpFailed as failed:
            return await self.s.pending(request, self.s.failure(request, failed))
        return self.s.done(request, "/pending", "flash.request_refused")

    # -- profile --------------------------------------------------------------

    async def profile_form(
        self,
        request: Request,
        values: dict[str, str] | None = None,
        error: dict[str, Any] | None = None,
        status: int = 200,
    ) -> Response:
        """My profile as a form; ``?member=ID``: another member's, to read."""
        other = request.query_params.get("member", "").strip()
        try:
            shown = await self.door.call("profile.show", {"member": other} if other else {})
        except OpFailed as failed:
            error, status, shown = self.s.failure(request, failed), failed.status, None
        if values is None and shown is not None:
            p = shown["profile"] or {}
            values = {f: p.get(f) or "" for f in PROFILE_FIELDS}
            values["languages"] = " ".join(p.get("languages") or [])
            values["name"] = values["name"] or shown["name"] or ""
        return self.s.render(
            request,
            "profile.html",
            status,
            community=request.state.community,
            values=values or dict.fromkeys(PROFILE_FIELDS, ""),
            shown=shown,
            mine=not other or other == self.door.member,
            error=error,
        )

    async def profile_set(self, request: Request) -> Response:
        form = await request.form()
        values = {k: form_text(form, k, 1000 if k == "about" else 200) for k in PROFILE_FIELDS}
        params: dict[str, Any] = {k: values[k] for k in PROFILE_FIELDS if k != "languages"}
        params["languages"] = values["languages"].replace(",", " ").split()
        try:
            await self.door.call("profile.set", params)
        except OpFailed as failed:
            error = self.s.failure(request, failed)
            return await self.profile_form(request, values, error, failed.status)
        return self.s.done(request, "/profile", "flash.profile_set")

    # -- statements -----------------------------------------------------------

    async def statement_csv(self, request: Request) -> Response:
        from troc.cli.directory import statement_csv

        data = await self.door.call("statement", period_params(request.query_params))
        return Response(
            statement_csv(data),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": self.attachment(request, "csv")},
        )

    async def statement_bundle(self, request: Request) -> Response:
        """The signed statement of the period (``troc statement --bundle``)."""
        try:
            made = await self.door.call("statement.bundle", period_params(request.query_params))
        except OpFailed as failed:
            return await self.s.history(request, self.s.failure(request, failed), failed.status)
        return Response(
            base64.b64decode(made["bundle"]),
            media_type="application/octet-stream",
            headers={"content-disposition": self.attachment(request, "troc")},
        )

    @staticmethod
    def attachment(request: Request, ext: str) -> str:
        """``troc-statement[-FROM][-TO].EXT``, with only the dates the page gave."""
        from troc.web.screens import _day_ms

        q = request.query_params
        days = [q[k] for k in ("from", "to") if _day_ms(q.get(k)) is not None]
        return f'attachment; filename="{"-".join(["troc-statement", *days])}.{ext}"'
