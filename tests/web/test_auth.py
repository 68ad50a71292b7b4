"""Login tokens, sessions and the Host rule, without a node."""

from __future__ import annotations

from troc.web.auth import LOGIN_TTL, MAX_SESSIONS, MAX_TOKENS, SESSION_IDLE, WebAuth, allowed_hosts


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_is_used_once_and_expires() -> None:
    clock = Clock()
    auth = WebAuth(clock)
    token = auth.mint_login()
    session = auth.login(token)
    assert session is not None
    assert auth.login(token) is None
    late = auth.mint_login()
    clock.now += LOGIN_TTL + 1
    assert auth.login(late) is None
    assert auth.login("") is None
    assert auth.login("x" * 43) is None


def test_sessions_end_when_idle_or_logged_out_and_are_bounded() -> None:
    clock = Clock()
    auth = WebAuth(clock)
    first = auth.login(auth.mint_login())
    assert first is not None
    assert auth.session(first.id) is first
    assert auth.session(first.id + "x") is None
    assert auth.session(None) is None
    clock.now += SESSION_IDLE + 1
    assert auth.session(first.id) is None
    second = auth.login(auth.mint_login())
    assert second is not None
    auth.logout(second)
    assert auth.session(second.id) is None
    made = []
    for _ in range(MAX_SESSIONS + 5):
        clock.now += 1
        s = auth.login(auth.mint_login())
        assert s is not None
        made.append(s)
    assert auth.session(made[0].id) is None  # the least recently used went
    assert auth.session(made[-1].id) is made[-1]
    tokens = [auth.mint_login() for _ in range(MAX_TOKENS + 1)]
    assert auth.login(tokens[0]) is None
    assert auth.login(tokens[-1]) is not None


def test_csrf_is_compared_whole() -> None:
    auth = WebAuth()
    session = auth.login(auth.mint_login())
    assert session is not None
    assert auth.csrf_ok(session, session.csrf)
    assert not auth.csrf_ok(session, session.csrf[:-1])
    assert not auth.csrf_ok(session, None)
    assert not auth.csrf_ok(session, "")


def test_loopback_answers_to_its_names_only() -> None:
    hosts = allowed_hosts("127.0.0.1", 8787)
    assert {"127.0.0.1:8787", "localhost:8787", "[::1]:8787"} <= hosts
    assert "evil.example:8787" not in hosts
    assert allowed_hosts("::1", 9) >= {"[::1]:9", "localhost:9"}
