"""The rows a send writes: the conversation's touch, the user's message, its pending reply, and
the reply's budget reservation (accounts/quotas/statement.py).

On PostgreSQL a send into an existing conversation is all of that in one statement, outside a
transaction (`said_in_one_statement`): one round trip where BEGIN, the prompt estimate's read,
the reservation, the rows, the ledger row and COMMIT were six, each waiting for a core on a
busy box (docs/benchmarks.md "The send's budget in its one statement"). Elsewhere (SQLite,
embedded mode) and for a new conversation, chat/services/messages.py writes them one by one in
a transaction.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.utils import timezone

from accounts.models import User
from accounts.quotas import (
    CountersMissing,
    StatementReservation,
    counters_create,
    reservation_read,
    statement_reservation,
)
from chat import selectors
from chat.errors import ChatError
from chat.events import event_publish_on_commit, message_event
from chat.models import Conversation, Message
from chat.replies.dispatch import reply_pending, reply_saved
from chat.services.prefetch import SendPrefetched
from core import hops
from llm.options import GenerationOptions
from llm.pricing import price_ceiling


def title_from(text: str) -> str:
    """A conversation's title from its first message: one line, at most 60 characters."""
    line = " ".join(text.split())
    return line[:60] + ("…" if len(line) > 60 else "")


def user_message_new(
    *, conversation: Conversation, author: User, text: str, client_id: str | None
) -> Message:
    """A user's message as it is saved (not yet): complete at once, its seq the length of its
    text, its client_id scoped by the conversation's organisation."""
    return Message(
        conversation=conversation,
        role=Message.Role.USER,
        author=author,
        content=text,
        status=Message.Status.COMPLETE,
        seq=len(text),
        client_id=client_id,
        organisation_id=conversation.organisation_id,  # the scope of client_id
    )


# Raw SQL on a send's hot path: the ORM spent more CPU building this UPDATE (Case, When,
# Exists) than the database spends running it (docs/benchmarks.md "Send path").
TOUCH_SQL = (
    f"UPDATE {Conversation._meta.db_table} SET updated_at = %s, title = CASE WHEN NOT EXISTS "  # noqa: S608
    f"(SELECT 1 FROM {Message._meta.db_table} WHERE conversation_id = %s) THEN %s "
    "ELSE title END WHERE id = %s"
)


def conversation_touch(*, conversation: Conversation, first_text: str) -> bool:
    """Mark the conversation updated, and titled after `first_text` if it has no message yet:
    one statement (a send's hot path), and a title renamed meanwhile is never overwritten.
    False if the conversation is gone (deleted since the caller looked it up)."""
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            TOUCH_SQL,
            [
                connection.ops.adapt_datetimefield_value(now),
                conversation.pk,
                title_from(first_text),
                conversation.pk,
            ],
        )
        touched = cursor.rowcount
    conversation.updated_at = now
    return touched > 0


_STATEMENTS: dict[str, tuple[str, list[Any]]] = {}


def _statement(db: Any, estimate: str, reservation: StatementReservation) -> tuple[str, list[Any]]:
    """The send as one statement (PostgreSQL's data-modifying WITH): the prompt estimate and
    the budget's check (accounts/quotas/statement.py), then, only if the budget lets it through, the
    conversation's touch, the user message (only if the touch found the conversation), its
    reply (naming the message's new id), the ledger row (naming the reply's) and the charge
    to the counters. All of it sees one snapshot, so the touch's NOT EXISTS does not see the
    new rows (as when it ran first). Made once; each value a parameter. Returns the reply's
    id, the message's, then the reservation's columns."""
    found = _STATEMENTS.get(db.vendor)
    if found is not None:
        return found
    meta, quote = Message._meta, db.ops.quote_name
    fields = [f for f in meta.local_concrete_fields if f is not meta.auto_field]
    columns = ", ".join(quote(f.column) for f in fields)
    key, reply_to = quote(meta.auto_field.column), quote(meta.get_field("reply_to").column)  # type: ignore[union-attr]
    said = ", ".join(["%s"] * len(fields))
    answer = ", ".join("u.id" if f.name == "reply_to" else "%s" for f in fields)
    table = quote(meta.db_table)
    sql = (
        f"WITH {estimate}, {reservation.head}, "  # noqa: S608
        f"t AS ({TOUCH_SQL} AND {reservation.go} RETURNING id), "
        f"u AS (INSERT INTO {table} ({columns}) SELECT {said} FROM t RETURNING {key} AS id), "
        f"r AS (INSERT INTO {table} ({columns}) SELECT {answer} FROM u "
        f"RETURNING {key} AS id, {reply_to} AS reply_to_id), "
        f"{reservation.tail} "
        f"SELECT (SELECT id FROM r), (SELECT reply_to_id FROM r), {reservation.columns}"
    )
    _STATEMENTS[db.vendor] = found = (sql, fields)
    return found


