"""Celery tasks: the production way a reply gets generated, and the reaper's schedule.

Their names are fixed ("llm.tasks.generate_reply", "llm.tasks.reap_replies"), not taken from
this module's path: messages already queued in the broker, and the beat schedule
(project/settings.py), name them so, and must keep finding them across releases (README).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from functools import partial
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from celery import shared_task, signals
from django.conf import settings
from django.db import close_old_connections

from chat.replies.reaper import replies_reap
from chat.replies.stream import reply_stream
from core import hops
from llm.failover import FirstRound, first_round_expect
from llm.router import route_plan


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


async def generate_on_database_lane(
    message_id: int, first_round: Future[FirstRound | None] | None = None
) -> None:
    """Generate one reply with its database work on a lane (a Celery worker's generation
    loop, or a server generating an API reply itself: chat/replies/dispatch.py).
    `first_round`: its provider call's first route plan and gate, being made elsewhere."""
    hops.current.set(message_id)
    hops.hop("w.loop")
    if first_round is not None:
        first_round_expect(first_round)
    async with on_database_lane():
        await reply_stream(message_id=message_id)


# The route of a reply being dispatched travels in its task's headers (ROUTE_HEADER: its model
# alias and the organisation's allow-list, as saved on the reply), so that the worker plans and
# gates its provider call (cache round trips: the catalogue's version, the breaker, the limits)
# on the task's own thread while the generation loop claims the reply and reads its prompt,
# rather than after them, when the reply cache is off. A worker of an older release ignores
# the header; a message of an older release has none, and its reply plans after the claim as
# before.
ROUTE_HEADER = "parley_route"
_route_dispatched: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "route_dispatched", default=None
)


@contextmanager
def route_carried(routing: Mapping[str, Any]) -> Iterator[None]:
    """Reply tasks published inside carry `routing`'s alias and allow-list (the reply's
    Message.routing) in their headers."""
    route = {"alias": str(routing.get("alias") or ""), "allowed": routing.get("allowed") or []}
    token = _route_dispatched.set(json.dumps(route) if route["alias"] else None)
    try:
        yield
    finally:
        _route_dispatched.reset(token)


def _route_into_headers(
    sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any
) -> None:
    route = _route_dispatched.get()
    if route is not None and headers is not None and sender == "llm.tasks.generate_reply":
        headers[ROUTE_HEADER] = route


signals.before_task_publish.connect(_route_into_headers, weak=False)


def _route_received(request: Any) -> tuple[str, list[str]] | None:
    """The alias and allow-list a task's headers carry, if they do (and make sense)."""
    value = getattr(request, ROUTE_HEADER, None)
    if value is None and isinstance(getattr(request, "headers", None), dict):
        value = request.headers.get(ROUTE_HEADER)
    try:
        route = json.loads(value) if isinstance(value, str) else {}
        alias, allowed = str(route["alias"]), [str(a) for a in route["allowed"]]
    except (ValueError, TypeError, KeyError):
        return None
    return (alias, allowed) if alias else None


def _first_round_made(alias: str, allowed: list[str]) -> FirstRound | None:
    """The reply's first route plan and gate, made on this (the task's) thread. Made for no
    particular prompt size: stream_with_failover takes it unless a tokens-per-minute limit
    makes the size matter (then it plans afresh, and this one's permit is given back)."""
    try:
        return FirstRound.made(partial(route_plan, allowed=allowed), alias, prompt_tokens=None)
    finally:
        close_old_connections()  # the catalogue may have read the database on this thread


@shared_task(
    name="llm.tasks.generate_reply", acks_late=True, reject_on_worker_lost=True, ignore_result=True
)
def generate_reply(message_id: int) -> None:
    """Stream the reply for one assistant message; the service does the work."""
    hops.hop("w.task", message_id)
    # Not while the reply cache is on: its lookup comes first, and the gate of a reply it
    # answers would have counted against the deployment's limits for nothing (as
    # chat/replies/early.py decides).
    route = None if settings.CACHE_ENABLED else _route_received(generate_reply.request)
    coming: Future[FirstRound | None] | None = Future() if route is not None else None
    running = asyncio.run_coroutine_threadsafe(
        generate_on_database_lane(message_id, coming), _generation_loop()
    )
    first: FirstRound | None = None
    if route is not None and coming is not None:
        try:
            first = _first_round_made(*route)
        finally:
            coming.set_result(first)
    try:
        running.result()
    finally:
        if first is not None:
            first.release()  # a reply that never got as far as its call gives the probe back


@shared_task(name="llm.tasks.reap_replies", ignore_result=True)
def reap_replies() -> int:
    """Fail replies whose generator died, so none hangs in `streaming` forever."""
    return replies_reap(
        stale_after=timedelta(seconds=settings.REAP_STALE_AFTER),
        pending_after=timedelta(seconds=settings.REAP_PENDING_AFTER),
    )
