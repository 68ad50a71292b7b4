"""Range-based reconciliation of sync records (troc.protocol.recon, docs/sync.md
"Version 3"): the wire format against golden bytes, every bound, and a
property: two random record sets always end knowing exactly which authors
differ and the other's record of each."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from troc.crypto.sign import MemberId, SigningKey
from troc.errors import RemoteProtocolError
from troc.protocol import recon
from troc.protocol.recon import FP_SIZE, RECON_LEAF, TOP, Reconciler, Record
from troc.protocol.sync_wire import MAX_FRAME, decode_message, encode_message

from ..unit.test_spec import number, table

_KEYS: dict[int, MemberId] = {}


def key(i: int) -> MemberId:
    if i not in _KEYS:
        _KEYS[i] = SigningKey(hashlib.sha256(b"recon test %d" % i).digest()).public
    return _KEYS[i]


def record(i: int, seq: int = 1, final: int = 0, frozen: int = 0) -> Record:
    eid = hashlib.sha256(b"entry %d %d" % (i, seq)).digest() if seq else b""
    return Record(key(i), seq, eid, final, frozen)


def run(
    mine: list[Record], theirs: list[Record], max_messages: int = 100
) -> tuple[Reconciler, Reconciler, list[bytes]]:
    """Reconcile ``mine`` (the initiator's) with ``theirs`` (the responder's,
    which opens), every message through the real codec."""
    ini, res = Reconciler(mine), Reconciler(theirs)
    frames = [encode_message(res.opening())]
    side, other = ini, res
    while len(frames) < max_messages:
        reply = side.receive(decode_message(frames[-1]))
        if reply is None:
            break
        frames.append(encode_message(reply))
        side, other = other, side
    assert ini.done
    assert res.done
    return ini, res, frames


def expected(mine: list[Record], theirs: list[Record]) -> dict[MemberId, Record | None]:
    """For the side holding ``mine``: each differing author, the peer's record."""
    a = {r.author: r for r in mine}
    b = {r.author: r for r in theirs}
    return {m: b.get(m) for m in a.keys() | b.keys() if a.get(m) != b.get(m)}


# -- the spec --------------------------------------------------------------------


def test_limits_table_of_docs_sync_md_is_the_code() -> None:
    rows = table("sync.md", "### Limits of version 3")
    assert len(rows) >= 6
    names = {name.strip("`"): number(value) for _what, value, name in rows if name != "constant"}
    assert names == {
        "RECON_BRANCHES": recon.RECON_BRANCHES,
        "RECON_LEAF": recon.RECON_LEAF,
        "MAX_RANGES": recon.MAX_RANGES,
        "MAX_RECORDS": recon.MAX_RECORDS,
        "MAX_RECON_ROUNDS": recon.MAX_RECON_ROUNDS,
        "FP_SIZE": recon.FP_SIZE,
    }


