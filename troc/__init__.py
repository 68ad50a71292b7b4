"""troc: a peer-to-peer exchange node for community currencies.

The public API: :func:`open_node` runs a networked node; :class:`LocalNode`
is one member's ledger over a :class:`Store` without the network;
:class:`SigningKey` is a member key. Errors derive from :class:`TrocError`.
The networked parts are imported lazily, so ``import troc`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from troc.crypto.sign import MemberId, SigningKey
from troc.errors import (
    CodecError,
    KeystoreError,
    LocalProtocolError,
    RefusedError,
    RemoteProtocolError,
    StoreError,
    TrocError,
)
from troc.protocol.entry import CommunityId, Entry, EntryId, Ref

if TYPE_CHECKING:
    from troc.node.config import NodeConfig
    from troc.node.local import LocalNode
    from troc.node.node import Node, open_node
    from troc.node.store import Store

__all__ = [
    "CodecError",
    "CommunityId",
    "Entry",
    "EntryId",
    "KeystoreError",
    "LocalNode",
    "LocalProtocolError",
    "MemberId",
    "Node",
    "NodeConfig",
    "Ref",
    "RefusedError",
    "RemoteProtocolError",
    "SigningKey",
    "Store",
    "StoreError",
    "TrocError",
    "open_node",
]

_LAZY = {
    "LocalNode": "troc.node.local",
    "Store": "troc.node.store",
    "Node": "troc.node.node",
    "NodeConfig": "troc.node.config",
    "open_node": "troc.node.node",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'troc' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
