"""Witnessed finality with real `troc run` processes on 127.0.0.1.

Four witnesses (`troc run --witness`, homes that `troc community follow` the
invitation; n = 4, f = 1, q = 3) and three members. Payments become final
within seconds and every node agrees on the final balances; one key on two
nodes cannot spend its credit twice; one witness down changes nothing, two
down make payments wait until one returns; and a witness SIGKILLed again and
again while members (forkers among them) ask for votes never signs two ids at
one (community, author, seq). The in-process version is
tests/network/test_witnessed.py.

Every process is stopped by its PID at the end of its test, whatever happens.
"""

from __future__ import annotations

import random
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import TROC, Member, Result, balances, copy_home, env, troc, wait_until
from troc.crypto.ids import decode_id
from troc.protocol.witness import Certificate

pytestmark = pytest.mark.slow

WITNESSES = 4
FAULTS = 1
QUORUM = 3
CREDIT_LIMIT = 1000
MEMBERS = ("ada", "bruno", "chiara")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Homes made once with the `troc` command: four witnesses following a
    witnessed community, three members in it. Each test runs on a copy."""
    root = tmp_path_factory.mktemp("witnessed-template")
    names = [f"w{i}" for i in range(WITNESSES)] + list(MEMBERS)
    for name in names:
        troc(root / name, "init", "--name", name)
    ids = {name: troc(root / name, "whoami").json["member"] for name in names}
    args = ["community", "create", "--name", "Witnessed valley", "--unit", "h"]
    args += ["--credit-limit", str(CREDIT_LIMIT), "--finality", "witnessed"]
    for i in range(WITNESSES):
        args += ["--witness", ids[f"w{i}"]]
    created = troc(root / "ada", *args, "--faults", str(FAULTS)).json
    invitation = troc(root / "ada", "community", "invite").json["invitation"]
    for i in range(WITNESSES):
        followed = troc(root / f"w{i}", "community", "follow", invitation).json
        assert followed["community"] == created["community"]
    for name in MEMBERS[1:]:
        troc(root / name, "community", "join", invitation)
    shown = troc(root / "ada", "community", "show").json
    assert (shown["finality"], shown["faults"], shown["quorum"]) == ("witnessed", FAULTS, QUORUM)
    return root


class Net:
    """A copy of the template's homes, and the processes run on them."""

    def __init__(self, template: Path, tmp: Path) -> None:
        shutil.copytree(template, tmp / "net")
        self.root = tmp / "net"
        self.witnesses = [self._member(f"w{i}") for i in range(WITNESSES)]
        self.ada, self.bruno, self.chiara = (self._member(n) for n in MEMBERS)
        self.twins: list[Member] = []

    def _member(self, name: str) -> Member:
        m = Member(name, self.root / name)
        m.member = troc(m.home, "whoami").json["member"]
        return m

    def twin(self, of: Member) -> Member:
        """A second home with ``of``'s key and store (before either runs)."""
        t = copy_home(of, f"{of.name}-twin", self.root)
        self.twins.append(t)
        return t

    @property
    def everyone(self) -> list[Member]:
        return [*self.witnesses, self.ada, self.bruno, self.chiara, *self.twins]

    def running(self) -> list[Member]:
        return [m for m in self.everyone if m.proc is not None]

    def witness_addrs(self) -> list[str]:
        return [w.addr for w in self.witnesses if w.proc is not None]

    def start(self, *members: Member) -> None:
        """The witnesses (all at once), then ``members`` bootstrapping to them."""
        with ThreadPoolExecutor(len(self.witnesses) + len(members)) as pool:
            for f in [pool.submit(w.start, witness=True) for w in self.witnesses]:
                f.result()
            boot = self.witness_addrs()
            for f in [pool.submit(m.start, *boot) for m in members]:
                f.result()
        # Every member reaches every witness before the first payment. A
        # bootstrap dial that failed is not retried soon (py-libp2p does not
        # redial a peer for 60 s after all its addresses failed): the witness
        # dials the member instead.
        for m in members:

            def connected(m: Member = m) -> bool:
                peers = set(m("status").json["peers"])
                missing = [w for w in self.witnesses if w.peer_id not in peers]
                for w in missing:
                    w.control("connect", {"addr": m.addr})
                return not missing

            wait_until(f"{m.name} to connect to the witnesses", connected, timeout=30, interval=1)

    def restart(self, w: Member, listen: str) -> None:
        """A witness again, same home, same port. It dials every running node:
        py-libp2p refuses to redial a peer for 60 s after all its addresses
        failed (the swarm's negative peer cache), so a payer that tried the
        dead witness could not reach it again sooner by itself."""
        w.start(*[m.addr for m in self.running()], listen=listen, witness=True)

    def stop_all(self) -> None:
        for m in self.everyone:
            if m.proc is not None:
                try:
                    m.stop()
                except AssertionError:
                    pass


