"""What reading a balance costs: a payer with many unanswered payments (a
shop's day of them) asks for its balance often (bench/finality.py's poller
does, every 50 ms), and each read goes over every pending transfer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import two_members
from troc.node import steps
from troc.node._store_files import decode_trusted
from troc.node.local import LocalNode
from troc.protocol.entry import CommunityId, Entry


@pytest.fixture
def payer(tmp_path: Path) -> Iterator[tuple[LocalNode, LocalNode, CommunityId]]:
    """ada founded a community, bruno joined it, ada paid bruno 20 times."""
    with ExitStack() as stack:
        ada, bruno, community = two_members(stack, tmp_path)
        for _ in range(20):
            ada.pay(community, bruno.member, 1)
        yield ada, bruno, community


def test_a_second_balance_read_decodes_no_pending_transfer_again(
    payer: tuple[LocalNode, LocalNode, CommunityId], monkeypatch: pytest.MonkeyPatch
) -> None:
    ada, _bruno, community = payer
    pending = {e.wire for e in ada.store.pending_out(community, ada.member)}
    assert len(pending) == 20
    decoded: list[bytes] = []
    real = Entry.decode

    def counting(wire: bytes, **kw: Any) -> Entry:
        decoded.append(wire)
        return real(wire, **kw)

    monkeypatch.setattr(Entry, "decode", counting)
    first = steps.op_balance(ada, {}).result
    decoded.clear()
    second = steps.op_balance(ada, {}).result
    assert first == second
    assert first["pending_out"] == 20
    assert not pending & set(decoded)  # each was decoded by the first read at most


def test_a_cached_decoding_is_the_entry_the_bytes_make(
    payer: tuple[LocalNode, LocalNode, CommunityId],
) -> None:
    ada, _bruno, community = payer
    for e in ada.store.pending_out(community, ada.member):
        again = decode_trusted(bytes(e.wire))  # a copy of the bytes: found by value
        assert again == Entry.decode(e.wire)


def test_a_balance_read_looks_up_no_open_pending_transfer_again(
    payer: tuple[LocalNode, LocalNode, CommunityId],
) -> None:
    """The pending rows say which transfers are declined (only those can
    have a decline held) and hold the entries whose expiry is read: none is
    looked up again one by one."""
    ada, _bruno, community = payer
    looked_up: list[Any] = []
    entry = ada.store.entry

    def counting(*args: Any) -> Any:
        looked_up.append(args)
        return entry(*args)

    ada.store.entry = counting  # type: ignore[method-assign]
    balance = steps.op_balance(ada, {}).result
    assert (balance["pending_out"], balance["declined_out"], balance["expired_out"]) == (20, 0, 0)
    pending = {(e.author, e.seq) for e in ada.store.pending_out(community, ada.member)}
    assert len(pending) == 20
    assert not pending & {(author, seq) for _c, author, seq, _id in looked_up}
