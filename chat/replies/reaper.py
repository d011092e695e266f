"""The end of a reply nobody generates any more: failed as `interrupted`, partial text kept.

Run by Celery beat (chat/replies/tasks.py reap_replies) and by `manage.py reap_replies`. A
generator proves it is alive by its heartbeat (chat/replies/watch.py); a reply that lost it, or
was never picked up, gets its ending here, so none hangs in `streaming` forever.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from chat.errors import ChatError
from chat.events import error_event, event_publish_on_commit
from chat.models import Message
from chat.replies.accounting import ledger_settle_stale, quota_settle_message

INTERRUPTED = ChatError(
    "interrupted",
    "The reply stopped before it was complete (the server generating it went away). "
    "The partial text is kept; regenerate to try again.",
)


def replies_reap(*, stale_after: timedelta, pending_after: timedelta) -> int:
    """Fail replies whose generator died: streaming without a heartbeat for `stale_after`, or
    pending (never picked up) for `pending_after`. Returns how many were reaped."""
    now = timezone.now()
    dead = Q(status=Message.Status.STREAMING, heartbeat_at__lt=now - stale_after) | Q(
        status=Message.Status.PENDING, created_at__lt=now - pending_after
    )
    stuck = Message.objects.filter(dead, role=Message.Role.ASSISTANT).values_list("pk", flat=True)
    reaped = 0
    for message_id in list(stuck):
        with transaction.atomic():
            # Still dead under the lock: a heartbeat (or a start) that landed since the scan
            # above means the generator is alive, and the reply is left to it.
            message = Message.objects.select_for_update().filter(dead, pk=message_id).first()
            if message is None:
                continue
            message.status = Message.Status.FAILED
            message.error_code, message.error_message = INTERRUPTED.code, INTERRUPTED.detail
            message.finished_at = now
            message.save(update_fields=["status", "error_code", "error_message", "finished_at"])
            # Pending: released. Streaming: its worst case stays charged (usage unknown).
            quota_settle_message(message=message)
            event_publish_on_commit(message.conversation_id, error_event(message, INTERRUPTED))
            reaped += 1
    ledger_settle_stale()  # final replies whose settlement was lost (a crash in between)
    return reaped
