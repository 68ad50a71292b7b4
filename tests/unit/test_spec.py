"""The limits written in the docs are the code's limits.

An implementation written from docs/protocol.md and docs/sync.md must draw
the same lines as troc: these tests read the limit tables in the documents
and compare each value with the constant it names, so the two cannot drift
apart again (docs/protocol.md once said 4,096 bytes for a string while the
code took 16,384).
"""

from __future__ import annotations

import pathlib
import re

import pytest

from troc.protocol import codec, entry, ledger, sync_wire

DOCS = pathlib.Path(__file__).parent.parent.parent / "docs"
#: How the docs write 2**53 - 1 (with a true minus sign).
TOP = "2\u2075\u00b3\u22121"


def table(doc: str, heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first table after ``heading``."""
    text = (DOCS / doc).read_text(encoding="utf-8")
    start = text.index(heading)
    rows = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    assert rows, f"no table after {heading!r} in {doc}"
    return rows[2:]  # past the header and the |---| line


def number(cell: str) -> int:
    """The first number in ``cell``, digits grouped by spaces allowed."""
    found = re.search(r"\d[\d  ]*", cell)
    assert found, cell
    return int(re.sub(r"\D", "", found.group()))


def test_entry_limits_table() -> None:
    """docs/protocol.md §2.2 against codec.ENTRY_LIMITS."""
    limits = codec.ENTRY_LIMITS
    expected = {
        "total size": limits.max_size,
        "nesting depth": limits.max_depth,
        "str length": limits.max_str,
        "bin length": limits.max_bin,
        "array length": limits.max_array,
        "map length": limits.max_map,
    }
    rows = {row[0]: number(row[1]) for row in table("protocol.md", "### 2.2 Limits")}
    assert rows == expected


def test_longest_text_fits_the_string_limit() -> None:
    # The string limit is what the longest text field takes at worst in UTF-8.
    assert codec.ENTRY_LIMITS.max_str == 4 * entry.MAX_TEXT


def constant(name: str) -> int:
    value: object = sync_wire
    for part in name.split("."):
        value = getattr(value, part)
    assert isinstance(value, int)
    return value


def test_sync_limits_table() -> None:
    """docs/sync.md "Framing" against troc/protocol/sync_wire.py."""
    rows = table("sync.md", "## Framing")
    assert len(rows) >= 10
    for what, value, name in rows:
        assert number(value) == constant(name.strip("`")), what


@pytest.mark.parametrize(
    ("doc", "text", "value"),
    [
        ("protocol.md", f"take the balance above {TOP} is refused", ledger.MAX_BALANCE),
        ("protocol.md", f'"amount" is an integer 1 … {TOP}', entry.MAX_AMOUNT),
        ("protocol.md", "text 0…4000", entry.MAX_TEXT),
        ("protocol.md", "more than 10 minutes (600 000 ms)", ledger.FUTURE_TOLERANCE_MS),
        ("protocol.md", "add at most 1 000 entries", ledger.MAX_BEYOND_FORK),
    ],
)
def test_other_numbers(doc: str, text: str, value: int) -> None:
    """Numbers the rules state in prose, against their constants."""
    assert text in " ".join((DOCS / doc).read_text(encoding="utf-8").split())
    if TOP in text:
        assert value == 2**53 - 1
    else:
        assert number(text.split("(")[-1].split("…")[-1]) == value
