"""``troc demo`` on a machine too busy for it: the member hears which stage
was still waiting (a network error, exit 7), not 'unexpected ExceptionGroup'."""

from __future__ import annotations

import pytest

from troc.cli import demo
from troc.errors import NetworkError
from troc.node.opdata import describe_error


def test_a_demo_out_of_time_says_what_it_was_waiting_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(demo, "TIMEOUT", 0.0)
    with pytest.raises((NetworkError, BaseExceptionGroup)) as caught:
        demo.run_demo(2, seed=1)
    described = describe_error(caught.value)
    assert described["kind"] == "network", described
    assert described["message"] == (
        "the demo's nodes were still waiting for payments reaching their payees after 0 s"
    )
    leaf = caught.value
    while isinstance(leaf, BaseExceptionGroup):
        (leaf,) = leaf.exceptions
    assert isinstance(leaf, NetworkError)
