"""Building blocks for the protocol tests: keys, a one-community world, raw entries.

Everything here is deterministic (keys come from fixed seeds, time is a
counter), so a failing example replays exactly. Two ways to make entries:

* :class:`World` makes *valid* entries the way a node does: through
  :meth:`Ledger.prepare`, then stores them with :meth:`Ledger.ingest_entry`.
* :func:`sign_fields` / :meth:`World.raw` sign arbitrary field values, even
  invalid ones, with msgpack directly: nothing checks them, so the tests can
  hand the ledger exactly the bytes a hostile peer would send.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import struct
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import msgpack

from troc.crypto.sign import Domain, MemberId, SigningKey
from troc.errors import RefusedError
from troc.protocol.backend import MemoryBackend
from troc.protocol.entry import (
    Accept,
    AnyBody,
    Campaign,
    CampaignClose,
    CommunityId,
    Decline,
    Entry,
    EntryId,
    Genesis,
    Join,
    Kind,
    Offer,
    OfferClose,
    Pledge,
    Reclaim,
    Refusal,
    Request,
    TakeBack,
    Transfer,
    Vouch,
    Withdraw,
)
from troc.protocol.ledger import Ledger, Outcome, Reason, Status
from troc.protocol.witness import Certificate, VoidCertificate, VoidVote, Vote, default_quorum

if TYPE_CHECKING:  # node-level: imported where used (two_members)
    from troc.node.local import LocalNode

#: A fixed "now": 2023-11-14T22:13:20Z.
T0 = 1_700_000_000_000


@functools.cache
def key(n: int) -> SigningKey:
    """The n-th test key, from a fixed seed."""
    return SigningKey(hashlib.sha256(b"troc test key %d" % n).digest())


def canonical(value: Any) -> Any:
    """``value`` with every map's keys sorted, and nothing else checked, so
    that msgpack packs it in canonical order whatever the values are."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def pack_raw(value: Any) -> bytes:
    """msgpack bytes of ``value`` exactly as given (map order kept)."""
    return msgpack.packb(value, use_bin_type=True)


def wrap(signed: bytes, signature: bytes) -> bytes:
    """The wire form ``[signed, signature]``."""
    return pack_raw([signed, signature])


def sign_fields(
    signer: SigningKey,
    fields: list[Any],
    *,
    domain: Domain = Domain.ENTRY,
    sort: bool = True,
) -> bytes:
    """Wire bytes of an entry with these signed ``fields``, signed by ``signer``.

    ``fields`` is the 8-field array, values unchecked. With ``sort`` (the
    default) map keys are sorted first; pass ``sort=False`` to keep the order
    given (for non-canonical tests).
    """
    signed = pack_raw(canonical(fields) if sort else fields)
    return wrap(signed, signer.sign(domain, signed))


def fields_of(entry: Entry) -> list[Any]:
    """The 8 signed fields of ``entry``, as plain msgpack values."""
    return msgpack.unpackb(entry.signed, raw=False)


def resign(signer: SigningKey, entry: Entry, **changes: Any) -> bytes:
    """Re-sign ``entry`` with some fields changed (by name)."""
    names = ("version", "community", "author", "seq", "prev", "timestamp_ms", "kind", "body")
    fields = fields_of(entry)
    for name, value in changes.items():
        fields[names.index(name)] = value
    return sign_fields(signer, fields)


def make_genesis(founder: SigningKey, timestamp_ms: int = T0, **rules: Any) -> Entry:
    rules.setdefault("name", "Test valley")
    rules.setdefault("unit", "hour")
    rules.setdefault("credit_limit", 100)
    return Entry.create(
        founder, community=None, seq=0, prev=None, timestamp_ms=timestamp_ms, body=Genesis(**rules)
    )


