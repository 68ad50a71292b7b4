"""Server-issued invitation codes (docs/invitations.md).

A community server follows communities but holds no member's key. It can
still let newcomers in: it issues *codes*, short texts a member reads out or
pastes, that ``troc community join`` redeems over libp2p for what a
``troc-invite:`` text carries (the genesis and addresses to reach)::

    troc-code:/ip4/203.0.113.5/tcp/4747/p2p/12D3KooW…#K7M2Q9-XA4B8C-ZT3H0R

Theory of operation
-------------------
* **The secret** is 80 random bits (:mod:`secrets`) in Crockford base32,
  16 characters plus 2 check characters (10 bits of a hash) in three groups
  of six. Case, dashes and spaces do not matter; I and L read as 1, O as 0.
  A mistyped secret is caught by the check before anything is sent.
* **The book** (:class:`InviteBook`, ``invites.sqlite`` in the home, its own
  SQLite file, mode 0600) keeps only SHA-256 of the secret, with the
  community, uses left, expiry, creation time, label and a revoked flag. A
  redemption checks and consumes one use in one ``BEGIN IMMEDIATE``
  transaction, so two redemptions of a single-use code cannot both win, in
  one process or several.
* **The protocol** ``/troc/invite/1``: one frame each way, canonical msgpack
  (:mod:`troc.protocol.codec`). The joiner sends ``{"t": "redeem", "s":
  <10 secret bytes>}``; the server answers ``{"t": "ok", "g": <genesis
  wire>, "a": [addresses], "p": <policy>}`` or ``{"t": "error", "e":
  <code>}`` with code ``unknown``, ``expired``, ``used_up``, ``revoked``,
  ``needs_vouch``, ``unavailable`` (the server no longer follows the
  community), ``throttled`` (with ``"w"``: seconds to wait) or
  ``bad_request``. A use is consumed when the ``ok`` answer is written; if
  the write fails, it is given back.
* **Brute force** is hopeless against 80 bits, and bounded anyway: every
  attempt counts against the peer id and the source IP address (sliding
  60 s windows), a few handlers run at once, every frame is small and has a
  deadline.
* **Vouch communities**: a server cannot vouch, and the joiner's member id
  is not known when a code is made, so codes are refused there
  (``needs_vouch``): such a newcomer needs a member's
  ``troc community invite --for``.

The node serves the protocol when ``invites.sqlite`` exists in its home
(:func:`serves`), or from the first ``invite.create`` sent to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from troc.crypto.ids import encode_id
from troc.errors import (
    CodecError,
    LocalProtocolError,
    NetworkError,
    RefusedError,
    RemoteProtocolError,
    StoreError,
    TrocError,
)
from troc.node.invitation import encode_invitation
from troc.node.local import LocalNode
from troc.node.opdata import Done, NotFoundError, community_of
from troc.protocol.codec import Limits, pack, unpack
from troc.protocol.entry import CommunityId, Entry, Genesis, Kind

if TYPE_CHECKING:
    from troc.net.p2p import P2PHost

__all__ = [
    "CODE_PREFIX",
    "INVITES_FILE",
    "PROTOCOL_ID",
    "CodeInfo",
    "CodeRefused",
    "InviteBook",
    "InviteService",
    "Redeemed",
    "Throttle",
    "format_code",
    "is_code",
    "parse_code",
    "policy_of",
    "redeem",
]

logger = logging.getLogger("troc.invites")

PROTOCOL_ID = "/troc/invite/1"
CODE_PREFIX = "troc-code:"
INVITES_FILE = "invites.sqlite"

SECRET_BYTES = 10  # 80 bits
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
_VALUE = {c: i for i, c in enumerate(_ALPHABET)} | {"I": 1, "L": 1, "O": 0}
_SECRET_CHARS = 18  # 16 for 80 bits, 2 check characters
_HASH_DOMAIN = b"troc/invite-code/v1"
_CHECK_DOMAIN = b"troc/invite-check/v1"

MAX_USES = 1_000_000
MAX_EXPIRY_S = 366 * 86400
MAX_LABEL = 100
MAX_ADDRS = 16
#: Bounds of the protocol: a request is tiny, an answer holds a genesis (≤ 16 KiB).
MAX_REQUEST = 256
MAX_ANSWER = 64 * 1024
IO_TIMEOUT = 10.0
MAX_HANDLERS = 16
LIMITS = Limits(
    max_size=MAX_ANSWER,
    max_depth=3,
    max_str=1024,
    max_bin=32 * 1024,
    max_array=64,
    max_map=16,
)

ERRORS = {
    "unknown": "the server knows no such code: check it, or ask for a new one",
    "expired": "this code has expired: ask whoever gave it to you for a new one",
    "used_up": "this code has been used as many times as it allowed: ask for a new one",
    "revoked": "this code was withdrawn by the server's operator: ask for a new one",
    "needs_vouch": "this community admits members by vouch, and a server cannot vouch:"
    " ask a member for an invitation made for you (troc community invite --for YOUR-ID)",
    "unavailable": "the server no longer serves the community of this code",
    "throttled": "too many attempts from here",
    "bad_request": "the server did not understand the request",
}


class CodeRefused(RefusedError):
    """A code that cannot be redeemed; ``reason`` is one of :data:`ERRORS`."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(reason, message or ERRORS.get(reason, reason))


