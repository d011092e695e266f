"""Reads, each checked against who is asking.

A conversation is readable by its owner while they are a member of its organisation; it stays
private to them within the organisation (operators read it in the admin only). A socket or key
limited to one organisation passes `organisation` and reaches nothing outside it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.db.models import Q, QuerySet

from accounts.models import Organisation, User
from accounts.quotas import tokens_estimate
from accounts.selectors import organisation_allowed_models
from chat.errors import ChatError
from chat.models import Conversation, Message
from llm.catalog import enabled_aliases, tenant_aliases

# Tokens a chat template adds around each message (role markers and separators), rounded up.
TOKENS_PER_MESSAGE = 8


def _readable(user: User, organisation: Organisation | None) -> QuerySet[Conversation]:
    conversations = Conversation.objects.filter(owner=user, organisation__memberships__user=user)
    if organisation is not None:
        conversations = conversations.filter(organisation=organisation)
    return conversations


# The chats a person has in the page's sidebar by default: their own (the page, or a program
# on their socket), not the traffic of the REST API and the OpenAI-compatible endpoint.
PEOPLE_ORIGINS = (Conversation.Origin.PAGE, Conversation.Origin.WEBSOCKET)


def conversation_list(
    *,
    user: User,
    organisation: Organisation | None = None,
    origins: Iterable[str] | None = None,
    search: str = "",
) -> QuerySet[Conversation]:
    """The user's conversations (in one organisation, of these origins, and whose title or
    current message text contains `search`, if given)."""
    conversations = _readable(user, organisation)
    if origins is not None:
        conversations = conversations.filter(origin__in=list(origins))
    if search := search.strip():
        matching = Message.objects.filter(content__icontains=search, superseded=False)
        conversations = conversations.filter(
            Q(title__icontains=search) | Q(pk__in=matching.values("conversation_id"))
        )
    return conversations


def conversation_access(
    *, user: User, conversation_id: int, organisation: Organisation | None = None
) -> Conversation:
    """The conversation if this user may read it; otherwise not_found (no existence leak)."""
    try:
        return _readable(user, organisation).get(pk=conversation_id)
    except Conversation.DoesNotExist:
        raise ChatError("not_found", "No such conversation.") from None


def message_access(
    *, user: User, message_id: int, organisation: Organisation | None = None
) -> Message:
    try:
        return Message.objects.select_related("conversation").get(
            pk=message_id, conversation__in=_readable(user, organisation)
        )
    except Message.DoesNotExist:
        raise ChatError("not_found", "No such message.") from None


def message_history(*, conversation: Conversation) -> QuerySet[Message]:
    """The conversation as it stands: superseded messages (regenerated, edited) left out."""
    return conversation.messages.filter(superseded=False)


def reply_versions(*, conversation: Conversation) -> dict[int, list[Message]]:
    """Earlier answers to each user message still shown, oldest first: the replies a
    regenerate superseded (kept, docs/protocol.md), browsable on the page as 1/2, 2/2. One query."""
    shown = conversation.messages.filter(superseded=False, role=Message.Role.USER)
    earlier = conversation.messages.filter(
        role=Message.Role.ASSISTANT, superseded=True, reply_to__in=shown
    ).order_by("created_at", "id")
    versions: dict[int, list[Message]] = {}
    for reply in earlier:
        versions.setdefault(reply.reply_to_id or 0, []).append(reply)
    return versions


def model_choices(*, organisation: Organisation | None) -> list[str]:
    """The model aliases this organisation's people may pick, the one a send without a model
    runs on first: every alias with an enabled deployment that the organisation's allow-list
    lets it use (llm/catalog.py tenant_aliases; an empty list allows all)."""
    aliases = enabled_aliases()  # the default first
    if organisation is not None:
        allowed = organisation_allowed_models(organisation_id=organisation.pk)
        aliases = tenant_aliases(aliases, allowed=allowed)
    return aliases


def messages_created_since(
    *, conversation_ids: Collection[int], since: datetime, limit: int = 200
) -> list[Message]:
    """Messages (not superseded) added to these conversations since `since`, oldest first:
    what a socket missed while its live feed was down (chat/consumers.py). The socket passes
    only conversations it was let into (it followed them after conversation_access)."""
    return list(
        Message.objects.filter(
            conversation_id__in=conversation_ids, created_at__gte=since, superseded=False
        ).order_by("id")[:limit]
    )


def prompt_tokens_estimate(
    *, conversation_id: int | None, text: str = "", before_id: int | None = None
) -> int:
    """A high estimate of the prompt a new reply will send (what chat/replies/prompt.py builds: the
    system prompt, the recent history before `before_id`, and `text`), for budget reservations.
    One query, none for a new conversation."""
    lengths: list[int] = []
    if conversation_id is not None:
        # Raw SQL on a send's hot path: building it with the ORM cost more CPU than running it.
        before = "" if before_id is None else "AND id < %s "
        params: list[int | str] = [conversation_id, Message.Status.FAILED, Message.Status.PENDING]
        params += [] if before_id is None else [before_id]
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT LENGTH(content) FROM {Message._meta.db_table} "  # noqa: S608
                "WHERE conversation_id = %s AND NOT superseded AND status NOT IN (%s, %s) "
                f"{before}ORDER BY id DESC LIMIT %s",
                [*params, settings.LLM_HISTORY_MESSAGES],
            )
            lengths = [row[0] for row in cursor.fetchall()]
    chars = len(settings.LLM_SYSTEM_PROMPT) + len(text) + sum(lengths)
    return tokens_estimate(chars) + TOKENS_PER_MESSAGE * (len(lengths) + 2)


def prompt_tokens_estimate_sql(*, conversation_id: int, text: str) -> tuple[str, list[object]]:
    """prompt_tokens_estimate (a new reply to `text` in this conversation) as two CTEs of a
    send's one statement on PostgreSQL (chat/services/send_statement.py), the second named
    `estimate`, one row with the tokens as `prompt`: the same history, the same rounding up."""
    sql = (
        f"estimate_history AS (SELECT LENGTH(content) AS chars FROM {Message._meta.db_table} "  # noqa: S608
        "WHERE conversation_id = %s AND NOT superseded AND status NOT IN (%s, %s) "
        "ORDER BY id DESC LIMIT %s), "
        "estimate AS (SELECT (%s + COALESCE(SUM(chars), 0) + 2) / 3 + %s * (COUNT(*) + 2) "
        "AS prompt FROM estimate_history)"
    )
    params: list[object] = [
        conversation_id,
        Message.Status.FAILED,
        Message.Status.PENDING,
        settings.LLM_HISTORY_MESSAGES,
        len(settings.LLM_SYSTEM_PROMPT) + len(text),
        TOKENS_PER_MESSAGE,
    ]
    return sql, params
