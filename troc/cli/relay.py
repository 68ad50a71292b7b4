"""``troc relay``: the node of ``troc run``, configured as an always-on community server.

It loads the server configuration (:mod:`troc.node.config`: ``--config``
file, ``TROC_*`` variables, flags), sets up logging (text or JSON lines),
binds the metrics endpoint (so a busy port fails before the node starts),
then runs the node exactly as ``troc run`` does
(:func:`troc.cli.runner.serve_node`), with the endpoint (:mod:`troc.node.metrics`)
serving alongside. The info line (``--json``) adds ``metrics`` (the bound
``host:port``, or null) and ``witness``. ``--check`` validates the
configuration, prints every option with its value and source, and exits.

Options the node does not honour yet (relay limits, quotas, communities
served, the witness role) are checked and shown, and ``troc relay`` warns at
start-up about each one set away from its default (docs/operations.md).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

import click

logger = logging.getLogger("troc.relay")


@click.group("relay", invoke_without_command=True)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="TROC_CONFIG",
    help="Server configuration file (TOML). Env: TROC_CONFIG.",
)
@click.option("--listen", multiple=True, help="Multiaddr to listen on (repeatable).")
@click.option("--bootstrap", multiple=True, help="A peer's full multiaddr (repeatable).")
@click.option("--metrics-listen", help="host:port for /metrics and /health; '' turns it off.")
@click.option("--web", help="host:port of the member web app; '' turns it off.")
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Log lines on stderr.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option(
    "--no-passphrase",
    is_flag=True,
    help="On first run, create the key unencrypted (unattended servers).",
)
@click.option("--check", is_flag=True, help="Check the configuration, print it, and exit.")
@click.pass_context
def relay(
    click_ctx: click.Context,
    config_path: Path | None,
    listen: tuple[str, ...],
    bootstrap: tuple[str, ...],
    metrics_listen: str | None,
    web: str | None,
    log_format: str | None,
    log_level: str | None,
    no_passphrase: bool,
    check: bool,
) -> None:
    """Run the node as an always-on community server (docs/operations.md).

    Every option can also be set in the --config file and as TROC_<OPTION>;
    flags override variables, which override the file.

    `troc relay invite …` manages the invitation codes the server issues.
    """
    if click_ctx.invoked_subcommand is not None:
        return  # `troc relay invite …`: the subcommand does the work
    from click.core import ParameterSource

    from troc.cli import home as homes
    from troc.node.config import load_config

    obj = click_ctx.obj  # troc.cli.main.Context
    flags: dict[str, Any] = {
        "listen": listen or None,
        "bootstrap": bootstrap or None,
        "metrics_listen": metrics_listen,
        "web": web,
        "log_format": log_format,
        "log_level": log_level,
    }
    # The group's --home also reads TROC_HOME; only a real flag overrides the
    # file (the variable is read, with its name, by load_config).
    if click_ctx.find_root().get_parameter_source("home") is ParameterSource.COMMANDLINE:
        flags["home"] = obj.home
    config = load_config(config_path, os.environ, flags)
    if config.home is None:
        config = config.with_home(homes.default_home())
    if check:
        obj.emit(
            {
                "config": config.describe(),
                "awaiting_hooks": config.awaiting_hooks(),
                "hints": _hints(config.home),
            },
            _render_check,
        )
        return
    run_relay(
        config,
        as_json=obj.as_json,
        passphrase_file=obj.passphrase_file,
        no_passphrase=no_passphrase,
    )


# -- invitation codes (troc.node.invites, docs/invitations.md) -----------------


@relay.group("invite")
def invite() -> None:
    """Invitation codes this server issues: newcomers pass one to `troc community join`.

    Run on the server (through its control socket when it runs, else on its
    home directly); a code is shown once, when made: only its hash is kept."""


@invite.command("create")
@click.option("--community", "community_", help="Community id or name (default: the default).")
@click.option(
    "--uses", type=click.IntRange(1, 1_000_000), default=1, show_default=True, help="Joins allowed."
)
@click.option("--expires", default="7d", show_default=True, help="Lifetime: 30m, 12h, 7d, 2w …")
@click.option("--label", default="", help="A note for yourself (who or what the code is for).")
@click.option("--addr", help="The server address the code names (default: its first public one).")
@click.pass_obj
def invite_create(
    obj: Any, community_: str | None, uses: int, expires: str, label: str, addr: str | None
) -> None:
    """Make a code and print it."""
    from troc.cli import home as homes

    params = {
        "community": community_,
        "uses": uses,
        "expires": expires,
        "label": label,
        "addr": addr,
        "addrs": homes.known_addrs(obj.home),
    }
    obj.emit(obj.call("invite.create", params), _render_code)


@invite.command("list")
@click.option("--all", "all_", is_flag=True, help="Used-up, expired and revoked codes too.")
@click.pass_obj
def invite_list(obj: Any, all_: bool) -> None:
    """List the codes (active ones unless --all)."""
    obj.emit(obj.call("invite.list", {"all": all_}), _render_codes)


@invite.command("revoke")
@click.argument("code")
@click.pass_obj
def invite_revoke(obj: Any, code: str) -> None:
    """Withdraw a code (its text, its secret, or its id from `list`)."""
    result = obj.call("invite.revoke", {"code": code})
    obj.emit(result, lambda d: f"revoked {d['id']} ({d['redeemed']} of {d['uses']} used)")


def _when(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _render_code(d: dict[str, Any]) -> str:
    uses = "1 use" if d["uses"] == 1 else f"{d['uses']} uses"
    return (
        f"{d['code']}\n"
        f"  {d['policy']['name']}: {uses}, until {_when(d['expires_ms'])}"
        f" (id {d['id']}{', ' + d['label'] if d['label'] else ''})"
    )


def _render_codes(d: dict[str, Any]) -> str:
    from troc.cli.render import table

    rows = [
        [
            c["id"],
            c["community_name"] or c["community"][:14] + "…",
            f"{c['redeemed']}/{c['uses']}",
            _when(c["expires_ms"]),
            c["state"],
            c["label"],
        ]
        for c in d["codes"]
    ]
    return table(rows, ["id", "community", "used", "expires", "state", "label"])


def render_policy(d: dict[str, Any]) -> str:
    """`troc community policy`, for people."""
    unit = d["unit"]
    lines = [
        f"{d['name']}  ({d['community']})",
        f"  unit          {unit}",
        f"  credit limit  {d['credit_limit']} {unit}",
        f"  ceiling       {d['ceiling']} {unit}" if d["ceiling"] else "  ceiling       none",
        f"  admission     {d['admission']}",
        f"  finality      {d['finality']}",
        f"  founder       {d['founder']}",
    ]
    if d["witnesses"]:
        n, f, q = len(d["witnesses"]), d["faults"], d["quorum"]
        lines.append(f"  witnesses     {n} (f = {f}, q = {q})")
        lines += [f"                {w}" for w in d["witnesses"]]
    return "\n".join(lines)


def _hints(home: Path | None) -> list[str]:
    """What a new server's operator is likely to have missed (--check)."""
    from troc.cli import home as homes
    from troc.errors import TrocError

    if home is None or not (home / homes.STORE_FILE).exists():
        return [NO_COMMUNITY_HINT]
    try:
        followed = homes.call(home, "community.list", {}, None)["communities"]
    except TrocError:  # no key yet, the store in use: nothing to add here
        return []
    return [] if followed else [NO_COMMUNITY_HINT]


