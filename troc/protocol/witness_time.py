"""The witnesses' time in a take-back's or a lapse's certificate
(docs/witness.md §3.5).

An honest witness votes for a take-back only once its own clock is past the
transfer's expiry (for a lapse: past the campaign's deadline). With that
vote it signs a :class:`~troc.protocol.vote.TimeAttestation`, its clock at
the time it decided, and the certificate carries one of every voting
witness. A *timed* entry's certificate is valid only if every attested time
is past the entry's deadline (:func:`timed_certificate_problem`), so the
certificate itself shows that q witnesses, at least q - f of them honest,
judged the deadline passed; :meth:`Certificate.certified_time` is the lower
median of the attested times, which f liars cannot move outside the range
of the honest ones.

Which entries are timed, and their deadline, is :func:`deadline_of`. Pure:
no I/O.
"""

from __future__ import annotations

from collections.abc import Callable

from troc.protocol.entry import Campaign, Entry, Pledge, Ref, TakeBack, Withdraw
from troc.protocol.vote import Certificate, WitnessRules

__all__ = ["Expiry", "Getter", "deadline_of", "is_timed", "timed_certificate_problem"]

#: Looks an entry of the community up by reference (None if not held).
Getter = Callable[[Ref], Entry | None]
#: A transfer's expiry by reference (None: not held, not a transfer, or never).
Expiry = Callable[[Ref], int | None]


def deadline_of(entry: Entry, get: Getter, expiry: Expiry) -> int | None:
    """The time ``entry``'s witnesses must have judged past, or None if its
    certificate needs no time: a take-back's transfer expiry, a lapse's
    campaign deadline. None too if what it names is not held (the caller
    checks the certificate once it is)."""
    body = entry.body
    if isinstance(body, TakeBack):
        return expiry(body.transfer)
    if isinstance(body, Withdraw) and body.lapse:
        pledge = get(body.pledge)
        if pledge is None or not isinstance(pledge.body, Pledge):
            return None
        campaign = get(pledge.body.campaign)
        if campaign is None or not isinstance(campaign.body, Campaign):
            return None
        return campaign.body.deadline_ms
    return None


def is_timed(entry: Entry) -> bool:
    """True if ``entry``'s certificate must carry the witnesses' times (a
    take-back or a lapse), whatever it names."""
    body = entry.body
    return isinstance(body, TakeBack) or (isinstance(body, Withdraw) and body.lapse)


def timed_certificate_problem(
    certificate: Certificate, entry: Entry, rules: WitnessRules, get: Getter, expiry: Expiry
) -> str | None:
    """Why ``certificate`` (valid under ``rules``: :meth:`Certificate.problem`)
    does not make ``entry`` final as a timed entry, or None: an entry that is
    not timed needs nothing more; a timed one needs the times of every
    voting witness, each past its deadline. If the deadline cannot be known
    yet (what the entry names is not held), says so."""
    if not certificate.certifies(entry):
        return "the certificate is not of this entry"
    if not is_timed(entry):
        return None
    deadline = deadline_of(entry, get, expiry)
    if deadline is None:
        return "the deadline of this take-back or lapse is not known here"
    return certificate.time_problem(deadline, rules)
