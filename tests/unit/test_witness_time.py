"""The witnesses' time in a take-back's certificate (docs/witness.md §2.2b,
§3.5): the attestation, the timed certificate's wire form and validity, the
certified time's order statistic, the witness attaching its time only past
the expiry, and the collector counting a take-back's vote only with it."""

from __future__ import annotations

import itertools

import pytest

from tests.helpers import T0, WITNESS_KEYS, witnessed_world
from tests.helpers import certify as certify_bytes
from tests.property.test_witness import WKEYS, certify
from tests.unit.test_void_votes import P, Q, Race
from troc.crypto.sign import SigningKey
from troc.errors import BundleError, CodecError, LocalProtocolError
from troc.protocol import codec
from troc.protocol.entry import Entry, Ref
from troc.protocol.statement import build_bundle, verify_bundle
from troc.protocol.vote import MAX_TIME_MS, TimeAttestation, certified_time
from troc.protocol.witness import (
    CERTIFICATE_LIMITS,
    NOT_EXPIRED_HERE,
    Certificate,
    Collector,
    LedgerView,
    Refused,
    Tally,
    VoidCertificate,
    Vote,
    Voted,
    decode_answer,
    decode_any_certificate,
    encode_answer,
    is_void_certificate,
)
from troc.protocol.witness_time import (
    Expiry,
    Getter,
    deadline_of,
    is_timed,
    timed_certificate_problem,
)


def timed(
    race: Race, entry: Entry, times: list[int], keys: list[SigningKey] | None = None
) -> Certificate:
    c = race.world.community
    keys = WKEYS[: len(times)] if keys is None else keys
    return Certificate.from_votes(
        (Vote.sign(k, c, entry.ref) for k in keys),
        (TimeAttestation.sign(k, c, entry.ref, t) for k, t in zip(keys, times, strict=True)),
    )


def _view(race: Race) -> tuple[Getter, Expiry]:
    """The race world's own ledger, as the getter and expiry of witness_time."""
    view, c = LedgerView(race.world.ledger, lambda: race.world.now), race.world.community
    return (lambda r: view.get(c, r)), (lambda r: view.expiry(c, r))


def expiry(race: Race) -> int:
    d = deadline_of(race.k, *_view(race))
    assert d is not None
    return d


def problem(race: Race, cert: Certificate, entry: Entry | None = None) -> str | None:
    entry = race.k if entry is None else entry
    return cert.problem(race.rules) or timed_certificate_problem(
        cert, entry, race.rules, *_view(race)
    )


def test_a_timed_certificate_round_trips_and_an_untimed_one_keeps_its_bytes() -> None:
    race = Race()
    e = expiry(race)
    cert = timed(race, race.k, [e + 3, e + 1, e + 2])
    data = cert.encode()
    assert Certificate.decode(data) == cert
    assert decode_any_certificate(data) == cert
    assert not is_void_certificate(data)
    assert len(codec.unpack(data, CERTIFICATE_LIMITS)) == 6
    plain = certify(race.rules, race.k)
    assert len(codec.unpack(plain.encode(), CERTIFICATE_LIMITS)) == 5
    assert Certificate.decode(plain.encode()).times == ()
    # The times sort by witness like the votes; each witness once.
    assert [w for w, _t, _s in cert.times] == list(cert.witnesses)
    # Neither void reader takes a timed certificate, nor the timed reader a void one.
    with pytest.raises(CodecError):
        VoidCertificate.decode(data)
    void = race.void_certificate(race.a)
    assert decode_any_certificate(void.encode()) == void
    with pytest.raises(LocalProtocolError):
        VoidCertificate.from_votes(void.vote_list(), cert.attestations())


