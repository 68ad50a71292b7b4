"""Unlocking an encrypted member key in the browser, before the node starts.

``troc run`` needs the key to start the node (the node's peer id is derived
from it). When the key is encrypted and no passphrase was given (no
TROC_PASSPHRASE, no --passphrase-file, no terminal to ask on: a node started
by a desktop session or a service), and the web app is on, ``troc run``
serves this small app first, on the web app's address: log in with the
printed link, type the passphrase once, and the node starts with the web
app on the same port, the same session still logged in. The passphrase is
used by this process only, to open the key file; it is not stored.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from troc.errors import KeystoreError

__all__ = ["create_unlock_app", "unlock_in_browser"]

KEY_FILE = "key"


def create_unlock_app(
    home: Path, auth: Any, hosts: frozenset[str], unlocked: Callable[[Any], None]
) -> Any:
    """The unlock app for the key of ``home``; calls ``unlocked(signing_key)`` once opened."""
    from troc.cli.home import member_id
    from troc.crypto.keystore import load_key
    from troc.crypto.sign import SigningKey
    from troc.web.app import HERE, Guard, Web, templates

    web = Web(None, auth, templates(), False, member=member_id(home))
    opened: list[Any] = []

    async def form(request: Request) -> Response:
        return web.page(request, "unlock.html", {"locked": True, "unlocked": bool(opened)})

    async def unlock(request: Request) -> Response:
        if opened:  # a second tab: already done
            return web.page(request, "unlock.html", {"locked": True, "unlocked": True})
        passphrase = str((await request.form()).get("passphrase") or "")
        try:
            # scrypt takes a while: off the event loop.
            seed = await trio.to_thread.run_sync(load_key, home / KEY_FILE, passphrase)
        except KeystoreError as exc:
            from troc.web.i18n import Translator

            t = Translator(web.language(request))
            error = {"kind": "key", "title": t("unlock.wrong"), "message": str(exc)}
            return web.page(request, "unlock.html", {"locked": True, "error": error}, 423)
        opened.append(SigningKey(seed))
        unlocked(opened[0])
        return web.page(request, "unlock.html", {"locked": True, "unlocked": True})

    routes = [
        Route("/login", web.login, methods=["GET"]),
        Route("/lang", web.set_language, methods=["POST"]),
        Route("/unlock", web.guarded(unlock), methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        Route("/{path:path}", web.guarded(form), methods=["GET"]),
    ]
    return Guard(Starlette(routes=routes), hosts)


async def unlock_in_browser(
    home: Path, host: str, port: int, *, announce: Callable[[str], None]
) -> tuple[Any, Any, int]:
    """Serve the unlock app on ``host:port`` (or the next free port) until
    the key is opened; ``announce`` gets the login URL. Returns (the signing
    key, the sessions to keep, the port used).

    Raises:
        OSError: no port to listen on.
    """
    from hypercorn.trio import serve

    from troc.web.auth import WebAuth, allowed_hosts
    from troc.web.server import WebServer, _bind, hypercorn_config

    sock = _bind(host, port)
    server = WebServer(host, sock.getsockname()[1], WebAuth())
    got: list[Any] = []
    done = trio.Event()

    def unlocked(key: Any) -> None:
        got.append(key)
        done.set()

    app = create_unlock_app(home, server.auth, allowed_hosts(host, server.port), unlocked)
    announce(server.login_url())

    async def shutdown() -> None:
        await done.wait()
        await trio.sleep(0.3)  # the "unlocked" page leaves first

    await serve(app, hypercorn_config(sock), shutdown_trigger=shutdown, mode="asgi")
    return got[0], server.auth, server.port
