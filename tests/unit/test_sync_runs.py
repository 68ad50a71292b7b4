"""SyncSession.receive_entries: ``entries`` messages received in a row, taken
as one store batch (what troc.node.sync does with the frames it has read
ahead), reach the state that taking them one by one reaches, check each
message as ``receive`` does, and want nothing that a later message of the
run brings."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import World, fresh_ledger, key
from troc.errors import RemoteProtocolError
from troc.protocol.entry import Entry
from troc.protocol.sync import SyncSession
from troc.protocol.sync_pair import MemoryView


def _history() -> tuple[World, list[Entry], list[Entry]]:
    """Three members pay each other; returns the joins and transfers, and
    the accepts (which need the transfers)."""
    w = World()
    members = [key(i) for i in range(3)]
    firsts = [w.join(m) for m in members]
    transfers = [w.pay(members[i], members[(i + 1) % 3], 5) for i in range(3)]
    accepts = [w.accept(members[(i + 1) % 3], t) for i, t in enumerate(transfers)]
    return w, firsts + transfers, accepts


def _session(w: World) -> tuple[SyncSession, MemoryView]:
    ledger = fresh_ledger(w.genesis)
    view = MemoryView(ledger, w.community, lambda: w.now)
    session = SyncSession(view, w.community, initiator=True)
    session.start()
    return session, view


def _msg(entries: list[Entry]) -> dict[str, Any]:
    return {"t": "entries", "e": [e.wire for e in entries]}


def _state(view: MemoryView, w: World) -> tuple[Any, ...]:
    ledger = view.ledger
    return (
        dict(ledger.backend.heads(w.community)),
        dict(ledger.balances(w.community)),
        ledger.backend.waiting_count(),  # type: ignore[attr-defined]
    )


def test_a_run_reaches_the_state_of_its_messages_one_by_one_and_wants_less() -> None:
    w, before, accepts = _history()
    # The accepts arrive a frame before what they answer (a sender's merge
    # by timestamp can cut a history so): one by one, the first frame parks
    # them and wants the transfers, which the next frame brings anyway.
    frames = [_msg(accepts), _msg(before)]
    one, one_view = _session(w)
    sent_one = [m for f in frames for m in one.receive(f)]
    run, run_view = _session(w)
    sent_run = list(run.receive_entries(frames))
    assert _state(run_view, w) == _state(one_view, w)
    assert _state(run_view, w)[2] == 0  # nothing left waiting
    assert run.stats.accepted == one.stats.accepted == len(before) + len(accepts)
    assert run.stats.received == one.stats.received
    assert [m["t"] for m in sent_one] == ["want"]
    assert sent_run == []


@pytest.mark.parametrize(
    "bad",
    [
        {"t": "entries", "e": "not a list"},
        {"t": "entries", "e": [b"x"] * 513},  # over MAX_BATCH
        {"t": "want", "r": []},  # not an entries message
        {"t": "entries", "e": [], "r": True},  # a reply nobody asked for
    ],
)
def test_each_message_of_a_run_is_checked_as_receive_checks_it(bad: dict[str, Any]) -> None:
    w, before, _accepts = _history()
    session, _view = _session(w)
    with pytest.raises(RemoteProtocolError):
        list(session.receive_entries([_msg(before), bad]))
