"""Replies that end together, ended together: their final rows, cancel flags and settlements
in a few statements for all of them, not a few each.

At the end of a load's streams hundreds of replies end within a second or two, each with its
final UPDATE, a cancel-flag delete in Redis and a settlement (a transaction whose counter rows
every reply of one organisation locks in turn), on a worker's database lanes, holding the GIL
against the loop that streams the rest (docs/benchmarks.md, round 7). The endings of one event
loop go in turn, each batch everything that arrived while the last was on its way (group
commit, as the claims in chat/replies/stream.py ClaimBatches): a lone ending runs at once.

Each reply still ends once and as reply_finish ends it (lifecycle.py): the UPDATE is
conditional on `streaming`, so a reply the reaper took is left out and told nothing. A
failure in one reply's ending does not cost the others theirs: a batch statement that fails
is run again reply by reply, and a settlement that fails is left to the reaper
(ledger_settle_stale), as after a crash between the ending and the settlement.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any

from django.core.cache import cache
from django.db import connections, models, transaction

from chat.events import done_event, error_event, event_publish_on_commit
from chat.models import Message
from chat.replies.accounting import quota_settle_message, quota_settle_messages
from chat.replies.batches import GroupCommit
from chat.replies.lifecycle import CANCEL_KEY, ending_values, reply_finish, reply_finish_row
from chat.replies.statements import many_rows_writing
from core.errors import ParleyError

logger = logging.getLogger(__name__)


@dataclass
class ReplyEnding:
    """One reply's end, as reply_finish takes it (lifecycle.py says what each field means)."""

    message_id: int
    content: str
    status: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_estimated: bool = False
    error: ParleyError | None = None
    provider: str | None = None
    model: str | None = None
    cost: Decimal | None = None
    routing: dict[str, Any] | None = None
    first_token_at: datetime | None = None
    claimed: Message | None = None
    announce: Callable[[dict[str, Any]], None] | None = None

    def values(self) -> dict[str, Any]:
        return ending_values(
            content=self.content,
            status=self.status,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            tokens_estimated=self.tokens_estimated,
            error=self.error,
            provider=self.provider,
            model=self.model,
            cost=self.cost,
            routing=self.routing,
            first_token_at=self.first_token_at,
        )


Ended = Message | None | BaseException  # one ending's result: the row, None, or its failure


def replies_finish(*, endings: Sequence[ReplyEnding]) -> list[Ended]:
    """End many streaming replies together, each as reply_finish ends it; for each ending, in
    order, the reply as saved, None if it was not streaming any more (ended by someone else:
    nothing saved, nothing told), or the error its own ending raised.

    Rows claimed by their generator (`claimed`) end in one UPDATE over arrays on PostgreSQL;
    the others, and every row on SQLite, reply by reply. Then their cancel flags go in one
    delete, their settlements in one transaction (accounts/quotas/settle_many.py), and
    each reply's final event is told (after the commit), as reply_finish tells it."""
    if len(endings) == 1 and endings[0].claimed is None:
        return [_guarded(lambda: reply_finish(**_arguments(endings[0])))]
    results = _rows_ended(endings)
    ended = [(e, r) for e, r in zip(endings, results, strict=True) if isinstance(r, Message)]
    try:
        if ended:
            try:
                cache.delete_many([CANCEL_KEY.format(message_id=r.pk) for _, r in ended])
            except Exception:  # the cache (Redis) is down: the flags expire by themselves
                logger.warning("cancel flags of %s replies not cleared", len(ended))
            _settle([r for _, r in ended])
    finally:
        for ending, row in ended:
            assert isinstance(row, Message)
            try:
                _tell(row, ending)
            except Exception:  # one reply's listener is not the others'
                logger.exception("the end of reply %s not told", row.pk)
    return results


def _arguments(ending: ReplyEnding) -> dict[str, Any]:
    return {name: getattr(ending, name) for name in ending.__dataclass_fields__}


def _guarded(end: Callable[[], Message | None]) -> Ended:
    try:
        return end()
    except Exception as exc:
        return exc


def _rows_ended(endings: Sequence[ReplyEnding]) -> list[Ended]:
    """Save each reply's final row (nothing else): the claimed rows in one statement on
    PostgreSQL; if that statement fails (one reply's values the database refuses), each
    again on its own, so only that reply's ending fails."""
    connection = connections[Message.objects.db]
    together = [i for i, e in enumerate(endings) if e.claimed is not None]
    results: dict[int, Ended] = {}
    if connection.vendor == "postgresql" and len(together) > 1:
        # Inside a caller's transaction, a savepoint keeps its failure the batch's own.
        guard = transaction.atomic() if connection.in_atomic_block else nullcontext()
        try:
            with guard:
                rows = _claimed_rows_ended([endings[i] for i in together], connection)
            results.update(zip(together, rows, strict=True))
        except Exception:
            logger.warning("%s endings failed together; each alone", len(together), exc_info=True)
    for index, ending in enumerate(endings):
        if index not in results:
            results[index] = _guarded(partial(_row_ended, ending))
    return [results[index] for index in range(len(endings))]


def _row_ended(ending: ReplyEnding) -> Message | None:
    return reply_finish_row(
        message_id=ending.message_id, values=ending.values(), claimed=ending.claimed
    )


