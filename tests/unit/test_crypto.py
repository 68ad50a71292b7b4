"""Strict Ed25519: the edge cases where libraries disagree, and domain separation.

troc's verdict on a signature must be the same on every node, so the edge
cases are pinned here: small-order public keys, non-canonical encodings,
non-canonical S, and the universal forgery OpenSSL accepts.
"""

from __future__ import annotations

import hashlib

import nacl.bindings
import nacl.exceptions
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import key
from troc.crypto.sign import (
    Domain,
    SigningKey,
    is_valid_public_key,
    signed_message,
    verify,
    verify_once,
)

# -- a little Edwards-curve arithmetic, to prove the constants below ----------

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
IDENTITY = (0, 1)


def _add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    return (
        (x1 * y2 + x2 * y1) * pow(1 + t, P - 2, P) % P,
        (y1 * y2 + x1 * x2) * pow(1 - t, P - 2, P) % P,
    )


def _mul(n: int, point: tuple[int, int]) -> tuple[int, int]:
    acc = IDENTITY
    while n:
        if n & 1:
            acc = _add(acc, point)
        point = _add(point, point)
        n >>= 1
    return acc


def _encode(point: tuple[int, int]) -> bytes:
    x, y = point
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _decode(encoding: bytes) -> tuple[int, int] | None:
    """RFC 8032 point decoding, except that y >= p is reduced, not refused
    (so non-canonical encodings can be shown to name real points)."""
    n = int.from_bytes(encoding, "little")
    y, sign = (n & (2**255 - 1)) % P, n >> 255
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        return None if sign else (0, y)
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    if x & 1 != sign:
        x = P - x
    return (x, y)


#: The 8 points of small order (1, 2, 4, 8): canonical encodings.
SMALL_ORDER = [
    bytes.fromhex(h)
    for h in (
        "0100000000000000000000000000000000000000000000000000000000000000",  # identity
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2
        "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
        "0000000000000000000000000000000000000000000000000000000000000080",  # order 4
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",  # order 8
    )
]
IDENTITY_KEY = SMALL_ORDER[0]
#: Every encoding with y >= p (y = p .. 2**255-1), with either sign bit, plus
#: the "negative zero" encodings (x = 0 with the sign bit set).
NON_CANONICAL = [((P + k) | (s << 255)).to_bytes(32, "little") for k in range(19) for s in (0, 1)]
NEGATIVE_ZERO = [
    (1 | (1 << 255)).to_bytes(32, "little"),
    ((P - 1) | (1 << 255)).to_bytes(32, "little"),
]
#: The universal forgery for the identity key: R = identity, S = 0.
#: [S]B = R + [k]A holds for every k, hence for every message.
FORGERY = IDENTITY_KEY + bytes(32)

MESSAGES = [b"", b"troc", b"x" * 200, signed_message(Domain.ENTRY, b"\x92\x01\x02")]


