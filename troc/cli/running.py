"""The commands about the running node: ``troc run``, ``status``, ``peers``,
``connect`` and ``demo`` (``troc relay`` is :mod:`troc.cli.relay`)."""

from __future__ import annotations

import time

import click

from troc.cli import home as homes
from troc.cli import render
from troc.cli.context import Context, pass_ctx
from troc.cli.failures import Failure

__all__ = ["connect", "demo", "peers", "run", "status", "web"]


@click.command()
@click.option(
    "--listen",
    multiple=True,
    envvar="TROC_LISTEN",
    help="Multiaddr to listen on (repeatable). Default /ip4/0.0.0.0/tcp/4747. "
    "Env: TROC_LISTEN (space-separated).",
)
@click.option(
    "--bootstrap",
    multiple=True,
    envvar="TROC_BOOTSTRAP",
    help="A peer's full multiaddr, /ip4/…/tcp/…/p2p/… (repeatable). Env: TROC_BOOTSTRAP.",
)
@click.option(
    "--relay",
    "relays",
    multiple=True,
    envvar="TROC_RELAYS",
    help="Behind NAT: a relay server's full multiaddr to hold a reservation on"
    " (repeatable); peers reach this node through it. Env: TROC_RELAYS.",
)
@click.option("--mdns", is_flag=True, envvar="TROC_MDNS", help="Find peers on the local network.")
@click.option(
    "--dht",
    type=click.Choice(["off", "client", "server"]),
    default="client",
    show_default=True,
    envvar="TROC_DHT",
    help="Kademlia DHT: look up the servers of your communities (client), also answer"
    " and announce (server), or off.",
)
@click.option(
    "--sync-interval",
    type=click.FloatRange(0.1, 3600),
    default=5.0,
    show_default=True,
    envvar="TROC_SYNC_INTERVAL",
    help="Seconds between anti-entropy rounds with a random peer.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    envvar="TROC_LOG_LEVEL",
)
@click.option(
    "--no-passphrase",
    is_flag=True,
    help="On first run, create the key unencrypted (unattended servers).",
)
@click.option(
    "--witness",
    is_flag=True,
    envvar="TROC_WITNESS",
    help="Vote for entries of the communities whose genesis names this member a witness.",
)
@click.option(
    "--web",
    default="127.0.0.1:8787",
    show_default=True,
    envvar="TROC_WEB",
    help="host:port of the member web app (a busy port: the next free one). Beyond"
    " loopback only if you mean it: anyone with a login link acts as you. Env: TROC_WEB.",
)
@click.option("--no-web", is_flag=True, envvar="TROC_NO_WEB", help="Serve no web app.")
@pass_ctx
def run(
    ctx: Context,
    listen: tuple[str, ...],
    bootstrap: tuple[str, ...],
    relays: tuple[str, ...],
    mdns: bool,
    dht: str,
    sync_interval: float,
    log_level: str,
    no_passphrase: bool,
    witness: bool,
    web: str,
    no_web: bool,
) -> None:
    """Run the node in the foreground until interrupted (Ctrl-C or SIGTERM).

    It also serves the member web app and prints a link that logs you in
    once (`troc web` prints a new one)."""
    from troc.cli.runner import run_node

    run_node(
        ctx.home,
        listen=listen or ("/ip4/0.0.0.0/tcp/4747",),
        bootstrap=bootstrap,
        mdns=mdns,
        sync_interval=sync_interval,
        log_level=log_level,
        as_json=ctx.as_json,
        passphrase_file=ctx.passphrase_file,
        no_passphrase=no_passphrase,
        witness=witness,
        relays=relays,
        dht=dht,
        web=None if no_web or not web else web,
    )


@click.command("web")
@click.option("--open", "open_", is_flag=True, help="Open the link in the web browser.")
@pass_ctx
def web(ctx: Context, open_: bool) -> None:
    """Print a link that logs into the running node's web app (once)."""
    try:
        result = homes.call_running(ctx.home, "web.login", {})
    except Failure as exc:
        if exc.kind == "usage":  # the node knows no web.login: it serves no web app
            exc = Failure(exc.code, exc.kind, "the running node serves no web app (--no-web?)")
        raise exc from None
    if open_:
        import webbrowser

        webbrowser.open(result["url"])
    ctx.emit(result, lambda data: str(data["url"]))


@click.command()
@click.option(
    "--wait",
    type=click.FloatRange(0, 3600),
    default=0.0,
    help="Seconds to wait for the node to have started (a script that has just run"
    " `troc run &`): listening, and its first dials to known peers done. No node"
    " by then: exit 6 as without it.",
)
@pass_ctx
def status(ctx: Context, wait: float) -> None:
    """The running node: peer id, addresses, peers, per-community heads, sync."""
    deadline = time.monotonic() + wait
    while True:
        try:
            result = homes.call_running(ctx.home, "status", {})
        except Failure as exc:
            if exc.kind != "not_running" or time.monotonic() >= deadline:
                raise
        else:
            if result.get("started", True) or time.monotonic() >= deadline:
                break
        time.sleep(0.2)
    ctx.emit(result, render.status)


@click.command()
@pass_ctx
def peers(ctx: Context) -> None:
    """Peers the running node is connected to."""
    ctx.emit(homes.call_running(ctx.home, "peers", {}), render.peers)


@click.command()
@click.argument("addr")
@pass_ctx
def connect(ctx: Context, addr: str) -> None:
    """Connect the running node to a peer (full multiaddr with /p2p/…)."""
    ctx.emit(homes.call_running(ctx.home, "connect", {"addr": addr}), render.generic)


@click.command()
@click.option("--members", type=click.IntRange(2, 8), default=3, show_default=True)
@pass_ctx
def demo(ctx: Context, members: int) -> None:
    """Start a small community of local nodes, trade, and show they agree."""
    from troc.cli.demo import run_demo

    ctx.emit(run_demo(members, progress=None if ctx.as_json else click.echo), render.demo)