@pytest.mark.parametrize(
    "mutate",
    [
        lambda raw: raw[5].reverse(),  # unsorted
        lambda raw: raw[5].append(raw[5][0]),  # a witness twice
        lambda raw: raw[5].clear(),  # empty: the untimed form is 5 elements
        lambda raw: raw[5][0].__setitem__(1, -1),
        lambda raw: raw[5][0].__setitem__(1, MAX_TIME_MS + 1),
        lambda raw: raw[5][0].__setitem__(1, 1.5),
        lambda raw: raw[5][0].pop(),
        lambda raw: raw.__setitem__(5, "later"),
        lambda raw: raw.append([]),
    ],
)
def test_malformed_times_are_bad_shape(mutate) -> None:  # type: ignore[no-untyped-def]
    race = Race()
    e = expiry(race)
    raw = codec.unpack(timed(race, race.k, [e + 1, e + 2, e + 3]).encode(), CERTIFICATE_LIMITS)
    mutate(raw)
    with pytest.raises(CodecError) as info:
        decode_any_certificate(codec.pack(raw, CERTIFICATE_LIMITS))
    assert info.value.reason in ("bad_shape", "bad_type")  # a float: the codec's


def test_a_take_backs_certificate_needs_every_voters_time_past_the_expiry() -> None:
    race = Race()
    e = expiry(race)
    assert problem(race, timed(race, race.k, [e + 1, e + 5, e + 9])) is None
    # Untimed: valid as a certificate, not as a take-back's.
    untimed = certify(race.rules, race.k)
    assert untimed.problem(race.rules) is None
    assert "must carry the witnesses' times" in (problem(race, untimed) or "")
    # One time at the expiry (not past it): refused.
    assert "not past the deadline" in (problem(race, timed(race, race.k, [e + 1, e, e + 9])) or "")
    # A voter's time missing (the times of two of three voters).
    cert = timed(race, race.k, [e + 1, e + 2, e + 3])
    short = Certificate(*cert.position, cert.id, cert.votes, cert.times[:2])
    assert "exactly each voting witness" in (problem(race, short) or "")
    # A forged time: another time under the same signature.
    w, t, sig = cert.times[0]
    forged = Certificate(*cert.position, cert.id, cert.votes, ((w, t + 1, sig), *cert.times[1:]))
    assert "does not verify" in (problem(race, forged) or "")
    # A vote signature in the time domain does not pass for a time.
    as_vote = ((w, t, cert.votes[0][1]), *cert.times[1:])
    assert "does not verify" in (
        problem(race, Certificate(*cert.position, cert.id, cert.votes, as_vote)) or ""
    )


def test_entries_that_are_not_timed_take_any_certificate() -> None:
    race = Race()
    assert not is_timed(race.a)
    assert not is_timed(race.t)
    assert is_timed(race.k)
    assert problem(race, certify(race.rules, race.a), race.a) is None
    assert problem(race, timed(race, race.a, [1, 2, 3]), race.a) is None
    assert "not of this entry" in (problem(race, certify(race.rules, race.a)) or "")


def test_the_certified_time_is_the_lower_median_and_f_liars_cannot_move_it_out() -> None:
    assert certified_time([5, 1, 3], 1) == 3
    assert certified_time([4, 1, 3, 2], 1) == 2
    with pytest.raises(LocalProtocolError):
        certified_time([1, 2], 1)
    # Every placement of f liars' extreme times among k >= 2f + 1 honest-or-not
    # times: the certified time stays within the honest times' range.
    for f in range(3):
        for k in range(2 * f + 1, 2 * f + 5):
            honest = [1000 + 7 * i for i in range(k - f)]
            for lies in itertools.product([0, 10**9], repeat=f):
                t = certified_time([*honest, *lies], f)
                assert min(honest) <= t <= max(honest), (f, k, lies)


def test_the_witness_attaches_its_time_past_the_expiry_only() -> None:
    race = Race()
    c, e = race.world.community, expiry(race)
    w = race.witness(0)
    race.world.now = e  # the witness's clock at the expiry: refused
    answer = w.ask(race.k, deps=race.deps())
    assert isinstance(answer, Refused)
    assert answer.reason == NOT_EXPIRED_HERE
    race.world.now = e + 42
    answer = decode_answer(encode_answer(w.ask(race.k, deps=race.deps())))
    assert isinstance(answer, Voted)
    assert answer.time is not None
    assert answer.time.verify()
    assert answer.time.time_ms == e + 42
    assert (answer.time.witness, answer.time.id) == (WKEYS[0].public, race.k.id)
    assert answer.vote == Vote.sign(WKEYS[0], c, race.k.ref)  # the vote is unchanged
    # A vote for anything else carries no time.
    tcert = certify(race.rules, race.t)
    other = race.witness(1).ask(race.a, deps=race.deps(), certs=[tcert])
    assert isinstance(other, Voted)
    assert other.time is None
    # Rule 1 (certified already) with a clock behind: a vote, no time.
    race.world.now = e - 1
    late = race.witness(2).ask(race.k, deps=race.deps(), certs=[timed(race, race.k, [e + 1] * 3)])
    assert isinstance(late, Voted)
    assert late.time is None


