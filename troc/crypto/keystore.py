"""Keep a node's 32-byte Ed25519 seed in a file, encrypted under a passphrase or not.

Theory of operation
-------------------

A key file is one short, human-readable text file::

    troc-key v1
    {"kdf":"scrypt","n":32768,"r":8,"p":1,"salt":"<32 hex>","aead":"chacha20poly1305",
     "nonce":"<24 hex>","ciphertext":"<96 hex>"}

(the JSON sits on one line; it is wrapped here for width). The first line names the
format and its version, so a later troc can add ``v2`` beside it and an older troc
can say "unknown version" instead of "garbage". The passphrase goes through scrypt
(NFC-normalised UTF-8, 16-byte random salt, ``r=8``, ``p=1``) to a 32-byte key that
seals the seed with ChaCha20-Poly1305 under a random 12-byte nonce. The associated
data is the magic line plus the JSON header *without* the ciphertext, so changing any
parameter (a smaller ``n`` to speed up guessing, another salt) makes decryption fail
rather than silently deriving another key.

Unattended servers may choose the explicit unencrypted mode (``passphrase=None``)::

    troc-key v1
    {"kdf":"none","seed":"<64 hex>","checksum":"<64 hex>"}

where ``checksum`` is SHA-256 over a domain-separation prefix and the seed. It only
catches accidents (truncation, a flipped bit); the file's permissions are what
protect the seed, which is why loading refuses an unencrypted file that group or
others can read.

Reading is strict: the file must be exactly the bytes :func:`save_key` would write
for the values it holds (key order, no spaces, lowercase hex, one trailing newline).
That makes every alteration, even one JSON or ``bytes.fromhex`` would tolerate
(``A`` for ``a``, an added space), a detected alteration rather than a silent one,
and it means the associated data computed from the parsed values is the file's own
bytes. The file is read with a size cap and ``n`` is bounded before scrypt runs, so
a hostile file costs at most one scrypt at ``n = 2**20`` (about 1 GiB and a few
seconds) to reject.

Every failure to read a key file, whatever its cause, is a :class:`KeystoreError`
with one sentence naming the file; a bad argument from the caller (a seed that is
not 32 bytes, an ``n`` out of range) is a :class:`LocalProtocolError`.

Both functions block (scrypt, ``fsync``): call them from trio through
``trio.to_thread.run_sync``. Written for POSIX: permissions and directory ``fsync``
use POSIX semantics.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import secrets
import stat
import unicodedata
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from troc.errors import KeystoreError, LocalProtocolError

__all__ = [
    "DEFAULT_SCRYPT_N",
    "MAX_SCRYPT_N",
    "MIN_SCRYPT_N",
    "SEED_SIZE",
    "is_encrypted",
    "load_key",
    "save_key",
]

SEED_SIZE: Final = 32
#: 2**15 with r=8 is 32 MiB and ~0.1 s per attempt: slow for a guesser, quick at startup.
DEFAULT_SCRYPT_N: Final = 2**15
#: Below this, scrypt no longer slows a guesser enough to be worth the name.
MIN_SCRYPT_N: Final = 2**10
#: Above this a file could make loading take ~1 GiB and seconds per try; refuse it.
MAX_SCRYPT_N: Final = 2**20

_MAGIC: Final = b"troc-key v1\n"
_MAGIC_PREFIX: Final = b"troc-key v"
# A v1 file is about 300 bytes; the cap keeps a mistaken path (a log, a disk image)
# from being read into memory whole.
_MAX_FILE_SIZE: Final = 4096
# r and p are fixed by the format: memory is then bounded by n alone, and there is
# no second knob for a hostile file to turn.
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1
_SALT_SIZE: Final = 16
_NONCE_SIZE: Final = 12
_TAG_SIZE: Final = 16
_CHECKSUM_PREFIX: Final = b"troc-key v1 checksum\n"

_ENCRYPTED_KEYS: Final = ("kdf", "n", "r", "p", "salt", "aead", "nonce", "ciphertext")
_CLEAR_KEYS: Final = ("kdf", "seed", "checksum")


def save_key(
    path: pathlib.Path,
    seed: bytes,
    passphrase: str | None,
    *,
    n: int = DEFAULT_SCRYPT_N,
    overwrite: bool = False,
) -> None:
    """Write ``seed`` to a new key file at ``path``, readable by its owner only.

    Args:
        path: where to write. Its directory must exist.
        seed: the 32-byte Ed25519 seed.
        passphrase: the passphrase to encrypt under; ``None`` writes the seed in
            clear, the explicit choice for servers that must start unattended.
            An empty string is refused: it is far more likely an empty prompt
            than a choice, and it would look encrypted while protecting nothing.
        n: scrypt cost, a power of two in ``[MIN_SCRYPT_N, MAX_SCRYPT_N]``.
            Ignored when ``passphrase`` is ``None``.
        overwrite: replace an existing file. Off by default because overwriting a
            key file destroys an identity.

    The file appears all at once or not at all (temporary file in the same
    directory, ``fsync``, rename, ``fsync`` of the directory), so a crash never
    leaves a half-written key behind the real name.

    Raises:
        LocalProtocolError: ``seed`` is not 32 bytes, ``n`` is out of range or
            not a power of two, or ``passphrase`` is empty.
        KeystoreError: ``path`` exists and ``overwrite`` is false, or the file
            could not be written.
    """
    if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
        raise LocalProtocolError(f"a key seed must be {SEED_SIZE} bytes")
    if passphrase == "":
        raise LocalProtocolError(
            "an empty passphrase protects nothing; pass passphrase=None to store "
            "the key unencrypted on purpose"
        )
    if passphrase is not None and not _n_is_acceptable(n):
        raise LocalProtocolError(
            f"scrypt n must be a power of two between 2**10 and 2**20, got {n!r}"
        )
    # Checked before scrypt runs so the user does not wait to be told; checked again,
    # without a race, when the file is put in place.
    if not overwrite and os.path.lexists(path):
        raise KeystoreError(f"key file {path} already exists; refusing to overwrite it")
    if passphrase is None:
        data = _encode_clear(seed)
    else:
        salt, nonce = secrets.token_bytes(_SALT_SIZE), secrets.token_bytes(_NONCE_SIZE)
        data = _encode_encrypted(seed, passphrase, n, salt, nonce)
    try:
        _write_atomically(path, data, overwrite=overwrite)
    except FileExistsError:
        raise KeystoreError(f"key file {path} already exists; refusing to overwrite it") from None
    except OSError as exc:
        raise KeystoreError(f"cannot write key file {path}: {exc.strerror or exc}") from exc


def load_key(path: pathlib.Path, passphrase: str | None) -> bytes:
    """Read the seed back from the key file at ``path``.

    Args:
        path: a file written by :func:`save_key`.
        passphrase: the passphrase it was saved under, or ``None`` for a file
            saved unencrypted. Giving one where none is needed (or the reverse)
            is an error rather than ignored, so a mix-up of files is noticed.

    Returns:
        The 32-byte seed. Nothing is returned unless every check passed.

    Raises:
        KeystoreError: the file is missing, unreadable, empty, truncated, altered,
            not a troc key file, of an unknown version, asks for an out-of-range
            scrypt cost, the passphrase is wrong, given for an unencrypted file or
            missing for an encrypted one, or an unencrypted file is readable by
            group or others.
    """
    data, mode = _read(path)
    fields = _parse(path, data)
    if fields["kdf"] == "none":
        if passphrase is not None:
            raise KeystoreError(
                f"key file {path} is not encrypted, but a passphrase was given; load it without one"
            )
        # Any group/other bit: readable leaks the seed, writable lets another
        # user swap in their own key.
        if stat.S_IMODE(mode) & 0o077:
            raise KeystoreError(
                f"unencrypted key file {path} can be read or changed by other users; "
                f"run: chmod 600 {path}"
            )
        seed: bytes = fields["seed"]
        if not secrets.compare_digest(_checksum(seed), fields["checksum"]):
            raise KeystoreError(f"key file {path} is damaged (its checksum does not match)")
        return seed
    if passphrase is None:
        raise KeystoreError(f"key file {path} is encrypted; a passphrase is needed to load it")
    key = _derive(passphrase, fields["salt"], fields["n"])
    try:
        seed = ChaCha20Poly1305(key).decrypt(
            fields["nonce"], fields["ciphertext"], _associated_data(fields)
        )
    except InvalidTag:
        raise KeystoreError(f"wrong passphrase for {path} (or the file was altered)") from None
    return seed


def is_encrypted(path: pathlib.Path) -> bool:
    """Say whether the key file at ``path`` needs a passphrase, without one.

    Lets a CLI decide whether to prompt. The whole file is checked for form (not
    for the passphrase), so a damaged file is reported here already.

    Raises:
        KeystoreError: as :func:`load_key`, for every reason that does not depend
            on the passphrase or the file's permissions.
    """
    data, _mode = _read(path)
    return bool(_parse(path, data)["kdf"] == "scrypt")


# --- encoding ---------------------------------------------------------------------


def _encode_encrypted(seed: bytes, passphrase: str, n: int, salt: bytes, nonce: bytes) -> bytes:
    """Build an encrypted v1 file; salt and nonce are parameters so tests can pin them."""
    fields: dict[str, Any] = {
        "kdf": "scrypt",
        "n": n,
        "r": _SCRYPT_R,
        "p": _SCRYPT_P,
        "salt": salt,
        "aead": "chacha20poly1305",
        "nonce": nonce,
    }
    key = _derive(passphrase, salt, n)
    fields["ciphertext"] = ChaCha20Poly1305(key).encrypt(nonce, seed, _associated_data(fields))
    return _render(fields, _ENCRYPTED_KEYS)


def _encode_clear(seed: bytes) -> bytes:
    fields: dict[str, Any] = {"kdf": "none", "seed": seed, "checksum": _checksum(seed)}
    return _render(fields, _CLEAR_KEYS)


def _render(fields: dict[str, Any], keys: tuple[str, ...]) -> bytes:
    """The one canonical rendering: reading compares the file against it byte for byte."""
    ordered = {k: fields[k].hex() if isinstance(fields[k], bytes) else fields[k] for k in keys}
    body = json.dumps(ordered, separators=(",", ":"), ensure_ascii=True)
    return _MAGIC + body.encode("ascii") + b"\n"


def _associated_data(fields: dict[str, Any]) -> bytes:
    """Magic line plus the header (all but the ciphertext), as rendered in the file."""
    return _render(fields, _ENCRYPTED_KEYS[:-1])


def _checksum(seed: bytes) -> bytes:
    return hashlib.sha256(_CHECKSUM_PREFIX + seed).digest()


def _derive(passphrase: str, salt: bytes, n: int) -> bytes:
    # NFC so the same passphrase typed on systems that compose accents differently
    # (macOS hands out NFD) derives the same key. surrogatepass so that any str,
    # even one with lone surrogates from a mis-decoded terminal, is accepted
    # rather than escaping as UnicodeEncodeError.
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8", "surrogatepass")
    kdf = Scrypt(salt=salt, length=32, n=n, r=_SCRYPT_R, p=_SCRYPT_P)
    return kdf.derive(secret)


def _n_is_acceptable(n: object) -> bool:
    # type() rather than isinstance(): JSON true would otherwise pass as 1.
    return type(n) is int and MIN_SCRYPT_N <= n <= MAX_SCRYPT_N and n & (n - 1) == 0


# --- decoding ---------------------------------------------------------------------


def _parse(path: pathlib.Path, data: bytes) -> dict[str, Any]:
    """Check the file's form and parameters; return its fields with bytes decoded.

    Everything that does not need the passphrase is checked here, before any
    scrypt runs.
    """
    if not data:
        raise KeystoreError(f"key file {path} is empty")
    if not data.startswith(_MAGIC):
        version = data[len(_MAGIC_PREFIX) :].split(b"\n", 1)[0]
        if data.startswith(_MAGIC_PREFIX) and b"\n" in data and version.isalnum():
            shown = version[:16].decode("ascii", "replace")
            raise KeystoreError(
                f"key file {path} is in format v{shown}, which this version of troc cannot read"
            )
        if _MAGIC.startswith(data):
            raise KeystoreError(f"key file {path} is truncated")
        raise KeystoreError(f"{path} is not a troc key file")
    damaged = KeystoreError(f"key file {path} is damaged or truncated")
    try:
        raw = json.loads(data[len(_MAGIC) :].decode("utf-8"))
    except (ValueError, RecursionError):
        # ValueError covers bad UTF-8, bad JSON and over-long integers; deep
        # nesting in a hostile file surfaces as RecursionError.
        raise damaged from None
    if not isinstance(raw, dict):
        raise damaged
    keys: tuple[str, ...]
    sizes: dict[str, int]  # the hex fields and their decoded lengths
    if raw.get("kdf") == "scrypt":
        keys = _ENCRYPTED_KEYS
        sizes = {"salt": _SALT_SIZE, "nonce": _NONCE_SIZE, "ciphertext": SEED_SIZE + _TAG_SIZE}
    elif raw.get("kdf") == "none":
        keys = _CLEAR_KEYS
        sizes = {"seed": SEED_SIZE, "checksum": 32}
    elif isinstance(raw.get("kdf"), str) and raw["kdf"].isascii() and raw["kdf"].isprintable():
        raise KeystoreError(
            f"key file {path} uses key derivation {raw['kdf'][:32]!r}, "
            "which this version of troc does not know"
        )
    else:
        raise damaged
    if set(raw) != set(keys):
        raise damaged
    fields: dict[str, Any] = dict(raw)
    for name, size in sizes.items():
        value = raw[name]
        if not isinstance(value, str) or len(value) != 2 * size:
            raise damaged
        try:
            fields[name] = bytes.fromhex(value)
        except ValueError:
            raise damaged from None
    if keys is _ENCRYPTED_KEYS:
        if (
            raw["aead"] != "chacha20poly1305"
            or type(raw["r"]) is not int
            or raw["r"] != _SCRYPT_R
            or type(raw["p"]) is not int
            or raw["p"] != _SCRYPT_P
        ):
            raise KeystoreError(
                f"key file {path} asks for parameters this version of troc does not use "
                f"(aead {raw['aead']!r:.40}, r={raw['r']!r:.20}, p={raw['p']!r:.20})"
            )
        if not _n_is_acceptable(raw["n"]):
            raise KeystoreError(
                f"key file {path} asks for scrypt n={raw['n']!r:.20}; only powers of two "
                "from 2**10 to 2**20 are accepted, so that loading stays bounded"
            )
    # Last, the strict form check: anything JSON or fromhex tolerated (uppercase
    # hex, spaces, key order, escapes, duplicate keys) is an alteration.
    if _render(fields, keys) != data:
        raise damaged
    return fields


def _read(path: pathlib.Path) -> tuple[bytes, int]:
    """Read at most the size cap from ``path``; return the bytes and the file mode.

    The mode comes from ``fstat`` on the descriptor that was read, so the
    permission check is about this very file, not one swapped in between.
    """
    try:
        # O_NONBLOCK: a FIFO at the key path would otherwise hang the open.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise KeystoreError(f"key file {path} does not exist") from None
    except OSError as exc:
        raise KeystoreError(f"cannot open key file {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeystoreError(f"key file {path} is not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= _MAX_FILE_SIZE:
            chunk = os.read(fd, _MAX_FILE_SIZE + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise KeystoreError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if size > _MAX_FILE_SIZE:
        raise KeystoreError(f"{path} is too large to be a troc key file")
    return b"".join(chunks), info.st_mode


def _write_atomically(path: pathlib.Path, data: bytes, *, overwrite: bool) -> None:
    directory = path.parent
    # Same directory, so the final rename never crosses a filesystem; O_EXCL so a
    # planted file or symlink at the temporary name is never written through.
    tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            # The umask can only remove bits from 0o600; set it outright so the
            # result does not depend on the caller's umask.
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_no_clobber(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    # The rename is durable only once the directory entry is.
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _link_no_clobber(tmp: pathlib.Path, path: pathlib.Path) -> None:
    """Move ``tmp`` to ``path`` only if ``path`` does not exist, atomically if possible.

    ``os.replace`` would silently clobber a key file created since the earlier
    check; a hard link fails instead. Filesystems without hard links (FAT on a
    USB stick) fall back to a checked replace, which leaves a small race.
    """
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:
        if os.path.lexists(path):
            raise FileExistsError(path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)
