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
    # An encrypted key and no way to ask for its passphrase here: the web app asks.
    locked = web is not None and _unlock_in_browser(home, passphrase_file)
    key = None if locked else ensure_key(home, passphrase_file, no_passphrase)
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


def _unlock_in_browser(home: Path, passphrase_file: Path | None) -> bool:
    """True if the key of ``home`` is encrypted and its passphrase can be had
    neither from TROC_PASSPHRASE, a passphrase file nor a terminal."""
    import os

    if passphrase_file is not None or "TROC_PASSPHRASE" in os.environ:
        return False
    if sys.stdin is not None and sys.stdin.isatty():
        return False
    from troc.crypto.keystore import is_encrypted
    from troc.errors import KeystoreError

    try:
        homes.check_identity(home)
        return is_encrypted(home / homes.KEY_FILE)
    except KeystoreError:  # no key, or a damaged one: ensure_key says what to do
        return False


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
    with its web app on ``web`` (``host:port``; None: none). ``key`` None:
    the key is encrypted, and the web app asks for its passphrase first."""
    import trio

    from troc.node.gctune import tune_collector
    from troc.node.node import open_node

    home = config.home
    auth = None
    if key is None:
        assert web is not None
        unlocked = await _unlock_or_stop(home, web)
        if unlocked is None:
            return
        key, auth, web = unlocked
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
                info["web"] = await _start_web(node, nursery, web, auth)
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
            tune_collector()
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


async def _unlock_or_stop(home: Path, web: str) -> tuple[Any, Any, str] | None:
    """:func:`_unlock`, or None on SIGINT or SIGTERM while waiting."""
    import trio

    result: list[tuple[Any, Any, str]] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def unlock() -> None:
                result.append(await _unlock(home, web))
                nursery.cancel_scope.cancel()

            nursery.start_soon(unlock)
            async for signum in signals:
                click.echo(f"troc: stopping ({signal.Signals(signum).name})", err=True)
                nursery.cancel_scope.cancel()
                break
    return result[0] if result else None


async def _unlock(home: Path, web: str) -> tuple[Any, Any, str]:
    """The key, opened with the passphrase typed in the browser (troc.web.unlock);
    the sessions to keep and the address the web app got."""
    from troc.errors import KeystoreError
    from troc.web.server import parse_web_addr
    from troc.web.unlock import unlock_in_browser

    host, port = parse_web_addr(web)

    def announce(url: str) -> None:
        click.echo(
            "troc: the member key is encrypted and no passphrase was given: unlock it in"
            f" the browser: {url}",
            err=True,
        )

    try:
        key, auth, port = await unlock_in_browser(home, host, port, announce=announce)
    except OSError as exc:
        raise KeystoreError(
            "the key needs a passphrase, and the web app that would ask for it cannot listen"
            f" on {web} ({exc.strerror or exc}): set TROC_PASSPHRASE or --passphrase-file"
        ) from None
    shown = f"[{host}]" if ":" in host else host
    return key, auth, f"{shown}:{port}"


async def _start_web(node: Any, nursery: Any, web: str, auth: Any = None) -> str | None:
    """Start the web app beside the node; its one-time login URL, or None
    (it could not listen: said on stderr, and the node goes on without it).
    ``auth``: sessions to keep (those of the unlock app)."""
    from troc.web.server import parse_web_addr, serve_web

    host, port = parse_web_addr(web)
    server = await nursery.start(functools.partial(serve_web, node, host, port, auth=auth))
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