class World:
    """One community on one fresh in-memory ledger, with a founder (key 0)."""

    def __init__(self, founder: SigningKey | None = None, **rules: Any) -> None:
        self.founder = founder or key(0)
        self.now = T0
        self.ledger = Ledger(MemoryBackend())
        self.genesis = make_genesis(self.founder, self.now, **rules)
        self.community = CommunityId(self.genesis.id)
        self.log: list[Entry] = []  # every entry stored, in order
        #: In a witnessed community: makes a certificate for each entry added,
        #: so this ledger holds every entry it made as final.
        self.certifier: Callable[[Entry], bytes] | None = None
        assert self.ledger.ingest(self.genesis.wire, self.now).status is Status.ACCEPTED

    @property
    def backend(self) -> MemoryBackend:
        return self.ledger.backend  # type: ignore[return-value]

    def tick(self) -> int:
        self.now += 1000
        return self.now

    # -- valid entries, the node's way -----------------------------------

    def add(self, signer: SigningKey, body: AnyBody) -> Entry:
        """Prepare, store and return the next entry of ``signer``'s log."""
        entry = self.ledger.prepare(signer, self.community, body, self.tick())
        outcome = self.ledger.ingest_entry(entry, self.now)
        assert outcome.status is Status.ACCEPTED, outcome
        if self.certifier is not None:
            assert self.ledger.ingest_certificate(self.certifier(entry), self.now).ok
        self.log.append(entry)
        return entry

    def join(self, signer: SigningKey, vouch: Entry | None = None) -> Entry:
        return self.add(signer, Join(vouch=None if vouch is None else vouch.ref))

    def pay(self, payer: SigningKey, payee: SigningKey, amount: int, **kw: Any) -> Entry:
        return self.add(payer, Transfer(to=payee.public, amount=amount, **kw))

    def accept(self, payee: SigningKey, transfer: Entry) -> Entry:
        return self.add(payee, Accept(transfer=transfer.ref))

    def decline(self, payee: SigningKey, transfer: Entry) -> Entry:
        return self.add(payee, Decline(transfer=transfer.ref))

    def reclaim(self, payer: SigningKey, decline: Entry) -> Entry:
        return self.add(payer, Reclaim(decline=decline.ref))

    def offer(self, signer: SigningKey, title: str = "Bread") -> Entry:
        return self.add(signer, Offer(side="offer", title=title))

    def close(self, signer: SigningKey, offer: Entry) -> Entry:
        return self.add(signer, OfferClose(offer=offer.ref))

    def vouch(self, signer: SigningKey, member: SigningKey, limit: int | None = None) -> Entry:
        return self.add(signer, Vouch(member=member.public, limit=limit))

    def request(self, payee: SigningKey, payer: SigningKey, amount: int, **kw: Any) -> Entry:
        return self.add(payee, Request(to=payer.public, amount=amount, **kw))

    def pay_request(self, payer: SigningKey, request: Entry) -> Entry:
        """The transfer that pays ``request`` (which carries it)."""
        return self.add(payer, Transfer.paying(request))

    def refuse(self, payer: SigningKey, request: Entry) -> Entry:
        return self.add(payer, Refusal(request=request.ref))

    def take_back(self, payer: SigningKey, transfer: Entry) -> Entry:
        return self.add(payer, TakeBack(transfer=transfer.ref))

    def refused(self, signer: SigningKey, body: AnyBody, reason: Reason) -> Outcome:
        """``prepare`` refuses ``body`` for ``reason``; signed anyway, the
        ledger rejects it for the same reason."""
        import pytest

        with pytest.raises(RefusedError) as info:
            self.ledger.prepare(signer, self.community, body, self.now)
        assert info.value.reason == reason.value, info.value
        outcome = self.ingest(self.create(signer, body))
        assert outcome.status is Status.REJECTED, outcome
        assert outcome.reason is reason, outcome.detail
        return outcome

    # -- arbitrary entries ------------------------------------------------

    def next_position(self, author: MemberId) -> tuple[int, EntryId | None]:
        head = self.ledger.head(self.community, author)
        return (1, None) if head is None else (head.seq + 1, head.id)

    def create(self, signer: SigningKey, body: AnyBody, **fields: Any) -> Entry:
        """A signed, well-formed entry at ``signer``'s next position (or at the
        given seq/prev/…), *not* checked against the ledger rules."""
        seq, prev = self.next_position(signer.public)
        return Entry.create(
            signer,
            community=fields.get("community", self.community),
            seq=fields.get("seq", seq),
            prev=fields.get("prev", prev),
            timestamp_ms=fields.get("timestamp_ms", self.now),
            body=body,
        )

    def raw(self, signer: SigningKey, kind: str, body: Any, **fields: Any) -> bytes:
        """Wire bytes of an entry with any field values, signed by ``signer``.

        Fields default to the author's next position now; ``domain=`` signs
        for another purpose, ``sort=False`` keeps map keys in the order given.
        """
        seq, prev = self.next_position(signer.public)
        values = {
            "version": 1,
            "community": self.community,
            "author": signer.public,
            "seq": seq,
            "prev": prev,
            "timestamp_ms": self.now,
            "kind": kind,
            "body": body,
        }
        values.update(fields)
        domain = values.pop("domain", Domain.ENTRY)
        sort = values.pop("sort", True)
        return sign_fields(signer, list(values.values()), domain=domain, sort=sort)

    def ingest(self, wire: bytes | Entry, now_ms: int | None = None) -> Outcome:
        if isinstance(wire, Entry):
            wire = wire.wire
        return self.ledger.ingest(wire, self.now if now_ms is None else now_ms)

    def balance(self, member: SigningKey) -> int:
        return self.ledger.balance(self.community, member.public)

    def balances(self) -> dict[MemberId, int]:
        return dict(self.ledger.balances(self.community))