# -- codes --------------------------------------------------------------------


def _b32(data: bytes, chars: int) -> str:
    n = int.from_bytes(data, "big")
    bits = len(data) * 8
    n <<= chars * 5 - bits
    return "".join(_ALPHABET[(n >> (5 * (chars - 1 - i))) & 31] for i in range(chars))


def _check(secret: bytes) -> str:
    digest = hashlib.sha256(_CHECK_DOMAIN + secret).digest()
    return _ALPHABET[digest[0] >> 3] + _ALPHABET[digest[1] >> 3]


def format_secret(secret: bytes) -> str:
    """The 18 characters of a secret, grouped by six: ``K7M2Q9-XA4B8C-ZT3H0R``."""
    text = _b32(secret, 16) + _check(secret)
    return "-".join(text[i : i + 6] for i in range(0, _SECRET_CHARS, 6))


def parse_secret(text: str) -> bytes:
    """The 10 secret bytes of a typed secret; LocalProtocolError if mistyped."""
    clean = re.sub(r"[\s\-]", "", text).upper()
    if len(clean) != _SECRET_CHARS or any(c not in _VALUE for c in clean):
        raise LocalProtocolError(
            f"an invitation code's secret is {_SECRET_CHARS} letters and digits"
            f" (like K7M2Q9-XA4B8C-ZT3H0R), got {text!r}"
        )
    n = 0
    for c in clean[:16]:
        n = (n << 5) | _VALUE[c]
    secret = n.to_bytes(SECRET_BYTES, "big")
    if _check(secret) != "".join(_ALPHABET[_VALUE[c]] for c in clean[16:]):
        raise LocalProtocolError("this code is mistyped (its check letters do not match)")
    return secret


def format_code(addr: str, secret: bytes) -> str:
    return f"{CODE_PREFIX}{addr}#{format_secret(secret)}"


def is_code(text: str) -> bool:
    return text.strip().startswith(CODE_PREFIX)


def parse_code(text: str) -> tuple[str, bytes]:
    """(server multiaddr, secret bytes) of a code; LocalProtocolError if damaged."""
    text = text.strip()
    if not text.startswith(CODE_PREFIX):
        raise LocalProtocolError(f"not an invitation code (they start with {CODE_PREFIX!r})")
    addr, sep, secret = text[len(CODE_PREFIX) :].rpartition("#")
    if not sep or "/p2p/" not in addr or len(addr) > 1024:
        raise LocalProtocolError(
            "this code is damaged: it should read troc-code:<server address>#<secret>"
        )
    return addr, parse_secret(secret)


def hash_secret(secret: bytes) -> bytes:
    return hashlib.sha256(_HASH_DOMAIN + secret).digest()


def parse_expiry(value: Any) -> int:
    """Seconds from ``7d``, ``12h``, ``30m``, ``90s``, ``2w`` or a number of seconds."""
    text = str(value).strip().lower()
    match = re.fullmatch(r"(\d+)\s*([smhdw]?)", text)
    if not match:
        raise LocalProtocolError(f"expiry: expected e.g. 7d, 12h, 30m or 3600, got {value!r}")
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[match.group(2)]
    seconds = int(match.group(1)) * scale
    if not 0 < seconds <= MAX_EXPIRY_S:
        raise LocalProtocolError("expiry: from 1 second to 366 days")
    return seconds


