"""A new member joins a big community: how soon can it pay and accept, and how
soon has it checked everything?

Setup, made once and cached under bench/.cache/ (gitignored): a community of
``--members`` members and ``--entries`` entries (bench/ingest.py's generator:
joins, offers, offer closes, payments, accepts, a few declines and reclaims),
and a server's home holding all of it. The server is a ``troc relay`` whose
key is the founder's (member 0), so it can invite the newcomer and pay it.

Then, with real processes on 127.0.0.1:

1. the server (``troc relay``) starts and makes an invitation (``troc community invite``);
2. the newcomer's home is made (``troc init``); the clock starts at its
   ``troc community join INVITATION``, then its ``troc run`` starts and
   dials the addresses the invitation names;
3. while it syncs, the bench asks, over the control sockets, again and again:
   the newcomer's balance; a payment of 1 from the newcomer to the founder;
   a payment of 1 from the founder (the server) to the newcomer, once the
   server holds the newcomer's join; the newcomer's accept of it.

Reported: ``entries`` and ``members`` (the community's), ``usable_s`` (join
until the newcomer has its balance, has paid and has accepted), with
``balance_s``, ``paid_s`` and ``accepted_s`` apart, and ``founder_paid_s``
(when the server could pay the newcomer: it holds the newcomer's join); ``caught_up_s`` (join
until the newcomer holds every entry the server holds: each one checked,
signature and rules, by the newcomer's own ledger); ``entries_per_s``
(entries / caught_up_s); ``cpu_us_per_entry`` and ``server_cpu_us_per_entry``
(CPU time per entry of the newcomer's process while it syncs, start-up left
out, and of the server's: steadier than the clock on a shared machine); ``rss_mb`` (the
newcomer's peak resident memory), ``rss_mb_half`` (its resident memory when it
held half the entries: "flat" means close to ``rss_mb``) and ``server_rss_mb``;
``witnessed``.

``--witnessed``: the community is witnessed (docs/witness.md), its one
witness the founder (n = 1, f = 0, q = 1), so the server votes. Its store
holds what such a community's server would: a certificate of every entry
(each member's node asks for one per entry it signs, §6.1; stored through
``ingest_certificates``, each checked) and the witness's vote log recorded
up to every head (§3.1), so it votes on afterwards as the witness that
certified all of it. Cached apart (``…-witnessed``). Step 3 then also waits
until the founder's payment and the newcomer's accept are certified:
``transfer_final_s`` and ``accept_final_s``.

The newcomer trusts nothing it has not checked: it takes no balance from the
server. Its own balance is known at once (its log is its join alone); paying
needs only the payee's join; accepting needs the payment checked, so the
payer's log and, through the accepts in it, the logs of whoever paid the
payer: in a community where money has circulated, nearly all of history.

The last line of output is one JSON object. Every process started is stopped
by its PID. Usage:

    python bench/join.py                                # 1,000 members, 1,000,000 entries
    python bench/join.py --entries 50000 --members 1000 # a quick run
    python bench/join.py --entries 50000 --witnessed    # the server its witness
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest as ingest_bench
import sync as sync_bench

from troc.crypto.ids import encode_id
from troc.crypto.keystore import save_key
from troc.crypto.sign import MemberId, SigningKey
from troc.node.local import LocalNode, open_local_node
from troc.protocol.entry import CommunityId, Entry, EntryId
from troc.protocol.ledger import Status

CACHE = Path(__file__).resolve().parent / ".cache"
#: What the founder's and the newcomer's payments move.
AMOUNT = 1
#: Certificates stored per transaction while the witnessed server is built.
CERT_BATCH = 5000


def server_home(
    entries: int, members: int, seed: int, workers: int, witnessed: bool = False
) -> Path:
    """The server's home holding the whole community, built on first use
    (``witnessed``: the witnessed one, see :func:`_certify`)."""
    name = f"server-{entries}-m{members}-seed{seed}" + ("-witnessed" if witnessed else "")
    home = CACHE / name
    if (home / "ready").exists():
        return home
    wires = ingest_bench.load(entries, seed, members, out=CACHE, witnessed=witnessed)
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True, mode=0o700)
    founder = ingest_bench.member_key(seed, 0)
    save_key(home / "key", founder.seed, None)
    (home / "profile.json").write_text(
        json.dumps({"member": encode_id("m", founder.public), "name": "founder"})
    )
    genesis = Entry.decode(wires[0])
    t0 = time.perf_counter()
    with open_local_node(home, founder) as node:
        node.ingest_many([wires[0]])
        if witnessed:
            _certify(node, wires, founder)
        ingest_bench.ingest_pipelined(node, wires[1:], CommunityId(genesis.id), workers)
        if witnessed:
            _check_final(node, CommunityId(genesis.id))
    print(
        f"server store: {len(wires)} entries in {time.perf_counter() - t0:.0f} s -> {home}",
        file=sys.stderr,
    )
    (home / "ready").write_text("")
    return home


def _check_final(node: LocalNode, community: CommunityId) -> None:
    """Every log of the built store is final up to its head, as in a
    community whose every entry was certified."""
    behind = [
        m for m, h in node.store.heads(community) if (h.final_seq, h.final_id) != (h.seq, h.id)
    ]
    if behind:
        raise SystemExit(f"{len(behind)} logs not final up to their head: bench certificates wrong")


def _certify(node: LocalNode, wires: list[bytes], witness: SigningKey) -> None:
    """The witness's side of a witnessed history, before its entries are
    stored: a certificate of every entry (``ingest_certificates``, each
    checked; stored ahead of its entry, it makes the entry final as it
    arrives, so no accept waits), and the witness's vote log, one record
    per (author, seq), as a witness that voted for each entry in turn wrote
    it (docs/witness.md §3.1). Without the log the server would vote as a
    witness that lost its own (§8.1); nothing rebuilds it from certificates
    (§6.3, "Not built")."""
    t0 = time.perf_counter()
    logs: dict[MemberId, list[tuple[int, EntryId]]] = {}
    batch: list[bytes] = []
    done = 0

    def flush() -> None:
        for outcome in node.ingest_certificates(batch):
            if outcome.status is not Status.ACCEPTED:
                raise SystemExit(f"bench certificate not accepted: {outcome}")
        batch.clear()

    for ref, cert in ingest_bench.certificates(wires, witness):
        logs.setdefault(ref.author, []).append((ref.seq, ref.id))
        batch.append(cert)
        if len(batch) == CERT_BATCH:
            flush()
            done += CERT_BATCH
            if done % (20 * CERT_BATCH) == 0:
                rate = done / (time.perf_counter() - t0)
                print(f"  {done} certificates, {rate:,.0f}/s", file=sys.stderr)
    flush()
    community = CommunityId(Entry.decode(wires[0]).id)
    with node.lock, node.store.transaction(durable=True):
        for author, records in logs.items():
            node.store.put_votes(community, author, records)
    print(
        f"  {len(wires) - 1} certificates and votes in {time.perf_counter() - t0:.0f} s",
        file=sys.stderr,
    )


class Server(sync_bench.Proc):
    """``troc relay`` on ``home``, on 127.0.0.1, stopped by its PID (``stop``)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        args = [sys.executable, "-m", "troc", "--home", str(home), "--json", "relay"]
        args += ["--listen", "/ip4/127.0.0.1/tcp/0", "--metrics-listen", "", "--web", ""]
        args += ["--log-level", "warning"]
        # A community server runs for months: its restore guard (no signing
        # until a first sync after start, up to 10 s) passed long ago. Started
        # just now, it would hold the founder's payment back that long.
        env = dict(sync_bench._env(), TROC_RESTORE_GUARD_SECONDS="0", TROC_SYNC_INTERVAL="60")
        self.log = open(home / "run.log", "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"server in {home} did not start: see {home / 'run.log'}")
        self.info = json.loads(line)
        self.addr = self.info["addrs"][0]


def try_control(home: Path, op: str, params: dict[str, Any] | None = None) -> Any:
    """One control request; None if the node refused it (not yet possible)."""
    reply = sync_bench.control_reply(home, op, params)
    return reply["result"] if reply["ok"] else None


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far: under load from
    other work, steadier than the wall clock."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def entries_held(home: Path) -> int:
    status = try_control(home, "status")
    if not status or not status["communities"]:
        return 0
    return int(status["communities"][0]["entries"])


def _goals(witnessed: bool) -> set[str]:
    """What the member's steps (:func:`_use`) wait for: the accept, and in a
    witnessed community the founder's payment and the accept final too."""
    return {"accepted", "transfer_final", "accept_final"} if witnessed else {"accepted"}


def _final(home: Path, entry: str) -> bool:
    """True once the node at ``home`` holds its own entry ``entry`` final."""
    finality = try_control(home, "finality", {"entry": entry})
    return bool(finality and finality["final"])


def _use(
    newcomer: Path,
    server: Path,
    me: str,
    founder: str,
    t0: float,
    times: dict[str, float],
    stop: threading.Event,
    witnessed: bool = False,
) -> None:
    """The newcomer's balance, its payment to the founder, the founder's to
    it and its accept, each tried until the node takes it; ``times`` gets
    the seconds since ``t0`` at which each succeeded. ``witnessed``: then
    also until the founder's payment and the accept are final (each
    certified by the witness, the server), at ``transfer_final`` and
    ``accept_final``."""
    transfer: str | None = None
    accept: str | None = None
    while not stop.is_set() and not _goals(witnessed) <= times.keys():
        if "balance" not in times and try_control(newcomer, "balance") is not None:
            times["balance"] = time.perf_counter() - t0
        if "paid" not in times and try_control(newcomer, "pay", {"to": founder, "amount": AMOUNT}):
            times["paid"] = time.perf_counter() - t0
        if transfer is None:
            done = try_control(server, "pay", {"to": me, "amount": AMOUNT})
            transfer = None if done is None else done["transfer"]
            if transfer is not None:
                times["founder_paid"] = time.perf_counter() - t0
        if transfer is not None and accept is None:
            done = try_control(newcomer, "accept", {"transfer": transfer})
            accept = None if done is None else done["accept"]
            if accept is not None:
                times["accepted"] = time.perf_counter() - t0
        for key, home, entry in (
            ("transfer_final", server, transfer),
            ("accept_final", newcomer, accept),
        ):
            if witnessed and entry is not None and key not in times and _final(home, entry):
                times[key] = time.perf_counter() - t0
        stop.wait(0.25)


def join(
    server: Path, tmp: Path, timeout: float, progress: bool, witnessed: bool = False
) -> dict[str, Any]:
    """The newcomer's run (the module's docstring, steps 1-3)."""
    newcomer = tmp / "newcomer"
    sync_bench.troc(newcomer, "init", "--no-passphrase")
    me = sync_bench.troc(newcomer, "whoami")["member"]
    founder = json.loads((server / "profile.json").read_text())["member"]
    ps = Server(server)
    pn = None
    times: dict[str, float] = {}
    rss_half = 0.0
    try:
        held = entries_held(server)
        invitation = sync_bench.troc(server, "community", "invite")["invitation"]
        server_cpu0 = cpu_s(ps.proc.pid)
        t0 = time.perf_counter()
        sync_bench.troc(newcomer, "community", "join", invitation)
        pn = sync_bench.Proc(newcomer, sync_interval=5)  # troc run's default
        # The member's own steps run beside the polling: a signing step may
        # wait (the node's restore guard: up to 10 s for its first sync).
        stop = threading.Event()
        steps = threading.Thread(
            target=_use,
            args=(newcomer, server, me, founder, t0, times, stop, witnessed),
            daemon=True,
        )
        steps.start()
        deadline = t0 + timeout
        used = _goals(witnessed)
        count = 0
        start: tuple[float, int] | None = None  # the newcomer's CPU time and count
        while time.perf_counter() < deadline:
            now = time.perf_counter() - t0
            count = entries_held(newcomer)
            if progress:
                print(f"{now:7.2f} s: {count} entries, {sorted(times)}", file=sys.stderr)
            if start is None and count > 2:  # syncing (start-up excluded)
                start = cpu_s(pn.proc.pid), count
            if not rss_half and count >= held // 2:
                rss_half = rss_mb(pn.proc.pid)
            if "caught_up" not in times and count >= entries_held(server):
                times["caught_up"] = time.perf_counter() - t0
                cpu = cpu_s(pn.proc.pid), cpu_s(ps.proc.pid) - server_cpu0
                assert start is not None
                per_entry = (cpu[0] - start[0]) / max(1, count - start[1])
            if "caught_up" in times and used <= times.keys():
                break
            time.sleep(0.5)  # a status lists every head: not too often
        stop.set()
        steps.join(timeout=150)
        rss = rss_mb(pn.proc.pid, "VmHWM")
        server_rss = rss_mb(ps.proc.pid, "VmHWM")
    finally:
        for p in (pn, ps):
            if p is not None:
                p.stop()
    if "caught_up" not in times or not used <= times.keys():
        raise SystemExit(f"not caught up after {timeout:.0f} s: {times}, held {count} of {held}")
    usable = max(times["balance"], times["paid"], times["accepted"])
    return {
        "usable_s": round(usable, 2),
        "balance_s": round(times["balance"], 2),
        "paid_s": round(times["paid"], 2),
        "accepted_s": round(times["accepted"], 2),
        "founder_paid_s": round(times["founder_paid"], 2),
        "caught_up_s": round(times["caught_up"], 2),
        "entries_per_s": round(held / times["caught_up"]),
        "cpu_us_per_entry": round(per_entry * 1e6, 1),
        "server_cpu_us_per_entry": round(cpu[1] / held * 1e6, 1),
        "rss_mb": round(rss, 1),
        "rss_mb_half": round(rss_half, 1),
        "server_rss_mb": round(server_rss, 1),
    } | {f"{k}_s": round(times[k], 2) for k in sorted(used - {"accepted"})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds (default 1800)")
    parser.add_argument("--progress", action="store_true", help="print the count as it grows")
    parser.add_argument(
        "--witnessed", action="store_true", help="a witnessed community (the server its witness)"
    )
    args = parser.parse_args()
    workers = len(os.sched_getaffinity(0))
    server = server_home(args.entries, args.members, args.seed, workers, args.witnessed)
    # The server's home is the cache: run on a copy, so the run's own entries
    # (the payments) do not change it for the next run.
    tmp = Path(tempfile.mkdtemp(prefix="troc-bench-join-"))
    try:
        copy = tmp / "server"
        shutil.copytree(server, copy, ignore=shutil.ignore_patterns("*.sock", "*.lock", "ready"))
        result: dict[str, Any] = {"entries": args.entries, "members": args.members}
        result["witnessed"] = args.witnessed
        result |= join(copy, tmp, args.timeout, args.progress, args.witnessed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
