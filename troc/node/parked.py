"""Payments to this node's member held parked with their own certificate
(docs/witness.md §6.1): which ingest outcomes made one acceptable.

Such a transfer is not stored (its payer's history is still being fetched),
so the listeners of stored entries never hear of it; the screens that list
incoming payments (the web app's live pages) must, as soon as it can be
accepted: when its certificate arrives while it is parked, or when it is
parked while its certificate is held.
"""

from __future__ import annotations

from collections.abc import Iterable

from troc.crypto.sign import MemberId
from troc.protocol.entry import Entry, Ref, Transfer
from troc.protocol.ledger import Ledger
from troc.protocol.verdicts import CertificateOutcome, Outcome, Status

__all__ = ["newly_acceptable"]


def newly_acceptable(
    ledger: Ledger, member: MemberId, outcomes: Iterable[Outcome | CertificateOutcome]
) -> list[Entry]:
    """The transfers to ``member`` that these outcomes left parked with their
    own certificate. Costs nothing for other entries; per new certificate
    while entries are parked, one keyed read of the waiting set (the
    transfer waits for its prev, the usual case) and, if it names a parked
    transfer to ``member``, one certificate lookup."""
    out: list[Entry] = []
    for o in outcomes:
        if isinstance(o, Outcome):
            entry = o.entry if o.status is Status.WAITING else None
        elif o.status is Status.ACCEPTED and o.certificate is not None:
            entry = _parked_on_prev(ledger, o)
        else:
            entry = None
        if (
            entry is not None
            and isinstance(entry.body, Transfer)
            and entry.body.to == member
            and ledger.is_certified_transfer(entry)
        ):
            out.append(entry)
    return out


def _parked_on_prev(ledger: Ledger, o: CertificateOutcome) -> Entry | None:
    cert = o.certificate
    assert cert is not None
    wire = ledger.backend.parked_on_prev(cert.community, Ref(cert.author, cert.seq, cert.id))
    # Parked entries passed their signature check before parking.
    return None if wire is None else Entry.decode(wire, check_signature=False)
