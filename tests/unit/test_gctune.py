"""The collector setting `troc run` applies (troc/node/gctune.py), checked in
a child interpreter so this process keeps its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgpack

from tests.helpers import World, key
from troc.node.gctune import OLDER, YOUNG
from troc.node.sync import AHEAD_FRAMES
from troc.protocol.sync_wire import MAX_BATCH

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


HELD = """
import gc, json, sys
import msgpack
from troc.node.gctune import tune_collector
from troc.node.verifier import _decode
wires = msgpack.unpackb(open(sys.argv[1], "rb").read())
frames = int(sys.argv[2])
tune_collector()
young = []
def count(phase, info):
    if phase == "start" and info["generation"] == 0:
        young.append(1)
gc.callbacks.append(count)
held = [_decode(wires) for _ in range(frames)]  # what a catch-up holds read ahead
print(json.dumps([len(young), sum(len(f) for f in held)]))
"""


def test_no_young_collection_while_a_catch_up_holds_its_frames_read_ahead(
    tmp_path: Path,
) -> None:
    """A catch-up holds up to AHEAD_FRAMES frames of MAX_BATCH entries
    decoded (troc.node.sync), ~2.5 objects the collector tracks per entry:
    at 20,000 the young generation filled with them (and the node's other
    live young objects), and each young collection walked them all (20,000
    to 80,000 objects, 7-90 ms each: ~5 % of a newcomer's thread,
    bench/join.py --witnessed, 200,000 entries)."""
    w = World()
    a, b = key(1), key(2)
    w.join(a)
    w.join(b)
    wires: list[bytes] = []
    while len(wires) < MAX_BATCH:  # payments and their accepts, both ways
        for payer, payee in ((a, b), (b, a)):
            t = w.pay(payer, payee, 1)
            wires += [t.wire, w.accept(payee, t).wire]
    path = tmp_path / "frame.bin"
    path.write_bytes(msgpack.packb(wires))
    out = subprocess.run(
        [sys.executable, "-c", HELD, str(path), str(AHEAD_FRAMES)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    young, held = json.loads(out)
    assert held == AHEAD_FRAMES * len(wires)
    assert young == 0
