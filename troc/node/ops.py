"""The operations' public names, in one import (the CLI, the web app, tests).

The table is :data:`troc.node.operations.OPERATIONS`; the store steps are in
:mod:`troc.node.steps`, the parameter and JSON helpers and
:func:`describe_error` in :mod:`troc.node.opdata`, the invitation text in
:mod:`troc.node.invitation`. ``run_op`` runs an operation on a store with no
node running (a running node's is ``Node.run_op``).
"""

from __future__ import annotations

from typing import Any

from troc.node.invitation import (
    INVITE_PREFIX,
    MAX_INVITE_ADDRS,
    decode_invitation,
    encode_invitation,
)
from troc.node.opdata import (
    DEFAULT_COMMUNITY,
    MALFORMED_REASONS,
    Done,
    NotFoundError,
    cid,
    community_of,
    describe_error,
    eid,
    member_of,
    mid,
)
from troc.node.operations import OPERATIONS, Operation
from troc.node.operations import run_offline as run_op

__all__ = [
    "DEFAULT_COMMUNITY",
    "INVITE_PREFIX",
    "MALFORMED_REASONS",
    "MAX_INVITE_ADDRS",
    "OPERATIONS",
    "OPS",
    "READ_OPS",
    "SIGNING_OPS",
    "Done",
    "NotFoundError",
    "Operation",
    "cid",
    "community_of",
    "decode_invitation",
    "describe_error",
    "eid",
    "encode_invitation",
    "member_of",
    "mid",
    "needs_key",
    "run_op",
]

#: The operations that run on a store (every one but those only a running node answers).
OPS = {name: op for name, op in OPERATIONS.items() if op.run is not None}
#: Operations that sign (and so need the member key, and the restore guard).
SIGNING_OPS = frozenset(op.name for op in OPERATIONS.values() if op.signs and not op.signs_if)
#: Operations that only read the store: they work on a home that cannot be written.
READ_OPS = frozenset(op.name for op in OPERATIONS.values() if op.read_only)


def needs_key(op: str, params: dict[str, Any]) -> bool:
    """True if ``op`` signs an entry (so it needs the member key)."""
    found = OPERATIONS.get(op)
    return found is not None and found.needs_key(params)
