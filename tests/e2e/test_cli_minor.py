"""Issue 11's findings that need a running node: real `troc` processes."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.harness import members


def test_a_home_longer_than_a_unix_socket_path_still_runs_and_answers(tmp_path: Path) -> None:
    deep = tmp_path / ("long-folder-name-" * 4) / ("and-another-one-" * 4)
    assert len(str(deep / "ada" / "control.sock")) > 108  # AF_UNIX's limit
    with members(deep, "ada") as (ada,):
        ada("community", "create", "--name", "V", "--unit", "h", "--credit-limit", "5")
        ada.start()
        status = ada("status").json  # only a running node answers status
        assert status["peer_id"] == ada.peer_id
        assert ada("balance").json["balance"] == 0
        assert (ada.home / "control.sock").exists()  # in the home, as documented
        assert ada.stop() == 0
        assert not (ada.home / "control.sock").exists()