def fresh_ledger(genesis: Entry) -> Ledger:
    """A new node that follows the community of ``genesis``."""
    ledger = Ledger(MemoryBackend())
    assert ledger.ingest(genesis.wire, T0).status is Status.ACCEPTED
    return ledger


# -- an oracle for counted balances, from a set of entries alone -------------


def fork_points(entries: Iterable[Entry]) -> dict[MemberId, int]:
    """For each author with two different entries at one seq, the lowest such seq."""
    seen: dict[tuple[MemberId, int], set[EntryId]] = {}
    for e in entries:
        if e.kind is not Kind.GENESIS:
            seen.setdefault((e.author, e.seq), set()).add(e.id)
    out: dict[MemberId, int] = {}
    for (author, seq), ids in seen.items():
        if len(ids) > 1:
            out[author] = min(seq, out.get(author, seq))
    return out


def counted_balances(entries: Iterable[Entry]) -> tuple[dict[MemberId, int], int]:
    """Counted balances and the counted amount in flight, computed from a set
    of *valid* entries by the rules of docs/protocol.md §4 and §10 alone (a
    second, independent implementation of "what counts").

    An entry counts if it lies below its author's first fork. A counted
    transfer debits; a counted accept of a counted transfer credits the payee;
    a counted reclaim credits the payer; a counted take-back credits the
    payer unless a counted accept of its transfer is among the entries (the
    accept wins, §4.11). A counted pledge debits like a transfer; a counted
    close whose named pledges reach the goal credits its author with each
    counted one; a counted withdraw credits the pledger, unless it is a lapse
    (no close named) and such a counted close names its pledge (the close
    wins, §10.5). In flight: counted
    transfers and pledges not credited yet.
    """
    entries = list({e.id: e for e in entries}.values())
    frozen = fork_points(entries)
    by_id = {e.id: e for e in entries}

    def counts(author: MemberId, seq: int) -> bool:
        return author not in frozen or seq < frozen[author]

    def closed_counting(pledge: Entry) -> bool:
        """A counted close among the entries names ``pledge`` and reached its goal."""
        for x in entries:
            if isinstance(x.body, CampaignClose) and counts(x.author, x.seq):
                camp = by_id[x.body.campaign.id].body
                assert isinstance(camp, Campaign)
                named = [by_id[r.id].body for r in x.body.pledges]
                total = sum(n.amount for n in named if isinstance(n, Pledge))
                if pledge.ref in x.body.pledges and total >= camp.goal:
                    return True
        return False

    balances: Counter[MemberId] = Counter()
    in_flight = 0
    credited: Counter[EntryId] = Counter()
    for e in entries:
        if e.kind is Kind.GENESIS:
            continue
        balances[e.author] += 0  # every author with a log has a balance
        if not counts(e.author, e.seq):
            continue
        body = e.body
        if isinstance(body, Transfer):
            balances[e.author] -= body.amount
            in_flight += body.amount
        elif isinstance(body, Accept):
            t = by_id[body.transfer.id]
            if counts(t.author, t.seq):
                assert isinstance(t.body, Transfer)
                balances[e.author] += t.body.amount
                in_flight -= t.body.amount
                credited[t.id] += 1
        elif isinstance(body, TakeBack):
            t = by_id[body.transfer.id]
            assert isinstance(t.body, Transfer)
            accepted = any(
                isinstance(x.body, Accept)
                and x.body.transfer.id == t.id
                and counts(x.author, x.seq)
                for x in entries
            )
            if not accepted:
                balances[e.author] += t.body.amount
                in_flight -= t.body.amount
                credited[t.id] += 1
        elif isinstance(body, Reclaim):
            d = by_id[body.decline.id]
            assert isinstance(d.body, Decline)
            t = by_id[d.body.transfer.id]
            assert isinstance(t.body, Transfer)
            balances[e.author] += t.body.amount
            in_flight -= t.body.amount
            credited[t.id] += 1
        elif isinstance(body, Pledge):  # §10: debited at once, in flight
            balances[e.author] -= body.amount
            in_flight += body.amount
        elif isinstance(body, CampaignClose):
            camp = by_id[body.campaign.id].body
            assert isinstance(camp, Campaign)
            named = [by_id[r.id] for r in body.pledges]
            amounts = [p.body.amount for p in named if isinstance(p.body, Pledge)]
            if sum(amounts) >= camp.goal:  # succeeded: each counted pledge is credited
                for p, amount in zip(named, amounts, strict=True):
                    if counts(p.author, p.seq):
                        balances[e.author] += amount
                        in_flight -= amount
                        credited[p.id] += 1
        elif isinstance(body, Withdraw):
            p = by_id[body.pledge.id]
            assert isinstance(p.body, Pledge)
            if body.lapse and closed_counting(p):
                continue  # a lapse: the close counting its pledge wins (§10.5)
            balances[e.author] += p.body.amount
            in_flight -= p.body.amount
            credited[p.id] += 1
    assert all(n == 1 for n in credited.values()), "a transfer or pledge was credited twice"
    return dict(balances), in_flight


