"""One libp2p peer for the namespace relay test, run as a child process.

Usage (reports are JSON lines on stdout)::

    relay_peer.py relay  --listen MA [--listen MA ...]
        -> {"peer_id": ..., "addrs": [...]}, then serves until killed
    relay_peer.py member --listen MA --relay RELAY_ADDR
        -> {"peer_id": ..., "circuit_addrs": [...]} once reserved, then echoes until killed
    relay_peer.py dial   --listen MA --target CIRCUIT_ADDR --direct TARGET_DIRECT_ADDR
        -> {"direct": "<why the direct dial failed>" | "connected", "echoed": n}, then exits

Every wait is bounded; the test stops each process by its PID.
"""

from __future__ import annotations

import argparse
import json
import socket

import multiaddr
import trio

from troc.net.p2p import open_host, read_frame, write_frame
from troc.net.relay import RelayLimits, open_relay_client, open_relay_server

ECHO = "/troc/test-echo/1.0.0"
STEP = 20.0  # bound on each step


def report(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def echo(stream, peer: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(100):
        try:
            data = await read_frame(stream, 1 << 20, frame_timeout=STEP)
        except Exception:
            return
        await write_frame(stream, data)


def direct_attempt(addr: str) -> str:
    """Try a plain TCP connect to ``addr``: the member namespaces must not route to each other."""
    ma = multiaddr.Multiaddr(addr)
    ip, port = ma.value_for_protocol("ip4"), int(ma.value_for_protocol("tcp"))
    try:
        with socket.create_connection((ip, port), timeout=3):
            return "connected"
    except OSError as exc:
        return exc.strerror or type(exc).__name__


async def main(args: argparse.Namespace) -> None:
    async with open_host(listen=args.listen, gossip=None) as host:
        if args.role == "relay":
            limits = RelayLimits(max_reservations_per_ip=4)
            async with open_relay_server(host, limits):
                report(peer_id=host.peer_id, addrs=host.listen_addrs())
                await trio.sleep_forever()
        elif args.role == "member":
            host.set_stream_handler(ECHO, echo)
            async with open_relay_client(host, [args.relay]) as client:
                with trio.fail_after(STEP):
                    await client.wait_reserved()
                report(peer_id=host.peer_id, circuit_addrs=client.circuit_addrs())
                await trio.sleep_forever()
        else:
            direct = direct_attempt(args.direct)
            with trio.fail_after(STEP):
                peer = await host.connect(args.target)
                stream = await host.open_stream(peer, ECHO)
                payload = bytes(range(256)) * 256  # 64 KiB
                await write_frame(stream, payload)
                assert await read_frame(stream, 1 << 20) == payload
                await stream.close()
            report(direct=direct, echoed=len(payload), peer_id=peer)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["relay", "member", "dial"])
    parser.add_argument("--listen", action="append", required=True)
    parser.add_argument("--relay")
    parser.add_argument("--target")
    parser.add_argument("--direct")
    return parser.parse_args(argv)


if __name__ == "__main__":
    trio.run(main, parse())
