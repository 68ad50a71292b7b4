"""Certificates prepared by the verify workers (troc.node.verifier) get the
verdicts of one-by-one ingest.

Sync has a ``certs`` frame's certificates decoded and their signatures (q
votes, and time attestations) checked ahead, on the other cores, and stores
them with the entries read in a row in one transaction
(``LocalNode.ingesting``); a certificate that does not decode, or one of
whose signatures does not hold, goes in as bytes and is checked inline.
Entries and certificates of a witnessed community, good and bad (a forged
vote or time, too few votes, an outsider, another id at a held position,
another community, void, timed, garbage), arrive in any order, cut into
runs: every verdict (status, reason and its words, what it released), and
the state reached, are those of one-by-one ingest as the node did it before
(``_one_by_one``), on the in-memory ledger and through the node's own path
on SQLite with the signatures checked in child processes and in threads.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import (
    T0,
    WITNESS_KEYS,
    certify,
    fresh_ledger,
    key,
    void_certify,
    witnessed_world,
)
from troc.errors import CodecError
from troc.node import verifier as verifier_module
from troc.node.local import open_local_node
from troc.node.verifier import Verifier, prepare_certificates
from troc.protocol.entry import Entry, EntryId, Ref
from troc.protocol.ledger import CertificateOutcome, Ledger, Outcome, Status
from troc.protocol.vote import (
    Certificate,
    TimeAttestation,
    Vote,
    WitnessRules,
    decode_any_certificate,
)

EXAMPLES = settings().max_examples
A, B = key(1), key(2)


def _flip(sig: bytes) -> bytes:
    return sig[:-1] + bytes([sig[-1] ^ 0x01])


def _timed(entry: Entry, signers: list[Any] = WITNESS_KEYS[:3]) -> Certificate:
    assert entry.community is not None
    c, ref = entry.community, entry.ref
    return Certificate.from_votes(
        (Vote.sign(k, c, ref) for k in signers),
        (TimeAttestation.sign(k, c, ref, T0 + 7) for k in signers),
    )


@cache
def scenario() -> tuple[Entry, list[Entry], list[bytes]]:
    """A witnessed history (a payment accepted, one declined and reclaimed)
    and certificates of it, valid and not."""
    w = witnessed_world()
    j1, j2 = w.join(A), w.join(B)
    t = w.pay(A, B, 30)
    acc = w.accept(B, t)
    t2 = w.pay(B, A, 5)
    d = w.decline(A, t2)
    r = w.reclaim(B, d)
    entries = [j1, j2, t, acc, t2, d, r]
    certs = [certify(e) for e in entries]
    good = decode_any_certificate(certify(t))
    forged_vote = dataclasses.replace(
        good, votes=((good.votes[0][0], _flip(good.votes[0][1])), *good.votes[1:])
    )
    timed = _timed(t2)
    w0, t0, s0 = timed.times[1]
    forged_time = dataclasses.replace(
        timed, times=(timed.times[0], (w0, t0, _flip(s0)), *timed.times[2:])
    )
    other_times = dataclasses.replace(timed, times=_timed(t2, WITNESS_KEYS[1:4]).times)
    assert t.community is not None
    elsewhere = Ref(A.public, t.seq, EntryId(b"\x07" * 32))
    other_id = Certificate.from_votes(
        Vote.sign(k, t.community, elsewhere) for k in WITNESS_KEYS[:3]
    )
    other_world = witnessed_world(credit_limit=50)
    certs += [
        certify(acc, WITNESS_KEYS[1:4]),  # another valid certificate of the same entry
        void_certify(acc),  # the same id, the other kind
        void_certify(d),
        timed.encode(),
        forged_vote.encode(),
        forged_time.encode(),
        other_times.encode(),
        certify(t2, WITNESS_KEYS[:2]),  # too few votes
        certify(d, [*WITNESS_KEYS[:2], key(999)]),  # an outsider's vote
        other_id.encode(),  # another id at a position: a witness fault
        certify(other_world.join(A)),  # another community
        b"\x95\x01\x02",  # does not decode as a certificate
        certify(r)[:-3],  # cut short
    ]
    return w.genesis, entries, certs


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[tuple[str, bytes]], list[list[tuple[str, bytes]]]]:
    """Entries and certificates in some order (some certificates twice, some
    never), cut into runs."""
    _genesis, entries, certs = scenario()
    chosen = draw(st.lists(st.sampled_from(certs), max_size=2 * len(certs)))
    items = draw(
        st.permutations([("entry", e.wire) for e in entries] + [("cert", c) for c in chosen])
    )
    cuts = sorted(draw(st.lists(st.integers(0, len(items)), max_size=5)))
    parts = [items[a:b] for a, b in zip([0, *cuts], [*cuts, len(items)], strict=True)]
    return items, [p for p in parts if p]


def _rules() -> WitnessRules:
    genesis, _entries, _certs = scenario()
    return WitnessRules.from_genesis(genesis)


def _verdict(o: Outcome | CertificateOutcome) -> tuple[Any, ...]:
    released = tuple(e.id for e in o.released)
    dropped = tuple(_verdict(d) for d in o.dropped)
    if isinstance(o, Outcome):
        entry = None if o.entry is None else o.entry.id
        return (o.status, o.reason, entry, o.missing, o.missing_final, released, dropped)
    cert = None if o.certificate is None else o.certificate.encode()
    return (
        o.status,
        o.reason,
        o.detail,
        cert,
        o.final,
        released,
        dropped,
        o.fault,
        o.conflict,
    )


def _old_node_way(ledger: Ledger, data: bytes) -> CertificateOutcome:
    """What LocalNode did with a certificate before it was prepared: a
    replay of one held (that id at that position, either kind) is a
    duplicate, unchecked; anything else is the ledger's to check."""
    try:
        cert = decode_any_certificate(data)
    except CodecError:
        return ledger.ingest_certificate(data, T0)
    held = ledger.backend.certificate(cert.community, cert.author, cert.seq)
    if held is not None and held[0] == cert.id:
        return CertificateOutcome(Status.DUPLICATE, cert)
    return ledger.ingest_certificate(data, T0)


