"""The book of the codes a server issued (``invites.sqlite`` in its home).

:class:`InviteBook` is its own SQLite file, mode 0600, apart from the store.
It keeps only SHA-256 of each secret (:func:`troc.node.codes.hash_secret`),
with the community, uses left, expiry, creation time, label and a revoked
flag, and who redeemed which code. A redemption checks and consumes one use
in one ``BEGIN IMMEDIATE`` transaction, so two redemptions of a single-use
code cannot both win, in one process or several. Each call opens its own
connection, so a book may be used from any thread or process at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from troc.crypto.ids import encode_id
from troc.errors import LocalProtocolError, StoreError
from troc.node.codes import (
    MAX_EXPIRY_S,
    MAX_LABEL,
    MAX_USES,
    SECRET_BYTES,
    SECRET_CHARS,
    CodeRefused,
    hash_secret,
    is_code,
    parse_code,
    parse_secret,
)
from troc.node.opdata import NotFoundError

__all__ = ["INVITES_FILE", "CodeInfo", "InviteBook", "book_of", "serves"]

INVITES_FILE = "invites.sqlite"


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
            if is_code(text) or len(re.sub(r"[\s\-]", "", text)) == SECRET_CHARS:
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
