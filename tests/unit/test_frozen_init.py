"""troc.protocol._frozen.fast_init: the same constructor as the dataclass's, still frozen."""

from __future__ import annotations

import dataclasses
import inspect
import pickle

import pytest

from troc.protocol import _frozen
from troc.protocol.backend import Head, RefRow, Stored
from troc.protocol.entry import _BODIES, Entry, Kind, Ref, Transfer
from troc.protocol.verdicts import Outcome, Status

FAST = [Head, Stored, RefRow, Outcome, Entry, Ref, *_BODIES.values()]


@pytest.mark.parametrize("cls", FAST, ids=lambda c: c.__name__)
def test_same_signature_as_the_dataclass_init(cls: type) -> None:
    # A twin with the same fields and the __init__ that dataclasses writes.
    twin = dataclasses.make_dataclass(
        "Twin", [(f.name, f.type, f) for f in dataclasses.fields(cls)], frozen=True, slots=True
    )
    assert inspect.signature(cls.__init__) == inspect.signature(twin.__init__)


def test_builds_what_the_dataclass_built() -> None:
    head = Head(3, b"i" * 32, -5, 10, final_seq=0)
    assert (head.seq, head.id, head.balance, head.limit) == (3, b"i" * 32, -5, 10)
    assert (head.frozen_at, head.cut_balance, head.final_seq, head.undone) == (None, 0, 0, 0)
    assert dataclasses.replace(head, undone=4) == Head(
        3, b"i" * 32, -5, 10, None, 0, 0, 0, None, 0, 4
    )
    with pytest.raises(TypeError):
        Head(1, b"")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Head(1, b"", 0, 0, nope=1)  # type: ignore[call-arg]
    with pytest.raises(dataclasses.FrozenInstanceError):
        head.seq = 4  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(head)) == head
    assert hash(head) == hash(Head(3, b"i" * 32, -5, 10, final_seq=0))
    body = Transfer(to=b"t" * 32, amount=5)  # type: ignore[arg-type]
    assert (body.memo, body.offer, body.request) == ("", None, None)
    assert Outcome(Status.ACCEPTED).released == ()
    assert Kind.TRANSFER is body.KIND


def test_refuses_what_it_cannot_copy() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(slots=True)
    class Mutable:
        a: int

    for cls in (NoSlots, Factory, Mutable):
        with pytest.raises(TypeError):
            _frozen.fast_init(cls)