# -- a msgpack writer that may choose wider headers than needed ---------------

#: Chooses, for a header, whether to widen it (and by how many steps).
Widen = Callable[[], int]


def pack_wide(
    value: Any, widen: Widen, *, key_order: Callable[[list[str]], list[str]] = sorted
) -> bytes:
    """msgpack bytes of ``value`` where every header may be wider than the
    minimal one (``widen()`` says how many steps), and map keys come in
    ``key_order``. With ``widen`` always 0 and sorted keys this is the
    canonical encoding (checked by the tests against :func:`codec.pack`)."""
    out = bytearray()

    def header(options: list[tuple[int, bytes]], n: int) -> None:
        # options: (max value, prefix+format) from narrowest to widest.
        fitting = [i for i, (limit, _) in enumerate(options) if n <= limit]
        i = min(fitting[0] + widen(), len(options) - 1)
        _, fmt = options[i]
        out.extend(_HEADER_PACKERS[fmt](n))

    def walk(v: Any) -> None:
        if v is None:
            out.append(0xC0)
        elif v is True:
            out.append(0xC3)
        elif v is False:
            out.append(0xC2)
        elif isinstance(v, int):
            if v >= 0:
                header(_UINT, v)
            else:
                header(_NINT, -v)
        elif isinstance(v, str):
            data = v.encode()
            header(_STR, len(data))
            out.extend(data)
        elif isinstance(v, bytes):
            header(_BIN, len(v))
            out.extend(v)
        elif isinstance(v, list | tuple):
            header(_ARRAY, len(v))
            for item in v:
                walk(item)
        elif isinstance(v, dict):
            header(_MAP, len(v))
            for k in key_order(list(v)):
                walk(k)
                walk(v[k])
        else:  # pragma: no cover
            raise TypeError(type(v))

    walk(value)
    return bytes(out)


