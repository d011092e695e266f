"""Where tokens are gathered into deltas: the channel layer is the expensive hop, so never one
message per token (docs/benchmarks.md). The first piece goes at once (time to first token),
then pieces wait up to STREAM_FLUSH_INTERVAL or STREAM_FLUSH_MAX_CHARS.

Synchronous on purpose: a flush only hands the text on (the reply's publish enqueues it on the
channel layer without waiting for Redis, chat/replies/stream.py), so the window is one timer
handle on the loop, not a task and a lock per flush. At 30 tokens/s a 40 ms window flushes
about once per token: this runs as often as tokens arrive (bench/reply_cost.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class DeltaCoalescer:
    """Buffers text; flushes the first piece at once, then at most every `interval` seconds
    or whenever `max_chars` are waiting. Call it from the event loop that runs the reply."""

    __slots__ = (
        "_buffer",
        "_flush",
        "_interval",
        "_last_flush",
        "_loop",
        "_max_chars",
        "_size",
        "_started",
        "_timer",
    )

    def __init__(self, flush: Callable[[str], None], *, interval: float, max_chars: int) -> None:
        self._flush = flush
        self._interval = interval
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
            loop = self._loop or asyncio.get_running_loop()
            self._loop = loop
            self._timer = loop.call_at(self._last_flush + self._interval, self._due)

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
        self._loop = self._loop or asyncio.get_running_loop()
        self._last_flush = self._loop.time()
        self._flush(text)

    def close(self) -> None:
        """Hand on what is waiting; nothing is flushed later."""
        self.flush()
