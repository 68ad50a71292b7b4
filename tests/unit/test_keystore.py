"""Key files: round trips, permissions, and every way a file can be wrong."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import stat
import time

import nacl.bindings
import pytest
from hypothesis import given
from hypothesis import strategies as st

from troc.crypto.keystore import is_encrypted, load_key, save_key
from troc.errors import KeystoreError, LocalProtocolError

SEED = bytes(range(32))
PASSPHRASE = "correct horse"
FAST_N = 2**10  # the smallest n accepted; keeps scrypt at ~3 ms per load

# Known-answer vectors: v1 files as this version writes them, pinned so a later
# change cannot silently stop reading keys already on disk. Salt is bytes 100..115,
# nonce bytes 200..211, seed bytes 0..31.
ENCRYPTED_V1 = (
    b'troc-key v1\n{"kdf":"scrypt","n":1024,"r":8,"p":1,'
    b'"salt":"6465666768696a6b6c6d6e6f70717273","aead":"chacha20poly1305",'
    b'"nonce":"c8c9cacbcccdcecfd0d1d2d3","ciphertext":"266997e5fc282eb6069efd643e97cd7d'
    b'8ec9c41014f3f907ac18f0677bbbbaeda6d6a81d9e30397e735e22d2dbcd04e6"}\n'
)
CLEAR_V1 = (
    b'troc-key v1\n{"kdf":"none",'
    b'"seed":"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",'
    b'"checksum":"66753df52882ca7d33763804f24c0de028097507c55c173f0deaf89c73e0050b"}\n'
)


def write(path: pathlib.Path, data: bytes, mode: int = 0o600) -> pathlib.Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def rewrite_header(data: bytes, **changes: object) -> bytes:
    """Re-render a v1 file canonically with some fields changed."""
    magic, body = data.split(b"\n", 1)
    fields = json.loads(body)
    fields.update(changes)
    return magic + b"\n" + json.dumps(fields, separators=(",", ":")).encode() + b"\n"


@pytest.fixture
def encrypted(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "node.key"
    save_key(path, SEED, PASSPHRASE, n=FAST_N)
    return path


@pytest.fixture
def clear(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "node.key"
    save_key(path, SEED, None)
    return path


# --- round trips and what is on disk --------------------------------------------


def test_round_trip_encrypted(encrypted: pathlib.Path) -> None:
    assert load_key(encrypted, PASSPHRASE) == SEED
    assert is_encrypted(encrypted)
    assert SEED.hex() not in encrypted.read_text()


def test_round_trip_unencrypted(clear: pathlib.Path) -> None:
    assert load_key(clear, None) == SEED
    assert not is_encrypted(clear)


def test_default_cost_round_trip(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "node.key"
    save_key(path, SEED, PASSPHRASE)
    assert json.loads(path.read_bytes().split(b"\n")[1])["n"] == 2**15
    assert load_key(path, PASSPHRASE) == SEED


def test_passphrase_is_unicode_normalised(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "node.key"
    save_key(path, SEED, "caf\u00e9", n=FAST_N)  # composed é
    assert load_key(path, "cafe\u0301") == SEED  # e + combining accent


def test_odd_passphrases_round_trip(tmp_path: pathlib.Path) -> None:
    for i, passphrase in enumerate([" ", "\x00", "\ud800 lone surrogate", "ключ 🔑" * 50]):
        path = tmp_path / f"{i}.key"
        save_key(path, SEED, passphrase, n=FAST_N)
        assert load_key(path, passphrase) == SEED


@pytest.mark.parametrize("passphrase", [PASSPHRASE, None])
def test_file_mode_is_0600_whatever_the_umask(
    tmp_path: pathlib.Path, passphrase: str | None
) -> None:
    path = tmp_path / "node.key"
    old = os.umask(0)
    try:
        save_key(path, SEED, passphrase, n=FAST_N)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_no_temporary_file_left_behind(encrypted: pathlib.Path) -> None:
    assert [p.name for p in encrypted.parent.iterdir()] == ["node.key"]


def test_known_answer_vectors(tmp_path: pathlib.Path) -> None:
    assert load_key(write(tmp_path / "enc.key", ENCRYPTED_V1), PASSPHRASE) == SEED
    assert load_key(write(tmp_path / "clear.key", CLEAR_V1), None) == SEED


def test_format_as_documented_decrypts_independently() -> None:
    # Another implementation (here hashlib + libsodium) can read the file from the
    # module docstring alone: AAD is the magic line plus the header without ciphertext.
    magic, body, _ = ENCRYPTED_V1.split(b"\n")
    fields = json.loads(body)
    ciphertext = bytes.fromhex(fields.pop("ciphertext"))
    aad = magic + b"\n" + json.dumps(fields, separators=(",", ":")).encode() + b"\n"
    key = hashlib.scrypt(
        PASSPHRASE.encode(), salt=bytes.fromhex(fields["salt"]), n=1024, r=8, p=1, dklen=32
    )
    seed = nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(
        ciphertext, aad, bytes.fromhex(fields["nonce"]), key
    )
    assert seed == SEED
    clear = json.loads(CLEAR_V1.split(b"\n")[1])
    checksum = hashlib.sha256(b"troc-key v1 checksum\n" + SEED).hexdigest()
    assert clear == {"kdf": "none", "seed": SEED.hex(), "checksum": checksum}


# --- saving -----------------------------------------------------------------------


def test_refuses_to_overwrite(encrypted: pathlib.Path) -> None:
    before = encrypted.read_bytes()
    with pytest.raises(KeystoreError, match="already exists"):
        save_key(encrypted, bytes(32), None)
    assert encrypted.read_bytes() == before
    assert [p.name for p in encrypted.parent.iterdir()] == ["node.key"]


def test_overwrite_when_asked(encrypted: pathlib.Path) -> None:
    save_key(encrypted, bytes(32), None, overwrite=True)
    assert load_key(encrypted, None) == bytes(32)
    assert stat.S_IMODE(encrypted.stat().st_mode) == 0o600


def test_refuses_to_overwrite_through_a_dangling_symlink(tmp_path: pathlib.Path) -> None:
    link = tmp_path / "node.key"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(KeystoreError, match="already exists"):
        save_key(link, SEED, None)
    assert not (tmp_path / "elsewhere").exists()


def test_save_into_missing_directory(tmp_path: pathlib.Path) -> None:
    with pytest.raises(KeystoreError, match="cannot write key file"):
        save_key(tmp_path / "no" / "such" / "node.key", SEED, None)


@pytest.mark.parametrize(
    ("seed", "passphrase", "n"),
    [
        (bytes(31), PASSPHRASE, FAST_N),
        (bytes(33), None, FAST_N),
        (SEED, "", FAST_N),
        (SEED, PASSPHRASE, 2**9),
        (SEED, PASSPHRASE, 2**21),
        (SEED, PASSPHRASE, 1000),
    ],
)
def test_save_rejects_bad_arguments(
    tmp_path: pathlib.Path, seed: bytes, passphrase: str | None, n: int
) -> None:
    with pytest.raises(LocalProtocolError):
        save_key(tmp_path / "node.key", seed, passphrase, n=n)
    assert not list(tmp_path.iterdir())


# --- loading: the caller's side ----------------------------------------------------


def test_wrong_passphrase(encrypted: pathlib.Path) -> None:
    with pytest.raises(KeystoreError, match="wrong passphrase") as info:
        load_key(encrypted, "incorrect horse")
    assert str(encrypted) in str(info.value)


def test_passphrase_missing_for_encrypted_file(encrypted: pathlib.Path) -> None:
    with pytest.raises(KeystoreError, match="is encrypted; a passphrase is needed"):
        load_key(encrypted, None)


def test_passphrase_given_for_unencrypted_file(clear: pathlib.Path) -> None:
    with pytest.raises(KeystoreError, match="not encrypted, but a passphrase was given"):
        load_key(clear, PASSPHRASE)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_unencrypted_file_open_to_others_is_refused(clear: pathlib.Path, mode: int) -> None:
    clear.chmod(mode)
    with pytest.raises(KeystoreError, match=f"run: chmod 600 {clear}"):
        load_key(clear, None)


def test_encrypted_file_may_be_world_readable(encrypted: pathlib.Path) -> None:
    encrypted.chmod(0o644)
    assert load_key(encrypted, PASSPHRASE) == SEED


# --- loading: files that are not what they should be --------------------------------


def test_missing_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(KeystoreError, match="does not exist"):
        load_key(tmp_path / "node.key", PASSPHRASE)
    with pytest.raises(KeystoreError, match="does not exist"):
        is_encrypted(tmp_path / "node.key")


def test_empty_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(KeystoreError, match="is empty"):
        load_key(write(tmp_path / "node.key", b""), PASSPHRASE)


def test_directory_and_fifo_are_not_key_files(tmp_path: pathlib.Path) -> None:
    with pytest.raises(KeystoreError, match="not a regular file"):
        load_key(tmp_path, None)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(KeystoreError, match="not a regular file"):
        load_key(fifo, None)  # must not hang waiting for a writer


def test_unreadable_file(encrypted: pathlib.Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    encrypted.chmod(0o000)
    with pytest.raises(KeystoreError, match="cannot open key file"):
        load_key(encrypted, PASSPHRASE)


def test_garbage_and_large_files(tmp_path: pathlib.Path) -> None:
    with pytest.raises(KeystoreError, match="is not a troc key file"):
        load_key(write(tmp_path / "a", b"-----BEGIN OPENSSH PRIVATE KEY-----\n"), None)
    with pytest.raises(KeystoreError, match="too large"):
        load_key(write(tmp_path / "b", ENCRYPTED_V1 + b" " * 10_000), PASSPHRASE)


def test_unknown_version_is_named(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path / "node.key", ENCRYPTED_V1.replace(b"v1", b"v2", 1))
    with pytest.raises(KeystoreError, match="format v2, which this version of troc cannot"):
        load_key(path, PASSPHRASE)


def test_unknown_kdf_is_named(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path / "node.key", rewrite_header(ENCRYPTED_V1, kdf="argon2id"))
    with pytest.raises(KeystoreError, match="'argon2id', which this version of troc"):
        load_key(path, PASSPHRASE)


def test_deeply_nested_json_is_just_damage(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path / "node.key", b"troc-key v1\n" + b"[" * 4000)
    with pytest.raises(KeystoreError, match="damaged"):
        load_key(path, PASSPHRASE)


@pytest.mark.parametrize(
    "changes",
    [
        {"n": 2**31},
        {"n": 2**64},
        {"n": 10**4000},
        {"n": 2**21},
        {"n": 2**9},
        {"n": 1000},
        {"n": True},
        {"n": 1024.0},
        {"r": 2**20},
        {"p": 2**20},
        {"r": 8.0},
        {"aead": "aes-256-gcm"},
    ],
    ids=repr,
)
def test_hostile_cost_parameters_rejected_before_scrypt(
    tmp_path: pathlib.Path, changes: dict[str, object]
) -> None:
    path = write(tmp_path / "node.key", rewrite_header(ENCRYPTED_V1, **changes))
    started = time.monotonic()
    with pytest.raises(KeystoreError):
        load_key(path, PASSPHRASE)
    assert time.monotonic() - started < 0.5


def test_parameters_are_bound_to_the_ciphertext(tmp_path: pathlib.Path) -> None:
    # A valid n, r, p but not the one the file was sealed with: decryption, not
    # a range check, is what refuses it.
    for changes in ({"n": 2048}, {"salt": "00" * 16}, {"nonce": "00" * 12}):
        path = write(tmp_path / "node.key", rewrite_header(ENCRYPTED_V1, **changes))
        with pytest.raises(KeystoreError, match="wrong passphrase"):
            load_key(path, PASSPHRASE)


def test_non_canonical_spellings_are_alterations(tmp_path: pathlib.Path) -> None:
    variants = [
        ENCRYPTED_V1.replace(b"6465666768696a6b", b"6465666768696A6B"),  # uppercase hex
        ENCRYPTED_V1.replace(b'"r":8', b'"r": 8'),  # a space
        ENCRYPTED_V1.replace(b'"kdf":"scrypt"', b'"kdf":"scr\\u0079pt"'),  # an escape
        ENCRYPTED_V1[:-1] + b"\r\n",  # CRLF
        ENCRYPTED_V1 + b"\n",  # an extra line
        ENCRYPTED_V1.replace(b'{"kdf":"scrypt",', b'{"kdf":"scrypt","kdf":"scrypt",'),
    ]
    for data in variants:
        path = write(tmp_path / "node.key", data)
        with pytest.raises(KeystoreError, match="damaged"):
            load_key(path, PASSPHRASE)


@pytest.mark.parametrize(("name", "passphrase"), [("encrypted", PASSPHRASE), ("clear", None)])
def test_every_byte_flip_fails_cleanly(
    request: pytest.FixtureRequest, name: str, passphrase: str | None
) -> None:
    path: pathlib.Path = request.getfixturevalue(name)
    original = path.read_bytes()
    # 0x01 and 0x80 are the extreme single-bit flips; 0x20 swaps ASCII case, which
    # bytes.fromhex would otherwise forgive.
    for position in range(len(original)):
        for mask in (0x01, 0x20, 0x80, 0xFF):
            data = bytearray(original)
            data[position] ^= mask
            write(path, bytes(data))
            with pytest.raises(KeystoreError):
                load_key(path, passphrase)


@pytest.mark.parametrize(("name", "passphrase"), [("encrypted", PASSPHRASE), ("clear", None)])
def test_every_truncation_fails_cleanly(
    request: pytest.FixtureRequest, name: str, passphrase: str | None
) -> None:
    path: pathlib.Path = request.getfixturevalue(name)
    original = path.read_bytes()
    for length in range(len(original)):
        write(path, original[:length])
        with pytest.raises(KeystoreError):
            load_key(path, passphrase)
        with pytest.raises(KeystoreError):
            is_encrypted(path)


@given(
    data=st.one_of(
        st.binary(max_size=600),
        st.binary(max_size=600).map(lambda tail: b"troc-key v1\n" + tail),
        st.binary(max_size=60).map(lambda tail: ENCRYPTED_V1[:200] + tail),
    ),
    passphrase=st.sampled_from([PASSPHRASE, None]),
)
def test_random_bytes_only_ever_raise_keystore_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, passphrase: str | None
) -> None:
    path = write(tmp_path_factory.getbasetemp() / "random.key", data)
    with pytest.raises(KeystoreError):
        load_key(path, passphrase)