def policy_of(genesis: Entry) -> dict[str, Any]:
    """A community's policy, as its genesis states it (JSON-able, text ids)."""
    g = genesis.body
    if genesis.kind is not Kind.GENESIS or not isinstance(g, Genesis):
        raise LocalProtocolError("not a genesis entry")
    return {
        "community": encode_id("c", genesis.id),
        "name": g.name,
        "unit": g.unit,
        "credit_limit": g.credit_limit,
        "admission": g.admission,
        "finality": g.finality,
        "founder": encode_id("m", genesis.author),
        "witnesses": [encode_id("m", w) for w in g.witnesses],
        "faults": g.faults,
        "quorum": g.quorum,
        "ceiling": g.ceiling,
    }


# -- the book -----------------------------------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class CodeInfo:
    id: str  # the first 10 hex digits of the secret's hash: safe to show and log
    community: bytes
    uses: int
    uses_left: int
    expires_ms: int
    created_ms: int
    label: str
    revoked: bool
    #: This redemption repeats one by the same member: no use was consumed.
    again: bool = False

    def state(self, now: int) -> str:
        if self.revoked:
            return "revoked"
        if self.uses_left <= 0:
            return "used_up"
        if now >= self.expires_ms:
            return "expired"
        return "active"

    def to_json(self, now: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "community": encode_id("c", self.community),
            "label": self.label,
            "uses": self.uses,
            "uses_left": self.uses_left,
            "redeemed": self.uses - self.uses_left,
            "expires_ms": self.expires_ms,
            "created_ms": self.created_ms,
            "state": self.state(now),
        }


_SCHEMA = """
CREATE TABLE IF NOT EXISTS codes (
    hash       BLOB PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    community  BLOB NOT NULL,
    uses       INTEGER NOT NULL,
    uses_left  INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    label      TEXT NOT NULL DEFAULT '',
    revoked    INTEGER NOT NULL DEFAULT 0,
    last_ms    INTEGER
) WITHOUT ROWID;
-- Who redeemed which code (the redeeming peer: its key is the member key),
-- so a member redeeming the same code again gets the same answer without
-- using another use. Created by IF NOT EXISTS in books made before it.
CREATE TABLE IF NOT EXISTS redemptions (
    code_id    TEXT NOT NULL,
    redeemer   TEXT NOT NULL,
    PRIMARY KEY (code_id, redeemer)
) WITHOUT ROWID;
"""
_COLUMNS = "id, community, uses, uses_left, expires_ms, created_ms, label, revoked"


def _info(row: tuple[Any, ...]) -> CodeInfo:
    return CodeInfo(row[0], bytes(row[1]), row[2], row[3], row[4], row[5], row[6], bool(row[7]))


