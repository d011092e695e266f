"""Celery tasks: the production way a reply gets generated."""

from __future__ import annotations

from datetime import timedelta

from asgiref.sync import async_to_sync
from celery import shared_task
from django.conf import settings

from chat import services
from llm.streaming import reply_stream


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def generate_reply(message_id: int) -> None:
    """Stream the reply for one assistant message; the service does the work."""
    async_to_sync(reply_stream)(message_id=message_id)


@shared_task(ignore_result=True)
def reap_replies() -> int:
    """Fail replies whose generator died, so none hangs in `streaming` forever."""
    return services.replies_reap(
        stale_after=timedelta(seconds=settings.REAP_STALE_AFTER),
        pending_after=timedelta(seconds=settings.REAP_PENDING_AFTER),
    )