def _fixed(tag: int, fmt: str) -> Callable[[int], bytes]:
    return lambda n: bytes((tag,)) + struct.pack(fmt, n)


_HEADER_PACKERS: dict[str, Callable[[int], bytes]] = {
    "pfix": lambda n: bytes((n,)),
    "u8": _fixed(0xCC, ">B"),
    "u16": _fixed(0xCD, ">H"),
    "u32": _fixed(0xCE, ">I"),
    "u64": _fixed(0xCF, ">Q"),
    # negative ints are given as their magnitude m = -v
    "nfix": lambda m: bytes(((0x100 - m) & 0xFF,)),
    "i8": lambda m: bytes((0xD0,)) + struct.pack(">b", -m),
    "i16": lambda m: bytes((0xD1,)) + struct.pack(">h", -m),
    "i32": lambda m: bytes((0xD2,)) + struct.pack(">i", -m),
    "i64": lambda m: bytes((0xD3,)) + struct.pack(">q", -m),
    "sfix": lambda n: bytes((0xA0 | n,)),
    "s8": _fixed(0xD9, ">B"),
    "s16": _fixed(0xDA, ">H"),
    "s32": _fixed(0xDB, ">I"),
    "b8": _fixed(0xC4, ">B"),
    "b16": _fixed(0xC5, ">H"),
    "b32": _fixed(0xC6, ">I"),
    "afix": lambda n: bytes((0x90 | n,)),
    "a16": _fixed(0xDC, ">H"),
    "a32": _fixed(0xDD, ">I"),
    "mfix": lambda n: bytes((0x80 | n,)),
    "m16": _fixed(0xDE, ">H"),
    "m32": _fixed(0xDF, ">I"),
}

_UINT = [(127, "pfix"), (0xFF, "u8"), (0xFFFF, "u16"), (0xFFFFFFFF, "u32"), (2**64 - 1, "u64")]
_NINT = [(32, "nfix"), (128, "i8"), (2**15, "i16"), (2**31, "i32"), (2**63, "i64")]
_STR = [(31, "sfix"), (0xFF, "s8"), (0xFFFF, "s16"), (0xFFFFFFFF, "s32")]
_BIN = [(0xFF, "b8"), (0xFFFF, "b16"), (0xFFFFFFFF, "b32")]
_ARRAY = [(15, "afix"), (0xFFFF, "a16"), (0xFFFFFFFF, "a32")]
_MAP = [(15, "mfix"), (0xFFFF, "m16"), (0xFFFFFFFF, "m32")]


# -- witnessed communities ----------------------------------------------------

#: The witnesses of :func:`witnessed_world` (n = 4, f = 1, q = 3).
WITNESS_KEYS = [key(300 + i) for i in range(4)]


def certify(entry: Entry, signers: Iterable[SigningKey] = WITNESS_KEYS[:3]) -> bytes:
    """A certificate of ``entry`` (canonical bytes), voted by ``signers``."""
    assert entry.community is not None
    return Certificate.from_votes(
        Vote.sign(k, entry.community, entry.ref) for k in signers
    ).encode()


