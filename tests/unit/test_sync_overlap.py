"""Two sessions between the same pair at once (each side started one: on
connecting, to learn a payee's join, on its sync interval) do not stream the
same history twice: a session skips, per author, what another session with
the same peer is streaming to it now (``SyncSession(elsewhere=...)``,
docs/sync.md "How a node takes a long stream"). A newcomer catching up a long
history otherwise took all of it twice, once per session."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from tests.helpers import World, fresh_ledger, key
from troc.protocol.sync import Streamed, SyncSession
from troc.protocol.sync_pair import MemoryView
from troc.protocol.sync_wire import decode_message, encode_message

MEMBERS = 3
OFFERS = 20  # per member: each log is 21 entries long
BATCH = 8  # entries per frame: a stream of many frames


def _community() -> tuple[World, MemoryView]:
    """A server's view: MEMBERS logs of 1 + OFFERS entries."""
    w = World()
    members = [key(i) for i in range(MEMBERS)]
    for m in members:
        w.join(m)
    for i in range(OFFERS):
        for m in members:
            w.offer(m, f"offer {i}")
    return w, MemoryView(w.ledger, w.community, lambda: w.now)


def _newcomer(w: World) -> MemoryView:
    return MemoryView(fresh_ledger(w.genesis), w.community, lambda: w.now)


def _run(
    ini: SyncSession, res: SyncSession, to_ini: Iterable[dict[str, Any]] = ()
) -> list[dict[str, Any]]:
    """Run a session to its end over an in-memory stream (real codec), the
    initiator first taking ``to_ini`` (what the responder sent before);
    returns what the initiator sent."""
    queues: tuple[deque[bytes], deque[bytes]] = (deque(), deque())
    queues[1].extend(encode_message(m) for m in to_ini)
    queues[0].extend(encode_message(m) for m in ini.start() if not queues[1])
    sent = [decode_message(m) for m in queues[0]]
    turn = 1 if queues[1] else 0
    for _ in range(10_000):  # bounded: a session here takes a few dozen frames
        if not (queues[0] or queues[1]):
            break
        if not queues[turn]:
            turn = 1 - turn
        side = res if turn == 0 else ini
        for out in side.receive(decode_message(queues[turn].popleft())):
            queues[1 - turn].append(encode_message(out))
            if side is ini:
                sent.append(out)
        turn = 1 - turn
    assert ini.done
    assert res.done
    return sent


def _streamed(msgs: list[dict[str, Any]]) -> int:
    """Entries in the stream (``entries`` messages that answer no want)."""
    return sum(len(m["e"]) for m in msgs if m["t"] == "entries" and not m.get("r"))


def _half_streamed(
    server: MemoryView, newcomer: MemoryView, w: World, version: int
) -> tuple[SyncSession, Iterator[dict[str, Any]], SyncSession]:
    """The newcomer's session with the server, up to the point where the
    server has streamed two frames of entries (delivered): returns the
    server's session, the rest of its stream (not yet sent), and the
    newcomer's session."""
    ini = SyncSession(newcomer, w.community, initiator=True, batch_entries=BATCH, version=version)
    res = SyncSession(server, w.community, initiator=False, batch_entries=BATCH, version=version)
    to_res = ini.start()
    stream: Iterator[dict[str, Any]] | None = None
    for _ in range(40):  # hello, heads or a few recon rounds
        replies: list[dict[str, Any]] = []
        for msg in to_res:
            out = res.receive(decode_message(encode_message(msg)))
            head = next(out, None)
            if res.streaming:  # the stream began: keep the rest unsent
                stream = itertools.chain([head] if head else [], out)
                break
            replies += [head, *out] if head else []
        if stream is not None:
            break
        to_res = [r for m in replies for r in ini.receive(decode_message(encode_message(m)))]
    assert stream is not None
    for _ in range(2):
        msg = next(stream)
        assert msg["t"] == "entries"
        assert not list(ini.receive(decode_message(encode_message(msg))))
    return res, stream, ini


@pytest.mark.parametrize("version", [2, 3])
def test_a_second_session_skips_what_the_first_is_streaming(version: int) -> None:
    w, server = _community()
    newcomer = _newcomer(w)
    total = MEMBERS * (1 + OFFERS)
    first, rest, theirs = _half_streamed(server, newcomer, w, version)
    assert first.streaming  # per author, what its stream sends
    assert sum(h.seq for _a, h in newcomer.ledger.backend.heads(w.community)) == 2 * BATCH
    new = w.offer(key(0), "made after the first session began")

    # The server opens a second session while the first streams (its sync
    # interval came): it streams only what is not on its way already.
    def elsewhere() -> list[Streamed]:
        return [first.streaming]

    second = SyncSession(
        server,
        w.community,
        initiator=True,
        batch_entries=BATCH,
        version=version,
        elsewhere=elsewhere,
    )
    answer = SyncSession(newcomer, w.community, initiator=False, version=version)
    sent = _run(second, answer)
    assert _streamed(sent) == 1  # the new entry alone
    assert not second.streaming  # its stream is over
    # The first stream then brings everything else.
    _run(theirs, first, rest)
    assert first.stats.sent == total
    heads = dict(newcomer.ledger.backend.heads(w.community))
    assert heads == dict(server.ledger.backend.heads(w.community))
    assert heads[new.author].id == new.id
    assert newcomer.ledger.backend.waiting_count() == 0  # type: ignore[attr-defined]


def test_streams_elsewhere_are_followed_from_one_to_the_next() -> None:
    """Two other streams, one taking up where the other ends (a third
    session): together they cover the log, and nothing of it is sent."""
    w, server = _community()
    newcomer = _newcomer(w)
    author = key(0).public
    length = 1 + OFFERS

    def elsewhere() -> list[Streamed]:
        return [{author: (5, length)}, {author: (0, 5)}]

    second = SyncSession(server, w.community, initiator=True, elsewhere=elsewhere)
    answer = SyncSession(newcomer, w.community, initiator=False)
    sent = _run(second, answer)
    assert _streamed(sent) == (MEMBERS - 1) * length  # the other members' logs
    assert author not in dict(newcomer.ledger.backend.heads(w.community))
