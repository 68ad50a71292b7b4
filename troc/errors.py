"""Errors raised by troc.

Every error troc raises on purpose derives from :class:`TrocError`::

    TrocError
    ├── LocalProtocolError      the caller misused the API (bad argument, wrong state)
    │   └── RefusedError        a well-formed request the ledger refuses (overdraft, …)
    ├── RemoteProtocolError     a peer sent something invalid
    │   ├── CodecError          bytes that are not a well-formed, canonical troc message
    │   └── BundleError         a statement bundle that does not verify (docs/protocol.md §9)
    ├── KeystoreError           a key file that cannot be opened (wrong passphrase, damaged)
    ├── StoreError              the on-disk store is unusable (locked, corrupt, newer format)
    └── NetworkError            cannot listen (address in use) or reach a peer

Anything else escaping troc is a bug. Ledger verdicts on entries are not
exceptions: :func:`troc.protocol.ledger.Ledger.ingest` returns an outcome that
carries a :class:`troc.protocol.rules.Rejection` with a reason code.
"""

from __future__ import annotations


class TrocError(Exception):
    """Root of every error troc raises on purpose."""


class LocalProtocolError(TrocError):
    """The caller asked for something that cannot be done as asked."""


class RefusedError(LocalProtocolError):
    """The ledger refuses a well-formed request (overdraft, unknown transfer, …).

    ``reason`` is the machine-readable rejection code, ``str(err)`` a sentence.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class RemoteProtocolError(TrocError):
    """A peer sent something invalid."""


class CodecError(RemoteProtocolError):
    """Bytes that are not a well-formed, canonical troc message.

    ``reason`` is a short code (``too_large``, ``non_canonical`` …).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class BundleError(RemoteProtocolError):
    """A verifiable statement that does not check: ``reason`` is a short code
    (``malformed``, ``bad_signature``, ``rejected``, ``missing`` …), ``str(err)``
    the first thing that failed."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class KeystoreError(TrocError):
    """A key file cannot be read: wrong passphrase, damaged, truncated or missing."""


class StoreError(TrocError):
    """The on-disk store cannot be used."""


class NetworkError(TrocError):
    """The node cannot listen where asked, or cannot reach a peer."""
