"""How the ``troc`` command fails: exit codes, decided here and nowhere else.

====  =====================================================================
code  meaning
====  =====================================================================
0     success
1     an unexpected error (a bug: please report it)
2     usage: a malformed argument, id, amount or invitation
3     the member key: none yet (run ``troc init``), wrong passphrase, damaged
4     refused by the ledger: overdraft, paying oneself, already answered …
5     not found: unknown community, transfer, offer or contact
6     no node running, for commands that need one
7     network: address in use, peer unreachable
8     the store is unusable: locked by another program, damaged, too new
====  =====================================================================

An error is first described as data (:func:`troc.node.opdata.describe_error`:
``kind``, ``reason``, ``message``), by the running node for a request on its
control socket or here for one run offline; the kind decides the code.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "EXIT_BUG",
    "EXIT_KEY",
    "EXIT_NETWORK",
    "EXIT_NOT_FOUND",
    "EXIT_NOT_RUNNING",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_STORE",
    "EXIT_USAGE",
    "Failure",
    "classify",
    "failure_of",
]

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_KEY = 3
EXIT_REFUSED = 4
EXIT_NOT_FOUND = 5
EXIT_NOT_RUNNING = 6
EXIT_NETWORK = 7
EXIT_STORE = 8

#: Error kind (describe_error's, and the CLI's own not_running) -> exit code.
EXIT_BY_KIND = {
    "usage": EXIT_USAGE,
    "key": EXIT_KEY,
    "refused": EXIT_REFUSED,
    "not_found": EXIT_NOT_FOUND,
    "not_running": EXIT_NOT_RUNNING,
    "network": EXIT_NETWORK,
    "store": EXIT_STORE,
}


class Failure(Exception):
    """An error to show as one line with an exit code."""

    def __init__(self, code: int, kind: str, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind
        self.reason = reason


def failure_of(error: dict[str, Any]) -> Failure:
    """A Failure from :func:`troc.node.opdata.describe_error`'s description."""
    kind = str(error["kind"])
    return Failure(
        EXIT_BY_KIND.get(kind, EXIT_BUG), kind, str(error["message"]), error.get("reason")
    )


def classify(exc: BaseException) -> Failure:
    """Map an exception to the exit code and kind a script can rely on."""
    # Imported here: the store's error types are not needed to print --help.
    from troc.node.opdata import describe_error

    if isinstance(exc, Failure):
        return exc
    return failure_of(describe_error(exc))


def not_running(home: object) -> Failure:
    """The failure of a command that needs a running node, when none runs."""
    return Failure(
        EXIT_NOT_RUNNING, "not_running", f"no node is running for {home}: start one with `troc run`"
    )
