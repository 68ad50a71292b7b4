"""``LocalNode.ingesting``: what sync stores of a run of ``certs`` and
``entries`` frames is one transaction, announced once it commits.

* the ingests of a block (certificates, then entries that need them) make
  one commit, their entries announced after it, in order, and the verdicts
  are those of the same ingests each in its own transaction;
* a block that fails stores nothing and announces nothing.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import T0, certify, key, witnessed_world
from troc.node.local import LocalNode, open_local_node
from troc.protocol.entry import Entry
from troc.protocol.ledger import Status

A, B = key(1), key(2)


class Boom(Exception):
    pass


def _history() -> tuple[Entry, list[Entry], list[bytes]]:
    """Joins, a payment and its accept; the payment's certificate (the
    accept waits for it without it)."""
    w = witnessed_world()
    j1, j2 = w.join(A), w.join(B)
    t = w.pay(A, B, 30)
    acc = w.accept(B, t)
    return w.genesis, [j1, j2, t, acc], [certify(t)]


@contextmanager
def _node() -> Iterator[tuple[LocalNode, list[Entry], list[str]]]:
    """A node following the community, what its listeners were told, and
    each commit and announcement in order."""
    genesis, _entries, _certs = _history()
    with (
        tempfile.TemporaryDirectory() as tmp,
        open_local_node(Path(tmp), None, lambda: T0, member=B.public) as node,
    ):
        node.ingest_many([genesis.wire])
        told: list[Entry] = []
        events: list[str] = []
        node.listeners.append(lambda e, _own: (told.append(e), events.append("told")))
        transaction: Callable[..., Any] = node.store.transaction

        @contextmanager
        def counted(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with transaction(*args, **kwargs) as store:
                yield store
            events.append("commit")

        node.store.transaction = counted  # type: ignore[method-assign]
        yield node, told, events


def test_a_block_is_one_commit_announced_after_it() -> None:
    _genesis, entries, certs = _history()
    with _node() as (node, told, events):
        with node.ingesting():
            taken = node.ingest_certificates(certs)
            outcomes = node.ingest_many([e.wire for e in entries])
            assert told == []  # nothing committed, nothing said
            assert events == []
        assert events == ["commit"] + ["told"] * len(entries)
        assert [e.id for e in told] == [e.id for e in entries]
        assert [o.status for o in taken] == [Status.ACCEPTED]
        assert [o.status for o in outcomes] == [Status.ACCEPTED] * len(entries)
        # The accept was stored, not parked: its transfer's certificate came first.
        assert node.ledger.backend.waiting_count() == 0  # type: ignore[attr-defined]
    # The same ingests each in a transaction of its own: the same verdicts.
    with _node() as (node, told, events):
        alone = node.ingest_certificates(certs)
        each = node.ingest_many([e.wire for e in entries])
        assert events.count("commit") == 2
        assert [(o.status, o.reason) for o in alone + each] == [
            (o.status, o.reason) for o in taken + outcomes
        ]


def test_a_block_that_fails_stores_and_announces_nothing() -> None:
    genesis, entries, certs = _history()
    with _node() as (node, told, events):

        def run_then_fail() -> None:
            with node.ingesting():
                node.ingest_certificates(certs)
                node.ingest_many([e.wire for e in entries])
                raise Boom

        with pytest.raises(Boom):
            run_then_fail()
        assert told == []
        assert events == []
        assert dict(node.store.heads(genesis.id)) == {}  # type: ignore[arg-type]
        assert node.store.certificate(genesis.id, A.public, 3) is None  # type: ignore[arg-type]
        # And the node goes on: the same run stored afterwards.
        node.ingest_certificates(certs)
        assert [o.status for o in node.ingest_many([e.wire for e in entries])] == [
            Status.ACCEPTED
        ] * len(entries)
