"""The member web app: an ASGI application over a running node.

:func:`create_app` builds it from a :class:`~troc.web.adapter.NodeDoor` (the
node's operations) and a :class:`~troc.web.auth.WebAuth` (login tokens and
sessions). ``troc run`` serves it with hypercorn's trio worker inside the
node's nursery (:mod:`troc.web.server`); a developer can mount it in any ASGI
server running under trio (docs/http-api.md shows how).

Pages are rendered on the server (troc/web/templates) and work without
script; ``static/app.js`` adds live updates (server-sent events on
``/events``: each stored entry makes the page fetch itself again and swap in
its ``data-live`` parts). The JSON API (``/api/op/NAME``) runs the same
operations the CLI runs, and answers errors with the CLI's ``--json`` error
document under the HTTP status of its kind (troc.web.adapter.HTTP_STATUS).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from troc.web import i18n
from troc.web.adapter import NodeDoor, OpFailed
from troc.web.auth import CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE, Session, WebAuth

__all__ = ["create_app"]

HERE = Path(__file__).parent
#: The strictest policy the pages work under: no inline script or style, nothing from elsewhere.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    # The login URL holds a token: never sent to another site. (Not
    # no-referrer: Chromium then sends "Origin: null" on the app's own forms.)
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]
#: An API request body may not be larger (an invitation is the largest parameter).
MAX_BODY = 256 * 1024
SAFE_METHODS = frozenset({"GET", "HEAD"})

Handler = Callable[[Request], Awaitable[Response]]


class Guard:
    """ASGI middleware: Host and Origin checks (DNS rebinding, cross-site
    posts) and the security headers on every response."""

    def __init__(self, app: Any, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "").lower()
        why = None
        if host not in self.hosts and not _ip_literal_here(host, scope.get("server")):
            why = f"unknown host {host!r}: open the app by the address troc printed"
        elif scope["method"] not in SAFE_METHODS:
            origin = headers.get("origin")
            if origin is not None and urllib.parse.urlsplit(origin).netloc.lower() != host:
                why = "cross-origin request refused"
            if headers.get("sec-fetch-site") == "cross-site":
                why = "cross-site request refused"
        if why is not None:
            body = json.dumps({"kind": "forbidden", "reason": None, "message": why}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [(b"content-type", b"application/json"), *SECURITY_HEADERS],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def secured(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, secured)


def _ip_literal_here(host: str, server: Any) -> bool:
    """True for ``Host: ADDRESS:PORT`` naming this server's port by an IP
    address: DNS rebinding needs a name, so an address is always safe, and a
    server bound to every interface is reached by its LAN addresses."""
    import ipaddress

    name, sep, port = host.rpartition(":")
    if not sep or server is None or port != str(server[1]):
        return False
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def create_app(
    door: NodeDoor, auth: WebAuth, hosts: frozenset[str] | set[str], *, secure_cookie: bool = False
) -> Any:
    """The web app of the node behind ``door``, answering only to ``hosts``
    (Host header values, e.g. ``{"127.0.0.1:8787", "localhost:8787"}``).

    ``secure_cookie``: mark the session cookie Secure (when served over HTTPS).
    """
    from troc.web import screens

    web = Web(door, auth, templates(), secure_cookie)
    routes = [
        Route("/login", web.login, methods=["GET"]),
        Route("/logout", web.guarded(web.logout), methods=["POST"]),
        Route("/lang", web.set_language, methods=["POST"]),
        Route("/events", web.guarded(web.events, api=True), methods=["GET"]),
        Route("/api/ops", web.guarded(web.api_list, api=True), methods=["GET"]),
        Route("/api/op/{name:path}", web.guarded(web.api_op, api=True), methods=["POST"]),
        *screens.routes(web),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.web = web
    return Guard(app, frozenset(h.lower() for h in hosts))


def templates() -> Jinja2Templates:
    from troc.web.screens import utc_time

    made = Jinja2Templates(directory=str(HERE / "templates"))
    made.env.filters["utc"] = utc_time
    return made


class Web:
    """What every handler needs: the node, the sessions, the templates."""

    def __init__(
        self,
        door: NodeDoor | None,
        auth: WebAuth,
        templates: Jinja2Templates,
        secure_cookie: bool,
        *,
        member: str = "",
    ) -> None:
        self.door: NodeDoor = door  # type: ignore[assignment]  # None: the unlock app only
        self.member = door.member if door is not None else member
        self.auth = auth
        self.templates = templates
        self.secure_cookie = secure_cookie

    # -- sessions -------------------------------------------------------------

    def session_of(self, request: Request) -> Session | None:
        return self.auth.session(request.cookies.get(SESSION_COOKIE))

    def language(self, request: Request) -> str:
        return i18n.choose_language(
            request.cookies.get(i18n.COOKIE), request.headers.get("accept-language")
        )

    def guarded(self, handler: Handler, *, api: bool = False) -> Handler:
        """``handler`` for a logged-in session only, with the CSRF token on
        every state-changing request (form field, or header for the ``api``
        handlers, which answer errors in JSON)."""

        async def guard(request: Request) -> Response:
            session = self.session_of(request)
            if session is None:
                if api:
                    return error_json("auth", "no session: log in with the link troc printed")
                return self.page(request, "login_needed.html", {}, status=401)
            request.state.session = session
            if request.method not in SAFE_METHODS:
                given = request.headers.get(CSRF_HEADER)
                if given is None and not api:
                    form = await request.form()
                    given = str(form.get(CSRF_FIELD) or "")
                if not self.auth.csrf_ok(session, given):
                    if api:
                        return error_json("forbidden", "missing or wrong CSRF token")
                    return self.page(request, "login_needed.html", {"csrf_failed": True}, 403)
            return await handler(request)

        return guard

    async def login(self, request: Request) -> Response:
        session = self.auth.login(request.query_params.get("token", ""))
        if session is None:
            return self.page(request, "login_needed.html", {"bad_token": True}, status=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session.id,
            httponly=True,
            samesite="strict",
            secure=self.secure_cookie,
            max_age=30 * 24 * 3600,
            path="/",
        )
        return response

    async def logout(self, request: Request) -> Response:
        self.auth.logout(request.state.session)
        response = self.page(request, "login_needed.html", {"logged_out": True})
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def set_language(self, request: Request) -> Response:
        # Open to visitors without a session (the login page has the switch),
        # but never cross-site (Guard) and only to a language we have.
        form = await request.form()
        lang = str(form.get("lang", ""))
        back = str(form.get("back", "/"))
        if not back.startswith("/") or back.startswith(("//", "/\\")):
            back = "/"
        response = RedirectResponse(back, status_code=303)
        if lang in i18n.LANGUAGES:
            response.set_cookie(
                i18n.COOKIE, lang, samesite="strict", max_age=365 * 24 * 3600, path="/"
            )
        return response

    # -- rendering ------------------------------------------------------------

    def page(
        self, request: Request, template: str, context: dict[str, Any], status: int = 200
    ) -> Response:
        lang = self.language(request)
        t = i18n.Translator(lang)
        session = self.auth.session(request.cookies.get(SESSION_COOKIE))
        full = {
            "request": request,
            "t": t,
            "lang": lang,
            "languages": i18n.LANGUAGES,
            "csrf": session.csrf if session else "",
            "logged_in": session is not None,
            "path": request.url.path,
            "me": self.member,
            **context,
        }
        return self.templates.TemplateResponse(request, template, full, status_code=status)

    # -- live updates ---------------------------------------------------------

    async def events(self, request: Request) -> Response:
        """Server-sent events: one ``entry`` event per stored entry (its kind
        and id), and a comment every 15 s to keep proxies from closing."""
        from starlette.responses import StreamingResponse

        from troc.node.ops import eid

        async def stream() -> Any:
            async with self.door.entries() as channel:
                # Subscribed first: an entry stored once the client has this line is sent.
                yield b"retry: 1000\n\n"
                while True:
                    with trio.move_on_after(15):
                        entry = await channel.receive()
                        data = json.dumps({"kind": entry.kind.value, "entry": eid(entry.id)})
                        yield f"event: entry\ndata: {data}\n\n".encode()
                        continue
                    yield b": keep-alive\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    # -- the JSON API ---------------------------------------------------------

    async def api_list(self, request: Request) -> Response:
        return JSONResponse({"operations": self.door.operations(), "member": self.door.member})

    async def api_op(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = await request.body()
        if len(body) > MAX_BODY:
            return error_json("usage", f"request body over {MAX_BODY} bytes")
        try:
            params = json.loads(body) if body.strip() else {}
        except (ValueError, UnicodeDecodeError):
            return error_json("usage", "the body is not JSON")
        if not isinstance(params, dict):
            return error_json("usage", "the body is a JSON object of parameters")
        try:
            result = await self.door.call(name, params)
        except OpFailed as failed:
            return JSONResponse({"error": failed.error}, status_code=failed.status)
        return JSONResponse({"result": result})


def error_json(kind: str, message: str, reason: str | None = None) -> Response:
    from troc.web.adapter import http_status

    doc = {"kind": kind, "reason": reason, "message": message}
    return JSONResponse({"error": doc}, status_code=http_status(kind))
