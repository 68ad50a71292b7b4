"""Founding a witnessed community: unsafe or unlive witness choices are
refused with one sentence saying why; the default quorum is the smallest safe one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import key
from troc.errors import LocalProtocolError
from troc.node.local import open_local_node

WITNESSES = tuple(key(400 + i).public for i in range(7))


@pytest.mark.parametrize(
    ("n", "faults", "quorum", "says"),
    [
        (4, 1, 2, "quorum 2 of 4 witnesses is unsafe with 1 faulty"),
        (4, 1, 4, "quorum 4 of 4 witnesses is not live with 1 faulty"),
        (4, 2, None, "4 witnesses tolerate at most 1 faulty"),
        (0, 0, None, "names 1 to 64 witnesses"),
    ],
)
def test_unsafe_choices_are_refused(
    tmp_path: Path, n: int, faults: int, quorum: int | None, says: str
) -> None:
    with open_local_node(tmp_path, key(1)) as node:
        with pytest.raises(LocalProtocolError, match=says):
            node.create_community(
                "W", "h", 5, finality="witnessed", witnesses=WITNESSES[:n], faults=faults,
                quorum=quorum,
            )  # fmt: skip
        assert node.communities() == []  # nothing half-written


@pytest.mark.parametrize(("n", "faults", "expected"), [(4, 1, 3), (7, 2, 5), (7, 1, 5), (1, 0, 1)])
def test_the_default_quorum_is_the_smallest_safe_one(
    tmp_path: Path, n: int, faults: int, expected: int
) -> None:
    with open_local_node(tmp_path, key(1)) as node:
        c = node.create_community(
            "W", "h", 5, finality="witnessed", witnesses=WITNESSES[:n], faults=faults
        )
        assert node.community(c).quorum == expected