def test_bounded_messages_fit_a_frame() -> None:
    """A message at every bound (longest bounds, largest records) encodes
    within a frame and the frame decoder's limits."""
    bound = b"\xfe" * 33
    big = Record(key(1), 2**62, b"\1" * 32, 2**62, 2**62)
    msg: dict[str, Any] = {
        "t": "recon",
        "r": [[bound], [bound, b"\0" * FP_SIZE]] * (recon.MAX_RANGES // 2)
        + [[bound, 0, 0]] * (recon.MAX_RANGES // 2)
        + [[bound]],
        "h": [big.to_wire()] * (recon.MAX_RECORDS // 2),
        "x": [key(1)] * (recon.MAX_RECORDS // 2),
    }
    data = encode_message(msg)
    assert len(data) < MAX_FRAME
    assert decode_message(data) == msg


# -- golden bytes ------------------------------------------------------------------


def test_item_hash_and_fingerprint_vectors() -> None:
    """The hashes as docs/sync.md defines them, and their golden values."""
    r = Record(MemberId(bytes(range(32))), 7, b"\xab" * 32, 5, 0)
    spec = hashlib.sha256(
        b"troc/recon/item/v1"
        + bytes(range(32))
        + (7).to_bytes(8, "big")
        + b"\xab" * 32
        + (5).to_bytes(8, "big")
        + (0).to_bytes(8, "big")
    ).digest()
    assert r.item_hash() == spec
    assert spec.hex() == "7e79e4a39bf5dce21c02a54492fb0f498e3534eda8af943f4551388921013226"
    # An author frozen at seq 1 reports no head: id empty, hashed as zeros.
    frozen = Record(MemberId(b"\xcc" * 32), 0, b"", 0, 1)
    assert (
        frozen.item_hash()
        == hashlib.sha256(
            b"troc/recon/item/v1"
            + b"\xcc" * 32
            + bytes(8)
            + bytes(32)
            + bytes(8)
            + (1).to_bytes(8, "big")
        ).digest()
    )
    rec = Reconciler([frozen, r])
    both = hashlib.sha256(
        b"troc/recon/fp/v1" + (2).to_bytes(4, "big") + r.item_hash() + frozen.item_hash()
    ).digest()[:FP_SIZE]
    assert rec.fingerprint(b"", TOP) == both
    assert (
        rec.fingerprint(b"\x01", b"\xcd")
        == hashlib.sha256(
            b"troc/recon/fp/v1" + (1).to_bytes(4, "big") + frozen.item_hash()
        ).digest()[:FP_SIZE]
    )
    assert rec.fingerprint(b"\xcd", TOP).hex() == "9d44db6efba7b41916498ed42ed09ca7"  # empty


def test_golden_session_one_author_differs() -> None:
    """Twelve authors, one of which has moved on at the responder: the whole
    exchange, byte for byte."""
    mine = [record(i) for i in range(12)]
    theirs = [*mine[:5], record(5, seq=2), *mine[6:]]
    ini, res, frames = run(mine, theirs)
    # The responder's three fingerprints, the initiator's (its three
    # records in the unequal range), the responder's diff of one.
    assert [hashlib.sha256(f).hexdigest()[:16] for f in frames] == [
        "1a9a7301a35396aa",
        "73d8781686a44d29",
        "7840b54d7a2f3bca",
    ]
    first = decode_message(frames[0])
    assert [len(r) for r in first["r"]] == [2, 2, 2]
    assert first["r"][-1][0] == TOP
    assert ini.peer == {key(5): record(5, seq=2)}
    assert res.peer == {key(5): record(5)}


def test_small_sets_are_listed_at_once() -> None:
    """A responder with at most RECON_LEAF records lists them in its first
    message; the initiator's diff ends it: two messages."""
    mine = [record(1), record(2), record(3)]
    theirs = [record(1), record(2, seq=3), record(4)]
    ini, res, frames = run(mine, theirs)
    first, second = (decode_message(f) for f in frames)
    assert first == {
        "t": "recon",
        "r": [[TOP, 3]],
        "h": [r.to_wire() for r in sorted(theirs, key=lambda r: r.author)],
    }
    assert second["r"] == [[TOP, 2, 1]]
    assert len(frames) == 2
    assert ini.peer == expected(mine, theirs)
    assert res.peer == expected(theirs, mine)


# -- the property ------------------------------------------------------------------

records_strategy = st.dictionaries(
    st.integers(0, 80),
    st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 2)),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(common=records_strategy, a_only=records_strategy, b_only=records_strategy)
def test_random_sets_reconcile_exactly(
    common: dict[int, tuple[int, int, int]],
    a_only: dict[int, tuple[int, int, int]],
    b_only: dict[int, tuple[int, int, int]],
) -> None:
    def build(parts: dict[int, tuple[int, int, int]]) -> dict[int, Record]:
        return {i: record(i, seq, final, frozen) for i, (seq, final, frozen) in parts.items()}

    a = list({**build(common), **build(a_only)}.values())
    b = list({**build(common), **build(b_only)}.values())
    ini, res, frames = run(a, b)
    assert ini.peer == expected(a, b)
    assert res.peer == expected(b, a)
    assert len(frames) <= recon.MAX_RECON_ROUNDS


@settings(max_examples=60, deadline=None)
@example(  # a split took the last range; a leaf answered after it passed the bound
    common={0: (0, 0, 0), 1: (0, 0, 0), 5: (0, 0, 0), 6: (0, 0, 0), 7: (0, 0, 0), 8: (0, 0, 0)}
    | {9: (0, 0, 0)},
    a_only={3: (0, 0, 0)},
    b_only={0: (0, 0, 0), 4: (0, 0, 0), 12: (0, 0, 0), 17: (0, 0, 0), 24: (0, 0, 0)}
    | {2: (0, 0, 0)},
    max_ranges=3,
    max_records=5,
)
@given(
    common=records_strategy,
    a_only=records_strategy,
    b_only=records_strategy,
    max_ranges=st.sampled_from([3, 8, 40]),
    max_records=st.sampled_from([5, 9, 30]),
)
def test_tight_bounds_never_mislead(
    common: dict[int, tuple[int, int, int]],
    a_only: dict[int, tuple[int, int, int]],
    b_only: dict[int, tuple[int, int, int]],
    max_ranges: int,
    max_records: int,
) -> None:
    """With bounds far below the real ones, messages keep to them, and what
    a side learns is right (it may learn less: the rest waits a session)."""

    def build(parts: dict[int, tuple[int, int, int]]) -> dict[int, Record]:
        return {i: record(i, seq, final, frozen) for i, (seq, final, frozen) in parts.items()}

    a = list({**build(common), **build(a_only)}.values())
    b = list({**build(common), **build(b_only)}.values())
    saved = recon.MAX_RANGES, recon.MAX_RECORDS
    recon.MAX_RANGES, recon.MAX_RECORDS = max_ranges, max_records
    try:
        ini, res, frames = run(a, b)
    finally:
        recon.MAX_RANGES, recon.MAX_RECORDS = saved
    for side, truth in ((ini, expected(a, b)), (res, expected(b, a))):
        assert all(side.peer[m] == truth[m] for m in side.peer)
    for f in frames:
        m = decode_message(f)
        assert sum(1 for r in m["r"] if len(r) > 1) <= max_ranges
        assert len(m.get("h", [])) + len(m.get("x", [])) <= max_records


def test_one_differing_author_in_ten_thousand() -> None:
    """Five messages, under 1.5 KB (issue 16's aim: under 2 KB for the session)."""
    rng = random.Random(2)
    recs = [
        Record(SigningKey(rng.randbytes(32)).public, 1, rng.randbytes(32)) for _ in range(10_000)
    ]
    moved = recs[4321]
    theirs = [*recs[:4321], Record(moved.author, 2, rng.randbytes(32)), *recs[4322:]]
    ini, res, frames = run(recs, theirs)
    assert len(frames) == 5
    assert sum(len(f) for f in frames) < 1500
    assert set(ini.peer) == set(res.peer) == {moved.author}


# -- bounds on what a message may be -------------------------------------------------


def _monkey(monkeypatch: pytest.MonkeyPatch, **values: int) -> None:
    for name, value in values.items():
        monkeypatch.setattr(recon, name, value)


def test_large_differences_are_cut_to_the_record_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """A side with everything to tell answers what fits (MAX_RECORDS) and the
    fingerprint of the rest; the peer lists the rest again."""
    _monkey(monkeypatch, MAX_RECORDS=7)
    theirs = [record(i) for i in range(50)]
    ini, res, frames = run([], theirs)
    for f in frames:
        m = decode_message(f)
        assert len(m.get("h", [])) + len(m.get("x", [])) <= 7
    assert ini.peer == expected([], theirs)
    assert res.peer == expected(theirs, [])


def test_range_bound_defers_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    _monkey(monkeypatch, MAX_RANGES=5)
    a = [record(i) for i in range(200)]
    b = [record(i, seq=2 if i % 40 == 0 else 1) for i in range(200)]
    ini, _res, frames = run(a, b)
    for f in frames:
        assert sum(1 for r in decode_message(f)["r"] if len(r) > 1) <= 5
    assert ini.peer == expected(a, b)


def test_last_message_opens_nothing_and_the_rest_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """At MAX_RECON_ROUNDS a side stops opening ranges: reconciliation ends
    with part of the difference found (the next session finds the rest)."""
    _monkey(monkeypatch, MAX_RECON_ROUNDS=2)
    a = [record(i) for i in range(300)]
    b = [record(i, seq=2 if i % 2 == 0 else 1) for i in range(300)]
    ini, _res, frames = run(a, b)
    assert len(frames) <= 4
    found = expected(a, b)
    assert set(ini.peer) <= set(found)
    assert all(ini.peer[m] == found[m] for m in ini.peer)


def _first(theirs: list[Record]) -> tuple[Reconciler, dict[str, Any]]:
    """An initiator with three records, and the message a responder holding
    ``theirs`` opens with."""
    return Reconciler([record(1), record(2), record(3)]), Reconciler(theirs).opening()


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda m: {**m, "r": "x"}, "recon"),
        (lambda m: {**m, "r": [[]]}, "recon range"),
        (lambda m: {**m, "r": [[b"\x10"], [b"\x05", 0]]}, "recon bound"),
        (lambda m: {**m, "r": [[b"\x00" * 34, 0]]}, "recon bound"),
        (lambda m: {**m, "r": [[TOP, b"short"]]}, "fingerprint"),
        (lambda m: {**m, "r": [[TOP, RECON_LEAF + 1]]}, "list"),
        (lambda m: {**m, "r": [[TOP, 2]], "h": [record(2).to_wire(), record(1).to_wire()]}, None),
        (lambda m: {**m, "r": [[TOP, 0]], "h": [record(1).to_wire()]}, "records that no range"),
        (lambda m: {**m, "r": [[TOP, 1]], "h": [[b"\0" * 32, 1, b"\1" * 32, 0, 0]]}, "record"),
        (lambda m: {**m, "r": [[TOP, 1]], "h": [[key(1), 1, b"", 0, 0]]}, "record"),
        (lambda m: {**m, "r": [[TOP, 1]], "h": [[key(1), 0, b"\1" * 32, 0, 0]]}, "record"),
        (lambda m: {**m, "r": [[TOP, 1]], "h": [[key(1), True, b"\1" * 32, 0, 0]]}, "record"),
        (lambda m: {**m, "r": [[TOP, 1]], "h": [[key(1), 1, b"\1" * 32, -1, 0]]}, "record"),
        (lambda m: {**m, "r": [[TOP, 0, 0]]}, "a diff of a range we did not list"),
    ],
)
def test_bad_first_messages_are_refused(change: Any, why: str | None) -> None:
    ini, opening = _first([record(i) for i in range(3)])
    with pytest.raises(RemoteProtocolError, match=why or "order"):
        ini.receive(change(opening))


