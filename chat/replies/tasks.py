"""Celery tasks: the production way a reply gets generated, and the reaper's schedule.

Their names are fixed ("llm.tasks.generate_reply", "llm.tasks.reap_replies"), not taken from
this module's path: messages already queued in the broker, and the beat schedule
(project/settings.py), name them so, and must keep finding them across releases (README).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from celery import shared_task
from django.conf import settings
from django.db import close_old_connections

from chat.replies.reaper import replies_reap
from chat.replies.stream import reply_stream
from core import hops


def _closed_broker_channel_raises_a_connection_error() -> None:
    """Keep a worker alive through a Redis broker outage (Celery 5.7.0, kombu 5.7.0).

    On a lost broker connection Celery 5.7.0's consumer collects the connection (which drops
    the transport's client) and then closes it again; closing the old channel restores its
    unacked messages (our running, acks_late generations), and acking a task that finishes
    later goes through the same channel. Both then build a Redis client from a transport whose
    client is None and raise AttributeError, which nothing treats as a connection error: the
    worker died ("Unrecoverable error") with every reply it was streaming
    (tests/integration/test_faults.py::test_redis_outage_mid_stream_recovers_without_restarts).
    A closed channel now raises the connection error kombu's callers expect: they log it and go
    on, the consumer reconnects, and the replies finish (a lost ack only means a redelivery
    after the visibility timeout, which reply_start turns into a no-op).
    """
    from kombu.transport import redis as kombu_redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    original = kombu_redis.Channel._connparams
    if getattr(original, "parley_closed_check", False):
        return

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection of this channel was closed")
        return original(self, asynchronous=asynchronous)

    _connparams.parley_closed_check = True  # type: ignore[attr-defined]
    kombu_redis.Channel._connparams = _connparams  # type: ignore[method-assign]


_closed_broker_channel_raises_a_connection_error()


_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0
_loop_lock = threading.Lock()


def _generation_loop() -> asyncio.AbstractEventLoop:
    """The worker process's one event loop for generations, running in its own thread.

    Every generation of the process runs on it; a Celery thread (threads pool) or process
    (prefork) only waits for its reply's result. One loop per worker thread, as before, put 64
    event loops in 64 threads that each woke for every token: they fought over the GIL and at
    100 streams tokens reached sockets seconds late (docs/benchmarks.md). Kept for the life of
    the process: vendor SDK clients (langchain-openai, langchain-anthropic) and channels-redis
    pool connections per loop, and a fresh loop per task broke every second reply with "Event
    loop is closed" (llm/tests/test_openai_compatible.py pins this). Created on first use in
    each process, so a prefork child makes its own after the fork.
    """
    global _loop, _loop_pid
    with _loop_lock:
        if _loop is None or _loop.is_closed() or _loop_pid != os.getpid():
            _loop, _loop_pid = asyncio.new_event_loop(), os.getpid()
            threading.Thread(target=_loop.run_forever, name="generation-loop", daemon=True).start()
        return _loop


_lanes: list[ThreadPoolExecutor] = []
_lanes_given = 0


def _database_lane() -> ThreadPoolExecutor:
    """The thread a new generation does its database work on (round robin over the lanes).

    A generation's ORM calls are thread-sensitive (sync_to_async's default), and without a
    context asgiref runs them all on ONE thread per process: with 64 streams in a worker every
    checkpoint, heartbeat and finish queued behind the others, heartbeats went seconds stale and
    the reaper failed live replies as `interrupted` (tests/integration/test_faults.py, 500
    replies). Generations now share GENERATION_DB_THREADS lanes: that many database
    connections per process at most, each used by one call at a time.
    """
    global _lanes_given
    with _loop_lock:
        if len(_lanes) < max(1, settings.GENERATION_DB_THREADS):
            _lanes.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-lane"))
        lane = _lanes[_lanes_given % len(_lanes)]
        _lanes_given += 1
    return lane


@asynccontextmanager
async def on_database_lane() -> AsyncIterator[None]:
    """Inside, the task's thread-sensitive calls (its database work) run on a lane."""
    async with ThreadSensitiveContext(executor=_database_lane()):
        try:
            yield
        finally:
            # Release the lane's connection (Django's request-end cleanup, for a task).
            await sync_to_async(close_old_connections)()


async def generate_on_database_lane(message_id: int) -> None:
    """Generate one reply with its database work on a lane (a Celery worker's generation
    loop, or a server generating an API reply itself: chat/replies/dispatch.py)."""
    hops.current.set(message_id)
    hops.hop("w.loop")
    async with on_database_lane():
        await reply_stream(message_id=message_id)


@shared_task(
    name="llm.tasks.generate_reply", acks_late=True, reject_on_worker_lost=True, ignore_result=True
)
def generate_reply(message_id: int) -> None:
    """Stream the reply for one assistant message; the service does the work."""
    hops.hop("w.task", message_id)
    asyncio.run_coroutine_threadsafe(
        generate_on_database_lane(message_id), _generation_loop()
    ).result()


@shared_task(name="llm.tasks.reap_replies", ignore_result=True)
def reap_replies() -> int:
    """Fail replies whose generator died, so none hangs in `streaming` forever."""
    return replies_reap(
        stale_after=timedelta(seconds=settings.REAP_STALE_AFTER),
        pending_after=timedelta(seconds=settings.REAP_PENDING_AFTER),
    )
