"""A reply's row from claim to its end: what the generation, the watch and a cancel write.

pending ──reply_start──▶ streaming ──reply_finish──▶ complete | incomplete | cancelled | failed
   └──reply_cancel (at once)──▶ cancelled      (the reaper, chat/replies/reaper.py, fails
                                                 what nobody generates any more)

The generation (chat/replies/stream.py) claims and finishes; the batch forms
(replies_cancel_requested, replies_checkpoint, replies_heartbeat) are the process's reply watch
(chat/replies/watch.py), which does for every live reply at once what each would do alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any

from django.core.cache import cache
from django.db import connections, models, transaction
from django.utils import timezone

from accounts.models import User
from accounts.quotas import quota_release
from chat.errors import ChatError
from chat.events import done_event, error_event, event_publish_on_commit
from chat.models import Message
from chat.replies.accounting import quota_settle_message
from core.errors import ParleyError
from core.observability import metrics

logger = logging.getLogger(__name__)

CANCEL_KEY = "reply-cancel:{message_id}"
CANCEL_TTL_SECONDS = 3600


def reply_start(*, message_id: int) -> Message | None:
    """Claim a pending reply for generation; None if it is gone, final or claimed already."""
    now = timezone.now()
    claimed = Message.objects.filter(pk=message_id, status=Message.Status.PENDING).update(
        status=Message.Status.STREAMING, started_at=now, heartbeat_at=now
    )
    if not claimed:
        return None
    return Message.objects.select_related("conversation").get(pk=message_id)


def reply_cancel(*, message: Message, by: User) -> None:
    """Stop a reply from any replica: a pending one at once, a streaming one via a shared flag."""
    if message.role != Message.Role.ASSISTANT:
        raise ChatError("bad_frame", "Only an assistant reply can be cancelled.")
    if message.is_final:
        return
    stopped = Message.objects.filter(pk=message.pk, status=Message.Status.PENDING).update(
        status=Message.Status.CANCELLED, finished_at=timezone.now()
    )
    if stopped:
        quota_release(message_id=message.pk)  # it never reached a provider
        message.refresh_from_db()
        metrics.reply_finished(message, organisation=None)
        event_publish_on_commit(message.conversation_id, done_event(message))
        return
    # The generator, wherever it runs, polls this flag (the cache is Redis in production).
    cache.set(CANCEL_KEY.format(message_id=message.pk), by.pk, CANCEL_TTL_SECONDS)


@dataclass(frozen=True)
class ReplyCheckpoint:
    """The text of a streaming reply up to `seq`, waiting to be saved, and when its first token
    came (saved with it: no statement of its own)."""

    message_id: int
    content: str
    seq: int
    first_token_at: datetime | None = None


def replies_cancel_requested(*, message_ids: Collection[int]) -> set[int]:
    """The replies among `message_ids` someone asked to stop: one cache read for them all."""
    keys = {CANCEL_KEY.format(message_id=message_id): message_id for message_id in message_ids}
    if not keys:
        return set()
    flags = cache.get_many(list(keys))
    return {keys[key] for key, value in flags.items() if value is not None}


def replies_checkpoint(*, checkpoints: Collection[ReplyCheckpoint]) -> int:
    """Save the text streamed so far of many replies in one batch, so a resume or a crash loses
    at most one interval; a reply that is no longer streaming (finished, reaped) is left as it
    is. Returns how many were saved.

    One plain UPDATE run with executemany (psycopg pipelines it): Django's bulk_update builds a
    CASE per field per row, which cost more CPU than the writes (a fifth of a worker's CPU at
    100 streams, bench/stream_bench.py).
    """
    if not checkpoints:
        return 0
    connection = connections[Message.objects.db]
    meta, quote = Message._meta, connection.ops.quote_name
    column = partial(_column, connection=connection)
    now = meta.get_field("heartbeat_at").get_db_prep_value(timezone.now(), connection)
    # Identifiers come from the model's metadata; every value is a parameter.
    table, content, seq = quote(meta.db_table), column("content"), column("seq")
    heartbeat_at, pk, status = column("heartbeat_at"), column("id"), column("status")
    first = column("first_token_at")
    sql = f"UPDATE {table} SET {content} = %s, {seq} = %s, {heartbeat_at} = %s, {first} = COALESCE({first}, %s) WHERE {pk} = %s AND {status} = %s"  # noqa: E501, S608
    first_field = meta.get_field("first_token_at")
    rows = [
        (
            c.content,
            c.seq,
            now,
            first_field.get_db_prep_value(c.first_token_at, connection),
            c.message_id,
            Message.Status.STREAMING,
        )
        for c in checkpoints
    ]
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.executemany(sql, rows)
        return max(cursor.rowcount, 0)


def replies_heartbeat(*, message_ids: Collection[int]) -> set[int]:
    """Say the generators of many replies are alive, and return the replies still streaming
    (the others are no longer theirs: reaped, or finished elsewhere).

    One conditional UPDATE … RETURNING: what it refreshed is what is still streaming, with no
    window between a read and a write for the reaper to fall in. On PostgreSQL the ids go as
    one array parameter: an IN list of hundreds of parameters made psycopg parse the statement
    afresh every round (its statement cache stops at 50 parameters).
    """
    if not message_ids:
        return set()
    connection = connections[Message.objects.db]
    meta, quote = Message._meta, connection.ops.quote_name
    ids = list(message_ids)
    values: list[Any]
    if connection.vendor == "postgresql":
        among, values = "= ANY(%s)", [ids]
    else:
        among, values = f"IN ({', '.join(['%s'] * len(ids))})", ids
    now = meta.get_field("heartbeat_at").get_db_prep_value(timezone.now(), connection)
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {_column('heartbeat_at', connection)} = %s "  # noqa: S608
        f"WHERE {_column('status', connection)} = %s AND {_column('id', connection)} {among} "
        f"RETURNING {_column('id', connection)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [now, Message.Status.STREAMING, *values])
        return {row[0] for row in cursor.fetchall()}


def _column(name: str, connection: Any) -> str:
    """A Message field's quoted column (identifiers from the model's metadata only)."""
    field = Message._meta.get_field(name)
    assert isinstance(field, models.Field) and field.column
    return str(connection.ops.quote_name(field.column))


def reply_finish(
    *,
    message_id: int,
    content: str,
    status: str,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    tokens_estimated: bool = False,
    error: ParleyError | None = None,
    provider: str | None = None,
    model: str | None = None,
    cost: Decimal | None = None,
    routing: dict[str, Any] | None = None,
    first_token_at: datetime | None = None,
    claimed: Message | None = None,
    announce: Callable[[dict[str, Any]], None] | None = None,
) -> Message | None:
    """Save the final state of a streaming reply and tell every socket on its conversation.

    Only a streaming reply can be finished, and only once: if the reaper (or another worker)
    got there first, this returns None and publishes nothing, so no reply has two endings.
    `provider`/`model` name the deployment that answered (or last tried), `routing` how the
    router got there; None leaves what the message holds.

    `claimed` is the row as reply_start returned it: then the ending is one conditional UPDATE
    (`WHERE status = 'streaming'`, no locking read first; PostgreSQL re-checks the condition
    after waiting for a reaper's row lock, so the first ending wins) applied to that row in
    memory. Only the generator writes what it set at claim, and the other fields are the
    creation's, which nothing changes: the row in memory is the row.

    `announce` takes the final event instead of a publish from this thread: the generation
    hands it to its own event queue on its loop (chat/replies/stream.py), behind its deltas,
    instead of blocking its database lane on a round trip to that loop (async_to_sync).
    """
    values: dict[str, Any] = {
        "content": content,
        "seq": len(content),
        "status": status,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "tokens_estimated": tokens_estimated,
        "cost": cost,
        "finished_at": timezone.now(),
    }
    if provider is not None:
        values["provider"] = provider
    if model is not None:
        values["model"] = model
    if routing is not None:
        values["routing"] = routing
    if error is not None:
        values["error_code"], values["error_message"] = error.code, error.detail
    if first_token_at is not None:
        values["first_token_at"] = first_token_at
    streaming = Message.objects.filter(pk=message_id, status=Message.Status.STREAMING)
    if claimed is not None:
        if not streaming.update(**values):
            return None
        message = claimed
        for name, value in values.items():
            setattr(message, name, value)
    else:
        with transaction.atomic():
            found = streaming.select_for_update().first()
            if found is None:
                return None
            message = found
            for name, value in values.items():
                setattr(message, name, value)
            # Only what changed: the rest of the row is locked and equal to what was read.
            message.save(update_fields=list(values))
    return _finished(message, status=status, error=error, announce=announce)


def _finished(
    message: Message,
    *,
    status: str,
    error: ParleyError | None,
    announce: Callable[[dict[str, Any]], None] | None,
) -> Message:
    """Clear the cancel flag, settle the quota, then tell the conversation (after the commit):
    a client that hears `done` and reads its usage finds the reply's real usage there."""
    message_id = message.pk
    try:
        try:
            cache.delete(CANCEL_KEY.format(message_id=message_id))
        except Exception:  # the cache (Redis) is down: the flag expires by itself (CANCEL_TTL)
            logger.warning("cancel flag of %s not cleared", message_id)
        quota_settle_message(message=message)  # real usage replaces the reserved worst case
    finally:  # a failed settlement is the reaper's to redo (ledger_settle_stale); still tell
        if status == Message.Status.FAILED and error is not None:
            event = error_event(message, error)
        else:
            event = done_event(message)
        if announce is None:
            event_publish_on_commit(message.conversation_id, event)
        else:
            announce(event)  # saved and settled (committed) already: no transaction is open
    return message
