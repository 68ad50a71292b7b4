"""What the author's vote request carries: enough of its log that a witness
holding none of it votes at once, with no ``wait`` round trip."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import key
from troc.node.certifier import CHAIN_WINDOW, Certifier
from troc.node.local import now_ms, open_local_node
from troc.node.witness import WitnessService
from troc.protocol.witness import MAX_DEPS, Voted


def test_a_request_carries_the_log_since_the_final_tip_up_to_the_frame_limit(
    tmp_path: Path,
) -> None:
    witnesses = [key(500 + i) for i in range(4)]
    with open_local_node(tmp_path / "a", key(1)) as author:
        c = author.create_community(
            "W", "h", 5, finality="witnessed", witnesses=tuple(w.public for w in witnesses),
            faults=1,
        )  # fmt: skip
        genesis = author.community(c).genesis
        # A burst of own entries none of which is final yet: the driver asks
        # for the newest, whose certificate makes them all final.
        entries = [author.offer(c, f"offer {i}") for i in range(60)]
        request = Certifier(author, None, lambda c, b: None)._request(entries[-1])  # type: ignore[arg-type]
    assert CHAIN_WINDOW + 2 <= MAX_DEPS  # room for the entry an accept names, and a rival
    assert len(request.deps) == 60  # the join and 59 offers: all of it below the entry
    with open_local_node(tmp_path / "w", witnesses[0]) as w:
        w.ingest(genesis)  # follows the community, holds none of the author's log
        answer = WitnessService(w, witnesses[0], now_ms).answer(request)
    assert isinstance(answer, Voted), answer