def test_the_collector_counts_a_take_backs_vote_only_with_a_good_time() -> None:
    race = Race()
    c, e = race.world.community, expiry(race)
    col = Collector.for_entry(race.rules, race.k, deadline_ms=e)
    ref: Ref = race.k.ref
    v = [Vote.sign(k, c, ref) for k in WKEYS[:4]]
    assert col.add_answer(Voted(v[0]), WKEYS[0].public) is Tally.UNTIMED
    assert WKEYS[0].public not in col.pending()
    assert WKEYS[0].public not in col.faulty
    early = TimeAttestation.sign(WKEYS[1], c, ref, e)
    assert col.add_answer(Voted(v[1], early), WKEYS[1].public) is Tally.BAD_TIME
    assert WKEYS[1].public in col.faulty
    other = TimeAttestation.sign(WKEYS[2], c, race.a.ref, e + 1)  # another entry's time
    assert col.add(v[2], other) is Tally.BAD_TIME
    for i, k in enumerate(WKEYS[2:4], start=2):
        assert col.add(v[i], TimeAttestation.sign(k, c, ref, e + i)) is Tally.COUNTED
    assert not col.done
    assert col.add(v[0], TimeAttestation.sign(WKEYS[0], c, ref, e + 9)) is Tally.COUNTED
    cert = col.certificate
    assert cert is not None
    assert problem(race, cert) is None
    assert cert.certified_time(race.rules) == e + 3
    # An untimed collector (an accept's) makes untimed certificates as before.
    plain = Collector.for_entry(race.rules, race.a)
    for k in WKEYS[:3]:
        plain.add(Vote.sign(k, c, race.a.ref))
    assert plain.certificate is not None
    assert plain.certificate.times == ()


def _bundle_of_a_take_back(timed_times: list[int] | None) -> bytes:
    """P pays Q 10 expiring, takes it back after the expiry; every entry is
    certified, the take-back with the given witnesses' times (or untimed);
    P's bundle up to the take-back."""
    w = witnessed_world(credit_limit=100)

    def certifier(entry: Entry) -> bytes:
        if timed_times is None or not is_timed(entry):
            return certify_bytes(entry)
        c, keys = entry.community, WITNESS_KEYS[:3]
        assert c is not None
        return Certificate.from_votes(
            (Vote.sign(k, c, entry.ref) for k in keys),
            (
                TimeAttestation.sign(k, c, entry.ref, t)
                for k, t in zip(keys, timed_times, strict=True)
            ),
        ).encode()

    w.certifier = certifier
    w.join(P)
    w.join(Q)
    t = w.pay(P, Q, 10, expires_ms=w.now + 500)
    k = w.take_back(P, t)
    return build_bundle(w.ledger, P, w.community, k.ref, 1, w.now)


def test_a_bundle_shows_the_witnesses_time_of_its_take_back() -> None:
    bundle = _bundle_of_a_take_back([T0 + 9_000, T0 + 7_000, T0 + 8_000])
    verified = verify_bundle(bundle, T0 + 10**6)
    assert verified.witnesses_times == ((3, T0 + 8_000),)  # P's seq 3, the lower median
    # An untimed certificate of the take-back does not verify as one.
    with pytest.raises(BundleError, match="must carry the witnesses' times") as info:
        verify_bundle(_bundle_of_a_take_back(None), T0 + 10**6)
    assert info.value.reason == "bad_certificate"
    # Nor one with a time not past the transfer's expiry (T0 + 500, stamped later).
    with pytest.raises(BundleError, match="not past the deadline"):
        verify_bundle(_bundle_of_a_take_back([T0 + 9_000, T0, T0 + 8_000]), T0 + 10**6)
