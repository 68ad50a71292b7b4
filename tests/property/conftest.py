"""Fixtures shared by the property tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from troc.node.verifier import Verifier


@pytest.fixture(scope="module", params=["processes", "threads"])
def verifier(request: pytest.FixtureRequest) -> Iterator[Verifier]:
    """The node's Verifier off the calling thread, as sync uses it, both ways."""
    v = Verifier(workers=2, min_threaded=1, mode=request.param)
    yield v
    v.close()
