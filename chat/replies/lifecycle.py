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
from django.db import connections, transaction
from django.utils import timezone

from accounts.models import User
from accounts.quotas import quota_release
from chat.errors import ChatError
from chat.events import done_event, error_event, event_publish_on_commit
from chat.models import Message
from chat.replies.accounting import quota_settle_message
from chat.replies.prompt import history_params, history_returned
from chat.replies.statements import (
    CLAIM_IDS,
    claim_statement,
    finish_returning_statement,
    finish_statement,
    many_rows_writing,
    message_column,
    prepared,
)
from core import hops
from core.errors import ParleyError
from core.observability import metrics

logger = logging.getLogger(__name__)

CANCEL_KEY = "reply-cancel:{message_id}"
CANCEL_TTL_SECONDS = 3600


def reply_start(*, message_id: int) -> Message | None:
    """Claim a pending reply for generation; None if it is gone, final or claimed already.

    One statement: the conditional UPDATE returns the claimed row, with the columns of its
    conversation a generation reads (its system prompt, tenant, whether it retrieves), so the
    row comes back in the claim's own round trip, exactly as it was claimed (the ORM's UPDATE
    then a `select_related` read took a second statement, and with the prompt's read ~17 % of
    a worker's Python time: docs/benchmarks.md). The conversation's other fields are deferred
    (read if anything asks for them).
    """
    hops.hop("w.claim_begin", message_id)
    reply = replies_start(message_ids=[message_id]).get(message_id)
    hops.hop("w.claimed", message_id)
    return reply


def replies_start(*, message_ids: Collection[int]) -> dict[int, Message]:
    """Claim many pending replies in one statement (replies dispatched together: a worker
    claims what arrived while its last claim was on its way, chat/replies/stream.py); the
    claimed ones by id, each row as reply_start returns it. A reply gone, final or claimed
    already is left out: the conditional UPDATE claims each row once, whoever asks."""
    if not message_ids:
        return {}
    connection = connections[Message.objects.db]
    claim = claim_statement(connection)
    now = prepared("started_at", timezone.now(), connection)
    ids = list(message_ids)
    # On PostgreSQL the ids go as one array: psycopg parses a statement of more than 50
    # parameters afresh each time (as replies_heartbeat).
    among = [ids] if connection.vendor == "postgresql" else ids
    sql = claim.sql.replace(CLAIM_IDS, _ids_among(connection, len(ids)), 1)
    params = [Message.Status.STREAMING, now, now, *among, Message.Status.PENDING]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *(history_params() if claim.history else ())])
        rows = cursor.fetchall()  # to its end: SQLite commits the statement there
    claimed = {}
    for row in rows:
        if claim.history:
            reply = claim.message(row[:-1], connection)
            history_returned(reply, row[-1])
        else:
            reply = claim.message(row, connection)
        claimed[reply.pk] = reply
    return claimed


