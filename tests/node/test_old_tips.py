"""Store format 8: final tips stored under the rule before format 6 are cut
back to where today's ledger puts them (docs/witness.md §8, "Old final tips").

Before format 6 a final tip passed a raceable entry (here a take-back and an
accept of a transfer that expires, racing) on a later entry's certificate
alone. A store of format 7 holding such a tip is built by hand: today's
ledger with every certificate, then the race entry's own certificate taken
out and the final balance set as the old rule counted it (the nominal one at
the tip, void credit and all). Opened with this code, its tips, final
balances and final chains must equal those of a fresh store given the same
entries and certificates; a store whose tips are right must come through
byte for byte; and the migrated store goes on like a fresh one.
"""

from __future__ import annotations

import functools
import sqlite3
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import World, certify, key, void_certify, witnessed_world
from troc.errors import StoreError
from troc.node._store_retip import recompute_final_tips
from troc.node.store import SCHEMA_VERSION, Store
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import Accept, Campaign, CampaignClose, Entry, Pledge, Withdraw
from troc.protocol.ledger import Ledger, Status

A, B, C, D = key(1), key(2), key(3), key(4)


class Scene:
    """A pays B 10, expiring; A takes it back (``k``) and B accepts it
    (``acc``): ``winner`` wins, the other is void. Then each pays the
    other a little on top, and C pays B 5 (never expires), which B accepts
    (``plain``, no certificate of its own: not raceable, so its tip may pass
    it on a later entry's certificate) before paying C 1. And a campaign
    race: C's campaign, D's pledge, D's lapse and C's close counting the
    pledge (the lapse wins with the take-back, the close with the accept),
    each paying B 1 on top."""

    def __init__(self, winner: str) -> None:
        self.w = w = witnessed_world()
        self.entries = [w.join(A), w.join(B), w.join(C), w.join(D)]
        self.t = w.pay(A, B, 10, expires_ms=w.now + 500)
        self.k = w.take_back(A, self.t)
        self.acc = w.accept(B, self.t)
        self.after_b = w.pay(B, A, 3)
        self.after_a = w.pay(A, B, 2)
        self.from_c = from_c = w.pay(C, B, 5)
        self.plain = w.accept(B, from_c)
        self.last_b = w.pay(B, C, 1)
        self.entries += [self.t, self.k, self.acc, self.after_b, self.after_a, from_c]
        self.entries += [self.plain, self.last_b]
        camp = w.add(C, Campaign(title="Oven", goal=5, deadline_ms=w.now + 500))
        self.pledge = pledge = w.add(D, Pledge(campaign=camp.ref, amount=5))
        self.lapse = w.add(D, Withdraw(pledge=pledge.ref))
        self.close = w.add(C, CampaignClose(campaign=camp.ref, pledges=(pledge.ref,)))
        self.entries += [camp, pledge, self.lapse, self.close, w.pay(C, B, 1), w.pay(D, B, 1)]
        if winner == "take_back":
            self.voids = (self.acc, self.close)
        else:
            self.voids = (self.k, self.lapse)

    def certificate(self, e: Entry) -> bytes:
        return void_certify(e) if e in self.voids else certify(e)

    def items(self, without: tuple[Entry, ...] = ()) -> list[tuple[str, bytes]]:
        """The genesis, every entry and its own certificate, except those of
        ``without`` and of ``plain``."""
        out = [("genesis", self.w.genesis.wire)]
        for e in self.entries:
            out.append(("entry", e.wire))
            if e is not self.plain and e not in without:
                out.append(("cert", self.certificate(e)))
        return out


def deliver(ledger: Ledger, items: list[tuple[str, bytes]], now: int) -> None:
    for kind, blob in items:
        if kind == "cert":
            assert ledger.ingest_certificate(blob, now).status is Status.ACCEPTED
        else:
            assert ledger.ingest(blob, now).status is Status.ACCEPTED


def filled(path: Path, items: list[tuple[str, bytes]], now: int) -> Path:
    with Store.open(path) as store, store.transaction():
        deliver(Ledger(store), items, now)
    return path


def state(store: Store, w: World) -> dict[str, Any]:
    """Every log's final tip and balance, its final chain, the balances shown."""
    c = w.community
    chains = store._conn.execute(
        "SELECT l.author, f.seq, f.id FROM final_chain f JOIN logs l ON l.lid = f.lid"
        " WHERE l.community = ? ORDER BY l.author, f.seq",
        (c,),
    ).fetchall()
    return {
        "tips": {m: (h.final_seq, h.final_id, h.final_balance) for m, h in store.heads(c)},
        "chains": chains,
        "balances": dict(Ledger(store).balances(c)),
    }


