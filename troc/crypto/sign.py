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
    ``message`` for ``domain``. Never raises for bad input: returns False."""
    if len(signature) != SIGNATURE_SIZE or not is_valid_public_key(public_key):
        return False
    if int.from_bytes(signature[32:], "little") >= _L:
        return False
    # PyNaCl 1.6 exposes no detached verify; crypto_sign_open checks the same
    # equation on ``signature || message``. cffi releases the GIL for the call,
    # so verification can use both cores from threads.
    try:
        nacl.bindings.crypto_sign_open(signature + signed_message(domain, message), public_key)
    except nacl.exceptions.BadSignatureError:
        return False
    return True
