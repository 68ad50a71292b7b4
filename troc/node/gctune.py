"""The cyclic garbage collector, set for a node's steady work.

Python's defaults (a young collection every 700 container allocations, a
middle one every 10 young ones) suit short scripts. A node that ingests
history allocates a few dozen short-lived objects per entry (the decoded
entry, its body, rows, tuples), almost none of them in cycles, so at the
default it spends ~8 µs per entry in collections that free nothing, about a
tenth of one core's ingest (`python bench/ingest.py`).
What start-up made (modules, the hosts, the store's caches)
lives as long as the process: it is frozen out of every collection.

`troc run` and `troc relay` call :func:`tune_collector` once the node runs;
a program embedding troc decides for itself (it owns the process).
"""

from __future__ import annotations

import gc

#: Container allocations between two young collections (default 700), net
#: of those freed: above what a catch-up holds alive at once, so that its
#: young collections do not walk it over and over (frames read ahead and
#: decoded, up to 16 of 512 entries at ~2.5 tracked objects each, the run
#: being stored, the store's caches). At 20,000 a newcomer's young
#: collections found 20,000-80,000 objects alive and took 7-90 ms each,
#: freeing nothing: ~5 % of its thread (bench/join.py --witnessed, 200,000
#: entries); at 100,000 they hardly run during a catch-up.
YOUNG = 100_000
#: Young collections between two middle ones, middle ones between two full
#: ones (defaults 10 and 10; a full one also waits for the long-lived
#: objects to have grown by a quarter).
OLDER = 50


def tune_collector() -> None:
    """Freeze what exists now out of the collector and make collections rarer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, OLDER, OLDER)
