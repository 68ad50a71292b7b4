"""Canonical msgpack and entry decoding: every rejection, with its exact reason.

Each test hands the decoder (and, where it is an entry, a ledger) bytes a
hostile or buggy peer could send, and checks the reason code: a
:class:`CodecError` reason from the decoder, the same :class:`Reason` in the
ledger's :class:`Outcome`.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests import strategies as tst
from tests.helpers import T0, World, key, pack_raw, pack_wide, resign, sign_fields, wrap
from troc.crypto.sign import Domain
from troc.errors import CodecError
from troc.protocol import codec
from troc.protocol.entry import MAX_AMOUNT, Entry, Genesis, Offer, Transfer
from troc.protocol.ledger import Reason, Status

# -- the codec alone -------------------------------------------------------------


def codec_reason(data: bytes) -> str:
    with pytest.raises(CodecError) as info:
        codec.unpack(data)
    return info.value.reason


@pytest.mark.parametrize(
    ("value", "encoding"),
    [
        (None, "c0"),
        (False, "c2"),
        (True, "c3"),
        (0, "00"),
        (127, "7f"),
        (128, "cc80"),
        (255, "ccff"),
        (256, "cd0100"),
        (65535, "cdffff"),
        (65536, "ce00010000"),
        (2**32 - 1, "ceffffffff"),
        (2**32, "cf0000000100000000"),
        (2**64 - 1, "cfffffffffffffffff"),
        (-1, "ff"),
        (-32, "e0"),
        (-33, "d0df"),
        (-128, "d080"),
        (-129, "d1ff7f"),
        (-32768, "d18000"),
        (-32769, "d2ffff7fff"),
        (-(2**31), "d280000000"),
        (-(2**31) - 1, "d3ffffffff7fffffff"),
        ("", "a0"),
        ("a" * 31, "bf" + "61" * 31),
        ("a" * 32, "d920" + "61" * 32),
        ("é", "a2c3a9"),
        (b"", "c400"),
        (b"\x01" * 256, "c50100" + "01" * 256),
        ([], "90"),
        ([0] * 15, "9f" + "00" * 15),
        ([0] * 16, "dc0010" + "00" * 16),
        ({}, "80"),
        ({"b": 1, "a": 2}, "82a16102a16201"),
        # Keys sort by code point, which is also UTF-8 byte order.
        ({"é": 0, "z": 0, "Z": 0, "": 0}, "84a000a15a00a17a00a2c3a900"),
    ],
)
def test_canonical_encoding(value: Any, encoding: str) -> None:
    data = bytes.fromhex(encoding)
    assert codec.pack(value) == data
    assert pack_wide(value, lambda: 0) == data
    assert codec.unpack(data) == value


@given(tst.msgpack_values())
def test_round_trip(value: Any) -> None:
    data = codec.pack(value)
    assert codec.unpack(data) == value
    assert codec.pack(codec.unpack(data)) == data
    # The reference writer in tests/helpers.py agrees with the codec.
    assert pack_wide(value, lambda: 0) == data


@given(tst.msgpack_values(), st.data())
def test_every_wider_header_is_non_canonical(value: Any, data: st.DataObject) -> None:
    """Any header wider than needed (non-minimal int, str8 for a short
    string, map16 for a small map …) is refused, wherever it occurs."""
    wide = pack_wide(value, lambda: data.draw(st.integers(0, 2)))
    if wide == codec.pack(value):
        return
    assert codec_reason(wide) == "non_canonical"


@given(
    st.dictionaries(st.text(max_size=4), st.integers(-(2**63), 2**63), min_size=2, max_size=6),
    st.randoms(),
)
def test_unsorted_map_keys_are_non_canonical(value: dict[str, int], rnd: Any) -> None:
    keys = list(value)
    rnd.shuffle(keys)
    data = pack_wide(value, lambda: 0, key_order=lambda _: keys)
    if keys == sorted(keys):
        assert codec.unpack(data) == value
    else:
        assert codec_reason(data) == "non_canonical"


@pytest.mark.parametrize(
    "data",
    [
        "cd0005",  # 5 as uint16
        "cc05",  # 5 as uint8
        "d005",  # 5 as int8: a non-negative value in a signed format
        "d3000000000000007f",  # 127 as int64
        "d0ff",  # -1 as int8
        "d90161",  # "a" as str8
        "c50001ff",  # b"\xff" as bin16
        "dc000100",  # [0] as array16
        "de0001a16100",  # {"a": 0} as map16
        "82a16100a16101",  # {"a": 0, "a": 1}: a duplicate key
        "c70005",  # ext8 of length 0: an extension type
    ],
)
def test_non_canonical(data: str) -> None:
    assert codec_reason(bytes.fromhex(data)) == "non_canonical"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("", "malformed"),  # nothing
        ("92c0", "malformed"),  # truncated array
        ("d9", "malformed"),  # truncated header
        ("c1", "malformed"),  # the reserved byte
        ("a1ff", "malformed"),  # invalid UTF-8
        ("d40100", "malformed"),  # fixext: extension types are refused
        ("d6ff00000000", "malformed"),  # the timestamp extension
        ("8101c0", "malformed"),  # an int map key
        ("81c0c0", "malformed"),  # a nil map key
        ("c0c0", "trailing_bytes"),
        ("9100c0", "trailing_bytes"),
        ("ca3f800000", "bad_type"),  # float 32
        ("cb3ff0000000000000", "bad_type"),  # float 64
        ("81c400c0", "bad_type"),  # a bin map key
    ],
)
def test_malformed_and_bad_types(data: str, reason: str) -> None:
    assert codec_reason(bytes.fromhex(data)) == reason


def test_unpack_takes_bytes_only() -> None:
    with pytest.raises(CodecError) as info:
        codec.unpack("c0")  # type: ignore[arg-type]
    assert info.value.reason == "bad_type"


def test_size_limit() -> None:
    limit = codec.ENTRY_LIMITS.max_size
    exactly = codec.pack(b"\x00" * (limit - 3))  # bin16 header: 3 bytes
    assert len(exactly) == limit
    assert codec.unpack(exactly) == b"\x00" * (limit - 3)
    assert codec_reason(exactly + b"\xc0") == "too_large"  # before any parsing
    assert codec_reason(b"\xc1" * (limit + 1)) == "too_large"
    with pytest.raises(CodecError, match="limit") as info:
        codec.pack(b"\x00" * limit)
    assert info.value.reason == "too_large"


def test_depth_limit() -> None:
    depth = codec.ENTRY_LIMITS.max_depth
    ok = b"\x91" * depth + b"\xc0"  # nil inside 6 arrays
    assert codec.pack(codec.unpack(ok)) == ok
    assert codec_reason(b"\x91" * (depth + 1) + b"\xc0") == "too_deep"
    assert codec_reason(b"\x81\xa1a" * (depth + 1) + b"\xc0") == "too_deep"
    # Deeper than msgpack's own stack (1024) fails in the parser, cheaply.
    assert codec_reason(b"\x91" * 5000 + b"\xc0") == "malformed"
    with pytest.raises(CodecError) as info:
        codec.pack([[[[[[[None]]]]]]])
    assert info.value.reason == "too_deep"


@pytest.mark.parametrize(
    "value",
    [
        "a" * (codec.ENTRY_LIMITS.max_str + 1),
        "é" * (codec.ENTRY_LIMITS.max_str // 2 + 1),  # the limit is in UTF-8 bytes
        [0] * (codec.ENTRY_LIMITS.max_array + 1),
        {str(i): 0 for i in range(codec.ENTRY_LIMITS.max_map + 1)},
    ],
    ids=["str", "str-bytes", "array", "map"],
)
def test_container_limits(value: Any) -> None:
    # Packing does not enforce these (the size limit aside); decoding does.
    assert codec_reason(codec.pack(value)) == "malformed"


def test_longest_string_decodes() -> None:
    """The string limit is in UTF-8 bytes, and the limit itself is taken: it
    is what the longest text field (4 000 code points) can take."""
    longest = "\U0001d11e" * (codec.ENTRY_LIMITS.max_str // 4)
    assert codec.unpack(codec.pack(longest)) == longest


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (1.5, "bad_type"),
        ({1: 2}, "bad_type"),
        ({b"k": 2}, "bad_type"),
        (object(), "bad_type"),
        (2**64, "bad_value"),
        (-(2**63) - 1, "bad_value"),
    ],
)
def test_pack_refuses(value: Any, reason: str) -> None:
    with pytest.raises(CodecError) as info:
        codec.pack(value)
    assert info.value.reason == reason


# -- entries: what the entry alone decides -----------------------------------------


@pytest.fixture
def world() -> World:
    w = World()
    w.join(key(0))
    w.join(key(1))
    return w


def rejected(w: World, wire: bytes, reason: Reason) -> None:
    """The decoder raises ``reason``; a ledger rejects with the same code."""
    with pytest.raises(CodecError) as info:
        Entry.decode(wire)
    assert info.value.reason == reason.value
    outcome = w.ingest(wire)
    assert outcome.status is Status.REJECTED
    assert outcome.reason is reason, outcome.detail


def offer_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"side": "offer", "title": "Bread", "description": "", "tags": []}
    body.update(changes)
    return body


def transfer_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"to": key(1).public, "amount": 5, "memo": ""}
    body.update(changes)
    return body


@given(tst.entries())
def test_entry_round_trip(entry: Entry) -> None:
    again = Entry.decode(entry.wire)
    assert again == entry
    assert codec.pack([entry.signed, entry.signature]) == entry.wire


def test_helpers_build_what_the_node_builds(world: World) -> None:
    made = world.create(key(0), Offer(side="offer", title="Bread"))
    raw = world.raw(key(0), "offer", offer_body())
    assert raw == made.wire
    assert world.ingest(raw).status is Status.ACCEPTED


def test_bad_signature(world: World) -> None:
    entry = world.create(key(0), Offer(side="offer", title="Bread"))
    signature = bytes([entry.signature[0] ^ 0x01]) + entry.signature[1:]
    rejected(world, wrap(entry.signed, signature), Reason.BAD_SIGNATURE)


def test_signature_by_another_key(world: World) -> None:
    entry = world.create(key(0), Offer(side="offer", title="Bread"))
    rejected(
        world, wrap(entry.signed, key(1).sign(Domain.ENTRY, entry.signed)), Reason.BAD_SIGNATURE
    )


@pytest.mark.parametrize("domain", [d for d in Domain if d is not Domain.ENTRY], ids=str)
def test_signature_for_another_purpose(world: World, domain: Domain) -> None:
    """The author's own signature over the very same bytes, made for a vote
    (or another purpose), is no entry signature."""
    entry = world.create(key(0), Offer(side="offer", title="Bread"))
    rejected(world, wrap(entry.signed, key(0).sign(domain, entry.signed)), Reason.BAD_SIGNATURE)


@pytest.mark.parametrize("size", [0, 63, 65])
def test_signature_of_wrong_size(world: World, size: int) -> None:
    entry = world.create(key(0), Offer(side="offer", title="Bread"))
    rejected(
        world, wrap(entry.signed, entry.signature[:size].ljust(size, b"\0")), Reason.BAD_SIGNATURE
    )


def test_non_canonical_body_keys(world: World) -> None:
    """Unsorted keys in the signed part, validly signed: still refused."""
    body = {"title": "Bread", "side": "offer", "tags": [], "description": ""}
    seq, prev = world.next_position(key(0).public)
    fields = [1, world.community, key(0).public, seq, prev, world.now, "offer", body]
    wire = sign_fields(key(0), fields, sort=False)
    rejected(world, wire, Reason.NON_CANONICAL)
    assert world.ingest(sign_fields(key(0), fields)).status is Status.ACCEPTED


def test_non_canonical_int_in_signed_part(world: World) -> None:
    entry = world.create(key(0), Offer(side="offer", title="Bread"))
    fields = msgpack.unpackb(entry.signed)
    # seq as uint16 instead of a fixint
    signed = pack_wide(fields, iter([0, 0, 0, 0, 1] + [0] * 50).__next__)
    assert signed != entry.signed
    assert msgpack.unpackb(signed) == fields
    rejected(world, wrap(signed, key(0).sign(Domain.ENTRY, signed)), Reason.NON_CANONICAL)


def test_non_canonical_outer_array(world: World) -> None:
    entry = world.create(key(0), Offer(side="offer", title="Bread"))
    rejected(world, b"\xdc\x00\x02" + entry.wire[1:], Reason.NON_CANONICAL)


def test_trailing_bytes(world: World) -> None:
    entry = world.create(key(0), Offer(side="offer", title="Bread"))
    rejected(world, entry.wire + b"\x00", Reason.TRAILING_BYTES)
    # … in the signed part too, validly signed.
    signed = entry.signed + b"\xc0"
    rejected(world, wrap(signed, key(0).sign(Domain.ENTRY, signed)), Reason.TRAILING_BYTES)


def test_truncated(world: World) -> None:
    entry = world.create(key(0), Offer(side="offer", title="Bread"))
    for cut in (1, 10, len(entry.wire) - 1):
        rejected(world, entry.wire[:cut], Reason.MALFORMED)


def test_oversized(world: World) -> None:
    limit = codec.ENTRY_LIMITS.max_size
    rejected(world, b"\x00" * (limit + 1), Reason.TOO_LARGE)
    # A validly signed entry over the limit: an offer with extra padding.
    body = offer_body(description="d" * 4000, tags=sorted(f"{i:02d}" + "t" * 38 for i in range(16)))
    big = world.raw(key(0), "offer", dict(body, **{f"x{i}": "p" * 4000 for i in range(3)}))
    assert len(big) > limit
    rejected(world, big, Reason.TOO_LARGE)


def test_deeply_nested(world: World) -> None:
    nested: Any = None
    for _ in range(8):
        nested = [nested]
    rejected(world, world.raw(key(0), "offer", offer_body(tags=nested)), Reason.TOO_DEEP)
    rejected(world, b"\x91" * 5000 + b"\xc0", Reason.MALFORMED)


def test_float_in_body(world: World) -> None:
    rejected(world, world.raw(key(0), "transfer", transfer_body(amount=5.0)), Reason.BAD_TYPE)


def test_bin_map_key_in_body(world: World) -> None:
    """Regression: a bin map key used to surface as CodecError("bad_key"),
    which is no Reason, so Ledger.ingest raised ValueError."""
    body = {b"amount": 5, "memo": "", "to": key(1).public}
    rejected(world, world.raw(key(0), "transfer", body, sort=False), Reason.BAD_TYPE)


@pytest.mark.parametrize(
    "fields",
    [
        [b"", b"", b""],  # three elements
        [b""],  # one
        ["signed", b"\x00" * 64],  # str, not bin
        [b"\x00", 5],
    ],
)
def test_wire_is_not_signed_and_signature(world: World, fields: list[Any]) -> None:
    rejected(world, pack_raw(fields), Reason.BAD_SHAPE)


def test_signed_part_is_not_eight_fields(world: World) -> None:
    entry = world.create(key(0), Offer(side="offer", title="Bread"))
    fields = msgpack.unpackb(entry.signed)
    rejected(world, sign_fields(key(0), fields[:7]), Reason.BAD_SHAPE)
    rejected(world, sign_fields(key(0), [*fields, None]), Reason.BAD_SHAPE)
    rejected(world, sign_fields(key(0), {"version": 1}), Reason.BAD_SHAPE)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [0, 2, -1, "1", None, True])
def test_bad_version(world: World, version: Any) -> None:
    """``true`` is no version: a bool is not the integer 1 (it was accepted
    as version 1 before; another implementation would have disagreed)."""
    rejected(world, world.raw(key(0), "offer", offer_body(), version=version), Reason.BAD_VERSION)


@pytest.mark.parametrize(
    "author",
    [
        (1).to_bytes(32, "little"),  # the identity point
        bytes(32),  # order 4
        ((2**255 - 19) + 1).to_bytes(32, "little"),  # identity, non-canonical
        b"\x01" * 31,
        None,
    ],
    ids=["identity", "order4", "noncanonical", "short", "nil"],
)
def test_bad_author(world: World, author: Any) -> None:
    # Signed by a valid key: the author check comes first.
    rejected(world, world.raw(key(0), "offer", offer_body(), author=author), Reason.BAD_MEMBER)


@pytest.mark.parametrize("timestamp", [-1, MAX_AMOUNT + 1, "now", None, 1.0, False])
def test_bad_timestamp(world: World, timestamp: Any) -> None:
    wire = world.raw(key(0), "offer", offer_body(), timestamp_ms=timestamp)
    rejected(world, wire, Reason.BAD_TYPE if isinstance(timestamp, float) else Reason.BAD_SHAPE)


@pytest.mark.parametrize("kind", ["payment", "", "Offer", None, 3])
def test_unknown_kind(world: World, kind: Any) -> None:
    rejected(world, world.raw(key(0), kind, offer_body()), Reason.BAD_SHAPE)


@pytest.mark.parametrize(
    "fields",
    [
        {"community": bytes(32)},
        {"seq": 1},
        {"seq": False},  # false is no 0 (was accepted before)
        {"prev": bytes(32)},
    ],
    ids=["community", "seq1", "seqfalse", "prev"],
)
def test_genesis_outside_position(world: World, fields: dict[str, Any]) -> None:
    g = msgpack.unpackb(world.genesis.signed)
    values = dict(zip(["community", "seq", "prev"], g[1:2] + g[3:5], strict=True))
    values.update(fields)
    raw = [
        1,
        values["community"],
        key(0).public,
        values["seq"],
        values["prev"],
        T0,
        "genesis",
        g[7],
    ]
    rejected(world, sign_fields(key(0), raw), Reason.BAD_SHAPE)


@pytest.mark.parametrize("community", [None, b"\x00" * 31, "c" * 32])
def test_bad_community_field(world: World, community: Any) -> None:
    rejected(world, world.raw(key(0), "offer", offer_body(), community=community), Reason.BAD_SHAPE)


@pytest.mark.parametrize("seq", [0, -1, 2**53, None, True])
def test_bad_seq(world: World, seq: Any) -> None:
    rejected(world, world.raw(key(0), "offer", offer_body(), seq=seq), Reason.BAD_SHAPE)


def test_prev_must_match_seq(world: World) -> None:
    """nil prev at seq 2, or a prev at seq 1: the link is broken by the entry alone."""
    rejected(world, world.raw(key(0), "offer", offer_body(), prev=None), Reason.BAD_PREV)
    rejected(world, world.raw(key(2), "join", {}, prev=bytes(32)), Reason.BAD_PREV)
    rejected(world, world.raw(key(0), "offer", offer_body(), prev=b"\x00" * 31), Reason.BAD_SHAPE)


@pytest.mark.parametrize("amount", [0, -1, -(2**63), MAX_AMOUNT + 1, 2**64 - 1])
def test_bad_amount(world: World, amount: int) -> None:
    rejected(world, world.raw(key(0), "transfer", transfer_body(amount=amount)), Reason.BAD_AMOUNT)
    rejected(world, world.raw(key(0), "offer", offer_body(price=amount)), Reason.BAD_AMOUNT)


def test_largest_amount_is_well_formed(world: World) -> None:
    entry = Entry.decode(world.raw(key(0), "transfer", transfer_body(amount=MAX_AMOUNT)))
    assert isinstance(entry.body, Transfer)
    assert entry.body.amount == MAX_AMOUNT


@given(tst.bad_amounts)
def test_any_bad_amount(amount: int) -> None:
    w = World()
    wire = w.raw(key(0), "transfer", transfer_body(amount=amount), seq=2, prev=bytes(32))
    with pytest.raises(CodecError) as info:
        Entry.decode(wire)
    assert info.value.reason == "bad_amount"


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("offer", offer_body(colour="red")),  # an unknown field
        ("offer", {"side": "offer", "title": "Bread", "tags": []}),  # a missing one
        ("offer", offer_body(expires_ms=None)),  # nil for an absent optional field
        ("offer", offer_body(side="gift")),
        ("offer", offer_body(title="")),
        ("offer", offer_body(title="t" * 201)),
        ("offer", offer_body(tags=["b", "a"])),  # unsorted
        ("offer", offer_body(tags=["a", "a"])),  # repeated
        ("offer", offer_body(tags=[""])),
        ("offer", offer_body(tags=[str(i) for i in range(17)])),
        ("offer", offer_body(expires_ms=-1)),
        ("offer", []),  # not a map
        ("transfer", transfer_body(memo=None)),
        ("transfer", transfer_body(offer=[key(1).public, 1])),  # a ref of two
        ("transfer", transfer_body(offer=[key(1).public, 0, bytes(32)])),  # seq 0
        ("transfer", transfer_body(offer=[key(1).public, 1, bytes(31)])),
        ("accept", {}),
        ("decline", {"transfer": [key(1).public, 2, bytes(32)]}),  # no reason
        ("join", {"name": "n" * 201}),
        ("vouch", {"member": key(1).public, "limit": -1}),
    ],
)
def test_bad_shape(world: World, kind: str, body: Any) -> None:
    rejected(world, world.raw(key(0), kind, body), Reason.BAD_SHAPE)


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("transfer", transfer_body(to=bytes(32))),
        ("transfer", transfer_body(to=b"\x05" * 31)),
        ("transfer", transfer_body(offer=[bytes(32), 1, bytes(32)])),
        ("vouch", {"member": (1).to_bytes(32, "little")}),
        ("accept", {"transfer": [None, 2, bytes(32)]}),
    ],
)
def test_bad_member(world: World, kind: str, body: Any) -> None:
    rejected(world, world.raw(key(0), kind, body), Reason.BAD_MEMBER)


@pytest.mark.parametrize(
    "rules",
    [
        {"witnesses": [key(1).public]},  # witnesses in an optimistic community
        {"finality": "witnessed"},  # … and none in a witnessed one
        {"finality": "witnessed", "witnesses": [key(1).public], "quorum": 2},  # q > n - f
        {
            "finality": "witnessed",
            "witnesses": sorted(key(i).public for i in range(4)),
            "quorum": 2,
        },
        {"finality": "witnessed", "witnesses": [key(1).public, key(1).public], "quorum": 2},
        {"admission": "invite"},
        {"credit_limit": -1},
        {"ceiling": 0},
        {"unit": ""},
    ],
)
def test_bad_genesis(world: World, rules: dict[str, Any]) -> None:
    body = Genesis(name="x", unit="h", credit_limit=10).to_wire()
    body.update(rules)
    wire = sign_fields(key(0), [1, None, key(0).public, 0, None, T0, "genesis", body])
    rejected(world, wire, Reason.BAD_SHAPE)


def test_witnessed_genesis_is_well_formed(world: World) -> None:
    witnesses = tuple(sorted(key(i).public for i in range(4)))
    body = Genesis("x", "h", 10, finality="witnessed", witnesses=witnesses, faults=1, quorum=3)
    g = Entry.create(key(0), community=None, seq=0, prev=None, timestamp_ms=T0, body=body)
    assert world.ingest(g).status is Status.ACCEPTED
    assert world.ingest(g).status is Status.DUPLICATE


def test_resign_keeps_what_is_not_changed(world: World) -> None:
    entry = world.create(key(0), Transfer(to=key(1).public, amount=5))
    assert resign(key(0), entry) == entry.wire
    assert Entry.decode(resign(key(0), entry, timestamp_ms=T0 + 1)).timestamp_ms == T0 + 1