class InviteBook:
    """The codes a server issued (``invites.sqlite``). Each call opens its own
    connection, so a book may be used from any thread or process at once."""

    def __init__(self, path: Path, clock: Callable[[], int] = now_ms) -> None:
        self.path = path
        self.clock = clock
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:
            raise StoreError(f"cannot create {path}: {exc.strerror}") from None
        else:
            os.close(fd)
        with self._db() as db:
            db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _db(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from None
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a consumed use must stay consumed
            if write:
                db.execute("BEGIN IMMEDIATE")  # the write lock first: no lost updates
            yield db
            if write:
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StoreError(f"{self.path}: {exc}") from None
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def create(
        self, community: bytes, *, uses: int = 1, expires_s: int = 7 * 86400, label: str = ""
    ) -> tuple[bytes, CodeInfo]:
        """A new code: (its secret, shown once and never stored; its record)."""
        if type(uses) is not int or not 1 <= uses <= MAX_USES:
            raise LocalProtocolError(f"uses: from 1 to {MAX_USES}, got {uses!r}")
        if not 0 < expires_s <= MAX_EXPIRY_S:
            raise LocalProtocolError("expiry: from 1 second to 366 days")
        if len(label) > MAX_LABEL:
            raise LocalProtocolError(f"label: at most {MAX_LABEL} characters")
        secret = secrets.token_bytes(SECRET_BYTES)
        digest = hash_secret(secret)
        now = self.clock()
        info = CodeInfo(
            digest[:5].hex(),
            bytes(community),
            uses,
            uses,
            now + expires_s * 1000,
            now,
            label,
            False,
        )
        with self._db(write=True) as db:
            db.execute(
                f"INSERT INTO codes (hash, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (digest, info.id, info.community, uses, uses, info.expires_ms, now, label),
            )
        return secret, info

    def codes(self) -> list[CodeInfo]:
        with self._db() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM codes ORDER BY created_ms").fetchall()
        return [_info(r) for r in rows]

    def find(self, text: str) -> CodeInfo:
        """A code by its full text, its secret, or its id (or a unique prefix of 4+)."""
        text = text.strip()
        with self._db() as db:
            if is_code(text) or len(re.sub(r"[\s\-]", "", text)) == _SECRET_CHARS:
                secret = parse_code(text)[1] if is_code(text) else parse_secret(text)
                rows = db.execute(
                    f"SELECT {_COLUMNS} FROM codes WHERE hash = ?", (hash_secret(secret),)
                ).fetchall()
            elif re.fullmatch(r"[0-9a-f]{4,10}", text.lower()):
                rows = db.execute(
                    f"SELECT {_COLUMNS} FROM codes WHERE substr(id, 1, ?) = ?",
                    (len(text), text.lower()),
                ).fetchall()
            else:
                raise LocalProtocolError(f"expected a code, its secret or its id, got {text!r}")
        if not rows:
            raise NotFoundError(f"no code {text!r} here")
        if len(rows) > 1:
            raise LocalProtocolError(f"{text!r} names several codes: give more of the id")
        return _info(rows[0])

    def revoke(self, text: str) -> CodeInfo:
        info = self.find(text)
        with self._db(write=True) as db:
            db.execute("UPDATE codes SET revoked = 1 WHERE id = ?", (info.id,))
        return self.find(info.id)

    def redeem(
        self,
        secret: bytes,
        check: Callable[[CodeInfo], None] | None = None,
        *,
        redeemer: str | None = None,
    ) -> CodeInfo:
        """Consume one use of the code of ``secret``, atomically.

        ``check`` may refuse (raise CodeRefused) before the use is consumed.
        ``redeemer`` (the redeeming peer id) is recorded; the same redeemer
        redeeming the same code again, before it expires or is revoked, gets
        it without consuming another use (``again`` is then true), even once
        the code is used up.
        Raises CodeRefused: ``unknown``, ``revoked``, ``expired``, ``used_up``.
        """
        with self._db(write=True) as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM codes WHERE hash = ?", (hash_secret(secret),)
            ).fetchone()
            if row is None:
                raise CodeRefused("unknown")
            info = _info(row)
            now = self.clock()
            state = info.state(now)
            again = redeemer is not None and (
                db.execute(
                    "SELECT 1 FROM redemptions WHERE code_id = ? AND redeemer = ?",
                    (info.id, redeemer),
                ).fetchone()
                is not None
            )
            if state != "active" and not (again and state == "used_up"):
                raise CodeRefused(state)
            if check is not None:
                check(info)
            if again:
                return dataclasses.replace(info, again=True)
            db.execute(
                "UPDATE codes SET uses_left = uses_left - 1, last_ms = ? WHERE id = ?",
                (now, info.id),
            )
            if redeemer is not None:
                db.execute(
                    "INSERT INTO redemptions (code_id, redeemer) VALUES (?, ?)",
                    (info.id, redeemer),
                )
        return dataclasses.replace(info, uses_left=info.uses_left - 1)

    def refund(self, code_id: str, redeemer: str | None = None) -> None:
        """Give back a use whose answer could not be delivered."""
        with self._db(write=True) as db:
            db.execute(
                "UPDATE codes SET uses_left = MIN(uses, uses_left + 1) WHERE id = ?", (code_id,)
            )
            db.execute(
                "DELETE FROM redemptions WHERE code_id = ? AND redeemer = ?", (code_id, redeemer)
            )


def serves(home: Path) -> bool:
    """Whether the node of ``home`` answers /troc/invite/1 from its start."""
    return (home / INVITES_FILE).exists()


