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
