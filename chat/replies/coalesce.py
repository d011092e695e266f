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
channel layer without waiting for Redis, chat/replies/stream.py), so the window is one timer
handle on the loop, not a task and a lock per flush. At 30 tokens/s a 40 ms window flushes
about once per token: this runs as often as tokens arrive (bench/reply_cost.py).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable

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
        "_size",
        "_started",
        "_timer",
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
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, text: str) -> None:
        if not text:
            return
        self._buffer.append(text)
        self._size += len(text)
        if not self._started or self._size >= self._max_chars:
            self.flush()
        elif self._timer is None:
            loop = self._on_loop()
            self._timer = loop.call_at(self._last_flush + self._window(loop), self._due)

    def _on_loop(self) -> asyncio.AbstractEventLoop:
        """The reply's loop; the first call counts this coalescer among the loop's streams."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            if self._max_interval > self._interval:
                streams = _open.get(self._loop)
                if streams is None:
                    streams = _open[self._loop] = weakref.WeakSet()
                streams.add(self)
        return self._loop

    def _window(self, loop: asyncio.AbstractEventLoop) -> float:
        if self._max_interval <= self._interval:
            return self._interval
        streams = _open.get(loop)
        return flush_window(
            streams=len(streams) if streams is not None else 1,
            interval=self._interval,
            max_interval=self._max_interval,
            rate=self._rate,
        )

    def _due(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
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
