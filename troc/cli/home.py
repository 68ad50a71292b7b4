"""The node's data folder, as the CLI sees it.

Layout of ``--home`` (default: the per-user data folder)::

    key             the member key (troc.crypto.keystore; encrypted unless --no-passphrase)
    profile.json    {"member": id, "name": …}: who this node is, readable without the key
    contacts.json   local names for member ids
    peers.json      addresses of nodes met before (bootstrap on the next run)
    store.sqlite    the ledger (SQLite, WAL): the single source of truth
    control.sock    the running node's control socket (owner-only; a long home
                    reaches it through /proc/self/fd: homefiles.socket_address)

To back up safely, copy the key and profile once; never restore an old
``store.sqlite`` and carry on appending: a node restored from an old copy
would sign again at seq numbers it already used, forking its own log. A
restored node first learns its own head from peers (docs/operations.md).
"""

from __future__ import annotations

import getpass
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from troc.cli.failures import failure_of, not_running
from troc.errors import KeystoreError, LocalProtocolError
from troc.node import control
from troc.node.homefiles import (
    read_json,
    remember_bootstrap,
    self_addrs,
    set_self_addrs,
    write_json,
)

KEY_FILE = "key"
PROFILE_FILE = "profile.json"
CONTACTS_FILE = "contacts.json"
STORE_FILE = "store.sqlite"


def default_home() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("troc", appauthor=False))


def has_identity(home: Path) -> bool:
    """Whether ``home`` was made a member (``troc init``), even if its key or
    profile has since gone missing (then :func:`check_identity` says so)."""
    return (home / KEY_FILE).exists() or (home / PROFILE_FILE).exists()


def check_identity(home: Path) -> None:
    """Raise KeystoreError unless ``home`` holds both its key and profile:
    ``troc init`` first for a new home, or, for a home with one of the two,
    restore the missing one from backup (a new key would be another member)."""
    key, prof = (home / KEY_FILE).exists(), (home / PROFILE_FILE).exists()
    if key and prof:
        return
    if not key and not prof:
        raise KeystoreError(f"no member key in {home} yet: run `troc init` first")
    missing = KEY_FILE if not key else PROFILE_FILE
    raise KeystoreError(
        f"{home / missing} is missing, but this home belongs to a member: restore"
        f" {KEY_FILE} and {PROFILE_FILE} from your backup (a new key would be someone else)"
    )


def profile(home: Path) -> dict[str, Any]:
    data = read_json(home / PROFILE_FILE, None)
    if data is None:
        check_identity(home)
        raise KeystoreError(f"{home / PROFILE_FILE} is damaged: restore it from your backup")
    return dict(data)


def member_id(home: Path) -> str:
    return str(profile(home)["member"])


def member_name(home: Path) -> str | None:
    name = profile(home).get("name")
    return None if name is None else str(name)


def get_passphrase(passphrase_file: Path | None, *, confirm: bool = False) -> str:
    """The passphrase: TROC_PASSPHRASE, else --passphrase-file, else a prompt."""
    env = os.environ.get("TROC_PASSPHRASE")
    if env is not None:
        return env
    if passphrase_file is not None:
        try:
            return passphrase_file.read_text().rstrip("\n")
        except OSError as exc:
            raise KeystoreError(f"cannot read the passphrase file: {exc.strerror}") from None
    # sys.stdin is None when the command runs with stdin closed (`<&-`, some daemons).
    if sys.stdin is None or not sys.stdin.isatty():
        raise KeystoreError(
            "the key needs a passphrase: set TROC_PASSPHRASE or --passphrase-file "
            "(no terminal to ask on)"
        )
    first = getpass.getpass("Passphrase for the member key: ")
    if confirm and getpass.getpass("Again: ") != first:
        raise KeystoreError("the two passphrases differ; nothing was created")
    return first


def init_key(home: Path, *, name: str | None, encrypt: bool, passphrase_file: Path | None) -> str:
    """Create the member key and profile. Refuses to replace an existing key."""
    from troc.crypto.ids import encode_id
    from troc.crypto.keystore import save_key
    from troc.crypto.sign import SigningKey

    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if has_identity(home):
        check_identity(home)  # one of the two is gone: say to restore it
        raise LocalProtocolError(
            f"{home} already has a member key; use another --home to make another"
        )
    passphrase = get_passphrase(passphrase_file, confirm=True) if encrypt else None
    if encrypt and not passphrase:
        raise KeystoreError("an empty passphrase protects nothing: use --no-passphrase instead")
    key = SigningKey.generate()
    save_key(home / KEY_FILE, key.seed, passphrase)
    member = encode_id("m", key.public)
    write_json(home / PROFILE_FILE, {"member": member, "name": name})
    return member