def _saved_as(instance: Message, pk: int, db: Any) -> None:
    instance.pk = pk
    instance._state.adding = False
    instance._state.db = db.alias


def said_in_one_statement(
    *,
    conversation: Conversation,
    author: User,
    text: str,
    client_id: str | None,
    alias: str,
    options: GenerationOptions | None,
    prefetched: SendPrefetched | None = None,
) -> tuple[Message, Message]:
    """On PostgreSQL, a send into an existing conversation (its budget reserved, its rows
    saved) in one statement outside a transaction, then the message and its reply announced
    and the reply dispatched, as on a commit. A conversation gone is not_found (nothing
    saved, nothing charged). Over budget: QuotaExceeded, nothing saved. A repeated client_id: the
    unique key's IntegrityError, nothing saved. Inside a caller's transaction, a savepoint, so
    that such an error leaves the caller's transaction usable. `prefetched`: the cache's
    values it reads, read already (chat/services/prefetch.py)."""
    db = connections[DEFAULT_DB_ALIAS]
    if prefetched is not None and prefetched.organisation_id != conversation.organisation_id:
        prefetched = None  # read for another organisation than the conversation's
    user_message = user_message_new(
        conversation=conversation, author=author, text=text, client_id=client_id
    )
    reply, provider = reply_pending(
        conversation=conversation,
        reply_to=user_message,
        alias=alias,
        options=options,
        allowed=prefetched.allowed_models if prefetched else None,
    )
    reservation = statement_reservation(
        user_id=author.pk,
        organisation_id=conversation.organisation_id,
        reply_cte="r",
        max_tokens=options.max_tokens if options else None,
        prices=price_ceiling(alias=alias),
        cached_rules=prefetched.budget_rules if prefetched else None,
    )
    estimate, estimate_params = selectors.prompt_tokens_estimate_sql(
        conversation_id=conversation.pk, text=text
    )
    sql, fields = _statement(db, estimate, reservation)
    now = reservation.now
    params: list[Any] = [*estimate_params, *reservation.head_params]
    params += [
        db.ops.adapt_datetimefield_value(now),
        conversation.pk,
        title_from(text),
        conversation.pk,
    ]
    params += [f.get_db_prep_save(f.pre_save(user_message, True), db) for f in fields]
    params += [
        f.get_db_prep_save(f.pre_save(reply, True), db) for f in fields if f.name != "reply_to"
    ]
    params += reservation.tail_params
    for first_try in (True, False):
        hops.hop("d.statement", client_id)
        with transaction.atomic() if db.in_atomic_block else nullcontext(), db.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        hops.hop("d.stated", client_id)
        try:
            reservation_read(reservation, row[2:], message_id=row[0])
        except CountersMissing:
            if not first_try:
                raise
            # The first send of a day or month: its counters made, then the same statement.
            counters_create(
                user_id=author.pk, organisation_id=conversation.organisation_id, now=now
            )
            continue
        break
    if row[0] is None:
        raise ChatError("not_found", "No such conversation.")
    conversation.updated_at = now
    _saved_as(user_message, row[1], db)
    _saved_as(reply, row[0], db)
    reply.reply_to = user_message
    # At once outside a transaction (on_commit runs its callable then), as on a commit: the
    # message's event before the reply's, the reply dispatched last.
    event_publish_on_commit(conversation.pk, message_event(user_message))
    reply_saved(reply, provider)
    return user_message, reply
