"""Shared pytest configuration.

Hypothesis profiles, chosen by the environment variable ``HYPOTHESIS_PROFILE``:

* ``dev`` (default): few examples, so the whole suite runs in well under a
  minute while working;
* ``ci``: four times as many, still random (``derandomize=False``: every CI
  run explores new examples; a failure prints the seed and the example, and
  the example database replays it locally).

Neither sets a deadline: the protocol tests sign and verify Ed25519, whose
cost on shared machines varies by more than any useful deadline.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=False,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


#: Tests that start real processes, open sockets or time the network: under
#: ``pytest -n 2 --dist loadgroup`` (the README's command) they run one after
#: another on one worker, never two at once, while the other worker runs the
#: CPU-bound property and unit tests beside them. Their time limits were set
#: for a node that has a core to itself; two such tests at once would share it.
SERIAL_PATHS = ("tests/e2e/", "tests/network/", "tests/web/", "tests/cli/test_readme.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    for item in items:
        where = item.path.relative_to(root).as_posix()
        if where.startswith(SERIAL_PATHS):
            item.add_marker(pytest.mark.xdist_group("serial"))