def book_of(home: Path) -> InviteBook:
    return InviteBook(home / INVITES_FILE)


# -- brute-force guard --------------------------------------------------------


class Throttle:
    """At most ``per_key`` attempts per key (a peer id, an IP address) in any
    ``window`` seconds; the keys tracked are bounded too."""

    def __init__(
        self,
        per_peer: int = 5,
        per_ip: int = 30,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.per_peer = per_peer
        self.per_ip = per_ip
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}
        self.refused = 0

    def _wait(self, key: str, limit: int, now: float) -> float:
        hits = self._hits.get(key)
        if hits is None:
            return 0.0
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if not hits:
            del self._hits[key]
            return 0.0
        return hits[0] + self.window - now if len(hits) >= limit else 0.0

    def attempt(self, peer: str, ip: str | None) -> float:
        """Count an attempt; 0 if allowed, else the seconds to wait (not counted)."""
        now = self.clock()
        keys = [("p:" + peer, self.per_peer)] + ([("i:" + ip, self.per_ip)] if ip else [])
        wait = max(self._wait(k, limit, now) for k, limit in keys)
        if wait == 0.0 and len(self._hits) >= self.max_keys:
            for k in list(self._hits):  # forget the stale ones
                self._wait(k, 1, now)
            if len(self._hits) >= self.max_keys:
                wait = self.window
        if wait > 0:
            self.refused += 1
            return wait
        for k, _limit in keys:
            self._hits.setdefault(k, deque()).append(now)
        return 0.0


# -- the server ---------------------------------------------------------------


class InviteService:
    """Answers ``/troc/invite/1`` for the codes of ``book``."""

    def __init__(
        self,
        local: LocalNode,
        book: InviteBook,
        addrs: Callable[[], list[str]],
        throttle: Throttle | None = None,
    ) -> None:
        import trio

        self.local = local
        self.book = book
        self.addrs = addrs
        self.throttle = throttle or Throttle()
        self.redeemed = 0
        self._handlers = trio.Semaphore(MAX_HANDLERS)

    def answer(
        self, request: Any, peer: str | None = None
    ) -> tuple[dict[str, Any], CodeInfo | None]:
        """The answer to one request from ``peer``, and the code whose use it
        consumed (None if none was: an error, or ``peer`` redeeming again)."""
        if (
            not isinstance(request, dict)
            or request.get("t") != "redeem"
            or not isinstance(request.get("s"), bytes)
            or len(request["s"]) != SECRET_BYTES
        ):
            return {"t": "error", "e": "bad_request"}, None
        found: dict[str, Entry] = {}

        def check(info: CodeInfo) -> None:
            genesis = self.local.store.genesis(CommunityId(info.community))
            if genesis is None:
                raise CodeRefused("unavailable")
            if policy_of(genesis)["admission"] == "vouch":
                raise CodeRefused("needs_vouch")
            found["g"] = genesis

        try:
            info = self.book.redeem(request["s"], check, redeemer=peer)
        except CodeRefused as exc:
            return {"t": "error", "e": exc.reason}, None
        genesis = found["g"]
        reply = {
            "t": "ok",
            "g": genesis.wire,
            "a": self.addrs()[:MAX_ADDRS],
            "p": policy_of(genesis),
        }
        return reply, None if info.again else info

    async def handle_stream(self, stream: Any, peer: str) -> None:
        import trio

        from troc.net.p2p import FrameError, FrameReader, write_frame

        try:
            self._handlers.acquire_nowait()
        except trio.WouldBlock:
            return  # busy: the stream is closed, the joiner retries
        try:
            reader = FrameReader(stream, max_size=MAX_REQUEST, frame_timeout=IO_TIMEOUT)
            try:
                data = await reader.read_frame()
            except FrameError:
                return
            wait = self.throttle.attempt(peer, _remote_ip(stream))
            used: CodeInfo | None = None
            if wait:
                reply: dict[str, Any] = {"t": "error", "e": "throttled", "w": int(wait) + 1}
            else:
                try:
                    request = unpack(data, LIMITS)
                except CodecError:
                    request = None
                reply, used = self.answer(request, peer)
            if reply["t"] == "error":
                logger.info("invitation code refused to %s: %s", peer, reply["e"])
            try:
                await write_frame(stream, pack(reply, LIMITS), frame_timeout=IO_TIMEOUT)
            except FrameError:
                if used is not None:
                    self.book.refund(used.id, peer)
                return
            if used is not None:
                self.redeemed += 1
                logger.info("invitation code %s redeemed by %s", used.id, peer)
        finally:
            self._handlers.release()


