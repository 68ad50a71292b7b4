"""The race certificates a sender streams ahead of its entries (docs/sync.md,
"Certificates"), asked of the node's own view (``_StoreView.race_certificate``).

Whether an accept races depends on its transfer: one that names no expiry,
where the rules give none, cannot be taken back. The ledger reads and
decodes the transfer to know; a session that streamed the transfer already
knows, and must answer as the ledger would, in a community whose rules give
every transfer an expiry too.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import T0, certify, key, void_certify, witnessed_world
from troc.node.local import LocalNode, open_local_node
from troc.node.sync import _StoreView
from troc.protocol.entry import Entry
from troc.protocol.ledger import Status
from troc.protocol.sync_view import race_certificate_of

A, B = key(1), key(2)


def _history(**rules: Any) -> tuple[Entry, list[Entry], list[bytes]]:
    """Joins; a lasting payment and its accept; an expiring one and its
    accept; a third, expiring, whose accept lost its race (void). Every
    entry certified (the void accept by a void certificate)."""
    w = witnessed_world(credit_limit=100, **rules)
    log = [w.join(A), w.join(B)]
    lasting = w.pay(A, B, 5)
    log += [lasting, w.accept(B, lasting)]
    expiring = w.pay(A, B, 6, expires_ms=T0 + 3_600_000_000)
    log += [expiring, w.accept(B, expiring)]
    third = w.pay(A, B, 7, expires_ms=T0 + 3_600_000_000)
    void = w.accept(B, third)
    log += [third, void]
    certs = [void_certify(e) if e is void else certify(e) for e in log]
    return w.genesis, log, certs


@contextmanager
def _node(genesis: Entry, log: list[Entry], certs: list[bytes]) -> Iterator[LocalNode]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        open_local_node(Path(tmp), None, lambda: T0 + 10**6, member=B.public) as node,
    ):
        node.ingest_many([genesis.wire])
        node.ingest_certificates(certs)
        outcomes = node.ingest_many([e.wire for e in log])
        assert all(o.status is Status.ACCEPTED for o in outcomes)
        yield node


@pytest.mark.parametrize("rules", [{}, {"transfer_expiry_ms": 3_600_000}])
def test_a_session_streams_the_race_certificates_the_ledger_names(rules: dict[str, Any]) -> None:
    genesis, log, certs = _history(**rules)
    with _node(genesis, log, certs) as node:
        c = log[0].community
        assert c is not None
        expected = [race_certificate_of(node.ledger, c, e) for e in log]
        view = _StoreView(node, c)
        assert [view.race_certificate(c, e) for e in log] == expected
        accepts = expected[3::2]
        if rules:  # every transfer expires: every accept races
            assert all(a is not None for a in accepts)
        else:  # only the expiring one's and the void one's
            assert [a is not None for a in accepts] == [False, True, True]


def test_an_accept_of_a_streamed_lasting_transfer_reads_no_transfer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    genesis, log, certs = _history()
    with _node(genesis, log, certs) as node:
        c = log[0].community
        assert c is not None
        view = _StoreView(node, c)
        lasting, accept = log[2], log[3]
        assert view.race_certificate(c, lasting) is None

        def no_read(*_args: object) -> None:
            raise AssertionError("read the transfer")

        # Nor does the store remember it (it did, from storing it).
        node.store._lasting.clear()
        node.store._stored.clear()
        monkeypatch.setattr(node.store, "entry", no_read)
        assert view.race_certificate(c, accept) is None
        # A fresh session has not streamed it: it asks.
        with pytest.raises(AssertionError, match="read the transfer"):
            _StoreView(node, c).race_certificate(c, accept)