def _render_check(data: dict[str, Any]) -> str:
    lines = []
    for name, item in data["config"].items():
        lines.append(f"{name} = {item['value']!r}  ({item['source']})")
    for name in data["awaiting_hooks"]:
        lines.append(f"warning: {name} is set but this node does not enforce it yet")
    lines += [f"hint: {hint}" for hint in data.get("hints", [])]
    return "\n".join(lines)


NO_COMMUNITY_HINT = (
    "this server follows no community yet, so it serves nothing: give it a member's"
    " invitation with `troc --home HOME community follow INVITATION`"
)


def witness_role(setting: bool | None, named: bool) -> str:
    """The witness role in the words ``troc status`` uses: the role serves
    (answers vote requests) unless turned off; with ``auto`` it votes only
    in communities whose genesis names this member."""
    if setting is False:
        return "off"
    if setting is True:
        return "serving"
    named_text = "named a witness" if named else "not named a witness of any yet"
    return f"serving (auto: votes where a community names this member; {named_text})"


def run_relay(
    config: Any, *, as_json: bool, passphrase_file: Path | None, no_passphrase: bool
) -> None:
    """Run the server of ``config`` (a :class:`~troc.node.config.ServerConfig`)."""
    import trio

    from troc.cli.runner import ensure_key
    from troc.node.metrics import configure_logging

    configure_logging(config.log_format, config.log_level)
    for name in config.awaiting_hooks():
        logger.warning(
            "%s = %r (%s) is not enforced by this node yet",
            name,
            config.value(name),
            config.source(name),
        )
    key = ensure_key(config.home, passphrase_file, no_passphrase)
    trio.run(functools.partial(_serve, config, config.node_config(), key, as_json=as_json))


async def _serve(config: Any, node_config: Any, key: Any, *, as_json: bool) -> None:
    from troc.cli.runner import serve_node
    from troc.node.metrics import ServedNode, bound_address, open_metrics_listeners, serve_metrics

    address = config.metrics_address
    listeners = await open_metrics_listeners(*address) if address else []

    async def started(node: Any, nursery: Any) -> dict[str, Any]:
        served = ServedNode(node, config.communities)
        witness = config.witness if config.witness is not None else served.is_witness()
        logger.info("witness role: %s", witness_role(config.witness, served.is_witness()))
        if not node.local.communities():
            logger.warning("%s", NO_COMMUNITY_HINT)
        info: dict[str, Any] = {"witness": witness, "metrics": None}
        if listeners:
            nursery.start_soon(served.count_received)
            nursery.start_soon(serve_metrics, listeners, served.snapshot, served.health)
            info["metrics"] = bound_address(listeners)
            logger.info("metrics on http://%s/metrics", info["metrics"])
        return info

    try:
        await serve_node(node_config, key, as_json=as_json, started=started, web=config.web or None)
    finally:
        for listener in listeners:
            await listener.aclose()
