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
from troc.protocol import sync
from troc.protocol.entry import Entry, Offer
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


class _CountingView(MemoryView):
    """Counts the entries a session reads from its store."""

    read = 0

    def entries_after(self, community: Any, author: Any, after_seq: int, limit: int) -> Any:
        rows = super().entries_after(community, author, after_seq, limit)
        self.read += len(rows)
        return rows


def test_a_responder_reads_a_window_of_history_ahead_not_all_of_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Streaming to a newcomer merges every author's log by time, a page of
    each at once: with many authors the pages shrink, so what is held read
    ahead stays near SEND_WINDOW entries however long the history."""
    w = World()
    members = [key(i) for i in range(20)]
    for m in members:
        w.join(m)
    for round_ in range(30):
        for m in members:
            w.add(m, Offer(side="offer", title=f"offer {round_}"))
    monkeypatch.setattr(sync, "SEND_WINDOW", 20 * 16, raising=False)  # 16 per author
    view = _CountingView(w.ledger, w.community, lambda: w.now)
    session = SyncSession(view, w.community, initiator=False, batch_entries=64)
    session._load()
    stream = session._send_missing({})
    first = next(stream)
    assert len(first["e"]) == 64
    assert view.read <= 20 * 16 + 64  # one page per author (and a refill)
    total = sum(len(m["e"]) for m in stream if m.get("t") == "entries") + 64
    assert total == 20 * 31
