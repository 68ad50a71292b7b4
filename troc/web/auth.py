"""Who may use the web app: one-time login tokens, sessions, CSRF, Host and Origin.

Theory of operation
-------------------
The node mints a one-time login token and prints a URL holding it (as Jupyter
does). Opening that URL trades the token, once, for a session: a random id in
a cookie that scripts cannot read (HttpOnly) and that no other site's page
can send (SameSite=Strict). Each session has its own CSRF token, which every
form carries in a hidden field and every API call in the ``X-CSRF-Token``
header; a state-changing request without the right one is refused.

Host and Origin checks defeat DNS rebinding: a page of ``evil.example`` that
resolves its name to 127.0.0.1 still sends ``Host: evil.example``, which is
not one of the names this server answers to. Secrets are compared in
constant time. Sessions live in memory: a restarted node asks for a new
login (``troc web``).
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

__all__ = ["SESSION_COOKIE", "Session", "WebAuth", "allowed_hosts"]

SESSION_COOKIE = "troc_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
#: A login token not used within this many seconds is void.
LOGIN_TTL = 24 * 3600.0
#: A session idle this long is over.
SESSION_IDLE = 30 * 24 * 3600.0
#: At most this many unused login tokens and sessions are kept (the oldest go).
MAX_TOKENS = 32
MAX_SESSIONS = 256


@dataclass(slots=True)
class Session:
    id: str
    csrf: str
    last_used: float = field(default_factory=time.monotonic)
    #: Messages for the next page shown (post/redirect/get): (kind, text).
    flash: list[tuple[str, str]] = field(default_factory=list)


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


class WebAuth:
    """Login tokens and sessions of one web server (in memory)."""

    def __init__(self, clock: object = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[str, float] = {}  # token -> minted at
        self._sessions: dict[str, Session] = {}

    def _now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def mint_login(self) -> str:
        """A new one-time login token."""
        token = _new_secret()
        self._tokens[token] = self._now()
        while len(self._tokens) > MAX_TOKENS:
            del self._tokens[next(iter(self._tokens))]
        return token

    def login(self, token: str) -> Session | None:
        """Trade a login token for a new session; None if unknown, used or stale."""
        found = None
        for known in list(self._tokens):
            if hmac.compare_digest(known.encode(), token.encode()):
                found = known
        if found is None:
            return None
        minted = self._tokens.pop(found)
        if self._now() - minted > LOGIN_TTL:
            return None
        session = Session(_new_secret(), _new_secret(), self._now())
        self._sessions[session.id] = session
        while len(self._sessions) > MAX_SESSIONS:
            oldest = min(self._sessions.values(), key=lambda s: s.last_used)
            del self._sessions[oldest.id]
        return session

    def session(self, cookie: str | None) -> Session | None:
        """The session of a cookie value, if live."""
        if not cookie:
            return None
        session = self._sessions.get(cookie)
        if session is None or not hmac.compare_digest(session.id.encode(), cookie.encode()):
            return None
        if self._now() - session.last_used > SESSION_IDLE:
            del self._sessions[session.id]
            return None
        session.last_used = self._now()
        return session

    def logout(self, session: Session) -> None:
        self._sessions.pop(session.id, None)

    @staticmethod
    def csrf_ok(session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(session.csrf.encode(), str(given).encode())


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    """The Host header values this server answers to when bound to ``host:port``.

    Loopback: its usual names. A wildcard bind (0.0.0.0, ::): also this
    machine's name (members on the LAN type it or its address); any other
    bind address: that address.
    """
    names = {host}
    if host in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "::", ""):
        names |= {"127.0.0.1", "localhost", "[::1]"}
    if host in ("0.0.0.0", "::", ""):
        import socket

        name = socket.gethostname()
        names |= {name, f"{name}.local"}
        try:
            names |= {str(info[4][0]) for info in socket.getaddrinfo(name, None)}
        except OSError:
            pass
    out = set()
    for n in names:
        shown = f"[{n}]" if ":" in n and not n.startswith("[") else n
        out |= {shown.lower(), f"{shown}:{port}".lower()}
    return frozenset(out)