def fresh_state(path: Path, items: list[tuple[str, bytes]], w: World) -> dict[str, Any]:
    with Store.open(filled(path, items, w.now)) as store:
        return state(store, w)


def aged(path: Path, s: Scene, without: tuple[Entry, ...]) -> None:
    """Make the store at ``path`` one of format 7 written by the old rule:
    no own certificate for ``without``, whose logs' tips still pass them
    with every credit below counted."""
    conn = sqlite3.connect(path)
    c = s.w.community
    for e in without:
        conn.execute(
            "DELETE FROM certificates WHERE community = ? AND author = ? AND seq = ? AND id = ?",
            (c, e.author, e.seq, e.id),
        )
        conn.execute(
            "UPDATE logs SET final_balance = (SELECT e.balance FROM entries e"
            " WHERE e.lid = logs.lid AND e.seq = logs.final_seq AND e.id = logs.final_id)"
            " WHERE community = ? AND author = ?",
            (c, e.author),
        )
    conn.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()


def raw_rows(path: Path) -> list[list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return [
            conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3").fetchall()
            for table in ("logs", "final_chain", "certificates", "entries")
        ]
    finally:
        conn.close()


@pytest.mark.parametrize("winner", ["take_back", "accept"])
@pytest.mark.parametrize("missing", ["k", "acc", "both", "lapse", "close"])
def test_an_old_tip_past_a_race_entry_without_its_certificate_is_cut(
    tmp_path: Path, winner: str, missing: str
) -> None:
    s = Scene(winner)
    without = {
        "k": (s.k,),
        "acc": (s.acc,),
        "both": (s.k, s.acc),
        "lapse": (s.lapse,),
        "close": (s.close,),
    }[missing]
    path = filled(tmp_path / "old.sqlite", s.items(), s.w.now)
    aged(path, s, without)
    conn = sqlite3.connect(path)
    tips = dict(
        conn.execute(
            "SELECT author, final_seq FROM logs WHERE community = ?", (s.w.community,)
        ).fetchall()
    )
    conn.close()
    # The defect: the old tips pass the race entries with no certificate.
    for e in without:
        assert tips[e.author] > e.seq
    fresh = fresh_state(tmp_path / "fresh.sqlite", s.items(without), s.w)
    with Store.open(path) as store:
        assert state(store, s.w) == fresh
        assert store.get_meta("schema_version") == str(SCHEMA_VERSION) == "8"
        assert store.integrity_check() == "ok"
    # Where: below each race entry, on A's transfer below its take-back,
    # on B's join, on D's pledge, on C's campaign.
    tips_now = fresh["tips"]
    for e in without:
        assert tips_now[e.author][0] == e.seq - 1
    if s.k in without:
        assert tips_now[A.public][:2] == (s.t.seq, s.t.id)
        assert fresh["balances"][A.public] == -10
    if s.acc in without:
        assert tips_now[B.public][:2] == (1, s.entries[1].id)
        assert fresh["balances"][B.public] == 0


@pytest.mark.parametrize("winner", ["take_back", "accept"])
def test_a_store_whose_tips_are_right_comes_through_unchanged(tmp_path: Path, winner: str) -> None:
    """Every race entry has its own certificate; B's accept of C's
    transfer has none but is not raceable: no row changes."""
    s = Scene(winner)
    path = filled(tmp_path / "old.sqlite", s.items(), s.w.now)
    aged(path, s, ())
    before = raw_rows(path)
    with Store.open(path) as store:
        assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
        assert Ledger(store).is_final(s.w.community, s.plain.ref)
    assert raw_rows(path) == before


@pytest.mark.parametrize("winner", ["take_back", "accept"])
def test_the_migrated_store_goes_on_like_a_fresh_one(tmp_path: Path, winner: str) -> None:
    """After the cut, A's payment above its take-back is no longer final, but
    its own certificate is held: B's accept of it is valid at once
    (docs/witness.md §6.1), and the take-back's certificate (normal, or
    void: its credit leaves), when it comes, moves the tip up through it, to
    the state of a fresh store given everything (the final chain grows again
    where its rows were cut)."""
    s = Scene(winner)
    path = filled(tmp_path / "old.sqlite", s.items(), s.w.now)
    aged(path, s, (s.k,))
    late = s.w.create(B, Accept(transfer=s.after_a.ref))
    c, now = s.w.community, s.w.now
    with Store.open(path) as store:
        ledger = Ledger(store)
        assert not ledger.is_final(c, s.after_a.ref)
        with store.transaction():
            taken = ledger.ingest(late.wire, now)
        assert taken.status is Status.ACCEPTED
        with store.transaction():
            outcome = ledger.ingest_certificate(s.certificate(s.k), now)
        assert outcome.final
        assert store.integrity_check() == "ok"
        after = state(store, s.w)
    everything = [*s.items(), ("entry", late.wire)]
    assert after == fresh_state(tmp_path / "fresh.sqlite", everything, s.w)
    assert after["tips"][A.public][:2] == (s.after_a.seq, s.after_a.id)


def test_an_accept_stored_on_a_payment_no_longer_final_stays_and_agrees_later(
    tmp_path: Path,
) -> None:
    """B accepted A's payment above A's take-back while the old tip made it
    final. The cut leaves it stored and counted (a fresh node would park it
    until the take-back's own certificate, unless it held the payment's own:
    docs/witness.md §6.1, §8, "Old final tips"); once that certificate is
    held, the two agree."""
    s = Scene("take_back")
    dep = s.w.accept(B, s.after_a)
    s.entries.append(dep)
    path = filled(tmp_path / "old.sqlite", s.items(), s.w.now)
    aged(path, s, (s.k,))
    c, now = s.w.community, s.w.now
    with Store.open(path) as store:
        ledger = Ledger(store)
        assert ledger.is_final(c, s.t.ref)
        assert not ledger.is_final(c, s.after_a.ref)
        assert ledger.is_final(c, dep.ref)
        with store.transaction():
            assert ledger.ingest_certificate(s.certificate(s.k), now).final
        after = state(store, s.w)
    assert after == fresh_state(tmp_path / "fresh.sqlite", s.items(), s.w)


def test_a_damaged_store_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    """A final chain with no final tip to walk up to (a file altered by
    hand): the open fails as StoreError and the migration rolls back."""
    s = Scene("take_back")
    path = filled(tmp_path / "old.sqlite", s.items(), s.w.now)
    aged(path, s, (s.k,))
    conn = sqlite3.connect(path)
    conn.execute("UPDATE logs SET final_id = NULL WHERE author = ?", (A.public,))
    conn.commit()
    conn.close()
    before = raw_rows(path)
    with pytest.raises(StoreError, match="damaged"):
        Store.open(path)
    assert raw_rows(path) == before
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("7",)
    conn.close()


def test_a_store_without_witnessed_communities_reads_only_its_genesis(tmp_path: Path) -> None:
    """The migration's cost on an optimistic store (the bench's million-entry
    ones): one read of the genesis table, no walk of any log."""
    w = World()
    w.join(A)
    w.join(B)
    w.pay(A, B, 3)
    path = filled(
        tmp_path / "s.sqlite",
        [("genesis", w.genesis.wire)] + [("entry", e.wire) for e in w.log],
        w.now,
    )
    conn = sqlite3.connect(path)
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    assert recompute_final_tips(conn, path) == 0
    conn.close()
    assert seen == ["SELECT community, wire FROM genesis"]


@functools.cache
def scene(winner: str) -> Scene:
    return Scene(winner)


def finals(ledger: Ledger, s: Scene) -> Any:
    """Tips, final balances, balances shown, and which entries are final."""
    c = s.w.community
    tips = {m: (h.final_seq, h.final_id, h.final_balance) for m, h in ledger.backend.heads(c)}
    return tips, dict(ledger.balances(c)), [ledger.is_final(c, e.ref) for e in s.entries]


@settings(max_examples=40)
@given(winner=st.sampled_from(["take_back", "accept"]), data=st.data())
def test_under_the_old_rule_any_certificates_missing_then_migrated_as_fresh(
    winner: str, data: Any
) -> None:
    """The old store written by the old rule itself (the ledger with
    ``_passable`` letting a tip through everything, as before format 6),
    any certificates missing but those of what an accept or a close names
    (else an accept stored there would wait on a fresh node: the limit in
    docs/witness.md §8, "Old final tips"); migrated, it is final exactly as
    a fresh in-memory ledger given the same entries and certificates."""
    s = scene(winner)
    named = (s.t, s.from_c, s.pledge)
    droppable = [e for e in s.entries if e not in named and e is not s.plain]
    without = tuple(data.draw(st.lists(st.sampled_from(droppable), unique=True)))
    items = s.items(without)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "old.sqlite"
        with mock.patch.object(Ledger, "_passable", lambda self, c, a, low, chain: chain):
            filled(path, items, s.w.now)
        conn = sqlite3.connect(path)
        conn.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
        conn.commit()
        conn.close()
        with Store.open(path) as store:
            migrated = finals(Ledger(store), s)
    fresh = Ledger(MemoryBackend())
    deliver(fresh, items, s.w.now)
    assert migrated == finals(fresh, s)
