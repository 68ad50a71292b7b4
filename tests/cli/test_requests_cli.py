"""`troc request` and `troc pay --request` on the command line, in-process
(click's CliRunner) on real homes and SQLite stores: exit codes, --json,
the QR code, and the text form's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from troc.cli.main import cli
from troc.cli.render import parse_expiry_ms
from troc.errors import LocalProtocolError
from troc.protocol.request_text import decode_request_text


def troc(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], env={"TROC_PASSPHRASE": None})


@pytest.fixture
def homes(tmp_path: Path) -> tuple[Path, Path, str]:
    ada, bruno = tmp_path / "ada", tmp_path / "bruno"
    for home, name in ((ada, "ada"), (bruno, "bruno")):
        assert troc(home, "init", "--no-passphrase", "--name", name).exit_code == 0
    create = ["community", "create", "--name", "V", "--unit", "h", "--credit-limit", "9"]
    assert troc(ada, *create).exit_code == 0
    invitation = json.loads(troc(ada, "--json", "community", "invite").stdout)["invitation"]
    assert troc(bruno, "community", "join", invitation).exit_code == 0
    return ada, bruno, json.loads(troc(bruno, "--json", "whoami").stdout)["member"]


def test_request_with_a_qr_code_and_its_text(homes: tuple[Path, Path, str]) -> None:
    ada, bruno, bruno_id = homes
    result = troc(ada, "request", bruno_id, "2", "--memo", "soup", "--qr")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    text = lines[-1]
    assert text.startswith("troc-request:")
    assert "█" in lines[0]  # the QR code, drawn with block characters, above the id
    request = decode_request_text(text)
    assert request.body.memo == "soup"  # type: ignore[union-attr]
    # The payer's node pays it from the text; the result names both.
    paid = json.loads(troc(bruno, "pay", "--request", text, "--json").stdout)
    assert paid["request"] == lines[-2]
    # The history names the request a transfer carries by its id.
    history = json.loads(troc(bruno, "--json", "history").stdout)["entries"]
    [t] = [e for e in history if e["kind"] == "transfer"]
    assert t["body"]["request"] == paid["request"]
    # Paying it again is the ledger's refusal: exit 4, its own reason.
    again = troc(bruno, "--json", "pay", "--request", text)
    assert again.exit_code == 4
    assert json.loads(again.stdout)["error"]["reason"] == "already_paid"


def test_pay_request_usage_errors(homes: tuple[Path, Path, str]) -> None:
    ada, bruno, bruno_id = homes
    text = json.loads(troc(ada, "--json", "request", bruno_id, "2").stdout)["text"]
    assert troc(bruno, "pay", "--request", text, bruno_id, "2").exit_code == 2
    assert troc(bruno, "pay").exit_code == 2  # neither MEMBER AMOUNT nor --request
    damaged = text[:40] + ("a" if text[40] != "a" else "b") + text[41:]
    result = troc(bruno, "--json", "pay", "--request", damaged)
    assert result.exit_code == 2, result.output
    assert "damaged" in json.loads(result.stdout)["error"]["message"]
    # Ada cannot pay her own request to bruno.
    mine = troc(ada, "--json", "pay", "--request", text)
    assert mine.exit_code == 4
    assert json.loads(mine.stdout)["error"]["reason"] == "request_mismatch"


def test_expiry_forms() -> None:
    now = 1_700_000_000_000
    assert parse_expiry_ms("90s", now) == now + 90_000
    assert parse_expiry_ms("2h", now) == now + 7_200_000
    assert parse_expiry_ms("7d", now) == now + 7 * 86_400_000
    assert parse_expiry_ms("2026-12-31") == 1798761599000
    for bad in ("", "h", "2w", "-3d", "soon"):
        with pytest.raises(LocalProtocolError):
            parse_expiry_ms(bad, now)


def test_not_a_request_text() -> None:
    for bad in (
        "troc-invite:abc",
        "troc-request:",
        "troc-request:1!",
        "troc-request:" + "a" * 4000,
    ):
        with pytest.raises(LocalProtocolError):
            decode_request_text(bad)
