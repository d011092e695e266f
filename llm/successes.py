"""The first-text successes of one event loop's replies, written to the shared cache together.

A reply's first text tells its deployment's breaker and health record that it answered: the
error-rate window counts one more request, the consecutive-failure count is cleared, the
health record's last success is replaced. Said one reply at a time, that was a thread trip and
four Redis round trips (Django's incr is an EXISTS and an INCRBY; a DEL; a SET) for every reply
as it started streaming, the moment 500 streams starting together are slowest
(docs/benchmarks.md, rounds 8b and 9). Here the successes recorded in one turn of the loop,
and those recorded while the previous batch is being written, go to the cache in one trip to
a writer thread and, on Redis, one pipelined round trip: per deployment an INCRBY of the
window's bucket by the count, one DEL of the failure count and one SET of the health record
with the latest figures (MULTI/EXEC, so a bucket is never left without its TTL).

What stays as it was, one at a time (llm/router.py): a half-open breaker's probe, whose success
closes the breaker for every process and releases its probe slot, and every failure. A reply
does not wait for its success to be written before its next chunk, only before its attempt
ends (so the breaker and health have heard it when the reply is over) and before a failure is
recorded on the same loop (a failure counted after the success it followed, as before).

Failing: a cache that cannot be reached is logged and the batch dropped, as one reply's write
was; no reply fails or waits on it beyond the client's timeouts (project/settings.py CACHES).
At shutdown: the batch is handed to the writer on the loop's next turn, which a reply waiting
for its write or a loop being closed by asyncio.run still runs; the writer is one thread per
process whose queue the interpreter drains before it exits; an answer for a loop already
closed is dropped (nobody waits on it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache

from llm import health
from llm.breaker import CircuitBreaker, counter_incr, counter_timeout

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Success:
    """A deployment answered a reply: its first text came `first_token_ms` after the request,
    at `at` (wall clock)."""

    key: str
    first_token_ms: int
    at: float


def successes_write(successes: list[Success]) -> None:
    """Count `successes` in their deployments' breakers and health records, in one round trip
    on Redis. Never raises: bookkeeping that cannot be saved is logged, as router's is."""
    by_key: dict[str, list[Success]] = {}
    for success in successes:
        by_key.setdefault(success.key, []).append(success)
    try:
        backend = caches["default"]
        if isinstance(backend, RedisCache):
            _write_pipelined(backend, by_key)
        else:
            _write_each(by_key)
    except Exception:
        logger.warning("routing state not saved for %s", ", ".join(by_key), exc_info=True)


def _write_pipelined(backend: RedisCache, by_key: dict[str, list[Success]]) -> None:
    # Django's RedisCache keeps plain ints unpickled (so INCRBY works on the counters the
    # breaker's counter_incr starts) and pickles everything else with its serializer.
    client: Any = backend._cache.get_client(None, write=True)  # type: ignore[attr-defined]
    dumps = backend._cache._serializer.dumps  # type: ignore[attr-defined]
    key = backend.make_and_validate_key
    with client.pipeline(transaction=True) as pipe:
        for deployment_key, group in by_key.items():
            breaker = CircuitBreaker(deployment_key)
            bucket, ttl = breaker.window_bucket()
            pipe.set(key(bucket), 0, nx=True, ex=counter_timeout(ttl))
            pipe.incrby(key(bucket), len(group))
            pipe.delete(key(breaker.fails_key))
            name, record = _latest(deployment_key, group)
            pipe.set(key(name), dumps(record), ex=backend.get_backend_timeout(health.RECORD_TTL))
        pipe.execute()


def _write_each(by_key: dict[str, list[Success]]) -> None:
    """The same writes through the cache's own calls (LocMem: one process, no round trips)."""
    for deployment_key, group in by_key.items():
        breaker = CircuitBreaker(deployment_key)
        bucket, ttl = breaker.window_bucket()
        counter_incr(bucket, ttl, by=len(group))
        cache.delete(breaker.fails_key)
        name, record = _latest(deployment_key, group)
        cache.set(name, record, health.RECORD_TTL)


