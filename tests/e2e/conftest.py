"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import fcntl
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


@pytest.fixture(autouse=True)
def one_end_to_end_test_at_a_time(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The suite runs on two workers (README: `pytest -n 2`), but these tests
    start several real nodes each and set their time limits for a machine
    that runs one of them at a time: a lock in the run's base folder (shared
    by the workers) keeps them one after another, while the other worker
    goes on with the rest of the suite."""
    lock = tmp_path_factory.getbasetemp().parent / "troc-e2e.lock"
    with lock.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