_COALESCED = ("provider", "model", "routing", "error_code", "error_message", "first_token_at")
_SET = ("content", "seq", "status", "prompt_tokens", "completion_tokens", "tokens_estimated")
_SET_TOO = ("cost", "finished_at")


def _claimed_rows_ended(endings: Sequence[ReplyEnding], connection: Any) -> list[Ended]:
    """PostgreSQL: the claimed replies' final rows in one UPDATE over arrays; each ending's
    row (None: it was not streaming any more). A field reply_finish
    leaves as it is when not given (provider, model, routing, error, first token) is kept by
    COALESCE. Each row in memory is the claimed one with the values applied (reply_finish)."""
    meta, quote = Message._meta, connection.ops.quote_name
    names = (*_SET, *_SET_TOO, *_COALESCED)
    fields = [_field(name) for name in names]
    routing = _field("routing")
    table = quote(meta.db_table)
    column = {name: quote(field.column) for name, field in zip(names, fields, strict=True)}
    types = {
        name: _array_type(field.db_type(connection))
        for name, field in zip(names, fields, strict=True)
    }
    types["routing"] = "text"  # sent as its JSON text, cast below
    assignments = [f"{column[n]} = v.{n}" for n in (*_SET, *_SET_TOO)]
    assignments += [
        f"{column[n]} = COALESCE(v.{n}{'::jsonb' if n == 'routing' else ''}, m.{column[n]})"
        for n in _COALESCED
    ]
    arrays = ", ".join(f"%s::{types[n]}[]" for n in names)
    sql = (
        f"UPDATE {table} AS m SET {', '.join(assignments)} "  # noqa: S608
        f"FROM unnest(%s::bigint[], {arrays}) AS v(id, {', '.join(names)}) "
        f"WHERE m.{quote('id')} = v.id AND m.{quote('status')} = %s RETURNING m.{quote('id')}"
    )
    rows: list[list[Any]] = []
    values_of: list[dict[str, Any]] = []
    for ending in endings:
        values = ending.values()
        values_of.append(values)
        row: list[Any] = [ending.message_id]
        for name, field in zip(names, fields, strict=True):
            value = values.get(name)
            if value is None:
                row.append(None)
            elif name == "routing":
                row.append(json.dumps(value, cls=getattr(routing, "encoder", None)))
            else:
                row.append(field.get_db_prep_save(value, connection))
        rows.append(row)
    params = [list(column_values) for column_values in zip(*rows, strict=True)]
    with connection.cursor() as cursor:
        with many_rows_writing:  # the watch's rounds write these rows too (statements.py)
            cursor.execute(sql, [*params, Message.Status.STREAMING])
        streaming_ended = {row[0] for row in cursor.fetchall()}
    results: list[Ended] = []
    for ending, values in zip(endings, values_of, strict=True):
        message = ending.claimed
        if message is None or ending.message_id not in streaming_ended:
            results.append(None)
            continue
        for name, value in values.items():
            setattr(message, name, value)
        results.append(message)
    return results


def _field(name: str) -> models.Field[Any, Any]:
    field = Message._meta.get_field(name)
    assert isinstance(field, models.Field)
    return field


def _array_type(db_type: str | None) -> str:
    """A column's type as an array's element type (a varchar as text)."""
    assert db_type is not None
    return "text" if db_type.startswith("varchar") else db_type


def _settle(rows: list[Message]) -> None:
    """Settle the ended replies in one transaction; if that fails, each on its own, and what
    still fails is the reaper's to redo (ledger_settle_stale)."""
    try:
        if len(rows) == 1:  # alone, as reply_finish settles it
            quota_settle_message(message=rows[0])
        else:
            quota_settle_messages(messages=rows)
        return
    except Exception:
        logger.warning("settling %s replies together failed; each alone", len(rows), exc_info=True)
    for row in rows:
        try:
            quota_settle_message(message=row)
        except Exception:
            logger.exception("settling reply %s failed; the reaper settles it", row.pk)


def _tell(message: Message, ending: ReplyEnding) -> None:
    if message.status == Message.Status.FAILED and ending.error is not None:
        event = error_event(message, ending.error)
    else:
        event = done_event(message)
    if ending.announce is None:
        event_publish_on_commit(message.conversation_id, event)
    else:
        ending.announce(event)


# --- the endings of one event loop, in batches ----------------------------------------------


def _end_batch(endings: list[ReplyEnding]) -> list[Ended]:
    return replies_finish(endings=endings)


class EndBatches(GroupCommit[ReplyEnding, Ended]):
    """The endings of one event loop in turn, each batch everything that arrived while the
    last was on its way (group commit, chat/replies/batches.py). An ending whose task was
    cancelled while it waited still goes with the next batch: the reply ends all the same."""

    def __init__(self) -> None:
        super().__init__(_end_batch, keep_cancelled=True)

    async def end(self, ending: ReplyEnding) -> Message | None:
        """The reply as saved, None if it was not streaming any more; raises what its own
        ending raised."""
        return _result(await self.submit(ending))


def _result(result: Ended) -> Message | None:
    if isinstance(result, BaseException):
        raise result
    return result


_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EndBatches] = (
    weakref.WeakKeyDictionary()
)


async def reply_end(ending: ReplyEnding) -> Message | None:
    """End a reply from its generation's loop, together with the others ending meanwhile."""
    loop = asyncio.get_running_loop()
    batches = _batches.get(loop)
    if batches is None:
        batches = _batches[loop] = EndBatches()
    return await batches.end(ending)
