"""The ledger and void certificates of a campaign race (docs/witness.md
§3.5, §3.6): a pledger's lapse and the author's close counting that pledge
race; the loser is void, final as a position of its log, with no effect. A
void close credits its author nothing (its pledges are not paid), a void
lapse returns nothing to its pledger (the close counts the pledge). Whatever
order the entries and certificates arrive in, on the in-memory backend and
the SQLite store alike, every node ends with the same final balances."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import certify, key, witnessed_world
from tests.property.test_void_ledger import (
    check_void_and_on,
    deliver,
    final_state,
    on_both_backends,
    void_certify,
)
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import Campaign, CampaignClose, Pledge, Withdraw
from troc.protocol.ledger import Ledger

A, B, C = key(1), key(2), key(3)


class CampaignRace:
    """A's campaign (goal 50) gets pledges of 40 by B and 20 by C; after the
    deadline B lapses its pledge and A closes counting both; ``winner`` is
    "close" or "lapse", the other is void. Then A pays B 3 on top of its
    close and B pays C 2 on top of its lapse (both in flight)."""

    def __init__(self, winner: str) -> None:
        self.w = w = witnessed_world()
        joins = [w.join(m) for m in (A, B, C)]
        deadline = w.now + 5_000
        camp = w.add(A, Campaign(title="Oven", goal=50, deadline_ms=deadline))
        pb = w.add(B, Pledge(campaign=camp.ref, amount=40))
        pc = w.add(C, Pledge(campaign=camp.ref, amount=20))
        w.now = deadline
        self.lapse = w.add(B, Withdraw(pledge=pb.ref))
        pledges = tuple(sorted((pb.ref, pc.ref), key=lambda r: r.author))
        self.close = w.add(A, CampaignClose(campaign=camp.ref, pledges=pledges))
        self.after_a = w.pay(A, B, 3)
        self.after_b = w.pay(B, C, 2)
        self.winner = winner
        self.void = self.lapse if winner == "close" else self.close
        self.tips = (self.after_a, self.after_b, pc)
        self.entries = [*joins, camp, pb, pc, self.lapse, self.close, self.after_a, self.after_b]

    def items(self, own: bool = True) -> list[tuple[str, bytes]]:
        """The genesis, every entry, and certificates: the void one's void
        certificate, the winner's own, and of the others each one's own
        (``own``), else only the tips'. Honest witnesses lock nothing above
        a lapse or a close without its own certificate (§3.6), so every
        certified chain carries both."""
        won = self.close if self.void is self.lapse else self.lapse
        out: list[tuple[str, bytes]] = [("genesis", self.w.genesis.wire)]
        for e in self.entries:
            out.append(("entry", e.wire))
            if e is self.void:
                out.append(("cert", void_certify(e)))
            elif own or e in self.tips or e is won:
                out.append(("cert", certify(e)))
        return out

    def expected(self) -> dict[bytes, int]:
        # The two later payments are in flight (never accepted).
        if self.winner == "close":  # the lapse returns nothing: B's 40 are paid
            return {A.public: 60 - 3, B.public: -40 - 2, C.public: -20}
        # The close credits nothing; B's lapse returns its 40, C's 20 stay pledged.
        return {A.public: -3, B.public: -40 + 40 - 2, C.public: -20}


@pytest.mark.parametrize("winner", ["close", "lapse"])
def test_the_void_lapse_or_close_is_final_and_moves_nothing(winner: str) -> None:
    race = CampaignRace(winner)
    ledger = Ledger(MemoryBackend())
    for kind, blob in race.items():
        assert deliver(ledger, kind, blob, race.w.now).ok
    won = race.close if race.void is race.lapse else race.lapse
    after = race.after_b if race.void is race.lapse else race.after_a
    check_void_and_on(ledger, race.void, won, after)
    assert dict(ledger.balances(race.w.community)) == race.expected()


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_arrival_order_does_not_matter(data: st.DataObject) -> None:
    """Every order, own certificates or only the tips' (then a late void
    certificate takes the credit out of a final balance), both backends."""
    race = CampaignRace(data.draw(st.sampled_from(["close", "lapse"]), label="winner"))
    items = race.items(own=data.draw(st.booleans(), label="own certificates"))
    order = [items[0], *data.draw(st.permutations(items[1:]), label="order")]
    order += data.draw(st.lists(st.sampled_from(items), max_size=3), label="again")
    with on_both_backends(order, race.w.now) as (memory, on_disk):
        assert dict(memory.balances(race.w.community)) == race.expected()
        assert final_state(on_disk, race) == final_state(memory, race)  # type: ignore[arg-type]
