"""The collector setting `troc run` applies (troc/node/gctune.py), checked in
a child interpreter so this process keeps its own."""

from __future__ import annotations

import json
import subprocess
import sys

from troc.node.gctune import OLDER, YOUNG

PROBE = """
import gc, json
from troc.node.gctune import tune_collector
kept = [object() for _ in range(10)]
before = gc.get_freeze_count()
tune_collector()
print(json.dumps([gc.get_threshold(), before, gc.get_freeze_count()]))
"""


def test_tune_collector_freezes_what_exists_and_makes_collections_rarer() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    threshold, before, after = json.loads(out)
    assert threshold == [YOUNG, OLDER, OLDER]
    assert YOUNG > 700  # rarer than Python's default young collections
    assert before == 0
    assert after > 0
