"""Database calls from async code (consumers, ASGI middleware) on a pool of threads.

Channels' `database_sync_to_async` is thread-sensitive: every consumer of a Daphne process
queues its ORM calls on one thread, so one process did ~15 sends/s however many sockets sent
(docs/benchmarks.md, "Send path"). `db_async` runs them on a pool of DATABASE_ASYNC_THREADS
threads instead, sized to the psycopg pool (DATABASE_POOL_MAX_SIZE): a thread never waits for a
connection. Django connections belong to the thread that opened them, so each call starts and
ends with `close_old_connections()` as channels' helper does; with the pool on (CONN_MAX_AGE 0)
that returns the connection to the pool at the end of every call, so no thread sits on one.

A function run here must be complete in itself: one call, one thread, one connection (a
transaction never spans two calls). With 0 threads (SQLite, embedded mode: one writer at a
time anyway) calls go to channels' one thread, as before.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import SyncToAsync
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor | None:
    global _executor
    threads = settings.DATABASE_ASYNC_THREADS
    if threads <= 0:
        return None
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="db")
        return _executor


_calling = threading.local()


class _PooledDatabaseSyncToAsync(SyncToAsync):  # type: ignore[misc]
    def thread_handler(self, loop: Any, *args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        _calling.loop = loop
        try:
            return super().thread_handler(loop, *args, **kwargs)
        finally:
            _calling.loop = None
            close_old_connections()


def caller_loop() -> asyncio.AbstractEventLoop | None:
    """In a `db_async` call: the running event loop that awaits it (the server's); else None.
    Work for that loop (a publish) can be handed to it instead of waited for here."""
    loop: asyncio.AbstractEventLoop | None = getattr(_calling, "loop", None)
    return loop if loop is not None and loop.is_running() else None


def db_async(func: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """`func` as a coroutine function whose calls run on the database threads."""
    executor = _pool()
    if executor is None:
        return database_sync_to_async(func)  # type: ignore[no-any-return]
    return _PooledDatabaseSyncToAsync(func, thread_sensitive=False, executor=executor)  # type: ignore[no-any-return]
