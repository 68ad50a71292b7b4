"""A byzantine witness for bench/chaos.py: speaks /troc/witness/1, honestly never.

    python bench/chaos_witness.py --seed HEX --listen /ip4/IP/tcp/PORT --peer ADDR ... --rng N

It runs a libp2p host with the witness member's key (so its peer id is the
one members derive from the community's genesis, docs/witness.md §5) and
answers each vote request with one of, chosen by a seeded random draw:

* ``equivocate``: votes for whatever it is asked, keeping no vote log, so
  for a forked log it signs both entries at one seq;
* ``lie``: a ``conflict`` answer whose vote is its own signature for a
  made-up entry id at the asked position (a "proof" that the author forked,
  which the author never did);
* ``silent``: reads the request and never answers (the asker times out);
* ``garbage``: a frame of random bytes, or bytes that are no frame at all.

It keeps dialing ``--peer`` addresses (every few seconds) so that members
that restarted know where it is. It prints one JSON info line when ready
and, on SIGTERM/SIGINT, nothing more: its counts are in its stderr log,
one JSON line every 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from troc.crypto.sign import SigningKey
from troc.errors import TrocError
from troc.net.p2p import (
    DialError,
    FrameError,
    FrameReader,
    encode_frame,
    open_host,
    write_frame,
)
from troc.protocol.entry import Entry, EntryId, Ref
from troc.protocol.witness import (
    MESSAGE_LIMITS,
    PROTOCOL_ID,
    Conflicting,
    Vote,
    Voted,
    decode_request,
    encode_answer,
)

BEHAVIOURS = ("equivocate", "lie", "silent", "garbage")
#: How long a silent answer keeps the stream open (the asker gives up after 10 s).
SILENCE = 15.0
REDIAL_EVERY = 3.0


class Byzantine:
    def __init__(self, key: SigningKey, rng: random.Random) -> None:
        self.key, self.rng = key, rng
        self.counts: Counter[str] = Counter()

    async def handle(self, stream: Any, peer: str) -> None:
        reader = FrameReader(stream, max_size=MESSAGE_LIMITS.max_size, frame_timeout=60)
        while True:
            try:
                data = await reader.read_frame()
            except FrameError:
                return
            request = decode_request(data)
            entry = Entry.decode(request.entry)
            assert entry.community is not None
            how = self.rng.choice(BEHAVIOURS)
            self.counts[how] += 1
            if how == "equivocate":
                vote = Vote.sign(self.key, entry.community, entry.ref)
                await write_frame(stream, encode_answer(Voted(vote)))
            elif how == "lie":
                made_up = Ref(entry.author, entry.seq, EntryId(os.urandom(32)))
                vote = Vote.sign(self.key, entry.community, made_up)
                await write_frame(stream, encode_answer(Conflicting(vote, request.entry)))
            elif how == "silent":
                await trio.sleep(SILENCE)
                return
            else:
                junk = os.urandom(self.rng.randrange(1, 300))
                await stream.write(encode_frame(junk) if self.rng.random() < 0.5 else junk)
                return


async def main(args: argparse.Namespace) -> None:
    key = SigningKey(bytes.fromhex(args.seed))
    byz = Byzantine(key, random.Random(args.rng))
    async with open_host(key_seed=key.seed, listen=[args.listen], gossip=None) as host:

        async def serve(stream: Any, peer: str) -> None:
            try:
                await byz.handle(stream, peer)
            except (TrocError, FrameError) as exc:  # the peer hung up, or sent garbage
                byz.counts[f"error {type(exc).__name__}"] += 1

        host.set_stream_handler(PROTOCOL_ID, serve)
        print(json.dumps({"peer_id": host.peer_id, "addrs": host.listen_addrs()}), flush=True)
        async with trio.open_nursery() as nursery:

            async def keep_dialing(addr: str) -> None:
                while True:
                    if addr.rsplit("/", 1)[-1] not in host.connected_peers():
                        try:
                            await host.connect(addr, redial=True)
                        except DialError:
                            byz.counts["dial failed"] += 1
                    await trio.sleep(REDIAL_EVERY)

            for addr in args.peer:
                nursery.start_soon(keep_dialing, addr)
            while True:
                await trio.sleep(10)
                print(json.dumps(dict(byz.counts), sort_keys=True), file=sys.stderr, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", required=True, help="the witness key's seed, hex")
    parser.add_argument("--listen", required=True)
    parser.add_argument("--peer", action="append", default=[], help="a node's full multiaddr")
    parser.add_argument("--rng", type=int, default=0, help="seed of the behaviour draws")
    try:
        trio.run(main, parser.parse_args())
    except KeyboardInterrupt:
        pass
