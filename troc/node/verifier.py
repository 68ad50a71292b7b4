"""Entries decoded and their signatures checked on every core, ahead of the store.

Theory of operation
-------------------
Checking an entry's Ed25519 signature is most of what ingesting it costs
(bench/ingest.py: ~60 µs of ~140 µs on one core), and the node's thread has
the rest to do (decode, rules, SQLite). :class:`Verifier` moves the checks
off it, so a catch-up uses every core while the store writes.

It hands a batch (a sync frame) over and returns at once (:meth:`Verifier.submit`);
the caller collects the batch later (:meth:`Prepared.result`), in order, as
what :meth:`troc.node.local.LocalNode.ingest_many` takes: an
:class:`~troc.protocol.entry.Entry` for each entry that decodes and whose
signature holds, and the wire bytes themselves for any other. The ledger
decodes those again and rejects them for exactly the reason it would have
given anyway, so the verdicts are those of one-by-one ingest by
construction: nothing here decides, it only saves the ledger work it would
do on the node's thread.

Certificates go the same way (:meth:`Verifier.submit_certificates`, a sync
``certs`` frame): each decoded on the calling thread and, if it is valid
under the community's witness rules but for its signatures (no more than
the witnesses' own certificates hold), every signature of it (its votes,
its time attestations: :meth:`Certificate.signatures`) checked by the
workers; handed back as a :class:`Certificate` only if all of them hold,
else as its bytes. The ledger checks the rest of its validity either way
(:meth:`troc.protocol.ledger.Ledger.ingest_certificate`).

Two ways, both measured (bench/ingest.py, 2 cores): ``processes`` (the
default with 2 cores or more) decodes on the calling thread and has the
signatures checked by child processes (:mod:`troc.node.verify_worker`), one
per core; ``threads`` decodes and checks in worker threads. libsodium drops
the GIL while it checks, but each check is a call of its own: handing the
GIL back and forth with the node's thread cost ~45 µs of CPU per entry, and
the threads reached ~0.45x one core's verify rate where the processes
reached ~0.7x.

One child per core, not one per core but one: the node's thread needs less
than a core (~45 µs an entry to decode and store, against ~60 µs to check
the signature), so with one child for the checks on two cores the checks
were the bottleneck, at most one core's verify rate, while the node's
thread slept a quarter to a third of the wall time waiting for them. With a
child per core the system shares both cores between the three, the checks
taking what the node's thread leaves. Each child is fed without waiting for
its answers (:class:`_Child`), so it never idles between two requests. All
this runs on threads of ours (a child's sender and receiver; a
:class:`concurrent.futures.ThreadPoolExecutor`'s for the checks in
``threads`` mode), not trio's: it goes on while the node's thread is inside
a commit. A child process that fails is replaced by checks in the threads,
for the batches it had not answered and all later ones.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import queue
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import IO, Any, Generic, TypeVar

import msgpack
import trio

from troc.errors import TrocError
from troc.node.verify_worker import check
from troc.protocol.entry import Entry
from troc.protocol.vote import Certificate, WitnessRules, decode_any_certificate

__all__ = ["Prepared", "Verifier", "prepare", "prepare_certificates"]

logger = logging.getLogger(__name__)

#: Below this many entries a batch is prepared on the calling thread: a
#: worker's round trip (~100 µs) costs more than it saves.
MIN_THREADED = 16

_LENGTH = struct.Struct(">I")

#: What a batch prepares to: ``bytes | Entry`` or ``bytes | Certificate``.
_T = TypeVar("_T")


def _decode(wires: Sequence[bytes]) -> list[bytes | Entry]:
    """Each wire decoded, or as itself if it does not decode. Neither its
    signature nor that its signed bytes are canonical is checked here: the
    workers check both (:func:`troc.node.verify_worker.check`), and
    :func:`_keep` hands an entry failing either to the ledger as its bytes.
    The proof of canonical bytes was a third of the decode, on the node's
    thread."""
    out: list[bytes | Entry] = []
    for wire in wires:
        try:
            out.append(Entry.decode(wire, check_signature=False, check_canonical=False))
        except TrocError:
            out.append(wire)
    return out


def _keep(decoded: list[bytes | Entry], verdicts: Sequence[int]) -> list[bytes | Entry]:
    """``decoded`` with each entry whose verdict is 0 back as its wire bytes
    (one verdict per entry, in order)."""
    out: list[bytes | Entry] = []
    k = 0
    for item in decoded:
        if isinstance(item, Entry):
            out.append(item if verdicts[k] else item.wire)
            k += 1
        else:
            out.append(item)
    return out


#: What a verify worker checks (troc.node.verify_worker): ``(key, message,
#: signature)`` in the entry domain, or ``(key, message, signature, domain)``.
_Item = tuple[bytes, ...]


def _triples(decoded: list[bytes | Entry]) -> list[_Item]:
    return [(e.author, e.signed, e.signature) for e in decoded if isinstance(e, Entry)]


def _check_here(items: list[_Item]) -> bytes:
    return bytes(1 if check(item) else 0 for item in items)


def prepare(wires: Sequence[bytes]) -> list[bytes | Entry]:
    """Each wire as a checked :class:`Entry`, or as itself if it does not
    decode or its signature does not hold (the ledger then says why)."""
    decoded = _decode(wires)
    return _keep(decoded, _check_here(_triples(decoded)))


def _decode_certificates(datas: Sequence[bytes], rules: WitnessRules) -> list[bytes | Certificate]:
    """Each certificate decoded (either kind; signatures not checked) if it
    is valid under ``rules`` but for its signatures, else as itself: one
    that does not decode, of another community, with too few votes or an
    outsider's, or with times of other witnesses, is refused by the ledger
    before any signature is checked, so its signatures are not checked
    here either (a peer's frame of 64-vote certificates costs the workers
    no more than the witnesses' own certificates could)."""
    out: list[bytes | Certificate] = []
    for data in datas:
        try:
            cert = decode_any_certificate(data)
        except TrocError:
            out.append(data)
            continue
        out.append(data if cert.problem(rules, check_signatures=False) else cert)
    return out


def _certificate_items(decoded: list[bytes | Certificate]) -> list[_Item]:
    """Every signature of the decoded certificates, in order."""
    return [
        (key, message, signature, domain.value)
        for cert in decoded
        if isinstance(cert, Certificate)
        for domain, key, message, signature in cert.signatures()
    ]


def _keep_certificates(
    datas: Sequence[bytes], decoded: list[bytes | Certificate], verdicts: bytes
) -> list[bytes | Certificate]:
    """``decoded`` with each certificate not all of whose signatures hold
    back as its bytes (``verdicts``: one per item of :func:`_certificate_items`)."""
    out: list[bytes | Certificate] = []
    k = 0
    for data, cert in zip(datas, decoded, strict=True):
        if isinstance(cert, Certificate):
            n = len(cert.votes) + len(cert.times)
            out.append(cert if all(verdicts[k : k + n]) else data)
            k += n
        else:
            out.append(data)
    return out


def prepare_certificates(datas: Sequence[bytes], rules: WitnessRules) -> list[bytes | Certificate]:
    """Each certificate as a :class:`Certificate` every signature of which
    holds, or as its bytes if it does not decode, is not valid under
    ``rules`` (the community's witnesses) but for its signatures, or a
    signature does not hold: the ledger then says why. The ledger checks
    all but the signatures of a :class:`Certificate` again: nothing here
    decides."""
    decoded = _decode_certificates(datas, rules)
    return _keep_certificates(datas, decoded, _check_here(_certificate_items(decoded)))


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _Request:
    __slots__ = ("future", "triples")

    def __init__(self, triples: list[_Item]) -> None:
        self.triples = triples
        self.future: concurrent.futures.Future[bytes] = concurrent.futures.Future()


class _Child:
    """One :mod:`troc.node.verify_worker` process, fed without waiting.

    :meth:`check` queues a request and returns a future at once; a thread
    sends the requests in order, another reads the answers and settles the
    futures in the same order (the worker answers in order). So the worker
    finds the next request in its pipe as soon as it has answered one. When
    each request waited for the answer to the one before, the worker idled
    between the two while this process's thread that had to read the answer
    and write the next request waited for the GIL (up to its 5 ms switch
    interval, the node's thread storing): ~20 % of the worker's time
    (bench/ingest.py). If the worker fails, every request not answered fails
    with OSError, and so does every later one.
    """

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "troc.node.verify_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        # Requests to send; None: close the worker's stdin after the others.
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        # Sent, not answered yet, in order (appended before the write, so the
        # reader always finds the request whose answer it reads).
        self._sent: deque[_Request] = deque()
        self._lock = threading.Lock()
        self._failed: OSError | None = None
        self._threads = [
            threading.Thread(target=self._send, name="troc-verify-send", daemon=True),
            threading.Thread(target=self._receive, name="troc-verify-receive", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def check(self, triples: list[_Item]) -> concurrent.futures.Future[bytes]:
        """The verdicts on ``triples``, one byte each (1: the signature holds), to come."""
        request = _Request(triples)
        self._queue.put(request)
        return request.future

    def _send(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        while (request := self._queue.get()) is not None:
            body = msgpack.packb(request.triples, use_bin_type=True)
            with self._lock:
                failed = self._failed
                if failed is None:
                    self._sent.append(request)
            if failed is not None:
                request.future.set_exception(failed)
                continue
            try:
                stdin.write(_LENGTH.pack(len(body)) + body)
                stdin.flush()
            except (OSError, ValueError) as exc:  # ValueError: the pipe was closed
                self._fail(OSError(f"the verify worker takes no more requests: {exc}"))
        with contextlib.suppress(OSError):
            stdin.close()

    def _receive(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            while True:
                head = stdout.read(_LENGTH.size)
                if not head:
                    with self._lock:
                        if not self._sent:
                            return  # it ended with nothing asked of it: closed
                    raise OSError("the verify worker ended")
                if len(head) != _LENGTH.size:
                    raise OSError("the verify worker ended mid-answer")
                verdicts = _read(stdout, _LENGTH.unpack(head)[0])
                with self._lock:
                    request = self._sent.popleft() if self._sent else None
                if request is None or len(verdicts) != len(request.triples):
                    raise OSError("the verify worker answered for another batch")
                request.future.set_result(verdicts)
        except (OSError, ValueError) as exc:
            self._fail(exc if isinstance(exc, OSError) else OSError(str(exc)))

    def _fail(self, exc: OSError) -> None:
        with self._lock:
            if self._failed is None:
                self._failed = exc
            sent, self._sent = self._sent, deque()
        for request in sent:
            request.future.set_exception(exc)

    def close(self) -> None:
        """Once the requests queued are answered (or failed), end the worker."""
        self._queue.put(None)
        self._threads[0].join(timeout=5)  # all sent (a worker that hangs is killed below)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for thread in self._threads:
            thread.join()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _read(stream: IO[bytes], n: int) -> bytes:
    data = stream.read(n)
    if data is None or len(data) != n:
        raise OSError("the verify worker ended")
    return data


class Verifier:
    """Prepares batches of entries off the calling thread (see the module's docstring).

    One per node: every sync session shares it, so two catch-ups at once do
    not oversubscribe the cores. :meth:`close` ends its threads and child
    processes; a Verifier is usable again after (they start anew on demand).

    Args:
        workers: cores to use (default: the cores this process may use).
        min_threaded: smaller batches are prepared on the calling thread.
        mode: ``"processes"`` or ``"threads"`` (default: processes when
            there are 2 cores or more).
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        min_threaded: int = MIN_THREADED,
        mode: str | None = None,
    ) -> None:
        self.workers = workers or _cores()
        self.min_threaded = min_threaded
        self.mode = mode or ("processes" if self.workers > 1 else "threads")
        if self.mode not in ("processes", "threads"):
            raise ValueError(f"unknown mode {self.mode!r}")
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._children: list[_Child] = []  # started on demand
        self._broken = False  # a child failed: check in the threads from now on

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        # Locked: the children's receiver threads ask too, when one fails.
        with self._pool_lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self.workers, thread_name_prefix="troc-verify"
                )
            return self._pool

    def submit(self, wires: Sequence[bytes]) -> Prepared[bytes | Entry]:
        """Start preparing ``wires``; collect the result with
        :meth:`Prepared.result`. Never blocks (in ``processes`` mode it
        decodes ``wires`` first, on the calling thread: ~9 µs an entry)."""
        n = len(wires)
        if n < self.min_threaded or self.workers == 1:
            return Prepared(lambda: prepare(wires))
        if self.mode == "processes" and not self._broken:
            decoded = _decode(wires)
            return self._checked(_triples(decoded), lambda verdicts: _keep(decoded, verdicts))
        pool = self._executor()
        step = -(-n // self.workers)
        parts = [pool.submit(prepare, wires[i : i + step]) for i in range(0, n, step)]
        return Prepared(lambda: [item for f in parts for item in f.result()], parts)

    def submit_certificates(
        self, datas: Sequence[bytes], rules: WitnessRules
    ) -> Prepared[bytes | Certificate]:
        """Start preparing certificates (:func:`prepare_certificates`): each
        is decoded on the calling thread and its signatures (q votes, and
        times) checked in the workers, as entries' are. Never blocks."""
        decoded = _decode_certificates(datas, rules)
        items = _certificate_items(decoded)
        if len(items) < self.min_threaded or self.workers == 1:
            return Prepared(lambda: _keep_certificates(datas, decoded, _check_here(items)))
        return self._checked(items, lambda verdicts: _keep_certificates(datas, decoded, verdicts))

    def _checked(self, items: list[_Item], finish: Callable[[bytes], list[_T]]) -> Prepared[_T]:
        """``finish`` of the verdicts on ``items``, checked in the child
        processes (``processes`` mode, none failed) or the threads, shared
        out evenly."""
        processes = self.mode == "processes" and not self._broken
        # (max 1: a batch where nothing decodes has nothing to check.)
        step = max(1, -(-len(items) // self.workers))
        parts = [items[i : i + step] for i in range(0, len(items), step)]
        if processes:
            futures = [self._check(k, part) for k, part in enumerate(parts)]
        else:
            pool = self._executor()
            futures = [pool.submit(_check_here, part) for part in parts]
        return Prepared(lambda: finish(b"".join(f.result() for f in futures)), futures)

    def _check(self, k: int, triples: list[_Item]) -> concurrent.futures.Future[bytes]:
        """The verdicts on ``triples``, to come from child ``k`` (started if
        need be), or from the threads if a child failed."""
        if not self._broken:
            try:
                while len(self._children) <= k:
                    self._children.append(_Child())
                answer = self._children[k].check(triples)
            except OSError as exc:
                self._give_up(exc)
            else:
                out: concurrent.futures.Future[bytes] = concurrent.futures.Future()
                answer.add_done_callback(lambda f: self._settle(f, out, triples))
                return out
        return self._executor().submit(_check_here, triples)

    def _settle(
        self,
        answer: concurrent.futures.Future[bytes],
        out: concurrent.futures.Future[bytes],
        triples: list[_Item],
    ) -> None:
        """``out`` gets a child's ``answer``, or, if the child failed, the
        threads' verdicts on ``triples``."""
        exc = answer.exception()
        if exc is None:
            out.set_result(answer.result())
            return
        self._give_up(exc)
        try:
            checked = self._executor().submit(_check_here, triples)
        except RuntimeError as closed:  # close() came first: no thread checks any more
            out.set_exception(closed)
            return
        checked.add_done_callback(lambda f: _copy(f, out))

    def _give_up(self, exc: BaseException) -> None:
        if not self._broken:
            logger.warning("signature checks leave their worker processes: %s", exc)
        self._broken = True

    def worker_pids(self) -> list[int]:
        """The process ids of the child processes running now (for measures)."""
        return [child.proc.pid for child in self._children]

    async def prepare(self, wires: Sequence[bytes]) -> list[bytes | Entry]:
        """:func:`prepare` over ``wires``, off this thread; in the order of ``wires``."""
        return await self.submit(wires).result()

    def close(self) -> None:
        """End the child processes, once they have answered what was handed
        to them, and the threads, once they have finished the checks they
        began (a batch left to the others is cancelled). Idempotent."""
        children, self._children = self._children, []
        for child in children:
            child.close()
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


class Prepared(Generic[_T]):
    """A batch being prepared by a :class:`Verifier`: entries (``bytes |
    Entry``) or certificates (``bytes | Certificate``)."""

    def __init__(
        self,
        finish: Callable[[], list[_T]],
        futures: Sequence[concurrent.futures.Future[Any]] = (),
    ) -> None:
        self._finish = finish
        self._futures = futures
        self._done: list[_T] | None = None

    def done(self) -> bool:
        """True if :meth:`result` would not wait."""
        return self._done is not None or all(f.done() for f in self._futures)

    async def result(self) -> list[_T]:
        """The prepared items, in order; waits (without a thread) for the rest."""
        if self._done is None:
            for future in self._futures:
                if not future.done():
                    await _wait(future)
            self._done = self._finish()
        return self._done


def _copy(source: concurrent.futures.Future[bytes], to: concurrent.futures.Future[bytes]) -> None:
    """``source``'s outcome, done, onto ``to`` (cancelled too: close() cancels
    the checks the threads have not begun)."""
    if source.cancelled():
        to.cancel()
        return
    exc = source.exception()
    if exc is None:
        to.set_result(source.result())
    else:
        to.set_exception(exc)


async def _wait(future: concurrent.futures.Future[Any]) -> None:
    """Wait in trio for a future of another thread to be done."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    def wake(_: object) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(done.set)

    future.add_done_callback(wake)
    await done.wait()