def _remote_ip(stream: Any) -> str | None:
    try:
        addr = stream.get_remote_address()
    except Exception:  # relayed streams and other transports may not say
        return None
    return str(addr[0]) if addr else None


def attach(node: Any, throttle: Throttle | None = None) -> InviteService:
    """Serve /troc/invite/1 on a running :class:`~troc.node.node.Node` (once)."""
    service = getattr(node, "invite_service", None)
    if service is None:
        book = book_of(node.config.home)
        service = InviteService(node.local, book, node.addrs, throttle)
        node.invite_service = service
        node.host.set_stream_handler(PROTOCOL_ID, service.handle_stream)
    assert isinstance(service, InviteService)
    return service


# -- operations (the control socket and the CLI) -------------------------------


def _server_addr(addrs: list[str], wanted: str | None) -> str:
    if wanted:
        if "/p2p/" not in wanted:
            raise LocalProtocolError(f"--addr must end in /p2p/<peer id>, got {wanted!r}")
        return wanted
    usable = [a for a in addrs if "/p2p/" in a and "/p2p-circuit" not in a]
    public = [a for a in usable if "/ip4/127." not in a and "/ip6/::1/" not in a]
    if not (public or usable):
        raise LocalProtocolError(
            "this server's address is not known yet: start it (troc relay) or give --addr"
        )
    return (public or usable)[0]


def op_create(local: LocalNode, p: dict[str, Any]) -> Done:
    """``invite.create``: community, uses, expires, label, addrs, addr."""
    community = community_of(local, p.get("community"))
    genesis = local.store.genesis(community)
    assert genesis is not None
    policy = policy_of(genesis)
    if policy["admission"] == "vouch":
        raise CodeRefused(
            "needs_vouch",
            "this community admits members by vouch, and a server cannot vouch, so a code"
            " cannot let anyone in: a member invites a newcomer with"
            " `troc community invite --for THEIR-ID`",
        )
    addr = _server_addr(list(p.get("addrs") or []), p.get("addr"))
    uses = p.get("uses", 1)
    uses = int(uses) if isinstance(uses, str) and uses.isdigit() else uses
    if type(uses) is not int or not 1 <= uses <= MAX_USES:
        raise LocalProtocolError(f"uses: from 1 to {MAX_USES}, got {uses!r}")
    book = book_of(local.store.path.parent)
    secret, info = book.create(
        community,
        uses=uses,
        expires_s=parse_expiry(p.get("expires") or "7d"),
        label=str(p.get("label") or ""),
    )
    return Done(
        {
            "code": format_code(addr, secret),
            "secret": format_secret(secret),
            "server": addr,
            "policy": policy,
            **info.to_json(book.clock()),
        }
    )


def op_list(local: LocalNode, p: dict[str, Any]) -> Done:
    """``invite.list``: every code (``all``) or only the active ones."""
    home = local.store.path.parent
    if not serves(home):
        return Done({"codes": []})
    book = book_of(home)
    now = book.clock()
    codes = [c.to_json(now) for c in book.codes()]
    if not p.get("all"):
        codes = [c for c in codes if c["state"] == "active"]
    names = {encode_id("c", i.id): i.name for i in local.communities()}
    for c in codes:
        c["community_name"] = names.get(c["community"])
    return Done({"codes": codes})


def op_revoke(local: LocalNode, p: dict[str, Any]) -> Done:
    """``invite.revoke``: a code by its text, secret or id."""
    home = local.store.path.parent
    if not serves(home):
        raise NotFoundError("this node has issued no invitation codes")
    book = book_of(home)
    return Done(book.revoke(str(p["code"])).to_json(book.clock()))


# -- the joiner ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Redeemed:
    genesis: bytes
    addrs: list[str]  # the server's address from the code first
    policy: dict[str, Any]

    def invitation(self) -> str:
        """The same thing as a ``troc-invite:`` text, for the usual join path."""
        return encode_invitation(self.genesis, self.addrs)


