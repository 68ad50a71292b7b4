"""Small JSON files in a node's home folder, and the peers file among them.

``peers.json`` is written by the running node (peers it reached) and by the
CLI (addresses from an invitation, where the node listens) and read by both:
one module owns its format::

    {"bootstrap": [multiaddr, …],   peers to dial on the next start, newest last
     "self": [multiaddr, …]}        where the running node listens (for invitations)
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from troc.errors import LocalProtocolError

PEERS_FILE = "peers.json"
#: Remembered bootstrap addresses kept, the most recent ones.
MAX_REMEMBERED = 64


#: Longest AF_UNIX socket path Linux takes (sun_path is 108 bytes with its NUL).
_MAX_SOCKET_PATH = 107


@contextlib.contextmanager
def socket_address(path: Path) -> Iterator[str]:
    """An address for binding or connecting the Unix socket at ``path``
    that fits AF_UNIX's ~108 bytes whatever the home's length: a long path is
    reached through the directory's descriptor (``/proc/self/fd/N/name``),
    so the socket stays in the home. Use it only for the bind or connect."""
    if len(os.fsencode(str(path))) <= _MAX_SOCKET_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def read_json(path: Path, default: Any) -> Any:
    """The file's JSON value, ``default`` if there is no file.

    Raises LocalProtocolError (one line, saying what to do) if it is damaged.
    """
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as exc:
        raise LocalProtocolError(f"{path} is damaged ({exc}): fix or remove it") from None


def write_json(path: Path, data: Any) -> None:
    """Write atomically, owner-only: a crash leaves the old file or the new one, never half."""
    tmp = _write_tmp(path, data, os.fsync)
    os.replace(tmp, path)


def _write_tmp(path: Path, data: Any, sync: Callable[[int], object]) -> Path:
    """Write ``data`` to ``path``'s temporary file (owner-only) and call
    ``sync`` with its descriptor before closing it."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        sync(f.fileno())
    return tmp


#: Where staged writes are fsynced (one thread: they are few and short).
_syncer: ThreadPoolExecutor | None = None


class StagedJson:
    """A JSON file write in two steps, so that its fsync runs while the
    caller waits for another one (the store's commit): making one
    writes the new content to the temporary file and fsyncs it on a
    worker thread; :meth:`commit` waits for that fsync and only then puts
    the file in place (``os.replace``), so a crash at any point leaves the
    old file or the new one, as :func:`write_json` does. :meth:`abandon`
    leaves the old file in place."""

    def __init__(self, path: Path, data: Any) -> None:
        global _syncer
        if _syncer is None:
            _syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="troc-fsync")
        self.path = path
        self.tmp = _write_tmp(path, data, lambda fd: None)
        self._synced = _syncer.submit(_fsync_path, self.tmp)

    def commit(self) -> None:
        """Wait for the fsync, then put the file in place. Raises OSError
        (the old file stays) if the fsync failed."""
        self._synced.result()
        os.replace(self.tmp, self.path)

    def abandon(self) -> None:
        """Keep the old file (the new content was not to be kept)."""
        with contextlib.suppress(OSError):
            self._synced.result()
            self.tmp.unlink()


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def bootstrap_addrs(home: Path) -> list[str]:
    return [str(a) for a in read_json(home / PEERS_FILE, {}).get("bootstrap", [])]


def self_addrs(home: Path) -> list[str]:
    return [str(a) for a in read_json(home / PEERS_FILE, {}).get("self", [])]


def remember_bootstrap(home: Path, addrs: list[str]) -> None:
    """Add ``addrs`` to the bootstrap list (a known one moves to the end)."""
    if not addrs:
        return
    data = read_json(home / PEERS_FILE, {})
    known = [a for a in data.get("bootstrap", []) if a not in addrs] + list(addrs)
    data["bootstrap"] = known[-MAX_REMEMBERED:]
    write_json(home / PEERS_FILE, data)


def set_self_addrs(home: Path, addrs: list[str]) -> None:
    data = read_json(home / PEERS_FILE, {})
    data["self"] = addrs
    write_json(home / PEERS_FILE, data)


# -- what this home's key has signed -------------------------------------------

#: Per community, the last own entry this home's key signed and the
#: community's genesis (``{"<community hex>": {"seq": n, "entry": "<id hex>",
#: "genesis": "<wire hex>"}}``), written after each own entry is durable and
#: before it leaves the node. A store behind it (emptied, deleted, an old
#: backup) must not sign until it has caught up: it would sign that seq again.
#: The genesis lets a store that lost the community follow it again, so that
#: sync can bring the log back.
SIGNED_FILE = "signed.json"


@dataclass(frozen=True, slots=True)
class SignedMark:
    seq: int
    entry: bytes
    genesis: bytes


def signed_marks(home: Path) -> dict[bytes, SignedMark] | None:
    """The marks by community id, ``None`` if there is no file.

    Raises LocalProtocolError (one line, saying what to do) if it is damaged.
    """
    path = home / SIGNED_FILE
    data = read_json(path, None)
    if data is None:
        return None
    try:
        return {
            bytes.fromhex(c): SignedMark(
                int(m["seq"]), bytes.fromhex(m["entry"]), bytes.fromhex(m["genesis"])
            )
            for c, m in data.items()
        }
    except (AttributeError, KeyError, TypeError, ValueError):
        raise LocalProtocolError(f"{path} is damaged: restore or remove it") from None


def write_signed_marks(home: Path, marks: dict[bytes, SignedMark]) -> None:
    write_json(home / SIGNED_FILE, _signed_data(marks))


def stage_signed_marks(home: Path, marks: dict[bytes, SignedMark]) -> StagedJson:
    """:func:`write_signed_marks` in two steps (see :class:`StagedJson`)."""
    return StagedJson(home / SIGNED_FILE, _signed_data(marks))


def _signed_data(marks: dict[bytes, SignedMark]) -> dict[str, Any]:
    return {
        c.hex(): {"seq": m.seq, "entry": m.entry.hex(), "genesis": m.genesis.hex()}
        for c, m in marks.items()
    }
