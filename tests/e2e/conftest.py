"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.harness import PASSPHRASE
from tests.network import netns


@pytest.fixture
def topology(monkeypatch: pytest.MonkeyPatch) -> Iterator[netns.Topology]:
    """Network namespaces for the test (deleted after it); skips, saying
    why, where they cannot be made (not root, no `ip`)."""
    try:
        netns.check_available()
    except netns.NetnsUnavailable as exc:
        pytest.skip(f"network namespaces unavailable: {exc}")
    # netns.Child inherits the environment: the passphrase of the test's homes.
    monkeypatch.setenv("TROC_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("TROC_HOME", raising=False)
    monkeypatch.delenv("TROC_CONFIG", raising=False)
    with netns.Topology() as topo:
        yield topo