async def redeem(host: P2PHost, code: str, *, io_timeout: float = IO_TIMEOUT) -> Redeemed:
    """Redeem ``code`` at its server through ``host``.

    Raises LocalProtocolError (a damaged or mistyped code), CodeRefused
    (``unknown``, ``expired``, ``used_up``, ``revoked``, ``needs_vouch``,
    ``unavailable``, ``throttled``, ``no_invites``), NetworkError (the server
    is unreachable or did not answer), RemoteProtocolError (a bad answer).
    """
    import trio

    from troc.net.p2p import DialError, FrameError, FrameReader, close_stream, write_frame

    addr, secret = parse_code(code)
    try:
        with trio.fail_after(io_timeout):
            peer = await host.connect(addr)
    except (DialError, trio.TooSlowError):
        raise NetworkError(
            f"cannot reach the server of this code at {addr}: it may be down;"
            " try again later, or ask for a new code"
        ) from None
    try:
        stream = await host.open_stream(peer, PROTOCOL_ID)
    except DialError:
        raise CodeRefused(
            "no_invites", f"the server at {addr} does not issue invitation codes (any more)"
        ) from None
    request = pack({"t": "redeem", "s": secret}, LIMITS)
    try:
        await write_frame(stream, request, frame_timeout=io_timeout)
        data = await FrameReader(stream, max_size=MAX_ANSWER, frame_timeout=io_timeout).read_frame()
    except FrameError as exc:
        await close_stream(stream, reset=True)
        if exc.reason == "eof":
            raise NetworkError(f"the server at {addr} closed without answering (busy?)") from None
        raise NetworkError(f"the server at {addr} did not answer: {exc}") from None
    await close_stream(stream, reset=False)
    return _answer(addr, unpack(data, LIMITS))


def _answer(addr: str, msg: Any) -> Redeemed:
    if not isinstance(msg, dict):
        raise RemoteProtocolError("the server's answer is not a map")
    if msg.get("t") == "error":
        reason = msg.get("e")
        if not isinstance(reason, str) or reason not in ERRORS:
            raise RemoteProtocolError(f"the server refused the code: {reason!r}")
        message = ERRORS[reason]
        if reason == "throttled":
            wait = msg.get("w")
            message += f": wait {wait if isinstance(wait, int) else 60} s and try again"
        raise CodeRefused(reason, message)
    genesis, addrs = msg.get("g"), msg.get("a")
    if msg.get("t") != "ok" or not isinstance(genesis, bytes) or not isinstance(addrs, list):
        raise RemoteProtocolError("the server's answer is malformed")
    try:
        entry = Entry.decode(genesis)
        policy = policy_of(entry)
    except Exception:
        raise RemoteProtocolError("the server's answer holds no valid community") from None
    if msg.get("p") != policy:
        raise RemoteProtocolError("the server's policy contradicts the community's genesis")
    others = [a for a in addrs[:MAX_ADDRS] if isinstance(a, str) and "/p2p/" in a and a != addr]
    return Redeemed(genesis, [addr, *others], policy)


def redeem_offline(
    code: str, *, timeout: float = IO_TIMEOUT, key_seed: bytes | None = None
) -> Redeemed:
    """Redeem ``code`` from a program with no node running: a host is opened
    for the length of the call, with the peer id of ``key_seed`` (the member
    key's, so the server knows a second redemption by the same member) or a
    throwaway one."""
    import trio

    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        pass
    else:
        raise LocalProtocolError("inside trio, redeem a code with Node.run_op or invites.redeem")

    async def main() -> Redeemed:
        from troc.net.p2p import open_host

        async with open_host(gossip=None, connect_timeout=timeout, key_seed=key_seed) as host:
            try:
                return await redeem(host, code, io_timeout=timeout)
            except TrocError as exc:
                error = exc  # raised outside the host's nurseries: not as a group
        raise error

    import troc.net.p2p  # noqa: F401 - libp2p sets its loggers' levels when imported

    quiet = logging.getLogger("libp2p")  # its dial retries would speak on stderr
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return trio.run(main)
    finally:
        quiet.setLevel(level)