def test_a_range_we_did_not_open_is_refused() -> None:
    res = Reconciler([record(i) for i in range(40)])
    opened = [r[0] for r in res.opening()["r"]]  # ten fingerprints
    assert len(opened) == 10
    # One range over the first two of ours.
    straddle = {"t": "recon", "r": [[opened[1], b"\0" * FP_SIZE]]}
    with pytest.raises(RemoteProtocolError, match="did not open"):
        res.receive(straddle)


def test_lacks_must_be_authors_we_listed() -> None:
    res = Reconciler([record(5)])
    res.opening()  # a list of its one record
    bad = {"t": "recon", "r": [[TOP, 0, 1]], "x": [key(7)]}
    with pytest.raises(RemoteProtocolError, match="lacks"):
        res.receive(bad)


def test_too_many_records_or_ranges_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _monkey(monkeypatch, MAX_RECORDS=2, MAX_RANGES=2)
    ini = Reconciler([record(1)])
    with pytest.raises(RemoteProtocolError, match="too many records"):
        ini.receive({"t": "recon", "r": [[TOP, 3]], "h": [record(i).to_wire() for i in range(3)]})
    ini = Reconciler([record(1)])
    fp = b"\0" * FP_SIZE
    with pytest.raises(RemoteProtocolError, match="too many ranges"):
        ini.receive({"t": "recon", "r": [[b"\x10", fp], [b"\x20", fp], [TOP, fp]]})


def test_rounds_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer's message past MAX_RECON_ROUNDS, or its last one opening a
    range, is out of protocol; so is a recon after the end."""
    _monkey(monkeypatch, MAX_RECON_ROUNDS=1)
    ini = Reconciler([record(1)])
    with pytest.raises(RemoteProtocolError, match="last recon message"):
        ini.receive({"t": "recon", "r": [[TOP, b"\0" * FP_SIZE]]})
    ini = Reconciler([record(1)])
    assert ini.receive({"t": "recon", "r": []}) is None
    assert ini.done
    with pytest.raises(RemoteProtocolError, match="after the end"):
        ini.receive({"t": "recon", "r": []})