def _openssl_accepts(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def test_the_small_order_list_is_the_whole_8_torsion() -> None:
    points = [_decode(e) for e in SMALL_ORDER]
    assert all(p is not None for p in points)
    assert len(set(points)) == 8
    # The torsion subgroup of Curve25519 has 8 elements: 8 distinct points
    # with 8P = O are all of them.
    for point in points:
        assert point is not None
        assert _mul(8, point) == IDENTITY


@pytest.mark.parametrize("public", SMALL_ORDER, ids=lambda b: b.hex()[:8])
def test_small_order_keys_are_rejected(public: bytes) -> None:
    assert not is_valid_public_key(public)
    for message in MESSAGES:
        # The only signatures that could verify for a small-order key are
        # built from small-order R and S = 0 (or S a multiple of L).
        for r in SMALL_ORDER:
            assert not verify(Domain.ENTRY, public, message, r + bytes(32))


@pytest.mark.parametrize("public", NON_CANONICAL + NEGATIVE_ZERO, ids=lambda b: b.hex()[-4:])
def test_non_canonical_keys_are_rejected(public: bytes) -> None:
    assert not is_valid_public_key(public)
    assert not verify(Domain.ENTRY, public, b"troc", FORGERY)


def test_some_non_canonical_encodings_name_real_points() -> None:
    """Not a vacuous rule: several y >= p encodings decode to curve points
    (y = p, p+1, and ten more of large order), which a lax decoder would take."""
    real = [e for e in NON_CANONICAL if _decode(e) is not None]
    assert len(real) >= 20


def test_identity_forgery_openssl_accepts_troc_rejects() -> None:
    """Measured here (cryptography 50.0.2, OpenSSL): ``Ed25519PublicKey``
    loads the identity point (01 00…00) as a public key, and the signature
    R = identity, S = 0 verifies under it for *every* message: an account
    anyone could spend from. It also loads the non-canonical encoding of the
    identity (y = p + 1) and accepts the same forgery. libsodium (PyNaCl)
    rejects both keys, and troc's ``verify`` returns False.

    If a future OpenSSL starts rejecting these, the first assertions fail:
    update the docstring, docs/protocol.md §3 and FACTS.md, not troc.
    """
    non_canonical_identity = (P + 1).to_bytes(32, "little")
    for message in MESSAGES:
        assert _openssl_accepts(IDENTITY_KEY, FORGERY, message)
        assert _openssl_accepts(non_canonical_identity, FORGERY, message)
        for domain in Domain:
            assert not verify(domain, IDENTITY_KEY, message, FORGERY)
            assert not verify(domain, non_canonical_identity, message, FORGERY)


def test_same_signatures_as_openssl_for_valid_keys() -> None:
    """Ed25519 is deterministic: troc (libsodium) and OpenSSL sign alike."""
    signer = key(1)
    other = Ed25519PrivateKey.from_private_bytes(signer.seed)
    for message in MESSAGES:
        ours = signer.sign(Domain.ENTRY, message)
        assert ours == other.sign(signed_message(Domain.ENTRY, message))
        assert _openssl_accepts(signer.public, ours, signed_message(Domain.ENTRY, message))


def test_non_canonical_s_is_rejected() -> None:
    """S + L satisfies the verification equation just as S does; a strict
    verifier refuses it so that a signature has one encoding."""
    signer = key(1)
    message = b"pay 5"
    good = signer.sign(Domain.ENTRY, message)
    assert verify(Domain.ENTRY, signer.public, message, good)
    s = int.from_bytes(good[32:], "little")
    for bad_s in (s + L, L, 2**256 - 1):
        bad = good[:32] + bad_s.to_bytes(32, "little")
        assert not verify(Domain.ENTRY, signer.public, message, bad)
        assert not _openssl_accepts(signer.public, bad, signed_message(Domain.ENTRY, message))


def test_mixed_order_key_is_rejected() -> None:
    """A valid key plus a point of order 8 is a *mixed-order* key: not small
    order, so libsodium's crypto_sign_open takes it, and OpenSSL too. With
    the signer's scalar, a signature verifies under it (cofactorless) for
    every message whose hash k is a multiple of 8. troc requires keys in the
    prime-order subgroup, so it verifies for none."""
    signer = SigningKey(bytes(range(32)))
    digest = hashlib.sha512(signer.seed).digest()
    a = (int.from_bytes(digest[:32], "little") & ((1 << 254) - 8)) | (1 << 254)
    base = _decode((4 * pow(5, P - 2, P) % P).to_bytes(32, "little"))
    assert base is not None
    assert _encode(_mul(a, base)) == signer.public
    public, torsion = _decode(signer.public), _decode(SMALL_ORDER[6])
    assert public is not None
    assert torsion is not None
    mixed = _encode(_add(public, torsion))
    r = 12345
    big_r = _encode(_mul(r, base))
    for i in range(200):  # 1 in 8 messages will do
        message = b"pay %d" % i
        full = signed_message(Domain.ENTRY, message)
        k = int.from_bytes(hashlib.sha512(big_r + mixed + full).digest(), "little") % L
        if k % 8 == 0:
            break
    signature = big_r + ((r + k * a) % L).to_bytes(32, "little")
    nacl.bindings.crypto_sign_open(signature + full, mixed)  # libsodium: valid
    assert _openssl_accepts(mixed, signature, full)
    assert not is_valid_public_key(mixed)
    assert not verify(Domain.ENTRY, mixed, message, signature)
    # The same signature under the true key fails: the test is not vacuous.
    with pytest.raises(nacl.exceptions.BadSignatureError):
        nacl.bindings.crypto_sign_open(signature + full, signer.public)


def test_small_order_r_is_rejected() -> None:
    signer = key(1)
    for r in SMALL_ORDER:
        assert not verify(Domain.ENTRY, signer.public, b"troc", r + bytes(32))


@pytest.mark.parametrize("domain", list(Domain), ids=lambda d: d.name)
def test_a_signature_verifies_for_its_domain_only(domain: Domain) -> None:
    signer = key(2)
    message = b"\x98\x01" + bytes(40)
    signature = signer.sign(domain, message)
    assert verify(domain, signer.public, message, signature)
    for other in Domain:
        if other is not domain:
            assert not verify(other, signer.public, message, signature)
    # Nor over the bare message, nor as another key's.
    assert not _openssl_accepts(signer.public, signature, message)
    assert not verify(domain, key(3).public, message, signature)


def test_signed_message_layout() -> None:
    assert signed_message(Domain.ENTRY, b"ab") == b"\x0dtroc/entry/v1ab"
    assert signed_message(Domain.VOTE, b"") == b"\x0ctroc/vote/v1"
    # The length prefix keeps domains prefix-free: no domain plus message
    # can read as another domain plus another message.
    prefixes = [signed_message(d, b"") for d in Domain]
    assert len(set(prefixes)) == len(prefixes)


def test_signing_key_rules() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SigningKey(b"short")
    signer = SigningKey(bytes(range(32)))
    assert SigningKey(signer.seed).public == signer.public
    assert signer.seed.hex() not in repr(signer)
    assert is_valid_public_key(SigningKey.generate().public)


@given(st.binary(max_size=40), st.binary(max_size=50), st.binary(max_size=70))
def test_verify_never_raises(public: bytes, message: bytes, signature: bytes) -> None:
    assert verify(Domain.ENTRY, public, message, signature) is False


@given(st.binary(min_size=32, max_size=32), st.binary(max_size=64))
def test_any_valid_key_signs_and_verifies(seed: bytes, message: bytes) -> None:
    signer = SigningKey(seed)
    assert is_valid_public_key(signer.public)
    signature = signer.sign(Domain.ENTRY, message)
    assert verify(Domain.ENTRY, signer.public, message, signature)
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert not verify(Domain.ENTRY, signer.public, message, flipped)


# -- signatures verified lately are not verified again -------------------------


def _counting_opens(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Make nacl's verify count its calls (what troc.crypto.sign calls)."""
    calls: list[bytes] = []
    real = nacl.bindings.crypto_sign_open

    def counting(smessage: bytes, public: bytes) -> bytes:
        calls.append(smessage)
        return real(smessage, public)

    monkeypatch.setattr(nacl.bindings, "crypto_sign_open", counting)
    return calls


def test_a_signature_verified_lately_is_not_verified_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signer = key(4)
    message = b"a certificate's vote, checked by gossip and again when stored"
    signature = signer.sign(Domain.VOTE, message)
    calls = _counting_opens(monkeypatch)
    assert verify(Domain.VOTE, signer.public, message, signature)
    assert verify(Domain.VOTE, signer.public, message, signature)
    assert len(calls) == 1
    # What was verified is the whole of key, domain, message and signature:
    # any other of them is checked, and fails, as before.
    assert not verify(Domain.VOID, signer.public, message, signature)
    assert not verify(Domain.VOTE, key(5).public, message, signature)
    assert not verify(Domain.VOTE, signer.public, message + b"!", signature)
    assert len(calls) == 4


def test_a_bad_signature_is_checked_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = key(4)
    message = b"a forged vote"
    signature = bytearray(signer.sign(Domain.VOTE, message))
    signature[5] ^= 1
    calls = _counting_opens(monkeypatch)
    for _ in range(3):
        assert not verify(Domain.VOTE, signer.public, message, bytes(signature))
    assert len(calls) == 3


def test_verify_once_neither_uses_nor_fills_the_recent_set(monkeypatch: pytest.MonkeyPatch) -> None:
    # A verify worker's checks and bench/ingest.py's raw rate: checked each
    # time, and leaving nothing that would spare a later verify its check
    # (the bench's ingest of entries it had just timed the raw checks of
    # counted no check at all: `ratio` 1.2, where one check is the floor).
    signer = key(6)
    message = b"an entry's signed bytes, seen once in a catch-up"
    signature = signer.sign(Domain.ENTRY, message)
    calls = _counting_opens(monkeypatch)
    assert verify_once(Domain.ENTRY, signer.public, message, signature)
    assert verify_once(Domain.ENTRY, signer.public, message, signature)
    assert verify(Domain.ENTRY, signer.public, message, signature)
    assert len(calls) == 3
    assert verify_once(Domain.ENTRY, signer.public, message, signature)
    assert len(calls) == 4
    assert not verify_once(Domain.ENTRY, signer.public, message + b"!", signature)
    assert not verify_once(Domain.ENTRY, signer.public, message, signature[:63])
