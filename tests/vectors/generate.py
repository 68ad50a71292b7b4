"""Write tests/vectors/vectors.json: troc's protocol test vectors.

Usage::

    python tests/vectors/generate.py          # rewrite vectors.json
    python tests/vectors/generate.py --check  # exit 1 if it would change

Deterministic: keys come from fixed seeds (SHA-256 of a name), clocks are
fixed, Ed25519 signatures are deterministic, so the output is the same bytes
on every run. Each vector declares what it expects; the generator runs every
step through troc's own ledger and refuses to write a vector whose outcome
differs from what it declares. tests/unit/test_vectors.py then checks the
committed file against the ledger, and that this script reproduces it.

The format is described in docs/protocol.md §7.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import sys
from typing import Any

import msgpack

from troc.crypto.ids import IdError, decode_id, encode_id
from troc.crypto.sign import Domain, SigningKey
from troc.errors import CodecError
from troc.protocol import codec
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
    Offer,
    OfferClose,
    Pledge,
    Profile,
    Reclaim,
    Ref,
    Refusal,
    Request,
    TakeBack,
    Transfer,
    Vouch,
    Withdraw,
    expiry_of,
)
from troc.protocol.ledger import (
    FUTURE_TOLERANCE_MS,
    MAX_BALANCE,
    Ledger,
    Outcome,
    Reason,
    Status,
)
from troc.protocol.vote import (
    CERTIFICATE_LIMITS,
    VOID_MARK,
    Certificate,
    TimeAttestation,
    VoidCertificate,
    VoidVote,
    Vote,
    WitnessRules,
)

PATH = pathlib.Path(__file__).with_name("vectors.json")
FORMAT = "troc-test-vectors/1"
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
NAMES = ("alice", "bob", "carol", "dave")
#: Reasons no vector covers, and why.
NOT_COVERED = {
    Reason.FORK_LIMIT.value: (
        "needs more than 1000 entries beyond a fork (MAX_BEYOND_FORK); "
        "tested in tests/unit/test_rules.py"
    ),
    Reason.WAITING_FULL.value: (
        "a node's own bound on parked entries, not a property of the entry; "
        "tested in tests/unit/test_rules.py"
    ),
    Reason.BAD_CERTIFICATE.value: (
        "a verdict on a certificate (Ledger.ingest_certificate), not on an entry; "
        "tested in tests/property/test_witnessed_ledger.py"
    ),
    Reason.NOT_FINAL.value: (
        "needs certificates, which vectors do not carry (an accept whose transfer "
        "another certified entry excludes); tested in tests/property/test_witnessed_ledger.py"
    ),
    Reason.NOT_WITNESSED.value: (
        "a verdict on a certificate (Ledger.ingest_certificate), not on an entry; "
        "tested in tests/property/test_witnessed_ledger.py"
    ),
}


def seed(name: str) -> bytes:
    return hashlib.sha256(b"troc test vector key " + name.encode()).digest()


KEYS = {name: SigningKey(seed(name)) for name in NAMES}
ALICE, BOB, CAROL, DAVE = (KEYS[n] for n in NAMES)


def pack_raw(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def sorted_maps(value: Any) -> Any:
    """``value`` with every map's keys sorted (and nothing else checked)."""
    if isinstance(value, dict):
        return {k: sorted_maps(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [sorted_maps(v) for v in value]
    return value


def sign_raw(
    signer: SigningKey, fields: list[Any], domain: Domain = Domain.ENTRY, *, sort: bool = True
) -> bytes:
    """Wire bytes for arbitrary signed fields; ``sort=False`` keeps map order as given."""
    signed = pack_raw(sorted_maps(fields) if sort else fields)
    return pack_raw([signed, signer.sign(domain, signed)])


class Vector:
    """One vector: a fresh node, a sequence of ingests, the balances after."""

    def __init__(self, name: str, description: str, **rules: Any) -> None:
        self.name = name
        self.description = description
        self.ledger = Ledger(MemoryBackend())
        self.now = T0
        self.steps: list[dict[str, Any]] = []
        rules.setdefault("name", "Test valley")
        rules.setdefault("unit", "hour")
        rules.setdefault("credit_limit", 100)
        self.genesis = Entry.create(
            ALICE, community=None, seq=0, prev=None, timestamp_ms=T0, body=Genesis(**rules)
        )
        self.community = CommunityId(self.genesis.id)

    # -- steps ---------------------------------------------------------------

    def step(
        self,
        label: str,
        wire: bytes | Entry,
        status: Status = Status.ACCEPTED,
        reason: Reason | None = None,
        *,
        now_ms: int | None = None,
    ) -> Outcome:
        """Ingest ``wire`` and record it with its verdict, which must be the one declared."""
        if isinstance(wire, Entry):
            wire = wire.wire
        now = self.now if now_ms is None else now_ms
        outcome = self.ledger.ingest(wire, now)
        if outcome.status is not status or outcome.reason is not reason:
            raise AssertionError(f"{self.name}/{label}: expected {status} {reason}, got {outcome}")
        self.steps.append(
            {
                "label": label,
                "wire": wire.hex(),
                "now_ms": now,
                "expect": {
                    "status": outcome.status.value,
                    "reason": None if outcome.reason is None else outcome.reason.value,
                    "id": None if outcome.entry is None else outcome.entry.id.hex(),
                    "missing": [[r.author.hex(), r.seq, r.id.hex()] for r in outcome.missing],
                    "released": [e.id.hex() for e in outcome.released],
                    "fork": outcome.fork,
                },
            }
        )
        return outcome

    def start(self, *members: SigningKey) -> None:
        """The genesis, then a join for each member."""
        self.step("genesis", self.genesis)
        for m in members:
            self.add(f"join {name_of(m)}", m, Join())

    def make(self, signer: SigningKey, body: AnyBody, **fields: Any) -> Entry:
        """A well-formed entry at the signer's next position (or as given),
        signed and not checked against the rules."""
        self.now += 1000
        head = self.ledger.head(self.community, signer.public)
        return Entry.create(
            signer,
            community=fields.get("community", self.community),
            seq=fields.get("seq", 1 if head is None else head.seq + 1),
            prev=fields.get("prev", None if head is None else head.id),
            timestamp_ms=fields.get("timestamp_ms", self.now),
            body=body,
        )

    def add(self, label: str, signer: SigningKey, body: AnyBody) -> Entry:
        entry = self.make(signer, body)
        self.step(label, entry)
        return entry

    def reject(self, label: str, wire: bytes | Entry, reason: Reason, **kw: Any) -> None:
        self.step(label, wire, Status.REJECTED, reason, **kw)

    def raw_fields(self, signer: SigningKey, kind: str, body: Any) -> list[Any]:
        """The 8 signed fields of ``signer``'s next entry, for hand-editing."""
        self.now += 1000
        head = self.ledger.head(self.community, signer.public)
        return [
            1,
            self.community,
            signer.public,
            1 if head is None else head.seq + 1,
            None if head is None else head.id,
            self.now,
            kind,
            body,
        ]

    # -- output --------------------------------------------------------------

    def render(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "steps": self.steps,
            "balances": {m.hex(): b for m, b in self.ledger.balances(self.community)},
            "frozen": {
                m.hex(): h.frozen_at
                for m, h in self.ledger.backend.heads(self.community)
                if h.frozen_at is not None
            },
            "profiles": profiles(self.ledger, self.community),
        }


def profiles(ledger: Ledger, community: CommunityId) -> dict[str, str]:
    """Each member's profile entry id (docs/protocol.md §4.4), for those with one."""
    out = {}
    for member, _head in ledger.backend.heads(community):
        entry = ledger.profile(community, member)
        if entry is not None:
            out[member.hex()] = entry.id.hex()
    return out


def sized_offer(fields: list[Any], size: int) -> list[Any]:
    """``fields`` (an offer's) with tags and description in multi-byte
    characters, padded so that the signed entry's wire form is ``size`` bytes."""
    tags = [f"{chr(0x3041 + i)}" * 40 for i in range(16)]  # 16 tags of 40 hiragana
    out = list(fields)

    def with_description(n: int) -> list[Any]:
        # n bytes in at most 4 000 code points: 4-byte characters, then ASCII.
        text = "\U0001d11e" * (n // 4) + "a" * (n % 4)
        out[7] = dict(OFFER, description=text, tags=tags)
        return out

    base = len(sign_raw(ALICE, with_description(4000)))
    fitted = with_description(4000 + size - base)
    assert len(sign_raw(ALICE, fitted)) == size
    return fitted


def name_of(key: SigningKey) -> str:
    return next(n for n, k in KEYS.items() if k.public == key.public)


OFFER = {"description": "", "side": "offer", "tags": [], "title": "Bread"}


# -- the vectors -------------------------------------------------------------------


def accepted_vectors() -> list[Vector]:
    out = []

    v = Vector(
        "chain",
        "An accepted history: genesis, joins, an offer, a transfer paying for it and its "
        "accept, a declined transfer reclaimed, the offer closed, a vouch.",
    )
    v.start(ALICE, BOB, CAROL)
    bread = v.add("bob offers bread", BOB, Offer(side="offer", title="Bread", tags=("food",)))
    t1 = v.add(
        "alice pays bob 30 for it",
        ALICE,
        Transfer(to=BOB.public, amount=30, memo="two loaves", offer=bread.ref),
    )
    v.add("bob accepts", BOB, Accept(transfer=t1.ref))
    t2 = v.add("alice pays carol 20", ALICE, Transfer(to=CAROL.public, amount=20))
    d2 = v.add("carol declines", CAROL, Decline(transfer=t2.ref, reason="not for me"))
    v.add("alice reclaims", ALICE, Reclaim(decline=d2.ref))
    v.add("bob closes the offer", BOB, OfferClose(offer=bread.ref))
    v.add("alice vouches for dave", ALICE, Vouch(member=DAVE.public))
    v.step("the transfer again", t1, Status.DUPLICATE)
    v.step("the genesis again", v.genesis, Status.DUPLICATE)
    out.append(v)

    v = Vector(
        "out_of_order",
        "Entries arriving before what they depend on wait, and are released, in "
        "dependency order, when it arrives.",
    )
    v.step("genesis", v.genesis)
    ja, jb = v.make(ALICE, Join()), v.make(BOB, Join())
    v.step("join alice", ja)
    t = Entry.create(
        ALICE,
        community=v.community,
        seq=2,
        prev=ja.id,
        timestamp_ms=T0 + 5000,
        body=Transfer(to=BOB.public, amount=7),
    )
    acc = Entry.create(
        BOB,
        community=v.community,
        seq=2,
        prev=jb.id,
        timestamp_ms=T0 + 6000,
        body=Accept(transfer=t.ref),
    )
    v.step("bob's accept, before its prev", acc, Status.WAITING)
    v.step("bob's join: the accept now waits for the transfer", jb)
    v.step("the accept again: still waiting", acc, Status.WAITING)
    v.step("the transfer, releasing the accept", t)
    out.append(v)

    v = Vector(
        "fork",
        "Alice signs two transfers at seq 2 (to bob and to carol); bob accepts his. "
        "The second proves the fork: alice is frozen at seq 2, neither transfer "
        "counts, and bob's credit from it does not count either.",
    )
    v.start(ALICE, BOB, CAROL)
    v.add("alice offers", ALICE, Offer(side="want", title="Help moving"))
    x = v.add("alice pays bob 10 at seq 3", ALICE, Transfer(to=BOB.public, amount=10))
    v.add("bob accepts", BOB, Accept(transfer=x.ref))
    y = v.make(ALICE, Transfer(to=CAROL.public, amount=15), seq=x.seq, prev=x.prev)
    v.step("alice pays carol 15, also at seq 3", y)
    v.add("carol accepts", CAROL, Accept(transfer=y.ref))
    out.append(v)

    v = Vector(
        "vouch_admission",
        "A community admitting by vouches: the founder joins without one; bob joins "
        "naming alice's vouch with limit 30, which becomes his credit limit.",
        admission="vouch",
    )
    v.start(ALICE)
    vb = v.add("alice vouches for bob, limit 30", ALICE, Vouch(member=BOB.public, limit=30))
    v.add("bob joins with it", BOB, Join(name="Bob", vouch=vb.ref))
    v.reject("bob pays 31", v.make(BOB, Transfer(to=ALICE.public, amount=31)), Reason.OVERDRAFT)
    v.add("bob pays 30", BOB, Transfer(to=ALICE.public, amount=30))
    out.append(v)

    v = Vector(
        "future_timestamp",
        "An entry stamped more than 10 minutes after the receiver's clock is "
        "rejected for now; the same bytes are accepted once the clock catches up.",
    )
    v.start(ALICE)
    late = v.make(ALICE, Offer(side="offer", title="Soon"), timestamp_ms=T0 + 10**6)
    v.reject(
        "stamped 10 min + 1 ms ahead",
        late,
        Reason.FUTURE_TIMESTAMP,
        now_ms=T0 + 10**6 - FUTURE_TOLERANCE_MS - 1,
    )
    v.step("exactly 10 min ahead", late, now_ms=T0 + 10**6 - FUTURE_TOLERANCE_MS)
    out.append(v)

    v = Vector(
        "profile",
        "The latest profile by seq wins, not by timestamp: alice's second profile is "
        "stamped an hour before her first and still replaces it. Bob forks at seq 3, "
        "two profiles at one seq: neither counts, his profile at seq 2 stays.",
    )
    v.start(ALICE, BOB)
    v.add(
        "alice's profile",
        ALICE,
        Profile(name="Alice", about="Bakes bread", place="Old town", languages=("en", "fr")),
    )
    v.step(
        "alice's next profile, stamped an hour earlier",
        v.make(ALICE, Profile(name="Alice B.", place="Riverside"), timestamp_ms=v.now - 3_600_000),
    )
    v.add("bob's profile", BOB, Profile(name="Bob", contact="bob@example.org"))
    b1 = v.add("bob's next profile", BOB, Profile(name="Bobby"))
    v.step(
        "another at the same seq: a fork",
        v.make(BOB, Profile(name="Robert"), seq=b1.seq, prev=b1.prev),
    )
    v.reject(
        "a profile without a name",
        sign_raw(
            ALICE,
            v.raw_fields(
                ALICE,
                "profile",
                {"about": "", "contact": "", "languages": [], "name": "", "place": ""},
            ),
        ),
        Reason.BAD_SHAPE,
    )
    v.reject(
        "languages not sorted",
        sign_raw(
            ALICE,
            v.raw_fields(
                ALICE,
                "profile",
                {"about": "", "contact": "", "languages": ["fr", "en"], "name": "A", "place": ""},
            ),
        ),
        Reason.BAD_SHAPE,
    )
    v.reject("carol's profile at seq 1", v.make(CAROL, Profile(name="Carol")), Reason.JOIN_FIRST)
    out.append(v)

    v = Vector(
        "request",
        "Payment requests: bob asks alice for 30 for his bread; alice pays it with a "
        "transfer carrying the request, bob accepts. Carol asks alice for 5; alice "
        "refuses. Bob's second request reaches this node only after alice's payment "
        "of it, which is stored at once: the request travels inside the transfer.",
    )
    v.start(ALICE, BOB, CAROL)
    bread = v.add("bob offers bread", BOB, Offer(side="offer", title="Bread"))
    q1 = v.add(
        "bob asks alice for 30",
        BOB,
        Request(to=ALICE.public, amount=30, memo="bread", offer=bread.ref, expires_ms=T0 + 10**6),
    )
    t1 = v.add("alice pays the request", ALICE, Transfer.paying(q1))
    v.add("bob accepts", BOB, Accept(transfer=t1.ref))
    q2 = v.add("carol asks alice for 5", CAROL, Request(to=ALICE.public, amount=5, memo="jam"))
    v.add("alice refuses", ALICE, Refusal(request=q2.ref, reason="I had none"))
    q3 = v.make(BOB, Request(to=ALICE.public, amount=4, memo="eggs"))
    v.add("alice pays bob's next request, which this node has not seen", ALICE, Transfer.paying(q3))
    v.step("the request arrives", q3)
    out.append(v)

    v = Vector(
        "expiry",
        "Transfers that expire (community default 60 s, or a transfer's own expires_ms). "
        "Alice takes back her expired transfer to carol; she also takes back the one to "
        "bob, whose accept (signed in time) arrives after: the accept wins, and alice's "
        "take-back of it no longer counts (her counted balance is 15 below her nominal one).",
        transfer_expiry_ms=60_000,
    )
    v.start(ALICE, BOB, CAROL)
    t1 = v.add("alice pays bob 15", ALICE, Transfer(to=BOB.public, amount=15))
    t2 = v.add(
        "alice pays carol 7, expiring in 2 s",
        ALICE,
        Transfer(to=CAROL.public, amount=7, expires_ms=v.now + 2000),
    )
    accept = v.make(BOB, Accept(transfer=t1.ref))
    v.step(
        "alice takes back the one to carol",
        v.make(ALICE, TakeBack(transfer=t2.ref), timestamp_ms=v.now + 2000),
    )
    v.step(
        "alice takes back the one to bob, 60 s + 1 ms after it",
        v.make(ALICE, TakeBack(transfer=t1.ref), timestamp_ms=t1.timestamp_ms + 60_001),
        now_ms=t1.timestamp_ms + 60_001,
    )
    v.step("bob's accept arrives: it wins", accept, now_ms=t1.timestamp_ms + 60_001)
    out.append(v)
    return out


def codec_vectors() -> list[Vector]:
    """Rejections decided by the entry alone."""
    out = []

    def vec(reason: Reason, description: str) -> Vector:
        v = Vector(f"reject_{reason.value}", description)
        v.start(ALICE)
        out.append(v)
        return v

    size = codec.ENTRY_LIMITS.max_size
    v = vec(
        Reason.TOO_LARGE,
        f"More than {size} bytes: refused before decoding. An offer of exactly {size} "
        "bytes (multi-byte tags and description) is taken; one byte more is not.",
    )
    v.reject(f"{size + 1} zero bytes", b"\x00" * (size + 1), Reason.TOO_LARGE)
    fields = v.raw_fields(ALICE, "offer", OFFER)
    v.reject(
        f"an offer of {size + 1} bytes",
        sign_raw(ALICE, sized_offer(fields, size + 1)),
        Reason.TOO_LARGE,
    )
    v.step(f"the same offer in {size} bytes", sign_raw(ALICE, sized_offer(fields, size)))

    v = vec(Reason.TOO_DEEP, "A body nesting more than 6 containers deep.")
    deep: Any = "x"
    for _ in range(6):
        deep = [deep]
    v.reject(
        "tags nested 6 more levels",
        sign_raw(ALICE, v.raw_fields(ALICE, "offer", dict(OFFER, tags=deep))),
        Reason.TOO_DEEP,
    )

    longest = codec.ENTRY_LIMITS.max_str
    v = vec(
        Reason.MALFORMED,
        f"Not msgpack: truncated, or a reserved byte; a string over {longest} bytes "
        f"(checked before code points are counted: a description of {longest} bytes in "
        "4-byte characters is valid).",
    )
    good = v.make(ALICE, Offer(side="offer", title="Bread"))
    v.reject("truncated by one byte", good.wire[:-1], Reason.MALFORMED)
    v.reject("the reserved byte 0xc1", b"\xc1", Reason.MALFORMED)
    clef = "\U0001d11e"  # 4 bytes in UTF-8
    over = clef * (longest // 4 - 1) + "é€"  # 2 + 3 bytes: one byte over
    assert len(over.encode()) == longest + 1
    fields = v.raw_fields(ALICE, "offer", dict(OFFER, description=over))
    v.reject(
        f"a description of {longest + 1} bytes ({len(over)} characters)",
        sign_raw(ALICE, fields),
        Reason.MALFORMED,
    )
    v.add(
        f"a description of {longest} bytes ({longest // 4} four-byte characters)",
        ALICE,
        Offer(side="offer", title="Bread", description=clef * (longest // 4)),
    )

    v = vec(Reason.TRAILING_BYTES, "A valid entry followed by one more byte.")
    v.reject(
        "entry + 0x00",
        v.make(ALICE, Offer(side="offer", title="Bread")).wire + b"\x00",
        Reason.TRAILING_BYTES,
    )

    v = vec(Reason.NON_CANONICAL, "Validly signed, but not the canonical encoding.")
    fields = v.raw_fields(
        ALICE, "offer", {"title": "Bread", "side": "offer", "tags": [], "description": ""}
    )
    v.reject("body keys not sorted", sign_raw(ALICE, fields, sort=False), Reason.NON_CANONICAL)
    entry = v.make(ALICE, Offer(side="offer", title="Bread"))
    # Re-encode seq (a fixint) as uint16 0xcd: find it after version, community, author.
    signed = bytearray(entry.signed)
    at = 1 + 1 + 34 + 34
    assert signed[at] == entry.seq
    signed[at : at + 1] = b"\xcd" + entry.seq.to_bytes(2, "big")
    wide = pack_raw([bytes(signed), ALICE.sign(Domain.ENTRY, bytes(signed))])
    v.reject("seq as uint16", wide, Reason.NON_CANONICAL)

    v = vec(Reason.BAD_TYPE, "A float where an integer belongs.")
    fields = v.raw_fields(ALICE, "transfer", {"amount": 5.0, "memo": "", "to": BOB.public})
    v.reject("amount 5.0", sign_raw(ALICE, fields), Reason.BAD_TYPE)

    v = vec(Reason.BAD_SHAPE, "Fields of the wrong kind, or an unknown kind.")
    v.reject("kind 'gift'", sign_raw(ALICE, v.raw_fields(ALICE, "gift", {})), Reason.BAD_SHAPE)
    v.reject(
        "an unknown body field",
        sign_raw(ALICE, v.raw_fields(ALICE, "offer", dict(OFFER, colour="red"))),
        Reason.BAD_SHAPE,
    )
    v.reject(
        "a memo of nil (any other field's nil is a bad shape)",
        sign_raw(
            ALICE, v.raw_fields(ALICE, "transfer", {"amount": 5, "memo": None, "to": BOB.public})
        ),
        Reason.BAD_SHAPE,
    )

    v = vec(Reason.BAD_VERSION, "Version 2, and true for 1.")
    fields = v.raw_fields(ALICE, "offer", OFFER)
    v.reject("version 2", sign_raw(ALICE, [2, *fields[1:]]), Reason.BAD_VERSION)
    v.reject("version true", sign_raw(ALICE, [True, *fields[1:]]), Reason.BAD_VERSION)

    v = vec(Reason.BAD_MEMBER, "A member id that is not a valid public key.")
    fields = v.raw_fields(ALICE, "transfer", {"amount": 5, "memo": "", "to": bytes(32)})
    v.reject("pay a small-order key", sign_raw(ALICE, fields), Reason.BAD_MEMBER)
    identity = (1).to_bytes(32, "little")
    fields = v.raw_fields(ALICE, "offer", OFFER)
    fields[2] = identity
    v.reject("author is the identity point", sign_raw(ALICE, fields), Reason.BAD_MEMBER)
    # nil where a member belongs is a bad member, not a bad shape (§2.6 step 7).
    fields = v.raw_fields(ALICE, "transfer", {"amount": 5, "memo": "", "to": None})
    v.reject("pay nil", sign_raw(ALICE, fields), Reason.BAD_MEMBER)
    fields = v.raw_fields(ALICE, "vouch", {"member": None})
    v.reject("vouch for nil", sign_raw(ALICE, fields), Reason.BAD_MEMBER)

    v = vec(Reason.BAD_AMOUNT, "Amounts are 1 .. 2**53 - 1; nil is a bad amount too.")
    for amount in (0, -5, 2**53, None):
        fields = v.raw_fields(ALICE, "transfer", {"amount": amount, "memo": "", "to": BOB.public})
        v.reject(f"amount {amount}", sign_raw(ALICE, fields), Reason.BAD_AMOUNT)
    fields = v.raw_fields(ALICE, "offer", dict(OFFER, price=None))
    v.reject("an offer priced nil", sign_raw(ALICE, fields), Reason.BAD_AMOUNT)

    v = vec(Reason.BAD_SIGNATURE, "Signatures that do not verify as entry signatures.")
    entry = v.make(ALICE, Offer(side="offer", title="Bread"))
    v.reject(
        "signed for the vote domain",
        pack_raw([entry.signed, ALICE.sign(Domain.VOTE, entry.signed)]),
        Reason.BAD_SIGNATURE,
    )
    v.reject(
        "signed by bob",
        pack_raw([entry.signed, BOB.sign(Domain.ENTRY, entry.signed)]),
        Reason.BAD_SIGNATURE,
    )
    flipped = bytes([entry.signature[0] ^ 1]) + entry.signature[1:]
    v.reject("one bit of R flipped", pack_raw([entry.signed, flipped]), Reason.BAD_SIGNATURE)
    s = (
        int.from_bytes(entry.signature[32:], "little")
        + 2**252
        + 27742317777372353535851937790883648493
    )
    v.reject(
        "S + L",
        pack_raw([entry.signed, entry.signature[:32] + s.to_bytes(32, "little")]),
        Reason.BAD_SIGNATURE,
    )
    v.step("the entry itself", entry)
    return out


def reject_vector(
    out: list[Vector], reason: Reason, description: str, *members: SigningKey, **rules: Any
) -> Vector:
    """A new ``reject_<reason>`` vector in ``out``: the genesis and each member's join."""
    v = Vector(f"reject_{reason.value}", description, **rules)
    v.start(*members)
    out.append(v)
    return v


def rule_vectors() -> list[Vector]:
    """Rejections by the ledger rules."""
    out: list[Vector] = []

    def vec(reason: Reason, description: str, *members: SigningKey, **rules: Any) -> Vector:
        return reject_vector(out, reason, description, *members, **rules)

    v = vec(
        Reason.BAD_PREV,
        "prev set at seq 1 or nil after it (a prev nobody holds waits instead).",
        ALICE,
    )
    v.add("alice offers (seq 2)", ALICE, Offer(side="offer", title="Bread"))
    v.step(
        "seq 3 naming a prev nobody holds: it waits for that entry",
        v.make(ALICE, Offer(side="offer", title="Jam"), prev=bytes(32)),
        Status.WAITING,
    )
    fields = v.raw_fields(ALICE, "offer", OFFER)
    fields[4] = None
    v.reject("seq 3 with a nil prev", sign_raw(ALICE, fields), Reason.BAD_PREV)

    v = Vector("reject_unknown_community", "An entry of a community the node does not follow.")
    out.append(v)
    v.reject("alice's join before the genesis", v.make(ALICE, Join()), Reason.UNKNOWN_COMMUNITY)
    v.step("genesis", v.genesis)
    v.reject(
        "a join naming another community",
        v.make(ALICE, Join(), community=bytes(32)),
        Reason.UNKNOWN_COMMUNITY,
    )

    v = vec(Reason.JOIN_FIRST, "A log starts with its one join.", ALICE)
    v.reject(
        "bob's offer at seq 1", v.make(BOB, Offer(side="offer", title="Bread")), Reason.JOIN_FIRST
    )
    v.reject("alice joins again", v.make(ALICE, Join()), Reason.JOIN_FIRST)

    v = vec(Reason.BAD_VOUCH, "Admission by vouches.", ALICE, admission="vouch")
    v.reject("bob joins without a vouch", v.make(BOB, Join()), Reason.BAD_VOUCH)
    vc = v.add("alice vouches for carol", ALICE, Vouch(member=CAROL.public))
    v.reject("bob joins with carol's vouch", v.make(BOB, Join(vouch=vc.ref)), Reason.BAD_VOUCH)
    v.reject(
        "alice vouches for herself", v.make(ALICE, Vouch(member=ALICE.public)), Reason.BAD_VOUCH
    )
    v.reject(
        "a vouch above the community's limit",
        v.make(ALICE, Vouch(member=BOB.public, limit=101)),
        Reason.BAD_VOUCH,
    )

    v = vec(Reason.SELF_PAYMENT, "A member cannot pay itself.", ALICE)
    v.reject(
        "alice pays alice", v.make(ALICE, Transfer(to=ALICE.public, amount=1)), Reason.SELF_PAYMENT
    )

    v = vec(Reason.OVERDRAFT, "The credit limit is 100.", ALICE, BOB)
    v.add("alice pays bob 60", ALICE, Transfer(to=BOB.public, amount=60))
    v.reject(
        "alice pays bob 41", v.make(ALICE, Transfer(to=BOB.public, amount=41)), Reason.OVERDRAFT
    )
    v.add("alice pays bob 40", ALICE, Transfer(to=BOB.public, amount=40))

    v = vec(Reason.OVER_CEILING, "The ceiling is 50.", ALICE, BOB, ceiling=50)
    t1 = v.add("alice pays bob 50", ALICE, Transfer(to=BOB.public, amount=50))
    t2 = v.add("alice pays bob 1", ALICE, Transfer(to=BOB.public, amount=1))
    v.add("bob accepts 50", BOB, Accept(transfer=t1.ref))
    v.reject("bob accepts 1 more", v.make(BOB, Accept(transfer=t2.ref)), Reason.OVER_CEILING)

    top = MAX_BALANCE
    v = vec(
        Reason.BALANCE_RANGE,
        f"No ceiling, credit limit {top}: balances stay within -{top} .. {top}. Accepts and "
        "reclaims reach the top exactly and no further; the credit limit holds the bottom.",
        ALICE,
        BOB,
        CAROL,
        DAVE,
        credit_limit=top,
    )
    t1 = v.add(f"alice pays carol {top}", ALICE, Transfer(to=CAROL.public, amount=top))
    t2 = v.add("bob pays carol 1", BOB, Transfer(to=CAROL.public, amount=1))
    v.add(f"carol accepts {top}: exactly the top", CAROL, Accept(transfer=t1.ref))
    v.reject("carol accepts 1 more", v.make(CAROL, Accept(transfer=t2.ref)), Reason.BALANCE_RANGE)
    d2 = v.add("carol declines it", CAROL, Decline(transfer=t2.ref))
    t3 = v.add(f"carol pays bob {top}", CAROL, Transfer(to=BOB.public, amount=top))
    v.add(f"bob accepts: {top - 1}", BOB, Accept(transfer=t3.ref))
    t4 = v.add("dave pays bob 1", DAVE, Transfer(to=BOB.public, amount=1))
    v.add("bob accepts: the top", BOB, Accept(transfer=t4.ref))
    v.reject(
        "bob reclaims the declined 1", v.make(BOB, Reclaim(decline=d2.ref)), Reason.BALANCE_RANGE
    )
    v.add("bob pays dave 1", BOB, Transfer(to=DAVE.public, amount=1))
    v.add("bob reclaims it: the top again", BOB, Reclaim(decline=d2.ref))
    v.reject(
        "alice, at the bottom, pays 1 more",
        v.make(ALICE, Transfer(to=BOB.public, amount=1)),
        Reason.OVERDRAFT,
    )

    v = vec(Reason.NOT_A_TRANSFER, "Accepting an offer.", ALICE, BOB)
    o = v.add("alice offers", ALICE, Offer(side="offer", title="Bread"))
    v.reject("bob accepts the offer", v.make(BOB, Accept(transfer=o.ref)), Reason.NOT_A_TRANSFER)

    v = vec(Reason.NOT_PAYEE, "Accepting a transfer addressed to someone else.", ALICE, BOB, CAROL)
    t = v.add("alice pays bob", ALICE, Transfer(to=BOB.public, amount=5))
    v.reject("carol accepts it", v.make(CAROL, Accept(transfer=t.ref)), Reason.NOT_PAYEE)

    v = vec(Reason.ALREADY_ANSWERED, "Accepting twice; declining what was accepted.", ALICE, BOB)
    t = v.add("alice pays bob", ALICE, Transfer(to=BOB.public, amount=5))
    v.add("bob accepts", BOB, Accept(transfer=t.ref))
    v.reject("bob accepts again", v.make(BOB, Accept(transfer=t.ref)), Reason.ALREADY_ANSWERED)
    v.reject("bob declines it", v.make(BOB, Decline(transfer=t.ref)), Reason.ALREADY_ANSWERED)

    v = vec(Reason.NOT_A_DECLINE, "A reclaim naming the transfer, not a decline.", ALICE, BOB)
    t = v.add("alice pays bob", ALICE, Transfer(to=BOB.public, amount=5))
    v.reject(
        "alice reclaims naming it", v.make(ALICE, Reclaim(decline=t.ref)), Reason.NOT_A_DECLINE
    )

    v = vec(Reason.NOT_PAYER, "Reclaiming someone else's declined transfer.", ALICE, BOB, CAROL)
    t = v.add("bob pays carol", BOB, Transfer(to=CAROL.public, amount=5))
    d = v.add("carol declines", CAROL, Decline(transfer=t.ref))
    v.reject("alice reclaims it", v.make(ALICE, Reclaim(decline=d.ref)), Reason.NOT_PAYER)

    v = vec(Reason.ALREADY_RECLAIMED, "Reclaiming twice.", ALICE, BOB)
    t = v.add("alice pays bob", ALICE, Transfer(to=BOB.public, amount=5))
    d = v.add("bob declines", BOB, Decline(transfer=t.ref))
    v.add("alice reclaims", ALICE, Reclaim(decline=d.ref))
    v.reject(
        "alice reclaims again", v.make(ALICE, Reclaim(decline=d.ref)), Reason.ALREADY_RECLAIMED
    )

    v = vec(
        Reason.NOT_AN_OFFER, "Paying for, or closing, something that is not an offer.", ALICE, BOB
    )
    t = v.add("alice pays bob", ALICE, Transfer(to=BOB.public, amount=5))
    v.reject(
        "a transfer naming a transfer as its offer",
        v.make(ALICE, Transfer(to=BOB.public, amount=5, offer=t.ref)),
        Reason.NOT_AN_OFFER,
    )
    v.reject(
        "alice closes her transfer", v.make(ALICE, OfferClose(offer=t.ref)), Reason.NOT_AN_OFFER
    )

    v = vec(Reason.NOT_OWN_OFFER, "Closing another member's offer.", ALICE, BOB)
    o = v.add("bob offers", BOB, Offer(side="offer", title="Bread"))
    v.reject("alice closes it", v.make(ALICE, OfferClose(offer=o.ref)), Reason.NOT_OWN_OFFER)

    v = vec(Reason.ALREADY_CLOSED, "Closing an offer twice.", ALICE)
    o = v.add("alice offers", ALICE, Offer(side="offer", title="Bread"))
    v.add("alice closes it", ALICE, OfferClose(offer=o.ref))
    v.reject("alice closes it again", v.make(ALICE, OfferClose(offer=o.ref)), Reason.ALREADY_CLOSED)

    # Payment requests.
    v = vec(
        Reason.BAD_REQUEST,
        "A transfer carrying something that is not a valid request of this community: "
        "another kind, another community's request, a bad signature.",
        ALICE,
        BOB,
    )
    o = v.add("bob offers", BOB, Offer(side="offer", title="Bread"))
    v.reject(
        "alice pays carrying bob's offer",
        v.make(ALICE, Transfer(to=BOB.public, amount=5, request=o.wire)),
        Reason.BAD_REQUEST,
    )
    foreign = v.make(BOB, Request(to=ALICE.public, amount=5), community=bytes(32))
    v.reject(
        "alice pays carrying a request of another community",
        v.make(ALICE, Transfer(to=BOB.public, amount=5, request=foreign.wire)),
        Reason.BAD_REQUEST,
    )
    q = v.make(BOB, Request(to=ALICE.public, amount=5))
    forged = q.wire[:-1] + bytes([q.wire[-1] ^ 1])
    v.reject(
        "alice pays carrying a request with a bad signature",
        v.make(ALICE, Transfer(to=BOB.public, amount=5, request=forged)),
        Reason.BAD_REQUEST,
    )

    v = vec(
        Reason.REQUEST_MISMATCH,
        "The transfer must pay the request's author, from the member it names, its "
        "amount, for its offer.",
        ALICE,
        BOB,
        CAROL,
    )
    q = v.add("bob asks alice for 5", BOB, Request(to=ALICE.public, amount=5))
    v.reject(
        "alice pays 6",
        v.make(ALICE, Transfer(to=BOB.public, amount=6, request=q.wire)),
        Reason.REQUEST_MISMATCH,
    )
    v.reject(
        "alice pays carol",
        v.make(ALICE, Transfer(to=CAROL.public, amount=5, request=q.wire)),
        Reason.REQUEST_MISMATCH,
    )
    v.reject("carol pays it", v.make(CAROL, Transfer.paying(q)), Reason.REQUEST_MISMATCH)
    v.reject(
        "alice pays it naming an offer it does not name",
        v.make(ALICE, Transfer(to=BOB.public, amount=5, request=q.wire, offer=q.ref)),
        Reason.REQUEST_MISMATCH,
    )

    v = vec(
        Reason.REQUEST_EXPIRED,
        "A transfer stamped after the request's expires_ms does not pay it; one "
        "stamped exactly then does.",
        ALICE,
        BOB,
    )
    expiry = v.now + 5000
    q = v.add("bob asks alice for 5", BOB, Request(to=ALICE.public, amount=5, expires_ms=expiry))
    v.reject(
        "alice pays 1 ms late",
        v.make(ALICE, Transfer.paying(q), timestamp_ms=expiry + 1),
        Reason.REQUEST_EXPIRED,
    )
    v.step("alice pays in time", v.make(ALICE, Transfer.paying(q), timestamp_ms=expiry))

    v = vec(Reason.ALREADY_PAID, "A request is paid at most once.", ALICE, BOB)
    q = v.add("bob asks alice for 5", BOB, Request(to=ALICE.public, amount=5))
    v.add("alice pays it", ALICE, Transfer.paying(q))
    v.reject("alice pays it again", v.make(ALICE, Transfer.paying(q)), Reason.ALREADY_PAID)
    v.reject("alice refuses it", v.make(ALICE, Refusal(request=q.ref)), Reason.ALREADY_PAID)

    v = vec(Reason.ALREADY_REFUSED, "A refused request is not paid or refused again.", ALICE, BOB)
    q = v.add("bob asks alice for 5", BOB, Request(to=ALICE.public, amount=5))
    v.add("alice refuses it", ALICE, Refusal(request=q.ref))
    v.reject("alice pays it", v.make(ALICE, Transfer.paying(q)), Reason.ALREADY_REFUSED)
    v.reject(
        "alice refuses it again", v.make(ALICE, Refusal(request=q.ref)), Reason.ALREADY_REFUSED
    )

    v = vec(Reason.NOT_A_REQUEST, "Refusing something that is not a request.", ALICE, BOB)
    t = v.add("bob pays alice", BOB, Transfer(to=ALICE.public, amount=5))
    v.reject("alice refuses it", v.make(ALICE, Refusal(request=t.ref)), Reason.NOT_A_REQUEST)

    v = vec(
        Reason.NOT_EXPIRED,
        "A take-back stamped before or exactly when its transfer expires (60 s after its "
        "timestamp here); one stamped 1 ms later is accepted.",
        ALICE,
        BOB,
        transfer_expiry_ms=60_000,
    )
    t = v.add("alice pays bob 5", ALICE, Transfer(to=BOB.public, amount=5))
    v.reject(
        "alice takes it back exactly 60 s after",
        v.make(ALICE, TakeBack(transfer=t.ref), timestamp_ms=t.timestamp_ms + 60_000),
        Reason.NOT_EXPIRED,
        now_ms=t.timestamp_ms + 60_000,
    )
    v.step(
        "alice takes it back 60 s + 1 ms after",
        v.make(ALICE, TakeBack(transfer=t.ref), timestamp_ms=t.timestamp_ms + 60_001),
        now_ms=t.timestamp_ms + 60_001,
    )

    v = vec(Reason.NOT_ASKED, "Refusing a request made to someone else.", ALICE, BOB, CAROL)
    q = v.add("bob asks alice for 5", BOB, Request(to=ALICE.public, amount=5))
    v.reject("carol refuses it", v.make(CAROL, Refusal(request=q.ref)), Reason.NOT_ASKED)
    return out


def campaign_vectors() -> list[Vector]:
    """Campaigns (docs/protocol.md §10): success, failure, a forked pledger,
    and one rejection per campaign reason."""
    out = []

    def camp(v: Vector, label: str, author: SigningKey, goal: int, **kw: Any) -> Entry:
        body = Campaign(title="A bread oven", goal=goal, deadline_ms=T0 + 86_400_000, **kw)
        return v.add(label, author, body)

    def closing(c: Entry, *pledges: Entry) -> CampaignClose:
        refs = tuple(sorted((p.ref for p in pledges), key=lambda r: r.author))
        return CampaignClose(campaign=c.ref, pledges=refs)

    v = Vector(
        "campaign_success",
        "Bob and carol pledge and alice's close names them: their 60 reach the goal of 50,"
        " so alice is credited with all 60 (no step by bob or carol). Dave's pledge is not"
        " named: it lapsed, and dave withdraws it.",
    )
    out.append(v)
    v.start(ALICE, BOB, CAROL, DAVE)
    c = camp(v, "alice opens a campaign for 50", ALICE, 50)
    pb = v.add("bob pledges 30", BOB, Pledge(campaign=c.ref, amount=30))
    pc = v.add("carol pledges 30", CAROL, Pledge(campaign=c.ref, amount=30))
    pd = v.add("dave pledges 10", DAVE, Pledge(campaign=c.ref, amount=10))
    cl = v.add("alice closes, naming bob and carol", ALICE, closing(c, pb, pc))
    v.add("dave withdraws his lapsed pledge", DAVE, Withdraw(pledge=pd.ref, close=cl.ref))

    v = Vector(
        "campaign_failed",
        "The close arrives before carol's pledge and waits for it; the pledges it names"
        " (60) miss the goal of 100, so nothing is credited and both pledgers withdraw.",
    )
    out.append(v)
    v.start(ALICE, BOB, CAROL)
    c = camp(v, "alice opens a campaign for 100", ALICE, 100)
    pb = v.add("bob pledges 30", BOB, Pledge(campaign=c.ref, amount=30))
    pc = v.make(CAROL, Pledge(campaign=c.ref, amount=30))
    cl = v.make(ALICE, closing(c, pb, pc))
    v.step("alice's close, before carol's pledge: it waits", cl, Status.WAITING)
    released = v.step("carol's pledge arrives and releases the close", pc).released
    assert released == (cl,)
    v.add("bob withdraws", BOB, Withdraw(pledge=pb.ref, close=cl.ref))
    v.add("carol withdraws", CAROL, Withdraw(pledge=pc.ref, close=cl.ref))

    v = Vector(
        "campaign_forked_pledger",
        "Bob signs two entries at seq 2: a pledge of his whole capacity (100) on one branch"
        " and a payment of it to carol on the other. Alice's close counts the pledge; the"
        " fork freezes bob at 2, and alice's credit from it does not count (frozen credit),"
        " as for an accept of a forked payer's transfer.",
    )
    out.append(v)
    v.start(ALICE, BOB, CAROL)
    c = camp(v, "alice opens a campaign for 100", ALICE, 100)
    pb = v.add("bob pledges 100", BOB, Pledge(campaign=c.ref, amount=100))
    spend = v.make(BOB, Transfer(to=CAROL.public, amount=100), seq=pb.seq, prev=pb.prev)
    v.add("alice closes, naming bob's pledge", ALICE, closing(c, pb))
    assert v.step("bob's other seq 2: a payment of the same 100", spend).fork

    v = Vector(
        "campaign_lapse",
        "After the deadline, holding no close, bob and dave let their pledges lapse"
        " (withdraws naming no close). Alice's close, signed without seeing bob's lapse,"
        " names bob and carol: their 60 reach the goal of 50, the close wins and bob's"
        " lapse is undone (bob -30, alice +60). Dave's lapse, which no close counts, stands.",
    )
    out.append(v)
    v.start(ALICE, BOB, CAROL, DAVE)
    c = camp(v, "alice opens a campaign for 50", ALICE, 50)
    pb = v.add("bob pledges 30", BOB, Pledge(campaign=c.ref, amount=30))
    pc = v.add("carol pledges 30", CAROL, Pledge(campaign=c.ref, amount=30))
    pd = v.add("dave pledges 10", DAVE, Pledge(campaign=c.ref, amount=10))
    assert isinstance(c.body, Campaign)
    v.now = c.body.deadline_ms  # each entry below is stamped after the deadline
    v.add("bob's pledge lapses", BOB, Withdraw(pledge=pb.ref))
    v.add("dave's pledge lapses", DAVE, Withdraw(pledge=pd.ref))
    v.add("alice closes, naming bob and carol: it wins", ALICE, closing(c, pb, pc))

    # -- one rejection per reason ------------------------------------------------
    def vec(reason: Reason, description: str, *members: SigningKey, **rules: Any) -> Vector:
        return reject_vector(out, reason, description, *members, **rules)

    def pledged(v: Vector, goal: int = 50) -> tuple[Entry, Entry]:
        """Alice opens a campaign, bob pledges 5 to it."""
        c = camp(v, f"alice opens a campaign for {goal}", ALICE, goal)
        return c, v.add("bob pledges 5", BOB, Pledge(campaign=c.ref, amount=5))

    v = vec(Reason.NOT_A_CAMPAIGN, "Pledging to, or closing, an offer.", ALICE, BOB)
    o = v.add("alice offers", ALICE, Offer(side="offer", title="Bread"))
    v.reject(
        "bob pledges to it", v.make(BOB, Pledge(campaign=o.ref, amount=5)), Reason.NOT_A_CAMPAIGN
    )
    v.reject("alice closes it", v.make(ALICE, closing(o)), Reason.NOT_A_CAMPAIGN)

    v = vec(Reason.BELOW_MINIMUM, "A pledge below the campaign's min_pledge.", ALICE, BOB)
    c = camp(v, "alice opens a campaign, pledges of 10 or more", ALICE, 50, min_pledge=10)
    v.reject("bob pledges 9", v.make(BOB, Pledge(campaign=c.ref, amount=9)), Reason.BELOW_MINIMUM)

    v = vec(Reason.ALREADY_PLEDGED, "Pledging twice to one campaign.", ALICE, BOB)
    c = camp(v, "alice opens a campaign", ALICE, 50)
    v.add("bob pledges 5", BOB, Pledge(campaign=c.ref, amount=5))
    v.reject(
        "bob pledges 5 again",
        v.make(BOB, Pledge(campaign=c.ref, amount=5)),
        Reason.ALREADY_PLEDGED,
    )

    v = vec(Reason.NOT_OWN_CAMPAIGN, "Closing another member's campaign.", ALICE, BOB)
    c = camp(v, "alice opens a campaign", ALICE, 50)
    v.reject("bob closes it", v.make(BOB, closing(c)), Reason.NOT_OWN_CAMPAIGN)

    v = vec(Reason.NOT_A_PLEDGE, "A close naming a pledge to another campaign.", ALICE, BOB)
    c = camp(v, "alice opens a campaign", ALICE, 50)
    other = camp(v, "alice opens another", ALICE, 50)
    p = v.add("bob pledges to the other", BOB, Pledge(campaign=other.ref, amount=5))
    v.reject("alice closes the first, naming it", v.make(ALICE, closing(c, p)), Reason.NOT_A_PLEDGE)

    v = vec(Reason.NOT_PLEDGER, "Withdrawing someone else's pledge.", ALICE, BOB, CAROL)
    c, p = pledged(v)
    cl = v.add("alice closes, naming nothing", ALICE, closing(c))
    v.reject(
        "carol withdraws bob's pledge",
        v.make(CAROL, Withdraw(pledge=p.ref, close=cl.ref)),
        Reason.NOT_PLEDGER,
    )

    v = vec(Reason.ALREADY_WITHDRAWN, "Withdrawing a pledge twice.", ALICE, BOB)
    c, p = pledged(v)
    cl = v.add("alice closes, naming nothing", ALICE, closing(c))
    v.add("bob withdraws", BOB, Withdraw(pledge=p.ref, close=cl.ref))
    v.reject(
        "bob withdraws again",
        v.make(BOB, Withdraw(pledge=p.ref, close=cl.ref)),
        Reason.ALREADY_WITHDRAWN,
    )

    v = vec(Reason.NOT_A_CLOSE, "Withdrawing with the campaign, not its close.", ALICE, BOB)
    c, p = pledged(v)
    v.reject(
        "bob withdraws naming the campaign",
        v.make(BOB, Withdraw(pledge=p.ref, close=c.ref)),
        Reason.NOT_A_CLOSE,
    )

    v = vec(Reason.PLEDGE_COUNTED, "Withdrawing a pledge the close counted.", ALICE, BOB)
    c, p = pledged(v, goal=5)
    cl = v.add("alice closes, naming it: success", ALICE, closing(c, p))
    v.reject(
        "bob withdraws it",
        v.make(BOB, Withdraw(pledge=p.ref, close=cl.ref)),
        Reason.PLEDGE_COUNTED,
    )

    v = vec(Reason.NOT_LAPSED, "A withdraw naming no close, stamped at the deadline.", ALICE, BOB)
    c, p = pledged(v)
    assert isinstance(c.body, Campaign)
    v.reject(
        "bob withdraws with no close, stamped at the deadline",
        v.make(BOB, Withdraw(pledge=p.ref), timestamp_ms=c.body.deadline_ms),
        Reason.NOT_LAPSED,
        now_ms=c.body.deadline_ms,
    )
    return out


_B32 = "abcdefghijklmnopqrstuvwxyz234567"


def text_id_vectors(chain: Vector) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Text ids (docs/protocol.md §3.4): the four keys, the chain vector's
    community and first entry; and texts that must be refused."""
    ids = [("m", KEYS[n].public) for n in NAMES]
    ids += [("c", chain.genesis.id), ("e", bytes.fromhex(chain.steps[1]["expect"]["id"]))]
    good = []
    for kind, raw in ids:
        text = encode_id(kind, raw)
        # The same id: upper case, white space around, the 2 spare bits set.
        spare = text[:-1] + _B32[_B32.index(text[-1]) | 3]
        also = [text.upper(), f"  {text}\n", spare]
        assert spare != text
        assert all(decode_id(kind, t) == raw for t in also)
        good.append({"kind": kind, "raw": raw.hex(), "text": text, "also": also})
    alice = good[0]["text"]
    typo = alice[:20] + _B32[(_B32.index(alice[20]) + 1) % 32] + alice[21:]
    bad = [
        ("m", typo, "checksum", "alice's id with its 21st character mistyped"),
        ("c", alice, "kind", "alice's member id where a community id belongs"),
        ("m", alice[:20] + "1" + alice[21:], "form", "a character outside the alphabet"),
        ("m", alice[:-8], "length", "alice's id without its last 8 characters"),
    ]
    errors = []
    for kind, text, why, description in bad:
        got = None
        try:
            decode_id(kind, text)
        except IdError as exc:
            got = exc.reason
        if got != why:
            raise AssertionError(f"{text}: expected {why}, got {got}")
        errors.append({"kind": kind, "text": text, "why": why, "description": description})
    return good, errors


def witnessed_vector(name: str) -> tuple[Vector, list[SigningKey], WitnessRules]:
    """A vector under a witnessed genesis of 4 witnesses (f = 1, q = 3),
    their keys and its rules."""
    wkeys = [SigningKey(seed(f"witness{i}")) for i in range(4)]
    v = Vector(
        name,
        "",
        finality="witnessed",
        witnesses=tuple(sorted(k.public for k in wkeys)),
        faults=1,
        quorum=3,
    )
    return v, wkeys, WitnessRules.from_genesis(v.genesis)


def void_certificate_vectors() -> dict[str, Any]:
    """Void certificates (docs/witness.md §3.6) under a witnessed genesis of
    4 witnesses (f = 1, q = 3): each case is a certificate's bytes, whether
    it decodes as a void certificate, and whether it is valid."""
    v, wkeys, rules = witnessed_vector("void_certificates")
    ref = Ref(BOB.public, 2, EntryId(hashlib.sha256(b"bob's accept that lost").digest()))
    c = v.community

    def void(keys: list[SigningKey]) -> bytes:
        return VoidCertificate.from_votes(VoidVote.sign(k, c, ref) for k in keys).encode()

    normal = Certificate.from_votes(Vote.sign(k, c, ref) for k in wkeys[:3])
    relabelled = pack_raw([*normal.to_wire(), VOID_MARK])  # vote-domain signatures
    cases = [
        ("valid", "3 void votes of 3 distinct witnesses", void(wkeys[:3])),
        ("all_four", "4 void votes: more than q is valid", void(wkeys)),
        ("too_few_votes", "2 void votes, the quorum is 3", void(wkeys[:2])),
        (
            "wrong_domain",
            'a certificate\'s troc/vote/v1 signatures marked "void": none verifies',
            relabelled,
        ),
        ("normal", "a (normal) certificate: not a void certificate", normal.encode()),
        (
            "bad_mark",
            'a 6th element other than "void": refused',
            pack_raw([*normal.to_wire(), "VOID"]),
        ),
    ]
    out = []
    for name, description, data in cases:
        try:
            cert = VoidCertificate.decode(data)
        except CodecError:
            decodes, valid = False, False
        else:
            decodes, valid = True, cert.problem(rules) is None
        out.append(
            {
                "name": name,
                "description": description,
                "certificate": data.hex(),
                "void": decodes,
                "valid": valid,
            }
        )
    assert [c["valid"] for c in out] == [True, True, False, False, False, False]
    return {
        "description": (
            "void certificates (docs/witness.md §3.6) under this witnessed genesis: "
            "'void' says whether the bytes decode as one, 'valid' whether it is valid "
            "(every signature a void vote, troc/void/v1, of a distinct witness; q of them)"
        ),
        "genesis": v.genesis.wire.hex(),
        "cases": out,
    }


def timed_certificate_vectors() -> dict[str, Any]:
    """A take-back's certificates (docs/witness.md §2.2b, §3.5) under a
    witnessed genesis of 4 witnesses (f = 1, q = 3): the transfer and its
    take-back, then each case's certificate bytes, whether it decodes,
    whether it is valid as a certificate, whether it makes the take-back
    final (every voter's time past the transfer's expiry), and the
    certified time (the lower median of the times) when it does."""
    v, wkeys, rules = witnessed_vector("timed_certificates")
    v.start(ALICE, BOB)
    t = v.add(
        "alice pays bob 7, expiring",
        ALICE,
        Transfer(to=BOB.public, amount=7, expires_ms=v.now + 1500),
    )
    expiry = expiry_of(t, v.genesis.body)  # type: ignore[arg-type]
    assert expiry is not None
    k = v.add("alice takes it back", ALICE, TakeBack(transfer=t.ref))
    c = v.community

    def cert(keys: list[SigningKey], times: list[int]) -> Certificate:
        return Certificate.from_votes(
            (Vote.sign(w, c, k.ref) for w in keys),
            (TimeAttestation.sign(w, c, k.ref, ms) for w, ms in zip(keys, times, strict=True)),
        )

    good = cert(wkeys[:3], [expiry + 500, expiry + 20, expiry + 90])
    raw = codec.unpack(good.encode(), CERTIFICATE_LIMITS)
    w0, t0, sig0 = raw[5][0]
    cases = [
        ("valid", "3 votes, 3 times past the expiry", good.encode()),
        (
            "all_four",
            "4 votes and 4 times",
            cert(wkeys, [expiry + 1, expiry + 9, expiry + 4, expiry + 2]).encode(),
        ),
        (
            "time_at_expiry",
            "one witness attests the expiry itself: not past it",
            cert(wkeys[:3], [expiry + 500, expiry, expiry + 90]).encode(),
        ),
        (
            "missing_time",
            "3 votes, the times of 2 of them",
            pack_raw([*raw[:5], raw[5][1:]]),
        ),
        (
            "forged_time",
            "a time changed under its signature",
            pack_raw([*raw[:5], [[w0, t0 + 1, sig0], *raw[5][1:]]]),
        ),
        ("unsorted_times", "the times not sorted by witness", pack_raw([*raw[:5], raw[5][::-1]])),
        (
            "untimed",
            "a valid untimed certificate: not enough for a take-back",
            Certificate.from_votes(Vote.sign(w, c, k.ref) for w in wkeys[:3]).encode(),
        ),
    ]
    out = []
    for name, description, data in cases:
        entry: dict[str, Any] = {
            "name": name,
            "description": description,
            "certificate": data.hex(),
        }
        try:
            decoded = Certificate.decode(data)
        except CodecError:
            entry.update(decodes=False, valid=False, takes_back=False, certified_time=None)
            out.append(entry)
            continue
        valid = decoded.problem(rules) is None
        timed_ok = valid and decoded.time_problem(expiry, rules) is None
        entry.update(
            decodes=True,
            valid=valid,
            takes_back=timed_ok,
            certified_time=decoded.certified_time(rules) if timed_ok else None,
        )
        out.append(entry)
    assert [c["takes_back"] for c in out] == [True, True, False, False, False, False, False]
    assert [c["valid"] for c in out] == [True, True, True, False, False, False, True]
    return {
        "description": (
            "a take-back's certificates (docs/witness.md §2.2b, §3.5) under this witnessed "
            "genesis: 'decodes' whether the bytes decode as a certificate, 'valid' whether it "
            "is valid as one, 'takes_back' whether it makes the take-back final (a time of "
            "every voting witness, troc/witness-time/v1, each past the transfer's expiry), "
            "'certified_time' the lower median of the times when it does"
        ),
        "genesis": v.genesis.wire.hex(),
        "transfer": t.wire.hex(),
        "take_back": k.wire.hex(),
        "expiry_ms": expiry,
        "cases": out,
    }


def witnessed_accept_vectors() -> dict[str, Any]:
    """A newcomer accepts a certified transfer before it holds its payer's
    history (docs/witness.md §6.1), under a witnessed genesis of 4 witnesses
    (f = 1, q = 3): steps that ingest an entry or a certificate, with their
    verdicts, then the counted (final) balances."""
    v, wkeys, _rules = witnessed_vector("witnessed_accept")
    c = v.community

    def cert(entry: Entry) -> bytes:
        return Certificate.from_votes(Vote.sign(w, c, entry.ref) for w in wkeys[:3]).encode()

    # The payer's world, where everything is held: alice's history and her
    # payment to carol, then carol's accept and decline of it.
    v.step("genesis", v.genesis)
    join_a = v.add("join alice", ALICE, Join())
    join_c = v.add("join carol", CAROL, Join())
    offer = v.add("alice offers", ALICE, Offer(side="offer", title="Bread"))
    t = v.add("alice pays carol 10", ALICE, Transfer(to=CAROL.public, amount=10))
    assert v.ledger.ingest_certificate(cert(t), v.now).ok
    acc = v.add("carol accepts", CAROL, Accept(transfer=t.ref))
    dec = v.make(CAROL, Decline(transfer=t.ref))

    # The newcomer's node: carol's join, then the accept, the payment (its
    # payer's earlier entries missing), its certificate; the history last.
    node = Ledger(MemoryBackend())
    steps: list[dict[str, Any]] = []

    def step(label: str, kind: str, data: bytes, status: Status, **expect: Any) -> None:
        if kind == "entry":
            out: Any = node.ingest(data, v.now)
            got = {
                "status": out.status.value,
                "reason": None if out.reason is None else out.reason.value,
                "missing": [[r.author.hex(), r.seq, r.id.hex()] for r in out.missing],
                "released": [e.id.hex() for e in out.released],
            }
        else:
            out = node.ingest_certificate(data, v.now)
            got = {
                "status": out.status.value,
                "reason": None if out.reason is None else out.reason.value,
                "final": out.final,
                "released": [e.id.hex() for e in out.released],
            }
        want = {"status": status.value, "reason": None, "released": [], **expect}
        if kind == "entry":
            want.setdefault("missing", [])
        else:
            want.setdefault("final", False)
        if got != want:
            raise AssertionError(f"witnessed_accept/{label}: expected {want}, got {got}")
        steps.append(
            {"label": label, "kind": kind, "wire": data.hex(), "now_ms": v.now, "expect": got}
        )

    def ref(r: Ref) -> list[Any]:
        return [r.author.hex(), r.seq, r.id.hex()]

    step("genesis", "entry", v.genesis.wire, Status.ACCEPTED)
    step("carol's join", "entry", join_c.wire, Status.ACCEPTED)
    step(
        "carol's accept, before the payment: waits for it (and for its certificate)",
        "entry",
        acc.wire,
        Status.WAITING,
        missing=[ref(t.ref)],
    )
    step(
        "alice's payment to carol, alice's earlier entries missing: parked",
        "entry",
        t.wire,
        Status.WAITING,
        missing=[ref(offer.ref)],
    )
    step(
        "the payment's own certificate: the parked accept is valid now",
        "certificate",
        cert(t),
        Status.ACCEPTED,
        released=[acc.id.hex()],
    )
    step("alice's join", "entry", join_a.wire, Status.ACCEPTED)
    step(
        "alice's offer: the payment is stored, and becomes final",
        "entry",
        offer.wire,
        Status.ACCEPTED,
        released=[t.id.hex()],
    )
    step(
        "carol's decline of it: already answered by the accept",
        "entry",
        dec.wire,
        Status.REJECTED,
        reason=Reason.ALREADY_ANSWERED.value,
    )
    step(
        "the accept's certificate: carol's credit is final",
        "certificate",
        cert(acc),
        Status.ACCEPTED,
        final=True,
    )
    balances = {m.hex(): b for m, b in node.balances(c)}
    assert balances == {ALICE.public.hex(): -10, CAROL.public.hex(): 10}
    return {
        "description": (
            "in a witnessed community an accept is valid once the node holds its transfer, "
            "stored or parked waiting for the payer's earlier entries, with a certificate of "
            "that very transfer (docs/witness.md §6.1). Each step ingests an entry "
            "(Ledger.ingest) or a certificate (Ledger.ingest_certificate) at now_ms; "
            "'final' is whether a certificate moved its author's final tip; then compare "
            "the counted (final) balances"
        ),
        "steps": steps,
        "balances": balances,
    }


def build() -> dict[str, Any]:
    vectors = accepted_vectors() + codec_vectors() + rule_vectors() + campaign_vectors()
    text_ids, text_id_errors = text_id_vectors(vectors[0])
    return {
        "format": FORMAT,
        "description": (
            "troc protocol test vectors (docs/protocol.md §7). Each vector starts a fresh "
            "node; ingest each step's wire bytes (hex) at now_ms and compare the verdict; "
            "then compare the counted balances and the frozen logs."
        ),
        "keys": {n: {"seed": seed(n).hex(), "public": KEYS[n].public.hex()} for n in NAMES},
        "not_covered": NOT_COVERED,
        "text_ids": text_ids,
        "text_id_errors": text_id_errors,
        "vectors": [v.render() for v in vectors],
        "void_certificates": void_certificate_vectors(),
        "timed_certificates": timed_certificate_vectors(),
        "witnessed_accept": witnessed_accept_vectors(),
    }


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        same = PATH.exists() and PATH.read_text(encoding="utf-8") == text
        print(
            "vectors.json is up to date" if same else "vectors.json would change", file=sys.stderr
        )
        return 0 if same else 1
    PATH.write_text(text, encoding="utf-8")
    print(f"wrote {PATH} ({len(text)} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
