"""Celery tasks: the production way a reply gets generated."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

from asgiref.sync import sync_to_async
from celery import shared_task
from django.conf import settings
from django.db import close_old_connections

from chat import services
from llm.streaming import reply_stream

_worker = threading.local()


def _worker_loop() -> asyncio.AbstractEventLoop:
    """One event loop per worker thread, kept across tasks.

    Vendor SDK clients (langchain-openai, langchain-anthropic) and channels-redis pool
    connections per event loop; a fresh loop per task broke every second reply with
    "Event loop is closed" (llm/tests/test_openai_compatible.py pins this).
    """
    loop = getattr(_worker, "loop", None)
    if loop is None or loop.is_closed():
        loop = _worker.loop = asyncio.new_event_loop()
    return loop


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def generate_reply(message_id: int) -> None:
    """Stream the reply for one assistant message; the service does the work."""
    loop = _worker_loop()
    try:
        loop.run_until_complete(reply_stream(message_id=message_id))
    finally:
        # The ORM calls ran in asgiref's shared sync thread: release its connection there.
        loop.run_until_complete(sync_to_async(close_old_connections)())


@shared_task(ignore_result=True)
def reap_replies() -> int:
    """Fail replies whose generator died, so none hangs in `streaming` forever."""
    return services.replies_reap(
        stale_after=timedelta(seconds=settings.REAP_STALE_AFTER),
        pending_after=timedelta(seconds=settings.REAP_PENDING_AFTER),
    )
