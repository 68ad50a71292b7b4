"""Writer process for the crash test in test_store.py (not a test itself).

    python crash_writer.py STORE ENTRIES NOW_MS

Opens the store at STORE and ingests the entries of the file ENTRIES (each a
4-byte big-endian length, then the wire bytes), one durable transaction per
entry, skipping those already stored. After each commit returns it prints the
entry id in hex on a line of its own: a printed id is an acknowledged entry,
one the store must still hold after any crash. Prints ``done`` at the end.
The test kills this process at random moments.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

from troc.node.store import Store
from troc.protocol.entry import CommunityId, Entry
from troc.protocol.ledger import Ledger, Status


def read_wires(path: Path) -> list[bytes]:
    data = path.read_bytes()
    wires, pos = [], 0
    while pos < len(data):
        (size,) = struct.unpack_from(">I", data, pos)
        wires.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return wires


def main() -> None:
    store_path, entries_path, now_ms = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    wires = read_wires(entries_path)
    out = sys.stdout.buffer
    with Store.open(store_path) as store:
        ledger = Ledger(store)
        for wire in wires:
            entry = Entry.decode(wire, check_signature=False)
            if entry.community is None:
                if store.genesis(CommunityId(entry.id)) is not None:
                    continue
            elif store.entry(entry.community, entry.author, entry.seq, entry.id) is not None:
                continue
            with store.transaction(durable=True):
                outcome = ledger.ingest(wire, now_ms)
            if outcome.status is not Status.ACCEPTED:
                sys.exit(f"entry not accepted: {outcome.status} {outcome.reason}")
            out.write(entry.id.hex().encode() + b"\n")
            out.flush()
    out.write(b"done\n")
    out.flush()


if __name__ == "__main__":
    main()
