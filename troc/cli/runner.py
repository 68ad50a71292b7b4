"""``troc run``: the node in the foreground.

Prints who and where the node is (a JSON line with ``--json``, for scripts
and tests that start nodes), logs to stderr at the chosen level, shows sync
progress during long catch-ups, and stops cleanly on SIGINT or SIGTERM: the
nursery is cancelled, the control socket removed, the store closed. Nothing
acknowledged is lost, since every acknowledged entry was committed first.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import click

from troc.cli import home as homes


def run_node(
    home: Path,
    *,
    listen: tuple[str, ...],
    bootstrap: tuple[str, ...],
    mdns: bool,
    sync_interval: float,
    log_level: str,
    as_json: bool,
    passphrase_file: Path | None,
    no_passphrase: bool,
) -> None:
    import trio

    from troc.node.node import NodeConfig, open_node

    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # py-libp2p logs every failed dial and handshake at info; ours is enough.
    logging.getLogger("libp2p").setLevel(
        max(logging.WARNING, logging.getLevelName(log_level.upper()))
    )
    if not (home / homes.KEY_FILE).exists():
        click.echo(f"troc: no member key in {home}: creating one", err=True)
        homes.init_key(home, name=None, encrypt=not no_passphrase, passphrase_file=passphrase_file)
    key = homes.load_signing_key(home, passphrase_file)
    config = NodeConfig(
        home=home, listen=listen, bootstrap=bootstrap, mdns=mdns, sync_interval=sync_interval
    )

    async def main() -> None:
        try:
            async with open_node(config, key) as node:
                addrs = node.addrs()
                homes.remember_self(home, addrs)
                info = {"member": homes.member_id(home), "peer_id": node.peer_id, "addrs": addrs}
                if as_json:
                    click.echo(json.dumps(info, sort_keys=True))
                else:
                    click.echo(f"troc node running for {info['member']}")
                    click.echo(f"peer id {node.peer_id}")
                    for a in addrs:
                        click.echo(f"listening on {a}")
                sys.stdout.flush()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_show_progress, node)
                    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                        async for signum in signals:
                            click.echo(f"troc: stopping ({signal.Signals(signum).name})", err=True)
                            break
                    nursery.cancel_scope.cancel()
        except OSError as exc:
            from troc.errors import NetworkError

            raise NetworkError(
                f"cannot listen on {' '.join(listen)}: {exc.strerror or exc}"
                " (is another node using that port?)"
            ) from None

    trio.run(main)


async def _show_progress(node: object) -> None:
    import trio

    from troc.node.node import Node

    assert isinstance(node, Node)
    shown = 0
    while True:
        await trio.sleep(2)
        p = node.progress
        if p.current_peer and p.current_expected >= 1000 and p.current_received != shown:
            shown = p.current_received
            click.echo(
                f"sync: {p.current_received}/{p.current_expected} entries "
                f"from {p.current_peer[:12]}…",
                err=True,
            )
