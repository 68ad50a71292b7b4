"""Server-issued invitation codes without a network: the code format, the
book (hashing, expiry, uses, revoke, concurrent redemptions), the throttle
and the answers of the service."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from troc.crypto.sign import SigningKey
from troc.errors import LocalProtocolError, RemoteProtocolError
from troc.node import invites, ops
from troc.node.invites import (
    CodeRefused,
    InviteBook,
    InviteService,
    Throttle,
    format_code,
    format_secret,
    parse_code,
    parse_expiry,
    parse_secret,
)
from troc.node.local import open_local_node
from troc.protocol.codec import pack, unpack

ADDR = "/ip4/203.0.113.5/tcp/4747/p2p/12D3KooWGzh3kA5nJ1RBc2JYeDqbeWDxMfbGgBNCyWxnL2Ax6Wta"


class Clock:
    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


# -- the code ------------------------------------------------------------------


def test_secret_is_80_bits_readable_and_round_trips() -> None:
    secret = bytes(range(10))
    text = format_secret(secret)
    assert len(text) == 20
    assert text.count("-") == 2
    assert set(text.replace("-", "")) <= set(invites._ALPHABET)
    assert parse_secret(text) == secret
    # Read over the phone: case, spaces and dashes do not matter, O/I/L read as 0/1.
    sloppy = text.lower().replace("-", " ").replace("0", "o").replace("1", "l")
    assert parse_secret(sloppy) == secret


def test_a_mistyped_secret_is_caught_before_anything_is_sent() -> None:
    secret = bytes(range(10))
    text = format_secret(secret).replace("-", "")
    wrong = 0
    for i in range(len(text)):
        for c in "0123456789ABCDEFGHJKMNPQRSTVWXYZ":
            if c == text[i]:
                continue
            typo = text[:i] + c + text[i + 1 :]
            try:
                parse_secret(typo)
            except LocalProtocolError:
                wrong += 1
    # 2 check characters (10 bits): nearly every single-character typo is caught.
    assert wrong / (len(text) * 31) > 0.99
    with pytest.raises(LocalProtocolError, match="18 letters"):
        parse_secret("ABC")
    with pytest.raises(LocalProtocolError):
        parse_secret(text[:-1] + "U")  # not in the alphabet


def test_code_format() -> None:
    secret = b"\x01" * 10
    code = format_code(ADDR, secret)
    assert code.startswith("troc-code:/ip4/")
    assert code.endswith(format_secret(secret))
    assert invites.is_code("  " + code)
    assert parse_code(code) == (ADDR, secret)
    assert not invites.is_code("troc-invite:abc")
    for bad in ("troc-code:" + format_secret(secret), "troc-code:/ip4/1.2.3.4/tcp/1#X", "x"):
        with pytest.raises(LocalProtocolError):
            parse_code(bad)


def test_expiry_parsing() -> None:
    assert parse_expiry("7d") == 7 * 86400
    assert parse_expiry("12h") == 43200
    assert parse_expiry("30m") == 1800
    assert parse_expiry(90) == 90
    assert parse_expiry("2w") == 14 * 86400
    for bad in ("0", "400d", "soon", "-1d", "1.5h"):
        with pytest.raises(LocalProtocolError):
            parse_expiry(bad)


# -- the book ------------------------------------------------------------------


def test_only_a_hash_of_the_secret_is_stored(tmp_path: Path) -> None:
    book = InviteBook(tmp_path / "invites.sqlite")
    secret, info = book.create(b"c" * 32, uses=2, label="market day")
    assert (tmp_path / "invites.sqlite").stat().st_mode & 0o777 == 0o600
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert secret not in raw
    assert format_secret(secret).encode() not in raw
    with sqlite3.connect(tmp_path / "invites.sqlite") as db:
        hashes = [bytes(r[0]) for r in db.execute("SELECT hash FROM codes")]
    assert hashes == [invites.hash_secret(secret)]
    assert info.id == invites.hash_secret(secret)[:5].hex()
    assert (info.uses, info.uses_left, info.label) == (2, 2, "market day")


def test_uses_are_counted_down_then_used_up(tmp_path: Path) -> None:
    book = InviteBook(tmp_path / "i.sqlite")
    secret, info = book.create(b"c" * 32, uses=2)
    assert book.redeem(secret).uses_left == 1
    assert book.redeem(secret).uses_left == 0
    with pytest.raises(CodeRefused) as exc:
        book.redeem(secret)
    assert exc.value.reason == "used_up"
    assert book.find(info.id).state(book.clock()) == "used_up"


def test_expiry(tmp_path: Path) -> None:
    clock = Clock()
    book = InviteBook(tmp_path / "i.sqlite", clock)
    secret, info = book.create(b"c" * 32, uses=5, expires_s=3600)
    clock.now += 3599_000
    book.redeem(secret)
    clock.now += 1000
    with pytest.raises(CodeRefused) as exc:
        book.redeem(secret)
    assert exc.value.reason == "expired"
    assert book.find(info.id).uses_left == 4  # a refused attempt consumes nothing


def test_unknown_and_revoked(tmp_path: Path) -> None:
    book = InviteBook(tmp_path / "i.sqlite")
    with pytest.raises(CodeRefused) as exc:
        book.redeem(b"\x00" * 10)
    assert exc.value.reason == "unknown"
    secret, info = book.create(b"c" * 32, uses=3)
    # Revoke by id prefix, by secret, or by the whole code: all name the same code.
    assert book.find(info.id[:4]).id == info.id
    assert book.find(format_secret(secret)).id == info.id
    assert book.find(format_code(ADDR, secret)).id == info.id
    revoked = book.revoke(format_code(ADDR, secret))
    assert revoked.revoked
    assert revoked.state(book.clock()) == "revoked"
    with pytest.raises(CodeRefused) as exc:
        book.redeem(secret)
    assert exc.value.reason == "revoked"
    with pytest.raises(ops.NotFoundError):
        book.find("ffffffff")
    with pytest.raises(LocalProtocolError):
        book.find("not a code")


def test_a_refusing_check_consumes_nothing(tmp_path: Path) -> None:
    book = InviteBook(tmp_path / "i.sqlite")
    secret, info = book.create(b"c" * 32)

    def refuse(_: invites.CodeInfo) -> None:
        raise CodeRefused("needs_vouch")

    with pytest.raises(CodeRefused):
        book.redeem(secret, refuse)
    assert book.find(info.id).uses_left == 1
    book.redeem(secret)
    book.refund(info.id)  # an answer that could not be delivered gives the use back
    assert book.find(info.id).uses_left == 1
    book.refund(info.id)  # never above the uses granted
    assert book.find(info.id).uses_left == 1


def test_bad_parameters(tmp_path: Path) -> None:
    book = InviteBook(tmp_path / "i.sqlite")
    for kwargs in ({"uses": 0}, {"uses": 10**7}, {"expires_s": 0}, {"label": "x" * 101}):
        with pytest.raises(LocalProtocolError):
            book.create(b"c" * 32, **kwargs)  # type: ignore[arg-type]


def test_two_redemptions_of_a_single_use_code_one_wins(tmp_path: Path) -> None:
    """Several threads, each with its own connection (as separate processes
    would be), race for one use: exactly one wins, the others are told used_up."""
    path = tmp_path / "i.sqlite"
    for _ in range(5):
        secret, info = InviteBook(path).create(b"c" * 32, uses=1)
        start = threading.Barrier(4)
        results: list[str] = []

        def race(
            secret: bytes = secret, start: threading.Barrier = start, results: list[str] = results
        ) -> None:
            book = InviteBook(path)
            start.wait()
            try:
                book.redeem(secret)
                results.append("ok")
            except CodeRefused as exc:
                results.append(exc.reason)

        threads = [threading.Thread(target=race) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == ["ok", "used_up", "used_up", "used_up"]
        assert InviteBook(path).find(info.id).uses_left == 0


# -- the throttle ----------------------------------------------------------------


def test_throttle_per_peer_and_per_ip() -> None:
    now = [0.0]
    t = Throttle(per_peer=3, per_ip=5, window=60, clock=lambda: now[0])
    assert [t.attempt("p1", "1.2.3.4") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert t.attempt("p1", "1.2.3.4") == pytest.approx(60)
    # A second peer id from the same address gets the rest of the address's share.
    assert [t.attempt("p2", "1.2.3.4") for _ in range(2)] == [0.0, 0.0]
    assert t.attempt("p3", "1.2.3.4") > 0
    assert t.attempt("p4", "5.6.7.8") == 0.0
    now[0] = 61.0
    assert t.attempt("p1", "1.2.3.4") == 0.0
    assert t.refused == 2


def test_throttle_bounds_the_keys_it_tracks() -> None:
    t = Throttle(per_peer=1, window=60, clock=lambda: 0.0, max_keys=10)
    assert all(t.attempt(f"p{i}", None) == 0.0 for i in range(10))
    assert t.attempt("one too many", None) > 0


# -- the service's answers -------------------------------------------------------


def test_answers(tmp_path: Path) -> None:
    founder = SigningKey.generate()
    with open_local_node(tmp_path / "founder", founder) as f:
        open_c = f.create_community("Valley LETS", "hours", 20)
        vouch_c = f.create_community("Closed club", "seeds", 5, admission="vouch")
        geneses = [f.community(c).genesis for c in (open_c, vouch_c)]
    with open_local_node(tmp_path / "server", SigningKey.generate()) as server:
        for g in geneses:
            server.ingest(g)
        book = invites.book_of(tmp_path / "server")
        service = InviteService(server, book, lambda: [ADDR])
        secret, _ = book.create(open_c)
        reply, used = service.answer(unpack(pack({"t": "redeem", "s": secret}, invites.LIMITS)))
        assert reply["t"] == "ok"
        assert used is not None
        assert reply["g"] == geneses[0]
        assert reply["a"] == [ADDR]
        assert reply["p"]["name"] == "Valley LETS"
        assert reply["p"]["credit_limit"] == 20
        pack(reply, invites.LIMITS)  # the answer fits the protocol's bounds
        redeemed = invites._answer(ADDR, reply)
        assert redeemed.addrs == [ADDR]
        assert redeemed.genesis == geneses[0]
        assert ops.decode_invitation(redeemed.invitation())[0] == geneses[0]
        assert service.answer({"t": "redeem", "s": secret})[0] == {"t": "error", "e": "used_up"}
        for bad in (None, {"t": "redeem"}, {"t": "redeem", "s": b"x"}, {"t": "hello"}):
            assert service.answer(bad)[0] == {"t": "error", "e": "bad_request"}
        # A server cannot vouch: such codes are refused when made, and when redeemed.
        with pytest.raises(CodeRefused) as exc:
            invites.op_create(server, {"community": ops.cid(vouch_c), "addrs": [ADDR]})
        assert exc.value.reason == "needs_vouch"
        secret, info = book.create(vouch_c)
        assert service.answer({"t": "redeem", "s": secret})[0]["e"] == "needs_vouch"
        assert book.find(info.id).uses_left == 1


def test_the_joiner_checks_the_answer() -> None:
    with pytest.raises(CodeRefused) as exc:
        invites._answer(ADDR, {"t": "error", "e": "throttled", "w": 42})
    assert exc.value.reason == "throttled"
    assert "42 s" in str(exc.value)
    for bad in ({"t": "error", "e": "what"}, {"t": "ok"}, [], {"t": "ok", "g": b"x", "a": []}):
        with pytest.raises(RemoteProtocolError):
            invites._answer(ADDR, bad)


def test_ops_create_list_revoke_and_policy(tmp_path: Path) -> None:
    key = SigningKey.generate()
    with open_local_node(tmp_path, key) as node:
        c = node.create_community("Valley LETS", "hours", 20, ceiling=500)
        assert ops.run_op(node, "invite.list", {}) == {"codes": []}
        loop = "/ip4/127.0.0.1/tcp/4747/p2p/12D3KooWGzh3kA5nJ1RBc2JYeDqbeWDxMfbGgBNCyWxnL2Ax6Wta"
        made = ops.run_op(
            node,
            "invite.create",
            {"uses": "3", "expires": "2d", "label": "fair", "addrs": [loop, ADDR]},
        )
        assert made["server"] == ADDR  # a public address before a loopback one
        assert parse_code(made["code"])[0] == ADDR
        assert made["uses_left"] == 3
        assert made["label"] == "fair"
        assert made["state"] == "active"
        assert made["expires_ms"] - made["created_ms"] == 2 * 86400_000
        listed = ops.run_op(node, "invite.list", {})["codes"]
        assert [x["id"] for x in listed] == [made["id"]]
        assert listed[0]["community_name"] == "Valley LETS"
        assert "code" not in listed[0]  # never shown again: only its hash is kept
        gone = ops.run_op(node, "invite.revoke", {"code": made["id"]})
        assert gone["state"] == "revoked"
        assert ops.run_op(node, "invite.list", {})["codes"] == []
        assert len(ops.run_op(node, "invite.list", {"all": True})["codes"]) == 1
        with pytest.raises(LocalProtocolError, match="not known yet"):
            ops.run_op(node, "invite.create", {})
        policy = ops.run_op(node, "community.policy", {})
        assert policy == {
            "community": ops.cid(c),
            "name": "Valley LETS",
            "unit": "hours",
            "credit_limit": 20,
            "admission": "open",
            "finality": "optimistic",
            "founder": ops.mid(key.public),
            "witnesses": [],
            "faults": 0,
            "quorum": 0,
            "ceiling": 500,
        }


def test_a_member_redeeming_a_code_again_uses_no_second_use(tmp_path: Path) -> None:
    with open_local_node(tmp_path / "founder", SigningKey.generate()) as f:
        community = f.create_community("Valley LETS", "hours", 20)
        genesis = f.community(community).genesis
    with open_local_node(tmp_path / "server", SigningKey.generate()) as server:
        server.ingest(genesis)
        book = invites.book_of(tmp_path / "server")
        service = InviteService(server, book, lambda: [ADDR])
        secret, made = book.create(community, uses=2)
        request = {"t": "redeem", "s": secret}
        first, used = service.answer(request, "peer-ada")
        assert first["t"] == "ok"
        assert used is not None
        again, used = service.answer(request, "peer-ada")  # ada joins again
        assert again == first
        assert used is None  # nothing to count, nothing to refund
        assert book.find(made.id).uses_left == 1
        assert service.answer(request, "peer-bruno")[0]["t"] == "ok"
        assert book.find(made.id).uses_left == 0
        # Used up for newcomers; still the same answer for those who redeemed it.
        assert service.answer(request, "peer-chloe")[0] == {"t": "error", "e": "used_up"}
        assert service.answer(request, "peer-ada")[0]["t"] == "ok"
        # A refunded use forgets its redeemer: a retry consumes it again.
        book.refund(made.id, "peer-bruno")
        assert book.redeem(secret, redeemer="peer-bruno").again is False
        assert book.find(made.id).uses_left == 0
        book.revoke(made.id)
        assert service.answer(request, "peer-ada")[0] == {"t": "error", "e": "revoked"}
