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

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from troc.errors import (
    CodecError,
    LocalProtocolError,
    NetworkError,
    RemoteProtocolError,
    TrocError,
)
from troc.node.codes import (
    _ALPHABET,  # noqa: F401 - re-exported (tests read it here)
    CODE_PREFIX,
    ERRORS,
    MAX_USES,
    SECRET_BYTES,
    CodeRefused,
    format_code,
    format_secret,
    hash_secret,
    is_code,
    parse_code,
    parse_expiry,
    parse_secret,
    policy_of,
)
from troc.node.invitation import encode_invitation
from troc.node.invitebook import INVITES_FILE, CodeInfo, InviteBook, book_of, serves
from troc.node.local import LocalNode
from troc.node.opdata import Done, NotFoundError, cid, community_of
from troc.protocol.codec import Limits, pack, unpack
from troc.protocol.entry import CommunityId, Entry

if TYPE_CHECKING:
    from troc.net.p2p import P2PHost

__all__ = [
    "CODE_PREFIX",
    "ERRORS",
    "INVITES_FILE",
    "PROTOCOL_ID",
    "CodeInfo",
    "CodeRefused",
    "InviteBook",
    "InviteService",
    "Redeemed",
    "Throttle",
    "attach",
    "book_of",
    "format_code",
    "format_secret",
    "hash_secret",
    "is_code",
    "parse_code",
    "parse_expiry",
    "parse_secret",
    "policy_of",
    "redeem",
    "redeem_offline",
    "serves",
]

logger = logging.getLogger("troc.invites")

PROTOCOL_ID = "/troc/invite/1"
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
        # trio and troc.net.p2p (libp2p) are imported inside the functions of
        # this module: operations.py imports it on the offline CLI's path.
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
        import trio  # as in __init__: off the offline CLI's path

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
    names = {cid(i.id): i.name for i in local.communities()}
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
    import trio  # as in InviteService: off the offline CLI's path

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
    throwaway one. It is the offline runner's (troc.node.operations) host:
    trio and libp2p are imported only when a code is redeemed."""
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