def _ids_among(connection: Any, count: int) -> str:
    if connection.vendor == "postgresql":
        return "= ANY(%s)"
    return f"IN ({', '.join(['%s'] * count)})"


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

    The heartbeat is not refreshed here: the watch's own heartbeat round does that every
    STREAM_HEARTBEAT_INTERVAL for every live reply, and an indexed column written once a
    second per reply cost PostgreSQL about a fifth of the round (bench/checkpoint_cost.py).
    Elsewhere one plain UPDATE run with executemany: Django's bulk_update builds a CASE per
    field per row, which cost more CPU than the writes (a fifth of a worker's CPU at 100
    streams, bench/stream_bench.py).
    """
    if not checkpoints:
        return 0
    connection = connections[Message.objects.db]
    if connection.vendor == "postgresql":
        return _checkpoint_in_one_statement(checkpoints, connection)
    meta, quote = Message._meta, connection.ops.quote_name
    column = partial(message_column, connection=connection)
    # Identifiers come from the model's metadata; every value is a parameter.
    table, content, seq = quote(meta.db_table), column("content"), column("seq")
    pk, status, first = column("id"), column("status"), column("first_token_at")
    sql = f"UPDATE {table} SET {content} = %s, {seq} = %s, {first} = COALESCE({first}, %s) WHERE {pk} = %s AND {status} = %s"  # noqa: E501, S608
    first_field = meta.get_field("first_token_at")
    rows = [
        (
            c.content,
            c.seq,
            first_field.get_db_prep_value(c.first_token_at, connection),
            c.message_id,
            Message.Status.STREAMING,
        )
        for c in checkpoints
    ]
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.executemany(sql, rows)
        return max(cursor.rowcount, 0)


def _checkpoint_in_one_statement(checkpoints: Collection[ReplyCheckpoint], connection: Any) -> int:
    """PostgreSQL: every reply of the batch in one UPDATE over arrays (unnest). executemany
    sent one statement per reply (client-side binding: each parsed and planned by the server),
    about half of PostgreSQL's CPU while 500 replies streamed (bench/stream_bench.py)."""
    meta, column = Message._meta, partial(message_column, connection=connection)
    first = column("first_token_at")
    sql = (
        f"UPDATE {connection.ops.quote_name(meta.db_table)} AS m "  # noqa: S608
        f"SET {column('content')} = v.content, {column('seq')} = v.seq, "
        f"{first} = COALESCE(m.{first}, v.first) "
        "FROM unnest(%s::bigint[], %s::text[], %s::integer[], %s::timestamptz[]) "
        "AS v(id, content, seq, first) "
        f"WHERE m.{column('id')} = v.id AND m.{column('status')} = %s"
    )
    params = [
        [c.message_id for c in checkpoints],
        [c.content for c in checkpoints],
        [c.seq for c in checkpoints],
        [c.first_token_at for c in checkpoints],
        Message.Status.STREAMING,
    ]
    with connection.cursor() as cursor, many_rows_writing:  # turns with the endings
        cursor.execute(sql, params)
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
    column = partial(message_column, connection=connection)
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {column('heartbeat_at')} = %s "  # noqa: S608
        f"WHERE {column('status')} = %s AND {column('id')} {among} RETURNING {column('id')}"
    )
    with connection.cursor() as cursor:
        with many_rows_writing:
            cursor.execute(sql, [now, Message.Status.STREAMING, *values])
        return {row[0] for row in cursor.fetchall()}


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

    The ending is one conditional UPDATE, written by hand (`WHERE status = 'streaming'`, no
    locking read first; PostgreSQL re-checks the condition after waiting for a reaper's row
    lock, so the first ending wins). `claimed` is the row as reply_start returned it: the
    ending is then applied to that row in memory (only the generator writes what it set at
    claim, and the other fields are the creation's, which nothing changes: the row in memory
    is the row). Without it the UPDATE returns the row it left.

    `announce` takes the final event instead of a publish from this thread: the generation
    hands it to its own event queue on its loop (chat/replies/stream.py), behind its deltas,
    instead of blocking its database lane on a round trip to that loop (async_to_sync).
    """
    values = ending_values(
        content=content,
        status=status,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        tokens_estimated=tokens_estimated,
        error=error,
        provider=provider,
        model=model,
        cost=cost,
        routing=routing,
        first_token_at=first_token_at,
    )
    message = reply_finish_row(message_id=message_id, values=values, claimed=claimed)
    if message is None:
        return None
    return _finished(message, status=status, error=error, announce=announce)


def ending_values(
    *,
    content: str,
    status: str,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    tokens_estimated: bool,
    error: ParleyError | None,
    provider: str | None,
    model: str | None,
    cost: Decimal | None,
    routing: dict[str, Any] | None,
    first_token_at: datetime | None,
) -> dict[str, Any]:
    """The fields a reply's ending sets (reply_finish's arguments; None leaves what the row
    holds where reply_finish says so)."""
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
    return values


def reply_finish_row(
    *, message_id: int, values: dict[str, Any], claimed: Message | None
) -> Message | None:
    """reply_finish's conditional UPDATE alone: the row as ended, None if it was not
    streaming (nothing else done: no flag, no settlement, no event)."""
    connection = connections[Message.objects.db]
    names = tuple(values)
    params = [prepared(name, value, connection) for name, value in values.items()]
    params += [message_id, Message.Status.STREAMING]
    if claimed is not None:
        with connection.cursor() as cursor:
            cursor.execute(finish_statement(connection, names), params)
            if not cursor.rowcount:
                return None
        for name, value in values.items():
            setattr(claimed, name, value)
        return claimed
    # the row as the ending left it, read back by the ending itself
    finish = finish_returning_statement(connection, names)
    with connection.cursor() as cursor:
        cursor.execute(finish.sql, params)
        rows = cursor.fetchall()  # to its end: SQLite commits the statement there
    if not rows:
        return None
    return finish.message(rows[0], connection)


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
