"""bench/fuzz.py in miniature: a few thousand inputs per target, and proof that
its oracle catches what it is meant to catch (the full run is the bench)."""

from __future__ import annotations

import pytest

from tests.helpers import bench_module
from troc.protocol.backend import MemoryBackend
from troc.protocol.ledger import Ledger

fuzz = bench_module("fuzz")


@pytest.mark.parametrize("target", ["decode", "frames", "ingest"])
def test_a_short_fuzz_run_finds_nothing(target: str) -> None:
    result = fuzz.fuzz(target, 1500, seed=20261206)
    assert result["inputs"] == 1500
    assert result["findings"] == []


def test_ingest_inputs_reach_the_ledger_rules() -> None:
    # A fuzzer whose inputs all die in the decoder tests nothing deeper.
    verdicts = fuzz.fuzz("ingest", 1500, seed=3)["verdicts"]
    assert verdicts.get("accepted", 0) > 100
    for deep in ("rejected/already_answered", "rejected/not_payee", "waiting"):
        assert verdicts.get(deep, 0) > 0, deep


def test_a_non_troc_exception_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    real = fuzz.Entry.decode

    def decode(wire: bytes, **kw: object) -> object:
        if len(wire) % 7 == 3:
            raise IndexError("a decoder bug")
        return real(wire, **kw)

    monkeypatch.setattr(fuzz.Entry, "decode", decode)
    findings = fuzz.fuzz("decode", 300, seed=1)["findings"]
    assert findings
    assert findings[0]["kind"] == "non_troc_error"
    assert "IndexError" in findings[0]["detail"]


def test_backends_that_disagree_are_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    real = Ledger.balance

    def balance(self: Ledger, community: object, member: object) -> int:
        value = real(self, community, member)  # type: ignore[arg-type]
        return value + 1 if isinstance(self.backend, MemoryBackend) and value else value

    monkeypatch.setattr(Ledger, "balance", balance)
    findings = fuzz.fuzz("ingest", 1500, seed=1)["findings"]
    assert findings
    assert findings[0]["kind"] == "divergence"
