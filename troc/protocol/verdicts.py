"""The ledger's verdicts: why an entry was refused (:class:`Reason`, stable
codes of docs/protocol.md §5), where it stands (:class:`Status`), and the
verdict on one entry or certificate (:class:`Outcome`,
:class:`CertificateOutcome`). Plain data, apart from the rules that give them
(troc.protocol.ledger), so that callers can read verdicts without the rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from troc.protocol._frozen import fast_init
from troc.protocol.entry import Entry, Ref
from troc.protocol.vote import Certificate

__all__ = ["CertificateOutcome", "Outcome", "Reason", "Status"]


class Reason(StrEnum):
    """Why an entry was rejected. Values are stable codes (docs/protocol.md §5)."""

    # From the codec and the entry's own fields.
    TOO_LARGE = "too_large"
    TOO_DEEP = "too_deep"
    MALFORMED = "malformed"
    TRAILING_BYTES = "trailing_bytes"
    NON_CANONICAL = "non_canonical"
    BAD_TYPE = "bad_type"
    BAD_SHAPE = "bad_shape"
    BAD_VERSION = "bad_version"
    BAD_MEMBER = "bad_member"
    BAD_AMOUNT = "bad_amount"
    BAD_SIGNATURE = "bad_signature"
    # From the ledger rules.
    UNKNOWN_COMMUNITY = "unknown_community"
    FUTURE_TIMESTAMP = "future_timestamp"
    BAD_PREV = "bad_prev"
    JOIN_FIRST = "join_first"
    BAD_VOUCH = "bad_vouch"
    SELF_PAYMENT = "self_payment"
    OVERDRAFT = "overdraft"
    OVER_CEILING = "over_ceiling"
    BALANCE_RANGE = "balance_range"
    NOT_A_TRANSFER = "not_a_transfer"
    NOT_PAYEE = "not_payee"
    ALREADY_ANSWERED = "already_answered"
    NOT_A_DECLINE = "not_a_decline"
    NOT_PAYER = "not_payer"
    ALREADY_RECLAIMED = "already_reclaimed"
    NOT_AN_OFFER = "not_an_offer"
    NOT_OWN_OFFER = "not_own_offer"
    ALREADY_CLOSED = "already_closed"
    # Payment requests (docs/protocol.md §4.4).
    BAD_REQUEST = "bad_request"
    REQUEST_MISMATCH = "request_mismatch"
    REQUEST_EXPIRED = "request_expired"
    ALREADY_PAID = "already_paid"
    ALREADY_REFUSED = "already_refused"
    NOT_A_REQUEST = "not_a_request"
    NOT_ASKED = "not_asked"
    # Transfers that expire (docs/protocol.md §4.11).
    NOT_EXPIRED = "not_expired"
    FORK_LIMIT = "fork_limit"
    WAITING_FULL = "waiting_full"
    # Campaigns (docs/protocol.md §10).
    NOT_A_CAMPAIGN = "not_a_campaign"
    BELOW_MINIMUM = "below_minimum"
    ALREADY_PLEDGED = "already_pledged"
    NOT_OWN_CAMPAIGN = "not_own_campaign"
    NOT_A_PLEDGE = "not_a_pledge"
    NOT_PLEDGER = "not_pledger"
    ALREADY_WITHDRAWN = "already_withdrawn"
    NOT_A_CLOSE = "not_a_close"
    PLEDGE_COUNTED = "pledge_counted"
    NOT_LAPSED = "not_lapsed"  # a withdraw with no close, stamped by the deadline (§10.5)
    # Certificates (witnessed communities).
    BAD_CERTIFICATE = "bad_certificate"
    NOT_WITNESSED = "not_witnessed"
    NOT_FINAL = "not_final"  # an accept's transfer (a reclaim's decline) can never be final


class Status(StrEnum):
    ACCEPTED = "accepted"  # stored now
    DUPLICATE = "duplicate"  # already held
    REJECTED = "rejected"  # invalid: see reason
    WAITING = "waiting"  # parked until ``missing`` arrive


@fast_init
@dataclass(frozen=True, slots=True)
class Outcome:
    """The verdict on one entry offered to :meth:`Ledger.ingest`.

    ``released`` lists entries that had waited for this one and were stored
    as a consequence (in order). ``fork`` is set when this entry proved its
    author forked (a proof was recorded, whether or not the entry itself was
    valid). ``missing_final`` (witnessed communities) lists entries that are
    held but must become final, by a certificate, before this one is valid.
    ``dropped`` lists the verdicts on parked entries that this one made
    invalid: they left the waiting set (``not_final``: what they waited to
    become final never can).
    """

    status: Status
    entry: Entry | None = None
    reason: Reason | None = None
    detail: str = ""
    missing: tuple[Ref, ...] = ()
    released: tuple[Entry, ...] = ()
    fork: bool = False
    missing_final: tuple[Ref, ...] = ()
    dropped: tuple[Outcome, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status in (Status.ACCEPTED, Status.DUPLICATE)


@dataclass(frozen=True, slots=True)
class CertificateOutcome:
    """The verdict on one certificate offered to :meth:`Ledger.ingest_certificate`.

    ``final`` is True when it moved its author's final tip (the entry is
    held); ``released`` lists entries that waited for it and are now stored;
    ``conflict`` is True when it certifies another id than a certificate
    held for the same position: it verified, so more than f witnesses lied
    (not the peer that relayed it); ``fault`` is True when that pair was
    recorded now (the first time). ``dropped``: verdicts on parked entries
    it made invalid, as in :class:`Outcome`.
    """

    status: Status
    certificate: Certificate | None = None
    reason: Reason | None = None
    detail: str = ""
    final: bool = False
    released: tuple[Entry, ...] = ()
    fault: bool = False
    conflict: bool = False
    dropped: tuple[Outcome, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status in (Status.ACCEPTED, Status.DUPLICATE)