def _latest(deployment_key: str, group: list[Success]) -> tuple[str, dict[str, Any]]:
    last = max(group, key=lambda success: success.at)
    return health.success_record(deployment_key, at=last.at, first_token_ms=last.first_token_ms)


@dataclass
class _Batch:
    loop: asyncio.AbstractEventLoop
    successes: list[Success] = field(default_factory=list)
    # Each caller's own future (one cancelled caller cancels only its own), and the batch's,
    # for a failure waiting on every success before it: all done once written or given up on.
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    written: asyncio.Future[None] | None = None


class SuccessBatches:
    """The successes of one event loop, written one batch at a time by the writer thread.
    Holds its loop only while a batch is under way (it is kept in a dictionary weak on the
    loop: a reference to it from here would keep every loop alive)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # _open, _last and _writing, loop and writer
        self._open: _Batch | None = None  # collecting, not yet taken by the writer
        self._last: asyncio.Future[None] | None = None  # the newest batch's, until done
        self._writing = False  # the writer has been sent for and has not yet found none left

    def record(self, *, key: str, first_token_ms: int) -> asyncio.Future[None]:
        """Count one success; returns a future done once its batch is written (never an
        error). Called on the loop: the write is sent for at the loop's next turn, so every
        success of this turn goes with it."""
        loop = asyncio.get_running_loop()
        success = Success(key, first_token_ms, time.time())
        waiter = loop.create_future()
        with self._lock:
            batch = self._open
            if batch is None:
                batch = self._open = _Batch(loop, written=loop.create_future())
                self._last = batch.written
            batch.successes.append(success)
            batch.waiters.append(waiter)
            send = not self._writing
            self._writing = True
        if send:
            loop.call_soon(self._send)
        return waiter

    async def written(self) -> None:
        """Return once every success recorded so far on this loop is written."""
        last = self._last
        if last is not None and not last.done():
            await asyncio.shield(last)  # shared: a cancelled caller must not cancel it

    def _send(self) -> None:
        try:
            _writer().submit(self._drain)
        except RuntimeError:  # the interpreter is shutting down: write here, on the loop
            self._drain()

    def _drain(self) -> None:
        """On the writer: write batches until none is open (those recorded meanwhile go in
        the next), answering each batch's waiters on their loop."""
        while True:
            with self._lock:
                batch, self._open = self._open, None
                if batch is None:
                    self._writing = False
                    return
            try:
                successes_write(batch.successes)
            finally:
                try:
                    batch.loop.call_soon_threadsafe(self._done, batch)
                except RuntimeError:  # the loop is closed: nobody waits on it any more
                    self._forget(batch)

    def _done(self, batch: _Batch) -> None:
        for future in (*batch.waiters, batch.written):
            if future is not None and not future.done():
                future.set_result(None)
        self._forget(batch)

    def _forget(self, batch: _Batch) -> None:
        with self._lock:
            if self._last is batch.written:
                self._last = None


# One writer thread per process (made in the process, not inherited over a fork: a forked
# child's copy of an executor has no thread and would never run its queue).
_writer_lock = threading.Lock()
_writer_of: tuple[int, ThreadPoolExecutor] | None = None


def _writer() -> ThreadPoolExecutor:
    global _writer_of
    found = _writer_of
    if found is not None and found[0] == os.getpid():
        return found[1]
    with _writer_lock:
        if _writer_of is None or _writer_of[0] != os.getpid():
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-successes")
            _writer_of = (os.getpid(), executor)
        return _writer_of[1]


_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SuccessBatches] = (
    weakref.WeakKeyDictionary()
)


def successes_of(loop: asyncio.AbstractEventLoop) -> SuccessBatches:
    """The running loop's batches (one per loop, gone with it)."""
    batches = _batches.get(loop)
    if batches is None:
        batches = _batches[loop] = SuccessBatches()
    return batches
