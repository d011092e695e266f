"""Where tokens are gathered into deltas: the channel layer is the expensive hop, so never one
message per token (docs/benchmarks.md). The first piece goes at once (time to first token),
then pieces wait up to STREAM_FLUSH_INTERVAL or STREAM_FLUSH_MAX_CHARS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class DeltaCoalescer:
    """Buffers text; flushes the first piece at once, then at most every `interval` seconds
    or whenever `max_chars` are waiting."""

    def __init__(
        self, flush: Callable[[str], Awaitable[None]], *, interval: float, max_chars: int
    ) -> None:
        self._flush = flush
        self._interval = interval
        self._max_chars = max_chars
        self._buffer: list[str] = []
        self._size = 0
        self._flushed_once = False
        self._last_flush = 0.0
        self._timer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def add(self, text: str) -> None:
        if not text:
            return
        self._buffer.append(text)
        self._size += len(text)
        if not self._flushed_once or self._size >= self._max_chars:
            await self.flush()
        elif self._timer is None:
            delay = max(0.0, self._interval - (time.monotonic() - self._last_flush))
            self._timer = asyncio.create_task(self._flush_later(delay))

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._timer = None
        await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            if not self._buffer:
                return
            text = "".join(self._buffer)
            self._buffer.clear()
            self._size = 0
            self._flushed_once = True
            self._last_flush = time.monotonic()
            await self._flush(text)

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.flush()