@contextmanager
def network(template: Path, tmp: Path) -> Iterator[Net]:
    net = Net(template, tmp)
    try:
        yield net
    finally:
        net.stop_all()


def finality(result: Result) -> dict[str, Any]:
    out: dict[str, Any] = result.json["finality"]
    return out


def final_balance(m: Member, of: Member) -> int:
    return int(m("balance", of.member).json["balance"])


def agree(nodes: list[Member], expect: dict[str, int], timeout: float = 30) -> None:
    """Every node reports ``expect`` (members not named: 0) as final balances."""

    def check() -> bool:
        for m in nodes:
            got = {k: v for k, v in balances(m).items() if v != 0}
            if got != {k: v for k, v in expect.items() if v != 0}:
                return False
        return True

    wait_until("every node to report the same final balances", check, timeout=timeout)


# -- a: payments become final, everyone agrees ----------------------------------------


def test_payments_become_final_within_seconds_and_everyone_agrees(
    template: Path, tmp_path: Path
) -> None:
    with network(template, tmp_path) as net:
        ada, bruno, chiara = net.ada, net.bruno, net.chiara
        net.start(ada, bruno, chiara)
        t0 = time.monotonic()
        paid = ada("pay", bruno.member, "40", "--memo", "bread", "--wait", "20")
        took = time.monotonic() - t0
        f = finality(paid)
        assert f["final"], f
        assert (f["quorum"], f["witnesses"]) == (QUORUM, WITNESSES), f
        assert QUORUM <= f["votes"] <= WITNESSES, f
        assert f["problem"] is None
        assert took < 10, f"final after {took:.1f} s"
        transfer = paid.json["transfer"]
        # The payee sees it final (the certificate came by gossip or sync), accepts.
        wait_until(
            "bruno to see the payment final",
            lambda: (
                [(t["transfer"], t["final"]) for t in bruno("pending").json["incoming"]]
                == [(transfer, True)]
            ),
            timeout=20,
        )
        accepted = bruno("accept", transfer, "--wait", "20")
        assert finality(accepted)["final"], accepted.json
        paid2 = chiara("pay", ada.member, "15", "--wait", "20")
        assert finality(paid2)["final"], paid2.json

        expect = {ada.member: -40, bruno.member: 40, chiara.member: -15}
        agree(net.running(), expect)
        for m in net.running():
            assert final_balance(m, ada) == -40
            assert final_balance(m, bruno) == 40
        mine = ada("balance").json
        assert (mine["balance"], mine["finality"]) == (-40, "witnessed")
        status = net.witnesses[0]("status").json
        assert status["witness"]["serving"] is True
        assert status["witness"]["answered"] > 0


# -- b: one key on two nodes spends its credit once at most -----------------------