def _one_by_one(items: list[tuple[str, bytes]]) -> tuple[Ledger, list[tuple[Any, ...]]]:
    genesis, _entries, _certs = scenario()
    ledger = fresh_ledger(genesis)
    got = [
        _verdict(ledger.ingest(data, T0) if kind == "entry" else _old_node_way(ledger, data))
        for kind, data in items
    ]
    return ledger, got


def _state(ledger: Ledger) -> tuple[Any, ...]:
    genesis, _entries, _certs = scenario()
    c = genesis.id
    backend = ledger.backend
    return (
        {a: (h.seq, h.id, h.final_seq, h.final_id) for a, h in backend.heads(c)},  # type: ignore[arg-type]
        dict(ledger.balances(c)),  # type: ignore[arg-type]
        backend.waiting_count(),  # type: ignore[attr-defined]
    )


def _groups(run: list[tuple[str, bytes]]) -> Iterator[tuple[str, list[bytes]]]:
    """The run as frames: consecutive items of one kind together."""
    kind, group = run[0][0], [run[0][1]]
    for k, data in run[1:]:
        if k != kind:
            yield kind, group
            kind, group = k, []
        group.append(data)
    yield kind, group


@settings(max_examples=max(10, EXAMPLES // 2))
@given(runs())
def test_prepared_certificates_get_one_by_one_verdicts_in_memory(drawn: Any) -> None:
    items, parts = drawn
    reference, expected = _one_by_one(items)
    genesis, _entries, _certs = scenario()
    ledger = fresh_ledger(genesis)
    got = []
    for run in parts:
        for kind, group in _groups(run):
            if kind == "entry":
                got += [_verdict(ledger.ingest(w, T0)) for w in group]
                continue
            for item in prepare_certificates(group, _rules()):
                # What LocalNode.ingest_certificates does with each.
                got.append(_verdict(ledger.ingest_certificate(item, T0, replay_unchecked=True)))
    assert got == expected
    assert _state(ledger) == _state(reference)


@settings(max_examples=max(10, EXAMPLES // 4))
@given(drawn=runs())
def test_prepared_runs_through_the_node_get_one_by_one_verdicts_on_sqlite(
    drawn: Any, verifier: Verifier
) -> None:
    items, parts = drawn
    reference, expected = _one_by_one(items)
    genesis, _entries, _certs = scenario()
    with (
        tempfile.TemporaryDirectory() as tmp,
        open_local_node(Path(tmp), None, lambda: T0, member=A.public) as node,
    ):
        node.ingest_many([genesis.wire])
        got = []
        for run in parts:
            frames = list(_groups(run))

            async def prepare_all(frames: list[tuple[str, list[bytes]]] = frames) -> list[Any]:
                submitted = [
                    verifier.submit(g)
                    if k == "entry"
                    else verifier.submit_certificates(g, _rules())
                    for k, g in frames
                ]
                return [await p.result() for p in submitted]

            prepared = trio.run(prepare_all)
            # A run as sync stores it: its frames in order, one commit.
            with node.ingesting():
                for (kind, _group), batch in zip(frames, prepared, strict=True):
                    outcomes = (
                        node.ingest_many(batch)
                        if kind == "entry"
                        else node.ingest_certificates(batch)
                    )
                    got += [_verdict(o) for o in outcomes]
        assert got == expected
        assert _state(node.ledger) == _state(reference)


def test_a_certificate_is_prepared_only_if_every_signature_holds() -> None:
    """Each bad signature, vote or time, sends its certificate in as bytes;
    a good one comes back decoded, timed or void alike."""
    _genesis, entries, _certs = scenario()
    good = [certify(entries[2]), _timed(entries[4]).encode(), void_certify(entries[3])]
    timed = _timed(entries[4])
    w0, t0, s0 = timed.times[0]
    bad = [
        dataclasses.replace(timed, times=((w0, t0, _flip(s0)), *timed.times[1:])).encode(),
        dataclasses.replace(
            timed, votes=(*timed.votes[:2], (timed.votes[2][0], _flip(timed.votes[2][1])))
        ).encode(),
        b"\xc0",
    ]
    for mode in ("processes", "threads"):
        v = Verifier(workers=2, min_threaded=1, mode=mode)
        try:
            got = trio.run(v.submit_certificates(good + bad, _rules()).result)
        finally:
            v.close()
        assert [g.encode() for g in got[:3] if isinstance(g, Certificate)] == good
        assert got[3:] == bad
        assert got == prepare_certificates(good + bad, _rules())


def test_no_signature_is_checked_ahead_of_a_certificate_the_rules_refuse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One with an outsider's vote (here 60 outsiders), too few votes,
    times of other witnesses, or of another community, is refused by the
    ledger before its signatures: the workers do not check them either, so
    a hostile frame costs them no more than the witnesses' own could."""
    _genesis, entries, certs = scenario()
    t = entries[2]
    many = certify(t, [*WITNESS_KEYS[:3], *(key(1000 + i) for i in range(60))])
    # Times of other witnesses, too few votes, an outsider; another
    # community, garbage, cut short (the 4th from the end, another id at a
    # held position, verifies: the ledger finds the conflict after).
    refused = [many, *certs[-7:-4], *certs[-3:]]
    checked: list[Any] = []
    real = verifier_module.check
    monkeypatch.setattr(verifier_module, "check", lambda item: checked.append(item) or real(item))
    got = prepare_certificates(refused, _rules())
    assert checked == []
    assert [g if isinstance(g, bytes) else g.encode() for g in got] == refused
