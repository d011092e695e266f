"""The end of a reply nobody generates any more: failed as `interrupted`, partial text kept.

Run by Celery beat (chat/replies/tasks.py reap_replies), by `manage.py reap_replies`, and by
each server that generates replies in-process (`reaper_start`: no beat runs there). A generator
proves it is alive by its heartbeat (chat/replies/watch.py); a reply that lost it, or was never
picked up, gets its ending here, so none hangs in `streaming` forever.

The partial text kept is the stored checkpoint lengthened by the reply's journal (the deltas
published since, chat/journal.py): never shorter than what any client was shown. Without a
journal (the in-memory layer, or Redis unreachable) it is the checkpoint, and the `error`
event's `seq` tells clients holding more to trim to it (docs/protocol.md).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import Q
from django.utils import timezone

from chat.errors import ChatError
from chat.events import conversation_group, error_event, event_publish_on_commit
from chat.journal import journal_complete, journal_key
from chat.layers import journal_read
from chat.models import Message
from chat.replies.accounting import ledger_settle_stale, quota_settle_message
from core.observability import metrics

logger = logging.getLogger(__name__)

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
            changed = ["status", "error_code", "error_message", "finished_at"]
            if message.status == Message.Status.STREAMING:
                changed += _text_from_journal(message)
            message.status = Message.Status.FAILED
            message.error_code, message.error_message = INTERRUPTED.code, INTERRUPTED.detail
            message.finished_at = now
            message.save(update_fields=changed)
            # Pending: released. Streaming: its worst case stays charged (usage unknown).
            quota_settle_message(message=message)
            event_publish_on_commit(message.conversation_id, error_event(message, INTERRUPTED))
            metrics.reply_finished(message, organisation=None)
            reaped += 1
    ledger_settle_stale()  # final replies whose settlement was lost (a crash in between)
    return reaped


def _text_from_journal(message: Message) -> list[str]:
    """Lengthen the stored text with what the reply's journal holds beyond it (clients were
    shown it); the fields changed."""
    try:
        entries = journal_read(
            group=conversation_group(message.conversation_id), key=journal_key(message.pk)
        )
    except Exception:
        logger.warning(
            "journal of reply %s unreadable; stored text kept", message.pk, exc_info=True
        )
        return []
    if not entries:
        return []
    content = journal_complete(message.content[: message.seq], entries)
    if len(content) <= message.seq:
        return []
    message.content, message.seq = content, len(content)
    return ["content", "seq"]


# --- in a server generating in-process -------------------------------------------------------

_reaper: threading.Thread | None = None
_reaper_lock = threading.Lock()
_reaper_stop = threading.Event()


def reaper_start() -> None:
    """Reap in this process from now on, at once and then every REAP_EVERY seconds (a daemon
    thread; a second call does nothing). Only stale replies, so never one another live
    replica is generating."""
    global _reaper
    with _reaper_lock:
        if _reaper is not None and _reaper.is_alive():
            return
        _reaper_stop.clear()
        _reaper = threading.Thread(target=_reap_until_stopped, name="parley-reaper", daemon=True)
        _reaper.start()


def reaper_stop() -> None:
    """End the reaper thread (after its current round)."""
    global _reaper
    with _reaper_lock:
        thread, _reaper = _reaper, None
    if thread is not None:
        _reaper_stop.set()
        thread.join()


def _reap_until_stopped() -> None:
    while not _reaper_stop.is_set():
        try:
            reaped = replies_reap(
                stale_after=timedelta(seconds=settings.REAP_STALE_AFTER),
                pending_after=timedelta(seconds=settings.REAP_PENDING_AFTER),
            )
            if reaped:
                logger.warning("reaped %s unfinished replies", reaped)
        except Exception:
            logger.exception("reaping failed; trying again in %s s", settings.REAP_EVERY)
        finally:
            close_old_connections()
        _reaper_stop.wait(settings.REAP_EVERY)
