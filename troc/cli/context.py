"""What every ``troc`` command gets: the :class:`Context` (the home, ``--json``,
the passphrase file) and the options several commands share."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from troc.cli import home as homes
from troc.cli import render

__all__ = ["Context", "community_option", "pass_ctx", "wait_option"]


class Context:
    def __init__(self, home: Path, as_json: bool, passphrase_file: Path | None) -> None:
        self.home = home
        self.as_json = as_json
        self.passphrase_file = passphrase_file

    def emit(
        self, data: dict[str, Any], human: Callable[[dict[str, Any]], str] | None = None
    ) -> None:
        if self.as_json:
            click.echo(json.dumps(data, sort_keys=True))
        else:
            click.echo((human or render.generic)(data))

    def call(self, op: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run ``op`` on the running node, or offline on the store."""
        return homes.call(self.home, op, params, self.passphrase_file)

    def sign(self, op: str, params: dict[str, Any], signed: str) -> dict[str, Any]:
        """Run signing operation ``op``; ``signed`` names the result's entry.

        Offline, say that the entry waits for the node. Online, in a
        witnessed community, wait up to ``params["wait"]`` seconds for the
        witnesses, showing the votes so far on stderr."""
        limit = float(params.get("wait") or 0)
        reply = homes.call_if_running(self.home, op, {**params, "wait": 0})
        if reply is None:
            reply = homes.call_offline(self.home, op, params, self.passphrase_file)
            click.echo(
                "troc: no node is running: signed and stored here; it leaves when"
                " `troc run` next starts",
                err=True,
            )
            return reply
        fin = reply.get("finality")
        if fin is None or fin["final"] or fin["problem"] or limit <= 0:
            return reply
        reply["finality"] = self._wait_final(str(reply[signed]), fin, limit)
        return reply

    def _wait_final(self, entry: str, fin: dict[str, Any], limit: float) -> dict[str, Any]:
        start = time.monotonic()
        tty = sys.stderr.isatty()  # a terminal: one line rewritten; else a line per change
        shown = ""
        while True:
            waited = min(time.monotonic() - start, limit)
            line = render.finality_progress(fin, waited, limit)
            over = fin["final"] or fin["problem"] or waited >= limit
            if tty:
                click.echo(f"\r{line}", err=True, nl=over)
            elif over or line.split(";")[0] != shown.split(";")[0]:
                click.echo(line, err=True)
            shown = line
            if over:
                return fin
            time.sleep(min(0.5, limit - waited))
            fin = homes.call_running(self.home, "finality", {"entry": entry})


pass_ctx = click.make_pass_decorator(Context)

community_option = click.option(
    "--community",
    "-c",
    "community_",
    help="Community id or name (default: your default community).",
)
wait_option = click.option(
    "--wait",
    type=click.FloatRange(0, 3600),
    default=30.0,
    show_default=True,
    help="Witnessed communities: seconds to wait for the witnesses to make it final"
    " (0: do not wait; the node keeps asking them in the background).",
)
