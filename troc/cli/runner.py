"""``troc run``: the node in the foreground.

Prints who and where the node is (a JSON line with ``--json``, for scripts
and tests that start nodes), logs to stderr at the chosen level, shows sync
progress during long catch-ups, and stops cleanly on SIGINT or SIGTERM: the
nursery is cancelled, the control socket removed, the store closed. Nothing
acknowledged is lost, since every acknowledged entry was committed first.

``troc relay`` (:mod:`troc.cli.relay`) runs the same node through
:func:`ensure_key` and :func:`serve_node`, adding its metrics endpoint with
the ``started`` hook.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

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
    witness: bool = False,
    relays: tuple[str, ...] = (),
    dht: str = "off",
    web: str | None = None,
) -> None:
    import trio

    from troc.node.config import NodeConfig
    from troc.node.metrics import configure_logging

    configure_logging("text", log_level)
    key = ensure_key(home, passphrase_file, no_passphrase)
    config = NodeConfig(
        home=home,
        listen=listen,
        mdns=mdns,
        sync_interval=sync_interval,
        witness=witness,
        relays=relays,
        dht=dht,
        bootstrap=tuple(dict.fromkeys((*bootstrap, *relays))),
    )
    trio.run(functools.partial(serve_node, config, key, as_json=as_json, web=web))


def ensure_key(home: Path, passphrase_file: Path | None, no_passphrase: bool) -> Any:
    """The member key of ``home``, created on first run."""
    if not homes.has_identity(home):
        click.echo(f"troc: no member key in {home}: creating one", err=True)
        homes.init_key(home, name=None, encrypt=not no_passphrase, passphrase_file=passphrase_file)
    return homes.load_signing_key(home, passphrase_file)


#: Called once the node runs, before the info line is printed: may start tasks
#: in the nursery given (cancelled when the node stops) and returns fields to
#: add to the info line. ``troc relay`` starts its metrics endpoint here.
StartedHook = Callable[[Any, Any], Awaitable[dict[str, Any]]]


async def serve_node(
    config: Any,
    key: Any,
    *,
    as_json: bool,
    started: StartedHook | None = None,
    web: str | None = None,
) -> None:
    """Run the node of ``config`` until SIGINT or SIGTERM (the body of `troc run`),
    with its web app on ``web`` (``host:port``; None: none)."""
    import trio

    from troc.node.node import open_node

    home = config.home
    try:
        async with open_node(config, key) as node, trio.open_nursery() as nursery:
            addrs = node.addrs()
            homes.remember_self(home, addrs)
            info: dict[str, Any] = {
                "member": homes.member_id(home),
                "peer_id": node.peer_id,
                "addrs": addrs,
            }
            if started is not None:
                info.update(await started(node, nursery))
            if web is not None:
                info["web"] = await _start_web(node, nursery, web)
            if as_json:
                click.echo(json.dumps(info, sort_keys=True))
            else:
                click.echo(f"troc node running for {info['member']}")
                click.echo(f"peer id {node.peer_id}")
                for a in addrs:
                    click.echo(f"listening on {a}")
                if info.get("web"):
                    click.echo(f"web app (this link logs you in once): {info['web']}")
            sys.stdout.flush()
            nursery.start_soon(_show_progress, node)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    click.echo(f"troc: stopping ({signal.Signals(signum).name})", err=True)
                    break
            nursery.cancel_scope.cancel()
    except OSError as exc:
        from troc.errors import NetworkError

        raise NetworkError(
            f"cannot listen on {' '.join(config.listen)}: {exc.strerror or exc}"
            " (is another node using that port?)"
        ) from None


async def _start_web(node: Any, nursery: Any, web: str) -> str | None:
    """Start the web app beside the node; its one-time login URL, or None
    (it could not listen: said on stderr, and the node goes on without it)."""
    from troc.web.server import parse_web_addr, serve_web

    host, port = parse_web_addr(web)
    server = await nursery.start(serve_web, node, host, port)
    if server is None:
        click.echo(f"troc: the web app cannot listen on {web}: running without it", err=True)
        return None
    return str(server.login_url())


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