def load_signing_key(home: Path, passphrase_file: Path | None) -> Any:
    from troc.crypto.keystore import is_encrypted, load_key
    from troc.crypto.sign import SigningKey

    path = home / KEY_FILE
    check_identity(home)
    passphrase = get_passphrase(passphrase_file) if is_encrypted(path) else None
    return SigningKey(load_key(path, passphrase))


# -- contacts and peers -------------------------------------------------------


def contacts(home: Path) -> dict[str, str]:
    return dict(read_json(home / CONTACTS_FILE, {}))


def add_contact(home: Path, name: str, member: str) -> dict[str, str]:
    from troc.crypto.ids import decode_id, encode_id

    raw = decode_id("m", member)
    if not name or (name.startswith("m") and len(name) > 50):
        raise LocalProtocolError("a contact name must not look like a member id")
    book = contacts(home)
    book[name] = encode_id("m", raw)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_json(home / CONTACTS_FILE, book)
    return {"contact": name, "member": book[name]}


def resolve_member(home: Path, text: str) -> str:
    """A member id from an id or a contact name (or ``me``)."""
    from troc.crypto.ids import decode_id, encode_id

    book = contacts(home)
    if text in book:
        return book[text]
    if text == "me":
        return member_id(home)
    if text.startswith("m") and len(text) > 50:
        return encode_id("m", decode_id("m", text))
    from troc.node.opdata import NotFoundError

    raise NotFoundError(f"{text!r} is neither a member id nor a contact (troc contact add)")


def known_addrs(home: Path) -> list[str]:
    return self_addrs(home)


def remember_addrs(home: Path, addrs: list[str]) -> None:
    remember_bootstrap(home, addrs)


# -- reaching the node --------------------------------------------------------


def writable(home: Path) -> bool:
    """Whether this user can write the home and its store (a read-only file
    system or folder makes reads open the store read-only)."""
    store = home / STORE_FILE
    return os.access(home, os.W_OK) and (not store.exists() or os.access(store, os.W_OK))


@contextmanager
def offline_node(
    home: Path, passphrase_file: Path | None, *, signing: bool, read_only: bool = False
) -> Any:
    from troc.crypto.ids import decode_id
    from troc.crypto.sign import MemberId
    from troc.node.local import open_local_node

    member = MemberId(decode_id("m", member_id(home)))
    key = load_signing_key(home, passphrase_file) if signing else None
    with open_local_node(home, key, member=member, read_only=read_only) as node:
        yield node


def call(
    home: Path, op: str, params: dict[str, Any], passphrase_file: Path | None
) -> dict[str, Any]:
    """Run ``op`` on the node: through its control socket if it is running,
    else on the store directly."""
    reply = call_if_running(home, op, params)
    if reply is not None:
        return reply
    return call_offline(home, op, params, passphrase_file)


def call_if_running(home: Path, op: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """Run ``op`` on the running node (through its control socket); None if
    no node is running. Its error, described by the node, becomes a Failure."""
    try:
        return control.request(home, op, params)
    except control.OperationFailed as exc:
        raise failure_of(exc.error) from None


def call_offline(
    home: Path, op: str, params: dict[str, Any], passphrase_file: Path | None
) -> dict[str, Any]:
    """Run ``op`` on the store directly (no node running)."""
    from troc.node.operations import operation, run_offline

    found = operation(op)
    read_only = found.read_only and not writable(home)
    signing = found.needs_key(params)
    with offline_node(home, passphrase_file, signing=signing, read_only=read_only) as node:
        return run_offline(node, op, params)


def call_running(home: Path, op: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run ``op`` on the running node; fail with 'not running' if there is none."""
    reply = call_if_running(home, op, params)
    if reply is None:
        raise not_running(home)
    return reply


def remember_self(home: Path, addrs: list[str]) -> None:
    """Record where the running node listens, for `troc community invite`."""
    set_self_addrs(home, addrs)
