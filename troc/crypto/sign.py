"""Ed25519 keys, domain-separated signatures and the one strict verifier.

Why one verifier, and why strict: troc is a consensus system. If two nodes
disagree on whether a signature is valid, they disagree on balances. Ed25519
libraries differ at the edges: OpenSSL (through ``cryptography``) accepts the
identity point as a public key, with a signature that then verifies for *every*
message (an account anyone could spend from), and accepts non-canonical
encodings of it. libsodium (through PyNaCl) rejects both and is about 3x faster
here (see docs/crypto.md). troc uses PyNaCl and, on top of it, checks the edge
cases itself so the rule does not depend on a library version:

* the public key must be a canonical encoding of a point of prime order
  (``crypto_core_ed25519_is_valid_point``: rejects small-order and
  non-canonical points);
* S, the scalar half of the signature, must be canonical (``S < L``);
* R must not be a small-order point (libsodium checks this in verify too).

Signatures are domain-separated: the signed message is
``len(domain) || domain || message``, where ``domain`` names the purpose and
version (``b"troc/entry/v1"``, ``b"troc/vote/v1"`` …). A signature made for one
purpose never verifies for another.
"""

from __future__ import annotations

import functools
import hashlib
from enum import Enum
from typing import NewType

import nacl.bindings
import nacl.exceptions
import nacl.signing

__all__ = [
    "PUBLIC_KEY_SIZE",
    "SIGNATURE_SIZE",
    "Domain",
    "MemberId",
    "SigningKey",
    "is_valid_public_key",
    "signed_message",
    "verify",
    "verify_once",
]

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
SEED_SIZE = 32

# The order of the prime-order subgroup of Curve25519.
_L = 2**252 + 27742317777372353535851937790883648493

#: A member's id: its 32-byte Ed25519 public key.
MemberId = NewType("MemberId", bytes)


class Domain(Enum):
    """What a signature is for. The value is the signed domain prefix."""

    ENTRY = b"troc/entry/v1"
    VOTE = b"troc/vote/v1"
    #: A witness's void vote (docs/witness.md §3.6): same message as a vote.
    VOID = b"troc/void/v1"
    #: A witness's time attestation (docs/witness.md §3.5): when its clock
    #: said a take-back's transfer (a lapse's campaign) had expired.
    WITNESS_TIME = b"troc/witness-time/v1"
    INVITE = b"troc/invite/v1"
    CONTROL = b"troc/control/v1"
    STATEMENT = b"troc/statement/v1"


def signed_message(domain: Domain, message: bytes) -> bytes:
    """The exact bytes an Ed25519 signature for ``domain`` covers."""
    prefix = domain.value
    return bytes((len(prefix),)) + prefix + message


class SigningKey:
    """An Ed25519 key pair. Holds the secret; never printed or pickled."""

    __slots__ = ("_key", "public")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_SIZE:
            raise ValueError(f"an Ed25519 seed is {SEED_SIZE} bytes, got {len(seed)}")
        self._key = nacl.signing.SigningKey(seed)
        self.public: MemberId = MemberId(bytes(self._key.verify_key))

    @classmethod
    def generate(cls) -> SigningKey:
        """A new random key pair (from the OS's CSPRNG)."""
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed, for the keystore only."""
        return bytes(self._key)

    def sign(self, domain: Domain, message: bytes) -> bytes:
        """Sign ``message`` for ``domain``; returns the 64-byte signature."""
        return bytes(self._key.sign(signed_message(domain, message)).signature)

    def __repr__(self) -> str:
        return f"<SigningKey public={self.public.hex()[:16]}…>"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a SigningKey is not picklable")


@functools.lru_cache(maxsize=4096)
def is_valid_public_key(key: bytes) -> bool:
    """True if ``key`` is a canonical encoding of an Ed25519 point of prime order.

    Cached: a community has few members and every entry names its author.
    """
    if len(key) != PUBLIC_KEY_SIZE:
        return False
    return bool(nacl.bindings.crypto_core_ed25519_is_valid_point(key))


def verify(domain: Domain, public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True if ``signature`` is ``public_key``'s strict Ed25519 signature of
    ``message`` for ``domain``. Never raises for bad input: returns False.
    A signature found valid lately is not checked again (:class:`_Verified`)."""
    if not _well_formed(public_key, signature):
        return False
    smessage = signature + signed_message(domain, message)
    seen = hashlib.sha256(public_key + smessage).digest()
    if _VERIFIED.holds(seen):
        return True
    if not _open(smessage, public_key):
        return False
    _VERIFIED.add(seen)
    return True


def verify_once(domain: Domain, public_key: bytes, message: bytes, signature: bytes) -> bool:
    """:func:`verify` for a signature this process will not see again (a
    verify worker's, a catch-up's entries; a benchmark's raw rate): checked,
    neither looked up among nor added to those verified lately."""
    return _well_formed(public_key, signature) and _open(
        signature + signed_message(domain, message), public_key
    )


def _well_formed(public_key: bytes, signature: bytes) -> bool:
    """A canonical key and a signature of the right size whose S is reduced
    (strict verification: no malleable second form of a signature)."""
    return (
        len(signature) == SIGNATURE_SIZE
        and is_valid_public_key(public_key)
        and int.from_bytes(signature[32:], "little") < _L
    )


def _open(smessage: bytes, public_key: bytes) -> bool:
    # PyNaCl 1.6 exposes no detached verify; crypto_sign_open checks the same
    # equation on ``signature || message``. cffi releases the GIL for the call,
    # so verification can use both cores from threads.
    try:
        nacl.bindings.crypto_sign_open(smessage, public_key)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


class _Verified:
    """Signatures verified lately, by the SHA-256 of key, signature and
    signed message: what decides the verdict, which is the same each time.

    The same signature reaches a node several times: a certificate's q votes
    are checked by the gossip validator and again as the certificate is
    stored, and by the author's node as each vote arrives and again in the
    certificate; a vote request carries an entry gossip brought. A hash is
    ~1 µs, a verification ~50 µs. Only valid ones are kept (a flood of bad
    ones evicts nothing but valid ones from this bounded set, which only
    costs their verification again). Two generations of sets, at most
    ``2 * size`` digests; threads may race on it and lose a digest, never
    add one that was not verified.
    """

    __slots__ = ("_new", "_old", "_size")

    def __init__(self, size: int) -> None:
        self._new: set[bytes] = set()
        self._old: set[bytes] = set()
        self._size = size

    def holds(self, digest: bytes) -> bool:
        return digest in self._new or digest in self._old

    def add(self, digest: bytes) -> None:
        new = self._new
        new.add(digest)
        if len(new) >= self._size:
            self._old, self._new = new, set()


_VERIFIED = _Verified(4096)
