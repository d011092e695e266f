"""Hand-written statements on a reply's hot path (chat/replies/lifecycle.py, ending.py): the
claim, the ending, and the turns taken by the statements that write many reply rows at once.

The claim and the ending run once a reply; built by the ORM they cost more CPU than their
round trips (docs/benchmarks.md). Identifiers come from the models' metadata only, every
value is a parameter prepared by its field, and a returned row becomes a model instance the
way the ORM makes one (each column through its field's converters: SQLite returns dates as
text). Each text is built once per database vendor.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from django.db import models

from chat.models import Conversation, Message
from chat.replies.prompt import history_returning

CLAIM_IDS = "= %s /* ids */"  # in the claim's text: where `_ids_among` goes


_MESSAGE_FIELDS: tuple[models.Field[Any, Any], ...] = tuple(Message._meta.concrete_fields)
# What the generation reads of the reply's conversation: its prompt, tenant and retrieval.
_CLAIM_CONVERSATION_FIELDS = ("id", "owner_id", "organisation_id", "system_prompt", "retrieves")
_CONVERSATION_FIELDS: tuple[models.Field[Any, Any], ...] = tuple(
    f for f in Conversation._meta.concrete_fields if f.attname in _CLAIM_CONVERSATION_FIELDS
)


@dataclass(frozen=True)
class Returning:
    """A statement whose row is a Message's columns (then, for the claim, some of its
    conversation's), and how to make that row the instances the ORM would have made."""

    sql: str
    # (position, field, column) of the values a backend may need to convert.
    convertible: tuple[tuple[int, Any, Any], ...]
    conversation: bool = False
    history: bool = False  # the claim's last column: the prompt's history (prompt.py)

    def message(self, row: Sequence[Any], connection: Any) -> Message:
        values = list(row)
        for index, field, column in self.convertible:
            for convert in connection.ops.get_db_converters(column) + field.get_db_converters(
                connection
            ):
                values[index] = convert(values[index], column, connection)
        count = len(_MESSAGE_FIELDS)
        message = Message.from_db(
            connection.alias, [f.attname for f in _MESSAGE_FIELDS], values[:count]
        )
        if self.conversation:
            conversation = Conversation.from_db(
                connection.alias, [f.attname for f in _CONVERSATION_FIELDS], values[count:]
            )
            Message.conversation.field.set_cached_value(message, conversation)
        return message


_statements: dict[tuple[Any, ...], Any] = {}


def claim_statement(connection: Any) -> Returning:
    key = ("claim", connection.vendor)
    if key not in _statements:
        table = connection.ops.quote_name(Message._meta.db_table)
        quote = partial(message_column, connection=connection)
        conversation_table = connection.ops.quote_name(Conversation._meta.db_table)
        of_conversation = [
            f"(SELECT c.{connection.ops.quote_name(f.column)} FROM {conversation_table} c "  # noqa: S608
            f"WHERE c.{connection.ops.quote_name('id')} = {table}.{quote('conversation')})"
            for f in _CONVERSATION_FIELDS
        ]
        history = history_returning(connection, table)
        sql = (
            f"UPDATE {table} SET {quote('status')} = %s, {quote('started_at')} = %s, "  # noqa: S608
            f"{quote('heartbeat_at')} = %s WHERE {quote('id')} {CLAIM_IDS} "
            f"AND {quote('status')} = %s "
            f"RETURNING {_message_columns(connection)}, {', '.join(of_conversation)}"
            + (f", {history}" if history else "")
        )
        fields = (*_MESSAGE_FIELDS, *_CONVERSATION_FIELDS)
        _statements[key] = Returning(
            sql,
            _convertible(fields, connection),
            conversation=True,
            history=history is not None,
        )
    return _statements[key]  # type: ignore[no-any-return]


def finish_statement(connection: Any, names: tuple[str, ...]) -> str:
    key = ("finish", connection.vendor, names)
    if key not in _statements:
        _statements[key] = _finish_sql(connection, names)
    return _statements[key]  # type: ignore[no-any-return]


def finish_returning_statement(connection: Any, names: tuple[str, ...]) -> Returning:
    key = ("finish-returning", connection.vendor, names)
    if key not in _statements:
        sql = f"{_finish_sql(connection, names)} RETURNING {_message_columns(connection)}"
        _statements[key] = Returning(sql, _convertible(_MESSAGE_FIELDS, connection))
    return _statements[key]  # type: ignore[no-any-return]


def _finish_sql(connection: Any, names: tuple[str, ...]) -> str:
    table = connection.ops.quote_name(Message._meta.db_table)
    assignments = ", ".join(f"{message_column(name, connection)} = %s" for name in names)
    return (
        f"UPDATE {table} SET {assignments} "  # noqa: S608
        f"WHERE {message_column('id', connection)} = %s "
        f"AND {message_column('status', connection)} = %s"
    )


def _message_columns(connection: Any) -> str:
    table = connection.ops.quote_name(Message._meta.db_table)
    return ", ".join(f"{table}.{connection.ops.quote_name(f.column)}" for f in _MESSAGE_FIELDS)


def _convertible(fields: Sequence[Any], connection: Any) -> tuple[tuple[int, Any, Any], ...]:
    """The returned columns whose values this backend converts (JSON everywhere; dates,
    decimals and booleans on SQLite)."""
    found = []
    for index, field in enumerate(fields):
        column = field.get_col(field.model._meta.db_table)
        if connection.ops.get_db_converters(column) or field.get_db_converters(connection):
            found.append((index, field, column))
    return tuple(found)


def prepared(name: str, value: Any, connection: Any) -> Any:
    """A Message field's value as a statement parameter, prepared as the ORM prepares it."""
    return Message._meta.get_field(name).get_db_prep_save(value, connection)  # type: ignore[union-attr]


def message_column(name: str, connection: Any) -> str:
    """A Message field's quoted column (identifiers from the model's metadata only)."""
    field = Message._meta.get_field(name)
    assert isinstance(field, models.Field) and field.column
    return str(connection.ops.quote_name(field.column))


# Statements that write many streaming reply rows at once (the watch's checkpoint and
# heartbeat rounds, a batch of endings: chat/replies/ending.py) take turns in a process: two of
# them on different threads, each locking its rows in its own order, deadlocked (a batch of
# endings and a checkpoint round at 500 replies: PostgreSQL stalls both for its
# deadlock_timeout, a second, then fails one). Only one process writes a reply's rows this way
# (its generator's: the watch and the endings are that process's), so a lock here is enough;
# ordering the row locks in SQL instead (a CTE locking in primary-key order) tripled the
# checkpoint round's PostgreSQL CPU (bench/checkpoint_cost.py, docs/benchmarks.md round 7).
many_rows_writing = threading.Lock()