def _spawn(m: Member, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*TROC, "--home", str(m.home), "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )


def test_one_key_on_two_nodes_cannot_spend_twice(template: Path, tmp_path: Path) -> None:
    with network(template, tmp_path) as net:
        ada, bruno, chiara = net.ada, net.bruno, net.chiara
        twin = net.twin(ada)  # the same member on a second machine
        net.start(ada, twin, bruno, chiara)
        # At once, each node spends all of ada's credit, to a different payee.
        procs = [
            _spawn(ada, "pay", bruno.member, str(CREDIT_LIMIT), "--wait", "15"),
            _spawn(twin, "pay", chiara.member, str(CREDIT_LIMIT), "--wait", "15"),
        ]
        outs = [p.communicate(timeout=60) for p in procs]
        results = [Result(p.returncode, o, e) for p, (o, e) in zip(procs, outs, strict=True)]
        for r in results:
            assert r.code == 0, r  # each node signed its own transfer
        transfers = [r.json["transfer"] for r in results]
        assert transfers[0] != transfers[1]
        said_final = [r.json["finality"]["final"] for r in results]
        assert sum(said_final) <= 1, results

        payees = (bruno, chiara)
        nodes = net.running()

        def settled() -> bool:
            # Every node has both transfers and the fork, and the payees agree
            # on which (if any) is final.
            views = [
                {t["transfer"]: t["final"] for t in p("pending").json["incoming"]} for p in payees
            ]
            return all(len(v) == 1 for v in views) and all(
                [f["member"] for f in m("forks").json["forks"]] == [ada.member] for m in nodes
            )

        wait_until("every node to learn the fork and both transfers", settled, timeout=30)
        # Whatever became final, it is the same everywhere and is at most one.
        finals: set[str] = set()
        for m in (ada, twin):
            for t in m("pending").json["outgoing"]:
                if t["final"]:
                    finals.add(t["transfer"])
        for p in payees:
            for t in p("pending").json["incoming"]:
                if t["final"]:
                    finals.add(t["transfer"])
        assert len(finals) <= 1, finals
        # The payees try to accept: only a final transfer can be.
        credited = []
        for p, t in zip(payees, transfers, strict=True):
            r = p("accept", t, "--wait", "20", check=False)
            if t in finals:
                assert r.code == 0, r
                assert finality(r)["final"], r
                credited.append(p)
            else:
                assert r.code != 0, r
                assert "final" in r.err, r.err
        assert len(credited) == len(finals)
        expect = {ada.member: -CREDIT_LIMIT if finals else 0}
        for p in credited:
            expect[p.member] = CREDIT_LIMIT
        agree(nodes, expect)
        for m in nodes:
            assert sum(balances(m).values()) == 0
            assert final_balance(m, ada) >= -CREDIT_LIMIT


# -- c: f witnesses down change nothing; f + 1 down make payments wait ---------------


def test_witnesses_killed_then_one_restarted(template: Path, tmp_path: Path) -> None:
    with network(template, tmp_path) as net:
        ada, bruno = net.ada, net.bruno
        net.start(ada, bruno)
        w2, w3 = net.witnesses[2], net.witnesses[3]
        w3.stop(signal.SIGKILL)
        first = ada("pay", bruno.member, "5", "--wait", "20")
        assert finality(first)["final"], first.json
        assert finality(first)["votes"] == QUORUM  # the three alive

        listen = w2.listen_addr
        w2.stop(signal.SIGKILL)
        t0 = time.monotonic()
        second = ada("pay", bruno.member, "7", "--wait", "3")
        f = finality(second)
        assert not f["final"], f
        assert (f["votes"], f["quorum"]) == (QUORUM - 1, QUORUM), f
        assert f["problem"] is None
        assert time.monotonic() - t0 < 15
        # While it waited, the votes so far were shown on stderr (not a tty: a
        # line per new count), the last one with the whole wait.
        shown = [line for line in second.err.splitlines() if line.startswith("witnesses: ")]
        assert shown, second.err
        assert shown[-1].startswith(f"witnesses: {QUORUM - 1} of {QUORUM} votes needed"), shown
        assert shown[-1].endswith("; waited 3 of 3 s"), shown
        assert f"({WITNESSES} witnesses" in shown[-1], shown
        # The witnesses it could not reach are the killed ones, named.
        down = {w2.member, w3.member}
        assert set(f["unreachable"]) <= down, f
        for w in f["unreachable"]:
            assert f"{w[:14]}…" in shown[-1], shown
        transfer = second.json["transfer"]
        mine = ada("balance").json
        assert (mine["balance"], mine["unconfirmed"]) == (-5, -7), mine
        [out] = [t for t in ada("pending").json["outgoing"] if t["transfer"] == transfer]
        assert out["final"] is False

        # One comes back on the same port: ada's node keeps asking, nothing else is done.
        net.restart(w2, listen)
        wait_until(
            "the waiting payment to become final",
            lambda: ada("balance").json["balance"] == -12,
            timeout=30,
        )
        [out] = [t for t in ada("pending").json["outgoing"] if t["transfer"] == transfer]
        assert out["final"] is True
        agree(net.running(), {ada.member: -12}, timeout=30)


# -- d: a witness killed at random moments never signs two ids at one position ------

Position = tuple[bytes, bytes, int]


def _read_only(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{home / 'store.sqlite'}?mode=ro", uri=True)


def certificates_in(home: Path) -> list[Certificate]:
    """Every certificate a node's store holds (kept ones, and both of any
    pair that proves witnesses faulty)."""
    with _read_only(home) as db:
        blobs = [r[0] for r in db.execute("SELECT data FROM certificates")]
        for first, second in db.execute("SELECT first, second FROM witness_faults"):
            blobs += [first, second]
    return [Certificate.decode(b) for b in blobs]


def recorded_votes(home: Path) -> dict[Position, bytes]:
    """A witness's vote log (its store's ``votes`` table)."""
    with _read_only(home) as db:
        rows = db.execute("SELECT community, author, seq, id FROM votes").fetchall()
    return {(c, a, s): i for c, a, s, i in rows}


def _pays(m: Member, to: Member, count: int, pause: float, stop: threading.Event) -> list[str]:
    """Up to ``count`` payments of 1 over the control socket, without waiting
    for finality; returns the refusals' reasons (a frozen log refuses)."""
    refused = []
    for _ in range(count):
        if stop.is_set():
            break
        reply = m.control("pay", {"to": to.member, "amount": "1"})
        if not reply["ok"]:
            refused.append(str(reply["error"].get("reason") or reply["error"]["kind"]))
        if pause:
            stop.wait(pause)
    return refused


def test_a_witness_killed_at_random_moments_never_signs_two_ids(
    template: Path, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed {seed}")
    with network(template, tmp_path) as net:
        ada, bruno, chiara = net.ada, net.bruno, net.chiara
        forkers = [(ada, net.twin(ada)), (bruno, net.twin(bruno))]
        net.start(*net.everyone[WITNESSES:])
        victim = net.witnesses[0]
        listen = victim.listen_addr
        # With one other witness down for good, every quorum needs the victim:
        # every certificate made from now on holds one of its votes.
        net.witnesses[3].stop(signal.SIGKILL)
        stop = threading.Event()
        bursts: list[threading.Thread] = []
        # chiara pays steadily all along, so the victim is busy when killed.
        steady = threading.Thread(target=_pays, args=(chiara, bruno, 400, 0.05, stop))
        steady.start()
        kills = 0
        deadline = time.monotonic() + 60
        try:
            while kills < 6 and time.monotonic() < deadline:
                if kills in (1, 3):
                    # A forker's two nodes pay at once: the same seqs, different
                    # entries, and both ask every witness to vote.
                    one, two = forkers.pop(0)
                    for m in (one, two):
                        t = threading.Thread(target=_pays, args=(m, chiara, 12, 0.0, stop))
                        t.start()
                        bursts.append(t)
                time.sleep(rng.uniform(0.2, 2.0))
                victim.stop(signal.SIGKILL)
                kills += 1
                time.sleep(rng.uniform(0.0, 0.3))
                net.restart(victim, listen)
        finally:
            stop.set()
            steady.join(timeout=60)
            for t in bursts:
                t.join(timeout=60)
        assert kills >= 4
        # The victim runs again: chiara's payments all become final.
        b = chiara("balance").json
        paid = -(b["balance"] + b["unconfirmed"])  # final + not yet final
        assert paid >= 20, b
        wait_until(
            "chiara's payments to become final",
            lambda: final_balance(chiara, chiara) == -paid,
            timeout=40,
        )
        # Both forkers forked, and the victim saw both branches of each.
        for one in (ada, bruno):
            wait_until(
                f"the victim to hold {one.name}'s fork",
                lambda one=one: one.member in [f["member"] for f in victim("forks").json["forks"]],
                timeout=30,
            )
        victim_id = decode_id("m", victim.member)
        net.stop_all()

    recorded = recorded_votes(victim.home)
    assert recorded, "the victim recorded no votes"
    signed: dict[Position, set[bytes]] = {}
    certified: dict[Position, set[bytes]] = {}
    in_certificates = 0
    for m in net.everyone:
        for cert in certificates_in(m.home):
            certified.setdefault(cert.position, set()).add(cert.id)
            if victim_id in cert.witnesses:
                in_certificates += 1
                signed.setdefault(cert.position, set()).add(cert.id)
    print(
        f"{kills} kills; the victim recorded {len(recorded)} votes; {in_certificates}"
        f" certificates at {len(signed)} positions hold its vote"
    )
    assert in_certificates > 0, "no certificate holds a vote of the victim"
    # And no node holds certificates of two entries at one position.
    assert all(len(ids) == 1 for ids in certified.values())
    for position, ids in signed.items():
        assert len(ids) == 1, f"the victim signed {len(ids)} ids at {position[1:]}"
        # Nothing it signed is missing from its vote log: it wrote before answering.
        assert recorded.get(position) == next(iter(ids)), position
