"""A newcomer's store holding certified payments parked for want of the
payer's history (docs/witness.md §6.1), made offline: real SQLite stores,
the certificate voted by the test witnesses' keys. Shared by the CLI and
web tests of what the node shows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.helpers import WITNESS_KEYS, certify
from troc.crypto.sign import SigningKey
from troc.node.local import open_local_node
from troc.protocol.entry import CommunityId, Entry

#: The payer's entries the newcomer has not fetched (offers), before the payments.
HISTORY = 5


@dataclass(frozen=True)
class Parked:
    community: CommunityId
    newcomer: SigningKey  # its home is ``tmp / "n"``
    paid: Entry  # 7 to the newcomer, parked there with its own certificate
    unchecked: Entry  # 4 to the newcomer, parked there without a certificate


def parked_payments(tmp: Path, *, parked: bool = True) -> Parked:
    """Without ``parked``, the newcomer holds neither payment nor certificate."""
    payer, newcomer = SigningKey.generate(), SigningKey.generate()
    with open_local_node(tmp / "p", payer) as p:
        c = p.create_community(
            "Valley",
            "h",
            100,
            finality="witnessed",
            witnesses=tuple(k.public for k in WITNESS_KEYS),
            faults=1,
            member_name="Paula",
        )
        genesis = p.community(c).genesis
        for i in range(HISTORY):
            p.offer(c, f"offer {i}")
        unchecked = p.pay(c, newcomer.public, 4, memo="unchecked")
        paid = p.pay(c, newcomer.public, 7, memo="soup")
    with open_local_node(tmp / "n", newcomer) as n:
        n.join(genesis, name="Nora")
        if not parked:
            return Parked(c, newcomer, paid, unchecked)
        for transfer in (unchecked, paid):
            assert n.ingest(transfer.wire).status.value == "waiting"  # parked
        assert n.ingest_certificate(certify(paid)).ok
    return Parked(c, newcomer, paid, unchecked)
