"""Give freed memory back to the operating system after many sockets close.

A closed socket's objects are not freed when it closes: a consumer, its tasks and its scope
hold each other in reference cycles, which only the cyclic garbage collector frees, and its
oldest generation runs rarely (after ~25 % growth of the long-lived objects). Then the freed
memory stays with the allocator: glibc's malloc keeps freed heap pages for reuse.
bench/socket_bench.py measured both (docs/benchmarks.md: a Daphne replica kept ~45 KB of every
closed socket; no object of it was still reachable after a full collection).

`memory_return_soon()` does both once things are quiet, MEMORY_TRIM_AFTER_CLOSE seconds after
the last socket closed (a storm of closes costs one pass, not one each), and at the latest
MEMORY_TRIM_MAX_WAIT seconds after the first close it waits for (sockets that keep closing
every few seconds would otherwise put it off for ever): a full collection, then
`malloc_trim(0)`. Elsewhere than glibc the trim does nothing. Python's own small-object
allocator (pymalloc) returns an arena only once all of it is free, so the image starts Python
with PYTHONMALLOC=malloc (Dockerfile), and then most of it comes back (docs/benchmarks.md: 12 of
~43 KB per socket kept, against 36 of ~40 with pymalloc).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from django.conf import settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

_pending: asyncio.TimerHandle | None = None
_first_close: float = 0.0  # loop time of the first close the pending pass waits for
_trim: Callable[[int], int] | None = None


def _malloc_trim() -> Callable[[int], int] | None:
    global _trim
    if _trim is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _trim = libc.malloc_trim
        except (OSError, AttributeError):  # not glibc
            _trim = lambda pad: 0  # noqa: E731
    return _trim


def memory_return_soon() -> None:
    """From a running event loop: collect and trim once nothing has closed for a while."""
    global _pending, _first_close
    delay = settings.MEMORY_TRIM_AFTER_CLOSE
    if delay <= 0:
        return
    loop = asyncio.get_running_loop()
    now = loop.time()
    if _pending is None:
        _first_close = now
    else:
        _pending.cancel()
    latest = _first_close + max(delay, settings.MEMORY_TRIM_MAX_WAIT)
    _pending = loop.call_at(min(now + delay, latest), memory_return)


def memory_return() -> None:
    """Free the closed sockets' reference cycles now, then hand the free pages back."""
    global _pending
    _pending = None
    # Trimming first would return nothing: until the collection, the memory is still in use.
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class SocketQueue(Generic[T]):
    """An unbounded queue read by one socket's task: what it holds exists only while used.

    Each open socket has two queues that sit empty nearly all the time (Daphne's input queue and
    its channel's in the channel layer). An `asyncio.Queue` is four deques (items, waiting
    getters, waiting putters, and an Event for `join()`), each 760 bytes even when empty:
    ~3 KB per queue (tracemalloc in a replica: docs/benchmarks.md "10,000 sockets"). Here the
    items and the waiting readers are held only while there are some; `put_nowait`, `put`,
    `get`, `get_nowait`, `qsize` and `empty` behave as asyncio.Queue's do without a maxsize.
    """

    __slots__ = ("_items", "_readers")

    def __init__(self) -> None:
        self._items: deque[T] | None = None
        self._readers: list[asyncio.Future[None]] | None = None

    def qsize(self) -> int:
        return len(self._items) if self._items is not None else 0

    def empty(self) -> bool:
        return self._items is None

    def put_nowait(self, item: T) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        self._wake_one()

    async def put(self, item: T) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> T:
        items = self._items
        if items is None:
            raise asyncio.QueueEmpty
        item = items.popleft()
        if not items:
            self._items = None
        return item

    async def get(self) -> T:
        while self._items is None:
            reader = asyncio.get_running_loop().create_future()
            if self._readers is None:
                self._readers = []
            self._readers.append(reader)
            try:
                await reader
            except BaseException:
                if self._readers is not None and reader in self._readers:
                    self._readers.remove(reader)
                    if not self._readers:
                        self._readers = None
                elif self._items is not None:
                    # Woken for an item, then cancelled: the next reader takes it instead.
                    self._wake_one()
                raise
        return self.get_nowait()

    def _wake_one(self) -> None:
        readers = self._readers
        while readers:
            reader = readers.pop(0)
            if not reader.done():
                reader.set_result(None)
                break
        if not readers:
            self._readers = None
