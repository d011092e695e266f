"""Where tokens are gathered into deltas: the channel layer is the expensive hop, so never one
message per token (docs/benchmarks.md). The first piece goes at once (time to first token),
then pieces wait up to the flush window or STREAM_FLUSH_MAX_CHARS.

The window is STREAM_FLUSH_INTERVAL while a process streams few replies, and widens with the
number of replies coalescing on its event loop so that the loop publishes at most about
STREAM_FLUSH_RATE deltas a second, up to STREAM_FLUSH_MAX_INTERVAL. Every delta costs about the
same all the way to the socket (the worker's publish, Redis, Daphne's consumer and frame, the
client), whatever text it carries: under load fewer, longer deltas is what keeps the machine
ahead of the tokens; a widened window adds at most its extra width to a token's latency.

Synchronous on purpose: a flush only hands the text on (the reply's publish enqueues it on the
channel layer without waiting for Redis, chat/replies/stream.py), so a window is an entry in its
loop's flush schedule, not a task and a lock per flush. At 30 tokens/s a 40 ms window flushes
about once per token: this runs as often as tokens arrive (bench/reply_cost.py).

The windows of all the coalescers on a loop share one timer (`FlushSchedule`): a loop timer per
window was a TimerHandle made, pushed on the loop's heap (compared in Python there), and often
cancelled, thousands of times a second in a worker streaming hundreds of replies (~6 % of its
CPU, py-spy). The schedule's own heap compares plain tuples, and one firing flushes every window
that ends within FLUSH_SLACK of it: a window may end that much early, never late.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import weakref
from collections.abc import Callable

logger = logging.getLogger(__name__)

# A firing of a loop's flush schedule also flushes the windows that end this soon after it:
# hundreds of windows ending within a few milliseconds take one timer, not one each.
FLUSH_SLACK = 0.002

# The coalescers with a reply in progress, per event loop: how many streams share its publishes.
# Weak, so a coalescer dropped without close() (a cancelled task) stops counting.
_open: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.WeakSet[DeltaCoalescer]] = (
    weakref.WeakKeyDictionary()
)


def flush_window(*, streams: int, interval: float, max_interval: float, rate: float) -> float:
    """The flush window for one of `streams` coalescers on a loop: `interval`, or wider so that
    together they flush at most `rate` times a second, but never wider than `max_interval`."""
    if rate <= 0:
        return interval
    return max(interval, min(max_interval, streams / rate))


class FlushSchedule:
    """When the coalescers of one event loop end their windows: one loop timer, for the
    earliest (module docstring). An entry is (due, ticket, coalescer); a coalescer that flushed
    before its window ended holds another ticket by then, and its stale entry is skipped."""

    __slots__ = ("__weakref__", "_due", "_heap", "_loop", "_tickets", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, DeltaCoalescer]] = []
        self._tickets = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self._due = math.inf  # when the timer fires

    def add(self, due: float, coalescer: DeltaCoalescer) -> int:
        """Flush `coalescer` at `due` (loop time), unless it has another ticket by then."""
        ticket = next(self._tickets)
        heapq.heappush(self._heap, (due, ticket, coalescer))
        if due < self._due:
            if self._timer is not None:
                self._timer.cancel()
            self._due = due
            self._timer = self._loop.call_at(due, self._fire)
        return ticket

    def _fire(self) -> None:
        self._timer, self._due = None, math.inf
        heap = self._heap
        until = self._loop.time() + FLUSH_SLACK
        while heap and heap[0][0] <= until:
            _, ticket, coalescer = heapq.heappop(heap)
            try:
                coalescer._due(ticket)
            except Exception:  # one reply's publish failing stops no other reply's windows
                logger.exception("a delta flush failed")
        if heap:
            self._due = heap[0][0]
            self._timer = self._loop.call_at(self._due, self._fire)


_schedules: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FlushSchedule] = (
    weakref.WeakKeyDictionary()
)


def _schedule_of(loop: asyncio.AbstractEventLoop) -> FlushSchedule:
    schedule = _schedules.get(loop)
    if schedule is None:
        schedule = _schedules[loop] = FlushSchedule(loop)
    return schedule


class DeltaCoalescer:
    """Buffers text; flushes the first piece at once, then at most once per window (module
    docstring) or whenever `max_chars` are waiting. Call it from the event loop that runs the
    reply, and close it when the reply ends."""

    __slots__ = (
        "__weakref__",
        "_buffer",
        "_flush",
        "_interval",
        "_last_flush",
        "_loop",
        "_max_chars",
        "_max_interval",
        "_rate",
        "_schedule",
        "_size",
        "_started",
        "_streams",
        "_ticket",
    )

    def __init__(
        self,
        flush: Callable[[str], None],
        *,
        interval: float,
        max_chars: int,
        max_interval: float | None = None,
        rate: float = 0.0,
    ) -> None:
        self._flush = flush
        self._interval = interval
        self._max_interval = interval if max_interval is None else max(interval, max_interval)
        self._rate = rate
        self._max_chars = max_chars
        self._buffer: list[str] = []
        self._size = 0
        self._started = False  # the first piece went
        self._last_flush = 0.0
        self._ticket = 0  # its entry in the loop's flush schedule; 0: none
        self._loop: asyncio.AbstractEventLoop | None = None
        self._schedule: FlushSchedule | None = None
        # The loop's open coalescers when the window widens with them (held here: one lookup
        # per window, not a weak dictionary's per flush).
        self._streams: weakref.WeakSet[DeltaCoalescer] | None = None

    def add(self, text: str) -> None:
        if not text:
            return
        self._buffer.append(text)
        self._size += len(text)
        if not self._started or self._size >= self._max_chars:
            self.flush()
        elif not self._ticket:
            schedule = self._schedule
            if schedule is None:  # the first window of the reply: its loop, once
                self._on_loop()
                schedule = self._schedule
                assert schedule is not None  # set with the loop
            self._ticket = schedule.add(self._last_flush + self._window(), self)

    def _on_loop(self) -> asyncio.AbstractEventLoop:
        """The reply's loop; the first call counts this coalescer among the loop's streams."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._schedule = _schedule_of(self._loop)
            if self._max_interval > self._interval:
                streams = _open.get(self._loop)
                if streams is None:
                    streams = _open[self._loop] = weakref.WeakSet()
                streams.add(self)
                self._streams = streams
        return self._loop

    def _window(self) -> float:
        streams = self._streams
        if streams is None:
            return self._interval
        return flush_window(
            streams=len(streams),
            interval=self._interval,
            max_interval=self._max_interval,
            rate=self._rate,
        )

    def _due(self, ticket: int) -> None:
        """Its window ended (the schedule's call); a stale ticket: it flushed since."""
        if ticket == self._ticket:
            self.flush()

    def flush(self) -> None:
        self._ticket = 0  # an entry still in the schedule is stale now
        if not self._buffer:
            return
        text = self._buffer[0] if len(self._buffer) == 1 else "".join(self._buffer)
        self._buffer.clear()
        self._size = 0
        self._started = True
        self._last_flush = self._on_loop().time()
        self._flush(text)

    def close(self) -> None:
        """Hand on what is waiting; nothing is flushed later, and the loop stops counting it."""
        self.flush()
        if self._loop is not None and (streams := _open.get(self._loop)) is not None:
            streams.discard(self)
