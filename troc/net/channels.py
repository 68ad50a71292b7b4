"""Taking what a trio channel already holds, for consumers that work in
batches (one transaction, one publish round, per batch)."""

from __future__ import annotations

from typing import Any, TypeVar

import trio

__all__ = ["take_ready"]

T = TypeVar("T")


def take_ready(channel: trio.MemoryReceiveChannel[Any], batch: list[T], limit: int) -> None:
    """Move the items already queued in ``channel`` to ``batch``, in arrival
    order, until it holds ``limit``; never waits."""
    while len(batch) < limit:
        try:
            batch.append(channel.receive_nowait())
        except trio.WouldBlock:
            return
