"""What a model is asked: the system prompt and the conversation up to the reply's question.

Plain LangChain messages, the shape llm/ takes (llm/failover.py stream_with_failover, the
cache's keys): llm never reads a Message row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings
from django.db import connections
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from chat.documents.retrieval import prompt_with_documents
from chat.models import Message
from core import hops
from llm.catalog import default_alias
from llm.options import GenerationOptions


def prompt_messages(reply: Message) -> list[BaseMessage]:
    """The system prompt (Parley's, then the conversation's own) plus the conversation up to the
    message this reply answers."""
    messages = _prompt(reply.conversation.system_prompt, reversed(_history(reply)))
    # Passages from the conversation's documents, quoted in the question (never the system).
    messages = prompt_with_documents(reply, messages)
    hops.hop("w.prompt", reply.pk)
    return messages


def _history(reply: Message) -> list[tuple[str, str]]:
    """(role, content) of the last LLM_HISTORY_MESSAGES messages said before the reply, newest
    first: neither failed, pending, superseded nor empty.

    Read with the claim where it can be (`history_returned`), else one hand-written statement,
    read as tuples: built by the ORM it cost a worker more CPU than the database took to
    answer it (docs/benchmarks.md)."""
    claimed: list[tuple[str, str]] | None = getattr(reply, _CLAIMED_HISTORY, None)
    if claimed is not None:
        return claimed
    connection = connections[Message.objects.db]
    sql = _HISTORY_SQL.get(connection.vendor)
    if sql is None:
        table, column = connection.ops.quote_name(Message._meta.db_table), _columns(connection)
        sql = _HISTORY_SQL[connection.vendor] = (
            f"SELECT {column['role']}, {column['content']} FROM {table} "  # noqa: S608
            f"WHERE {column['conversation']} = %s AND {column['id']} < %s "
            f"AND {column['superseded']} = %s AND {column['status']} NOT IN (%s, %s) "
            f"AND {column['content']} <> %s ORDER BY {column['id']} DESC LIMIT %s"
        )
    params: list[Any] = [reply.conversation_id, reply.pk, *history_params()]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


_HISTORY_SQL: dict[str, str] = {}
_CLAIMED_HISTORY = "_claimed_history"  # on a reply whose claim returned its history


def history_params() -> list[Any]:
    """The history's parameters, after the reply's own (read at each call, as settings)."""
    return [False, Message.Status.FAILED, Message.Status.PENDING, "", settings.LLM_HISTORY_MESSAGES]


def history_returning(connection: Any, reply_table: str) -> str | None:
    """On PostgreSQL, the history `_history` reads, as one more column (a JSON array, newest
    first) of a statement that returns the reply's row from `reply_table` (the claim's
    RETURNING: the prompt's history comes in the claim's round trip, one fewer on the way to
    the first token); it takes `history_params()`. None elsewhere: the claim, then a read."""
    if connection.vendor != "postgresql":
        return None
    table, column = connection.ops.quote_name(Message._meta.db_table), _columns(connection)
    # The inner rows are `m`: unqualified, its columns would shadow the reply's own.
    sql = (
        f"(SELECT COALESCE(json_agg(json_build_array(h.role, h.content) ORDER BY h.id DESC), "  # noqa: S608
        f"'[]') FROM (SELECT m.{column['role']} AS role, m.{column['content']} AS content, "
        f"m.{column['id']} AS id FROM {table} m "
        f"WHERE m.{column['conversation']} = {reply_table}.{column['conversation']} "
        f"AND m.{column['id']} < {reply_table}.{column['id']} "
        f"AND m.{column['superseded']} = %s AND m.{column['status']} NOT IN (%s, %s) "
        f"AND m.{column['content']} <> %s ORDER BY m.{column['id']} DESC LIMIT %s) h)"
    )
    return sql


def history_returned(reply: Message, value: Any) -> None:
    """Keep the history a claim returned (`history_returning`'s column) on its reply."""
    rows = json.loads(value) if isinstance(value, str | bytes) else value
    setattr(reply, _CLAIMED_HISTORY, [(str(role), str(content)) for role, content in rows])


def _columns(connection: Any) -> dict[str, str]:
    """The quoted columns of the Message fields the history reads (from the model's metadata)."""
    names = ("role", "content", "conversation", "id", "superseded", "status")
    fields = {name: Message._meta.get_field(name) for name in names}
    return {
        name: connection.ops.quote_name(field.column)  # type: ignore[union-attr]
        for name, field in fields.items()
    }


def prompt_from_request(
    *, system_prompt: str, history: Sequence[tuple[str, str]], text: str
) -> list[BaseMessage]:
    """What prompt_messages reads back for the reply of a new conversation holding `history`
    ((role, content), oldest first) then the user's `text`, built without reading it: an
    OpenAI-compatible request's (chat/replies/early.py). A new conversation has no other
    message and no documents (`retrieves` is off until one is attached)."""
    said = [(role, content) for role, content in history if content]
    said.append((Message.Role.USER, text))
    return _prompt(system_prompt, said[-settings.LLM_HISTORY_MESSAGES :])


def _prompt(own_system_prompt: str, history: Iterable[tuple[str, str]]) -> list[BaseMessage]:
    # One system message: Parley's prompt, then the conversation's own (several system messages,
    # or one after the first turn, are not understood by every chat template and provider).
    system = settings.LLM_SYSTEM_PROMPT
    if own_system_prompt:
        system = f"{system}\n\n{own_system_prompt}" if system else own_system_prompt
    messages: list[BaseMessage] = [SystemMessage(content=system)]
    for role, content in history:
        cls = HumanMessage if role == Message.Role.USER else AIMessage
        messages.append(cls(content=content))
    return messages


def reply_alias(reply: Message) -> str:
    """The model alias the reply is routed to (llm/router.py): the one it was created with."""
    return str(reply.routing.get("alias") or reply.provider or default_alias())


def reply_allowed_models(reply: Message) -> list[str]:
    """The organisation's model allow-list when the reply was created (empty: every model);
    it bounds the fallbacks the reply may fail over to."""
    return [str(alias) for alias in (reply.routing or {}).get("allowed", [])]


def reply_options(reply: Message) -> GenerationOptions:
    """The caller's generation choices for the reply, stored with it when it was created."""
    return GenerationOptions.from_json((reply.routing or {}).get("options"))
