"""The committed test vectors (tests/vectors/vectors.json) against the ledger.

The file is the contract another implementation can check itself against
(docs/protocol.md §7). These tests read it as committed; they never run the
generator, except to check that it still writes the very same bytes.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
from typing import Any

import pytest

from troc.crypto.ids import IdError, decode_id, encode_id
from troc.crypto.sign import SigningKey
from troc.protocol.backend import MemoryBackend
from troc.protocol.ledger import Ledger, Reason

HERE = pathlib.Path(__file__).parent.parent / "vectors"
DOC = json.loads((HERE / "vectors.json").read_text(encoding="utf-8"))
VECTORS = {v["name"]: v for v in DOC["vectors"]}


def verdict(outcome: Any) -> dict[str, Any]:
    return {
        "status": outcome.status.value,
        "reason": None if outcome.reason is None else outcome.reason.value,
        "id": None if outcome.entry is None else outcome.entry.id.hex(),
        "missing": [[r.author.hex(), r.seq, r.id.hex()] for r in outcome.missing],
        "released": [e.id.hex() for e in outcome.released],
        "fork": outcome.fork,
    }


@pytest.mark.parametrize("name", list(VECTORS))
def test_vector(name: str) -> None:
    vector = VECTORS[name]
    ledger = Ledger(MemoryBackend())
    community = None
    for step in vector["steps"]:
        outcome = ledger.ingest(bytes.fromhex(step["wire"]), step["now_ms"])
        assert verdict(outcome) == step["expect"], step["label"]
        if community is None and step["label"] == "genesis":
            community = outcome.entry.id
    if community is None:
        assert vector["balances"] == {}
        return
    assert {m.hex(): b for m, b in ledger.balances(community)} == vector["balances"]
    frozen = {
        m.hex(): h.frozen_at for m, h in ledger.backend.heads(community) if h.frozen_at is not None
    }
    assert frozen == vector["frozen"]
    profiles = {}
    for member, _head in ledger.backend.heads(community):
        profile = ledger.profile(community, member)
        if profile is not None:
            profiles[member.hex()] = profile.id.hex()
    assert profiles == vector["profiles"]


def test_every_reason_is_covered() -> None:
    covered = {
        step["expect"]["reason"]
        for vector in DOC["vectors"]
        for step in vector["steps"]
        if step["expect"]["reason"]
    }
    assert covered | set(DOC["not_covered"]) == {r.value for r in Reason}
    assert not covered & set(DOC["not_covered"])
    statuses = {step["expect"]["status"] for v in DOC["vectors"] for step in v["steps"]}
    assert statuses == {"accepted", "duplicate", "rejected", "waiting"}


def test_keys_match_their_seeds() -> None:
    for key in DOC["keys"].values():
        assert SigningKey(bytes.fromhex(key["seed"])).public.hex() == key["public"]


def test_generator_reproduces_the_file() -> None:
    spec = importlib.util.spec_from_file_location("troc_vectors_generate", HERE / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    assert generate.render().encode("utf-8") == (HERE / "vectors.json").read_bytes()


def test_text_ids() -> None:
    """docs/protocol.md §3.4: each text decodes to its raw id (and the raw id
    encodes to it); each error text is refused for the reason given."""
    assert {v["kind"] for v in DOC["text_ids"]} == {"m", "c", "e"}
    for v in DOC["text_ids"]:
        raw = bytes.fromhex(v["raw"])
        assert encode_id(v["kind"], raw) == v["text"]
        for text in [v["text"], *v["also"]]:
            assert decode_id(v["kind"], text) == raw
    assert {v["why"] for v in DOC["text_id_errors"]} == {"kind", "form", "length", "checksum"}
    for v in DOC["text_id_errors"]:
        with pytest.raises(IdError) as info:
            decode_id(v["kind"], v["text"])
        assert info.value.reason == v["why"], v["description"]


@pytest.mark.parametrize("case", DOC["void_certificates"]["cases"], ids=lambda c: c["name"])
def test_void_certificates(case: dict[str, Any]) -> None:
    """docs/witness.md §3.6: whether the bytes decode as a void certificate,
    whether it is valid under the vectors' witnessed genesis, and that no
    reader of (normal) certificates ever takes a void one."""
    from troc.errors import CodecError
    from troc.protocol.entry import Entry
    from troc.protocol.vote import Certificate, VoidCertificate, WitnessRules

    rules = WitnessRules.from_genesis(
        Entry.decode(bytes.fromhex(DOC["void_certificates"]["genesis"]))
    )
    data = bytes.fromhex(case["certificate"])
    try:
        cert = VoidCertificate.decode(data)
    except CodecError:
        assert not case["void"], case["description"]
        assert not case["valid"]
        return
    assert case["void"], case["description"]
    assert (cert.problem(rules) is None) == case["valid"], case["description"]
    with pytest.raises(CodecError):
        Certificate.decode(data)


@pytest.mark.parametrize("case", DOC["timed_certificates"]["cases"], ids=lambda c: c["name"])
def test_timed_certificates(case: dict[str, Any]) -> None:
    """docs/witness.md §2.2b, §3.5: whether the bytes decode as a
    certificate, are valid as one, make the take-back final (every voter's
    time past the transfer's expiry, read from the transfer itself), and the
    certified time (the lower median)."""
    from troc.errors import CodecError
    from troc.protocol.entry import Entry, Genesis, expiry_of
    from troc.protocol.vote import Certificate, WitnessRules
    from troc.protocol.witness_time import timed_certificate_problem

    doc = DOC["timed_certificates"]
    genesis, transfer, take_back = (
        Entry.decode(bytes.fromhex(doc[k])) for k in ("genesis", "transfer", "take_back")
    )
    assert isinstance(genesis.body, Genesis)
    rules = WitnessRules.from_genesis(genesis)
    assert expiry_of(transfer, genesis.body) == doc["expiry_ms"]
    held = {transfer.ref: transfer}
    try:
        cert = Certificate.decode(bytes.fromhex(case["certificate"]))
    except CodecError:
        assert not case["decodes"], case["description"]
        return
    assert case["decodes"], case["description"]
    assert (cert.problem(rules) is None) == case["valid"], case["description"]
    final = case["valid"] and (
        timed_certificate_problem(
            cert, take_back, rules, held.get, lambda r: expiry_of(held[r], genesis.body)
        )
        is None
    )
    assert final == case["takes_back"], case["description"]
    assert (cert.certified_time(rules) if final else None) == case["certified_time"]


def test_witnessed_accept() -> None:
    """docs/witness.md §6.1: an accept of a transfer held parked with its own
    certificate is valid; entries and certificates ingested step by step."""
    doc = DOC["witnessed_accept"]
    ledger = Ledger(MemoryBackend())
    community = None
    for step in doc["steps"]:
        data = bytes.fromhex(step["wire"])
        if step["kind"] == "entry":
            out: Any = ledger.ingest(data, step["now_ms"])
            got = {
                "status": out.status.value,
                "reason": None if out.reason is None else out.reason.value,
                "missing": [[r.author.hex(), r.seq, r.id.hex()] for r in out.missing],
                "released": [e.id.hex() for e in out.released],
            }
            if community is None:
                community = out.entry.id
        else:
            out = ledger.ingest_certificate(data, step["now_ms"])
            got = {
                "status": out.status.value,
                "reason": None if out.reason is None else out.reason.value,
                "final": out.final,
                "released": [e.id.hex() for e in out.released],
            }
        assert got == step["expect"], step["label"]
    assert {m.hex(): b for m, b in ledger.balances(community)} == doc["balances"]