def void_certify(entry: Entry, signers: Iterable[SigningKey] = WITNESS_KEYS[:3]) -> bytes:
    """A void certificate of ``entry`` (canonical bytes, docs/witness.md §3.6)."""
    assert entry.community is not None
    return VoidCertificate.from_votes(
        VoidVote.sign(k, entry.community, entry.ref) for k in signers
    ).encode()


def witnessed_world(*, certified: bool = True, **rules: Any) -> World:
    """A witnessed community (4 witnesses, quorum 3). With ``certified`` its
    own ledger certifies every entry it makes, so it can make accepts and
    reclaims; without, a test certifies what it wants."""
    f, q = default_quorum(len(WITNESS_KEYS))
    w = World(
        finality="witnessed",
        witnesses=tuple(sorted(k.public for k in WITNESS_KEYS)),
        faults=f,
        quorum=q,
        **rules,
    )
    if certified:
        w.certifier = certify
    return w


def founded_homes(tmp: Path) -> tuple[SigningKey, SigningKey, CommunityId, bytes]:
    """Two node homes: ``tmp/"s"`` founded a fresh community, ``tmp/"a"`` joined
    it (offline). Returns the founder's key, the member's key, the community
    id and its genesis (wire bytes)."""
    from troc.node.local import open_local_node  # node-level: imported only here

    ks, ka = SigningKey.generate(), SigningKey.generate()
    with open_local_node(tmp / "s", ks) as s:
        community = s.create_community("Test", "h", 10)
        genesis = s.community(community).genesis
    with open_local_node(tmp / "a", ka) as a:
        a.join(genesis)
    return ks, ka, community, genesis


def two_members(
    stack: ExitStack, tmp: Path, credit_limit: int = 20
) -> tuple[LocalNode, LocalNode, CommunityId]:
    """ada (``key(1)``, under ``tmp/"ada"``) founded a community, bruno
    (``key(2)``) joined it, and ada holds bruno's join; both nodes stay open
    as long as ``stack``."""
    from troc.node.local import open_local_node  # node-level: imported only here

    ada = stack.enter_context(open_local_node(tmp / "ada", key(1)))
    bruno = stack.enter_context(open_local_node(tmp / "bruno", key(2)))
    community = ada.create_community("Valley LETS", "hours", credit_limit)
    bruno.join(ada.community(community).genesis)
    head = bruno.store.head(community, bruno.member)
    assert head is not None
    stored = bruno.store.entry(community, bruno.member, head.seq, head.id)
    assert stored is not None
    ada.ingest(stored.entry.wire)
    return ada, bruno, community


async def publish_and_receive(host: Any, topic: str, sub: Any, sent: list[bytes]) -> list[bytes]:
    """Publish ``sent`` from ``host`` on ``topic``, one message each, and
    return the data of as many messages as ``sub`` then receives (within 10 s)."""
    import trio  # network-level: imported only here

    for data in sent:
        await host.gossip.publish(topic, data)
    got = []
    with trio.fail_after(10):
        while len(got) < len(sent):
            got.append((await sub.receive()).data)
    return got


def bench_module(name: str) -> ModuleType:
    """``bench/NAME.py`` loaded as the module ``troc_bench_NAME`` (the
    benchmarks are scripts, not a package: tests run them in miniature)."""
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"troc_bench_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def canonical_proofs(monkeypatch: Any) -> list[Any]:
    """From now on (in this process, for the test), every value whose
    bytes :mod:`troc.protocol.codec` proves canonical, in order."""
    from troc.protocol import codec

    proofs: list[Any] = []
    real = codec._canonical_shape

    def counting(value: Any, depth: int, limits: codec.Limits) -> bool:
        if depth == 0:
            proofs.append(value)
        return real(value, depth, limits)

    monkeypatch.setattr(codec, "_canonical_shape", counting)
    return proofs
