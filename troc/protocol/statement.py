"""Statements, and statements anyone can verify (docs/protocol.md §9).

Theory of operation
-------------------
A member's balance is a function of its log and of the entries that log
depends on: the prev links, and what its entries reference (the transfers
it accepted, the declines it reclaimed after), each valid only on top of
its own author's log, and so on. A *statement* lists the movements of one
stretch of the member's log (seq ``from_seq`` … ``to_seq``) with the
running balance; a *bundle* is the evidence for it that a third party can
check alone, offline, without a home or a node:

* the genesis (the community's rules; its id is the community id);
* the member's log from seq 1 up to the period's last entry, and the
  causal past of all of it: every entry any of them needs, transitively,
  in an order where each comes after what it needs; a fork the builder
  knows of, in any log of that past, with both its branches' entries;
* in a witnessed community, the certificates the builder holds for those
  entries, the logs extended up to their next certified entry;
* the member's signature over all of it (domain ``troc/statement/v1``).

:func:`verify_bundle` replays the bundle through a fresh :class:`Ledger` on
a :class:`MemoryBackend`: the very rules every node runs. Every entry must
be accepted where it stands (not waiting, not rejected, not repeated), every
certificate accepted. The movements and balances are then read from what
the replay stored, never from what the builder claimed. Pure: no clock (the
caller passes ``now_ms`` for the future-timestamp guard), no file, no socket.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

from troc.crypto.sign import Domain, MemberId, SigningKey, is_valid_public_key, verify
from troc.errors import BundleError, CodecError, LocalProtocolError
from troc.protocol import codec
from troc.protocol.backend import Backend, MemoryBackend, Stored
from troc.protocol.entry import (
    Accept,
    CampaignClose,
    CommunityId,
    Decline,
    Entry,
    EntryId,
    Genesis,
    Join,
    Kind,
    Pledge,
    Profile,
    Reclaim,
    Ref,
    TakeBack,
    Transfer,
    Withdraw,
    expiry_of,
)
from troc.protocol.ledger import Ledger, Status
from troc.protocol.vote import decode_any_certificate, is_void_certificate
from troc.protocol.witness import LedgerView, rivals_of
from troc.protocol.witness_time import is_timed, timed_certificate_problem

__all__ = [
    "BUNDLE_FORMAT",
    "Movement",
    "Statement",
    "Verified",
    "build_bundle",
    "chain_of",
    "name_of",
    "period",
    "statement_of",
    "verify_bundle",
]

BUNDLE_FORMAT = "troc-statement/1"
#: A bundle is one file: large (the causal past of a long log), but bounded,
#: and read whole. Each entry in it still meets the entry limits (§2.2).
BUNDLE_LIMITS = codec.Limits(
    max_size=256 * 1024 * 1024,
    max_depth=3,
    max_str=64,
    max_bin=256 * 1024 * 1024,
    max_array=4_000_000,
    max_map=16,
)
_FIELDS = (
    "certificates",
    "community",
    "end",
    "entries",
    "format",
    "from_seq",
    "genesis",
    "made_ms",
    "member",
    "to_seq",
)


@dataclass(frozen=True, slots=True)
class Movement:
    """One entry of the member's log that moved its balance.

    ``amount`` is the change it made, signed: negative for a transfer out,
    positive for an accept (credit from ``counterparty``, the payer) or a
    reclaim (the payee, ``counterparty``, declined); any other kind that
    moves the balance is a movement too, by the same measure. ``memo`` is
    the transfer's. ``balance`` is the nominal balance after it (§4.5).
    """

    seq: int
    id: EntryId
    timestamp_ms: int
    kind: Kind
    counterparty: MemberId | None
    amount: int
    memo: str
    balance: int


@dataclass(frozen=True, slots=True)
class Statement:
    """The movements of ``member``'s log at seq ``from_seq`` … ``to_seq``.

    ``opening`` is the nominal balance after seq ``from_seq - 1`` (0 before
    the log), ``closing`` after ``to_seq``; ``closing == opening +
    total_in - total_out``.
    """

    community: CommunityId
    member: MemberId
    from_seq: int
    to_seq: int
    opening: int
    closing: int
    total_in: int
    total_out: int
    movements: tuple[Movement, ...]


@dataclass(frozen=True, slots=True)
class Verified:
    """What a bundle proves, once :func:`verify_bundle` accepted it.

    ``final`` (witnessed communities; None in optimistic ones): the
    period's last entry is certified, so no other branch of the member's
    log up to it can be, unless more than f witnesses lied; ``final_seq``
    is the member's highest final seq the bundle shows. ``frozen_at``: the
    bundle proves the member forked there (its entries from that seq on
    do not count). ``not_counted``: credit in the period's chain from
    transfers in a forked payer's frozen part (optimistic communities).
    ``undone``: what the period's chain took back by take-backs that the
    payee's accept, shown in the bundle, undid (optimistic communities:
    the accept wins, docs/protocol.md §4.11); the builder adds every such
    accept it holds. ``names``: the names the bundle itself shows for
    members (profile, else join), for display.
    """

    statement: Statement
    rules: Genesis
    made_ms: int
    entries: int
    certificates: int
    final: bool | None
    final_seq: int
    frozen_at: int | None
    not_counted: int
    undone: int
    names: dict[MemberId, str]
    #: (seq, certified time) of each take-back or lapse in the period
    #: certified by its own timed certificate (witnessed communities,
    #: docs/witness.md §3.5): when the witnesses' clocks said it expired.
    witnesses_times: tuple[tuple[int, int], ...] = ()


# -- statements -------------------------------------------------------------------


def chain_of(backend: Backend, community: CommunityId, end: Ref) -> list[Stored]:
    """``end``'s author's log from seq 1 up to ``end``, following prev links.
    Raises LocalProtocolError if an entry of it is not held."""
    out: list[Stored] = []
    seq, eid = end.seq, end.id
    while True:
        stored = backend.entry(community, end.author, seq, eid)
        if stored is None:
            raise LocalProtocolError(f"entry {end.author.hex()[:8]}…#{seq} is not held")
        out.append(stored)
        if stored.entry.prev is None:
            break
        seq, eid = seq - 1, stored.entry.prev
    out.reverse()
    return out


def period(chain: list[Stored], from_ms: int | None, to_ms: int | None) -> tuple[int, int]:
    """The seq range of ``chain`` between two dates (ms, inclusive; None:
    open): from the first entry stamped at or after ``from_ms`` to the last
    stamped at or before ``to_ms``. Timestamps are the author's own and need
    not increase along a log, so the period is a stretch of the log, never a
    filter: an entry inside it is listed whatever its stamp. Empty periods
    give ``from_seq == to_seq + 1``."""
    last = len(chain)
    to_seq = last
    if to_ms is not None:
        to_seq = max((s.entry.seq for s in chain if s.entry.timestamp_ms <= to_ms), default=0)
    from_seq = 1
    if from_ms is not None:
        from_seq = min(
            (s.entry.seq for s in chain if s.entry.timestamp_ms >= from_ms), default=last + 1
        )
    return min(from_seq, to_seq + 1), to_seq


def _counterparty(
    backend: Backend, community: CommunityId, entry: Entry
) -> tuple[MemberId | None, str]:
    """Who is on the other side of a movement, and the transfer's memo.

    A transfer: its payee. A reclaim: the payee who declined. Any other
    entry that names a transfer (an accept, or a kind that takes a transfer
    back): the transfer's other party. None if the entry names no transfer.
    """
    body = entry.body
    if isinstance(body, Transfer):
        return body.to, body.memo
    if isinstance(body, Reclaim):
        d = backend.entry(community, body.decline.author, body.decline.seq, body.decline.id)
        assert d is not None
        assert isinstance(d.entry.body, Decline)
        t = d.entry.body.transfer
        found = backend.entry(community, t.author, t.seq, t.id)
        assert found is not None
        assert isinstance(found.entry.body, Transfer)
        return d.entry.author, found.entry.body.memo
    for ref in _refs(entry):
        if ref.author == entry.author and ref.seq == entry.seq - 1:
            continue  # the prev link
        found = backend.entry(community, ref.author, ref.seq, ref.id)
        if found is not None and isinstance(found.entry.body, Transfer):
            paid = found.entry.body
            return (paid.to if ref.author == entry.author else ref.author), paid.memo
    return None, ""


def _movement(
    backend: Backend, community: CommunityId, stored: Stored, before: int
) -> Movement | None:
    """``stored`` as a movement if it changed its log's nominal balance
    (from ``before``): whatever its kind, the amount is that change."""
    if stored.balance == before:
        return None
    e = stored.entry
    other, memo = _counterparty(backend, community, e)
    return Movement(
        e.seq, e.id, e.timestamp_ms, e.kind, other, stored.balance - before, memo, stored.balance
    )


def statement_of(
    backend: Backend, community: CommunityId, chain: list[Stored], from_seq: int, to_seq: int
) -> Statement:
    """The statement of ``chain`` (a log from seq 1, see :func:`chain_of`)
    over seq ``from_seq`` … ``to_seq``."""
    if not chain or not 1 <= from_seq <= to_seq + 1 or to_seq > len(chain):
        raise LocalProtocolError(f"no period {from_seq}..{to_seq} in a log of {len(chain)}")
    member = chain[0].entry.author
    opening = chain[from_seq - 2].balance if from_seq > 1 else 0
    closing = chain[to_seq - 1].balance if to_seq >= 1 else 0
    moves = []
    before = opening
    for stored in chain[from_seq - 1 : to_seq]:
        m = _movement(backend, community, stored, before)
        if m is not None:
            moves.append(m)
        before = stored.balance
    total_in = sum(m.amount for m in moves if m.amount > 0)
    total_out = -sum(m.amount for m in moves if m.amount < 0)
    assert closing == opening + total_in - total_out  # each movement is its balance step
    return Statement(
        community, member, from_seq, to_seq, opening, closing, total_in, total_out, tuple(moves)
    )


# -- building a bundle ----------------------------------------------------------------

_Key = tuple[MemberId, int, EntryId]


def _refs(entry: Entry) -> Iterator[Ref]:
    """What ``entry`` needs besides the genesis: its prev, then every entry
    its body references (whatever the kind: read from the body's fields)."""
    if entry.prev is not None:
        yield Ref(entry.author, entry.seq - 1, entry.prev)
    body = entry.body
    for f in dataclasses.fields(body):
        value = getattr(body, f.name)
        if isinstance(value, Ref):
            yield value
        elif isinstance(value, tuple):  # a campaign_close's pledges
            yield from (v for v in value if isinstance(v, Ref))


class _Closure:
    """The causal past of some entries, in an order where each entry comes
    after everything it needs (iterative: a log is thousands deep)."""

    def __init__(self, ledger: Ledger, community: CommunityId, now_ms: int) -> None:
        self.ledger, self.c = ledger, community
        self.order: list[Stored] = []
        self.done: set[_Key] = set()
        self.top: dict[MemberId, int] = {}  # highest seq included, per author
        rules = ledger.rules(community)
        self.witnessed = rules is not None and rules.finality == "witnessed"
        self.scanned = 0  # entries of ``order`` looked at for undone take-backs
        # What undoes a take-back or a lapse is read as a witness reads
        # rivals; the clock only dates a lapse, which does not matter here.
        self.view = LedgerView(ledger, lambda: now_ms)

    def add(self, ref: Ref) -> None:
        backend, c = self.ledger.backend, self.c
        stack: list[tuple[Ref, Stored | None]] = [(ref, None)]
        seen: set[_Key] = set()
        while stack:
            r, expanded = stack.pop()
            key = (r.author, r.seq, r.id)
            if expanded is not None:
                if key not in self.done:
                    self.done.add(key)
                    self.order.append(expanded)
                    self.top[r.author] = max(self.top.get(r.author, 0), r.seq)
                continue
            if key in self.done or key in seen:
                continue
            stored = backend.entry(c, r.author, r.seq, r.id)
            if stored is None:
                # Only a reference the rules ignore can be missing from a
                # ledger that accepted the entry (a founder's join's vouch).
                continue
            seen.add(key)
            stack.append((r, stored))
            needs = list(_refs(stored.entry))
            # Witnessed: an accept (a reclaim) is valid only once its transfer
            # (decline) is final, maybe through a later certified entry of
            # that log: the entry that makes it final comes first too.
            for target in needs[stored.entry.prev is not None :]:
                anchor = self.anchor(target.author, target.seq)
                if anchor is not None and anchor != target:
                    needs.append(anchor)
            stack.extend((d, None) for d in reversed(needs))

    def anchor(self, author: MemberId, seq: int) -> Ref | None:
        """The lowest certified entry at or above ``seq`` on ``author``'s
        final chain (what makes the entry at ``seq`` final), or None if the
        log has none there (an optimistic community has none)."""
        backend, c = self.ledger.backend, self.c
        head = backend.head(c, author)
        if head is None or not head.final_seq or seq > head.final_seq:
            return None
        for at, eid in backend.certified_between(c, author, seq - 1, head.final_seq + 1):
            if backend.final_at(c, author, at) == eid:
                return Ref(author, at, eid)
        return None  # pragma: no cover - the final tip itself is certified

    def widen(self) -> bool:
        """Add the evidence the rules read beyond references: the other
        entries at a known fork point (so the verifier freezes the same
        logs), and, in a witnessed community, each log up to its next
        certified entry (so what is final here is final there: the
        member's own last entry above all). True if anything was added."""
        backend, c = self.ledger.backend, self.c
        before = len(self.order)
        for author, top in sorted(self.top.items()):
            head = backend.head(c, author)
            if head is None:
                continue
            if head.frozen_at is not None and head.frozen_at <= top:
                for eid in backend.ids_at(c, author, head.frozen_at):
                    self.add(Ref(author, head.frozen_at, eid))
            anchor = self.anchor(author, top)
            if anchor is not None:
                self.add(anchor)
        if not self.witnessed:
            for undoer in self.undoing():
                self.add(undoer)
        return len(self.order) > before

    def undoing(self) -> list[Ref]:
        """The entries this ledger holds that undo a take-back or a lapse in
        the closure (optimistic: the accept or the close wins, docs/protocol.md
        §4.11, §10.5), so that the verifier sees it undone as this node does."""
        found = []
        for stored in self.order[self.scanned :]:
            found += _undone_by(self.view, self.c, stored.entry)
        self.scanned = len(self.order)
        return found


def _undone_by(view: LedgerView, community: CommunityId, entry: Entry) -> list[Ref]:
    """The entries ``view`` holds that undo ``entry`` if it is a take-back
    or a lapse: the payee's accepts of its transfer (docs/protocol.md
    §4.11), the successful closes counting its pledge (§10.5). Those are its
    rivals, as a witness reads them (:func:`troc.protocol.witness.rivals_of`)."""
    if not isinstance(entry.body, TakeBack | Withdraw):
        return []
    return rivals_of(entry, view, community) or []


def build_bundle(
    ledger: Ledger,
    key: SigningKey,
    community: CommunityId,
    end: Ref,
    from_seq: int,
    made_ms: int,
) -> bytes:
    """The signed bundle proving ``key``'s statement over seq ``from_seq`` …
    ``end.seq``, where ``end`` is its entry at the period's last seq.

    Raises LocalProtocolError if ``end`` is not ``key``'s, not held, or the
    period is empty of entries (``end.seq`` < 1).
    """
    if end.author != key.public:
        raise LocalProtocolError("a member signs statements of its own log only")
    genesis = ledger.backend.genesis(community)
    if genesis is None:
        raise LocalProtocolError("this node does not follow that community")
    chain = chain_of(ledger.backend, community, end)
    statement_of(ledger.backend, community, chain, from_seq, end.seq)  # checks the period
    closure = _Closure(ledger, community, made_ms)
    closure.add(end)
    while closure.widen():
        pass
    certificates = []
    for stored in closure.order:
        cert = ledger.certificate_of(community, stored.entry.ref)
        if cert is not None:
            certificates.append(cert)
    body = codec.pack(
        {
            "certificates": certificates,
            "community": community,
            "end": end.id,
            "entries": [s.entry.wire for s in closure.order],
            "format": BUNDLE_FORMAT,
            "from_seq": from_seq,
            "genesis": genesis.wire,
            "made_ms": made_ms,
            "member": key.public,
            "to_seq": end.seq,
        },
        BUNDLE_LIMITS,
    )
    return codec.pack([body, key.sign(Domain.STATEMENT, body)], BUNDLE_LIMITS)


# -- verifying a bundle ---------------------------------------------------------------


def _fail(reason: str, message: str) -> BundleError:
    return BundleError(reason, message)


def _decode(data: bytes) -> tuple[dict[str, object], bytes, bytes]:
    try:
        outer = codec.unpack(data, BUNDLE_LIMITS)
    except CodecError as exc:
        raise _fail("malformed", f"not a statement bundle: {exc}") from None
    if (
        not isinstance(outer, list)
        or len(outer) != 2
        or not all(isinstance(x, bytes) for x in outer)
    ):
        raise _fail("malformed", "a bundle is [body, signature]")
    body_bytes, signature = outer
    try:
        body = codec.unpack(body_bytes, BUNDLE_LIMITS)
    except CodecError as exc:
        raise _fail("malformed", f"the bundle's body: {exc}") from None
    if not isinstance(body, dict) or tuple(body) != _FIELDS:
        raise _fail("malformed", f"a bundle's body has exactly the fields {', '.join(_FIELDS)}")
    if body["format"] != BUNDLE_FORMAT:
        raise _fail("malformed", f"format {body['format']!r}, this verifier reads {BUNDLE_FORMAT}")
    return body, body_bytes, signature


def _field(body: dict[str, object], name: str, kind: type) -> object:
    value = body[name]
    ok = type(value) is kind
    if ok and isinstance(value, list):
        ok = all(type(x) is bytes for x in value)
    if not ok:
        raise _fail("malformed", f"the bundle's {name} has the wrong type")
    return value


def verify_bundle(data: bytes, now_ms: int) -> Verified:
    """Check a bundle made by :func:`build_bundle` and return what it proves.

    ``now_ms`` is the verifier's clock, for the future-timestamp guard only.
    Raises BundleError naming the first thing that does not check:
    ``malformed`` (not a bundle), ``bad_signature`` (the member's signature
    on it), ``bad_genesis``, ``bad_certificate``, ``rejected`` (an entry
    breaks a rule: the reason code follows), ``missing`` (an entry needs one
    the bundle lacks or puts after it), ``duplicate``, ``bad_period``.
    """
    body, body_bytes, signature = _decode(data)
    member = _field(body, "member", bytes)
    community = _field(body, "community", bytes)
    end_id = _field(body, "end", bytes)
    genesis_wire = _field(body, "genesis", bytes)
    wires = _field(body, "entries", list)
    certs = _field(body, "certificates", list)
    from_seq, to_seq, made_ms = (_field(body, n, int) for n in ("from_seq", "to_seq", "made_ms"))
    assert isinstance(member, bytes)
    assert isinstance(community, bytes)
    assert isinstance(end_id, bytes)
    assert isinstance(genesis_wire, bytes)
    assert isinstance(wires, list)
    assert isinstance(certs, list)
    assert isinstance(from_seq, int)
    assert isinstance(to_seq, int)
    assert isinstance(made_ms, int)
    if not is_valid_public_key(member) or not verify(
        Domain.STATEMENT, MemberId(member), body_bytes, signature
    ):
        raise _fail("bad_signature", "the member's signature on the bundle does not verify")
    c = CommunityId(community)
    ledger = Ledger(MemoryBackend())
    g = ledger.ingest(genesis_wire, now_ms)
    if g.status is not Status.ACCEPTED or g.entry is None or bytes(g.entry.id) != community:
        raise _fail("bad_genesis", "the bundle's genesis is not the community's")
    for n, cert in enumerate(certs, 1):
        taken = ledger.ingest_certificate(cert, now_ms)
        if taken.status is not Status.ACCEPTED:
            what = "repeated" if taken.status is Status.DUPLICATE else taken.detail
            raise _fail("bad_certificate", f"certificate {n}: {what}")
    for n, wire in enumerate(wires, 1):
        out = ledger.ingest(wire, now_ms, community=c)
        where = f"entry {n}" if out.entry is None else f"entry {n} ({out.entry.ref})"
        if out.status is Status.REJECTED:
            assert out.reason is not None
            raise _fail("rejected", f"{where}: {out.reason.value}: {out.detail}")
        if out.status is Status.WAITING:
            needs = ", ".join(map(str, out.missing + out.missing_final))
            raise _fail(
                "missing", f"{where} needs {needs}, which the bundle lacks or puts after it"
            )
        if out.status is Status.DUPLICATE:
            raise _fail("duplicate", f"{where} appears twice")
    backend = ledger.backend
    mid = MemberId(member)
    if backend.entry(c, mid, to_seq, EntryId(end_id)) is None:
        raise _fail("bad_period", f"the bundle does not hold the member's entry at seq {to_seq}")
    chain = chain_of(backend, c, Ref(mid, to_seq, EntryId(end_id)))
    if not 1 <= from_seq <= to_seq + 1:
        raise _fail("bad_period", f"no period from seq {from_seq} to {to_seq}")
    statement = statement_of(backend, c, chain, from_seq, to_seq)
    head = backend.head(c, mid)
    assert head is not None
    rules = ledger.rules(c)
    assert rules is not None
    final: bool | None = None
    final_seq = 0
    if rules.finality == "witnessed":
        final = ledger.is_final(c, Ref(mid, to_seq, EntryId(end_id)))
        final_seq = max((s.entry.seq for s in chain if ledger.is_final(c, s.entry.ref)), default=0)
        witnesses_times = _witnesses_times(ledger, c, chain[from_seq - 1 : to_seq])
    else:
        witnesses_times = ()
    not_counted = undone = 0
    if final is None:  # optimistic: credit from a forked payer's frozen part
        view = LedgerView(ledger, lambda: now_ms)
        before = 0
        for s in chain:
            eb = s.entry.body
            credited: tuple[Ref, ...] = ()
            if isinstance(eb, Accept):
                credited = (eb.transfer,)
            elif isinstance(eb, CampaignClose) and s.balance != before:  # it succeeded
                credited = eb.pledges
            for t in credited:
                payer = backend.head(c, t.author)
                if payer is not None and not payer.counts(t.seq):
                    not_counted += _amount_of(backend, c, t)
            if _undone_by(view, c, s.entry):
                undone += s.balance - before  # the payee's accept (a close) won (§4.11, §10.5)
            before = s.balance
    names = {}
    for m, _head in backend.heads(c):
        name = name_of(ledger, c, m)
        if name is not None:
            names[m] = name
    return Verified(
        statement,
        rules,
        made_ms,
        len(wires),
        len(certs),
        final,
        final_seq,
        head.frozen_at,
        not_counted,
        undone,
        names,
        witnesses_times,
    )


def _witnesses_times(
    ledger: Ledger, c: CommunityId, period: list[Stored]
) -> tuple[tuple[int, int], ...]:
    """(seq, certified time) of each take-back or lapse of ``period`` that
    holds a certificate of its own (not void). Raises BundleError
    (``bad_certificate``) if one lacks the witnesses' times or a time is
    not past its deadline (docs/witness.md §3.5)."""
    rules, genesis = ledger.witness_rules(c), ledger.rules(c)
    assert rules is not None
    assert genesis is not None
    backend = ledger.backend

    def get(ref: Ref) -> Entry | None:
        held = backend.entry(c, ref.author, ref.seq, ref.id)
        return None if held is None else held.entry

    def expiry(ref: Ref) -> int | None:
        held = get(ref)
        return (
            None
            if held is None or not isinstance(held.body, Transfer)
            else expiry_of(held, genesis)
        )

    out = []
    for s in period:
        data = ledger.certificate_of(c, s.entry.ref)
        if data is None or is_void_certificate(data) or not is_timed(s.entry):
            continue
        cert = decode_any_certificate(data)  # it was ingested: it decodes and is valid
        problem = timed_certificate_problem(cert, s.entry, rules, get, expiry)
        if problem is not None:
            raise _fail("bad_certificate", f"the certificate of {s.entry.ref}: {problem}")
        time_ms = cert.certified_time(rules)
        assert time_ms is not None
        out.append((s.entry.seq, time_ms))
    return tuple(out)


def _amount_of(backend: Backend, community: CommunityId, transfer: Ref) -> int:
    t = backend.entry(community, transfer.author, transfer.seq, transfer.id)
    assert t is not None
    assert isinstance(t.entry.body, Transfer | Pledge)
    return t.entry.body.amount


def name_of(ledger: Ledger, community: CommunityId, member: MemberId) -> str | None:
    """The name a member gives itself in the held entries: its profile's
    (§4.4), else its join's, else None. Self-chosen: show it as such."""
    profile = ledger.profile(community, member)
    if profile is not None:
        assert isinstance(profile.body, Profile)
        return profile.body.name
    backend = ledger.backend
    ids = backend.ids_at(community, member, 1)
    join = backend.entry(community, member, 1, ids[0]) if ids else None
    if join is not None and isinstance(join.entry.body, Join) and join.entry.body.name:
        return join.entry.body.name
    return None
