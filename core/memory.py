"""Give freed memory back to the operating system after many sockets close.

A Daphne process that held thousands of sockets keeps most of their memory after they close:
glibc's malloc keeps freed heap pages for reuse (bench/socket_bench.py measured it, even for a
bare ASGI app). `memory_return_soon()` asks glibc to trim its heaps (`malloc_trim(0)`) once
things are quiet: MEMORY_TRIM_AFTER_CLOSE seconds after the last socket closed (a storm of
closes costs one trim, not one each). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

from django.conf import settings

logger = logging.getLogger(__name__)

_pending: asyncio.TimerHandle | None = None
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
    """From a running event loop: trim the heap once nothing has closed for a while."""
    global _pending
    delay = settings.MEMORY_TRIM_AFTER_CLOSE
    if delay <= 0:
        return
    if _pending is not None:
        _pending.cancel()
    _pending = asyncio.get_running_loop().call_later(delay, memory_return)


def memory_return() -> None:
    global _pending
    _pending = None
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
