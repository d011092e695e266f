"""Writes and side effects of the chat: sending, cancelling, and a reply's lifecycle.

The reply lifecycle functions (reply_start, reply_checkpoint, reply_finish) are called by the
generation in llm/streaming.py, in-process or in a Celery worker alike; their batch forms
(replies_cancel_requested, replies_checkpoint, replies_heartbeat) by the process's reply watch
(llm/watch.py), which does for every live reply at once what each would do alone.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connections, models, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.models import Organisation, User
from accounts.quotas import (
    ledger_settle_stale,
    quota_release,
    quota_reserve,
    quota_settle,
    quota_settle_message,
    reservation_attach,
)
from accounts.services import organisation_personal_ensure
from chat import selectors
from chat.errors import ChatError
from chat.events import event_publish_on_commit
from chat.models import Conversation, Message
from llm.pricing import price_ceiling

CANCEL_KEY = "reply-cancel:{message_id}"
CANCEL_TTL_SECONDS = 3600
RETRYABLE_CODES = frozenset({"provider_unavailable", "interrupted"})


@dataclass(frozen=True)
class SendResult:
    user_message: Message
    reply: Message
    created: bool


def conversation_create(
    *, owner: User, title: str = "New chat", organisation: Organisation | None = None
) -> Conversation:
    """A conversation in `organisation` (the owner's personal one if not given)."""
    return Conversation.objects.create(
        owner=owner,
        organisation=organisation or organisation_personal_ensure(user=owner),
        title=title[:200] or "New chat",
    )


def message_event(message: Message) -> dict[str, Any]:
    """The `message` frame other sockets on the conversation receive."""
    return {
        "type": "chat.message",
        "conversation": message.conversation_id,
        "message": message.pk,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "seq": message.seq,
        "reply_to": message.reply_to_id,
        "client_id": message.client_id,
    }


def _clean_text(text: object) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ChatError("bad_frame", "Write a message first: text must be a non-empty string.")
    if len(text) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise ChatError(
            "bad_frame",
            f"The message is too long (at most {settings.CHAT_MAX_MESSAGE_CHARS} characters).",
        )
    return text


def _earlier_send(*, author: User, client_id: str) -> SendResult | None:
    user_message = Message.objects.filter(author=author, client_id=client_id).first()
    if user_message is None:
        return None
    return SendResult(user_message=user_message, reply=_current_reply(user_message), created=False)


def _current_reply(user_message: Message) -> Message:
    """The latest reply to a user message (a regenerate adds one and supersedes the last)."""
    reply = user_message.replies.order_by("-id").first()
    assert reply is not None, "every user message is saved together with its reply"
    return reply


def _user_message_create(
    *, conversation: Conversation, author: User, text: str, client_id: str | None
) -> Message:
    """A user's message as it is saved: complete at once, its seq the length of its text."""
    return Message.objects.create(
        conversation=conversation,
        role=Message.Role.USER,
        author=author,
        content=text,
        status=Message.Status.COMPLETE,
        seq=len(text),
        client_id=client_id,
    )


def _reply_create(*, conversation: Conversation, reply_to: Message, alias: str = "") -> Message:
    """A pending assistant reply, announced and dispatched once the transaction commits.

    `alias` pins a model alias (e.g. an OpenAI-compatible request's `model`); else the default.
    """
    from llm.dispatch import dispatch_generation
    from llm.router import provider_choose

    provider = provider_choose(pinned=alias)
    reply = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.PENDING,
        reply_to=reply_to,
        provider=provider.name,
        model=provider.model,
        # The model alias the generation routes (llm/router.py); it may answer elsewhere.
        routing={"alias": provider.alias or alias},
    )
    event_publish_on_commit(conversation.pk, message_event(reply))
    transaction.on_commit(partial(dispatch_generation, reply.pk, provider))
    return reply


def message_send(
    *,
    author: User,
    conversation: Conversation | None,
    text: str,
    client_id: str,
    organisation: Organisation | None = None,
) -> SendResult:
    """Save a user message and a pending reply, then start generating it.

    Idempotent on (author, client_id): a retried or doubled send returns the first result and
    starts no second generation, even when the first one also created the conversation.
    A new conversation starts in `organisation` (default: the author's personal one). A send
    over budget raises QuotaExceeded and saves nothing.
    """
    text = _clean_text(text)
    if conversation is not None and conversation.owner_id != author.pk:
        raise ChatError("not_found", "No such conversation.")
    if earlier := _earlier_send(author=author, client_id=client_id):
        return earlier
    if conversation is None and organisation is None:
        organisation = organisation_personal_ensure(user=author)
    try:
        with transaction.atomic():
            # The budget check comes first and holds its locks until the commit.
            reservation = quota_reserve(
                user_id=author.pk,
                organisation_id=conversation.organisation_id if conversation else organisation.pk,  # type: ignore[union-attr]
                prompt_tokens=selectors.prompt_tokens_estimate(
                    conversation_id=conversation.pk if conversation else None, text=text
                ),
                prices=price_ceiling(),
            )
            if conversation is None:
                conversation = conversation_create(
                    owner=author, title=_title_from(text), organisation=organisation
                )
            elif not conversation.messages.exists():
                conversation.title = _title_from(text)
            user_message = _user_message_create(
                conversation=conversation, author=author, text=text, client_id=client_id
            )
            conversation.save(update_fields=["title", "updated_at"])
            event_publish_on_commit(conversation.pk, message_event(user_message))
            reply = _reply_create(conversation=conversation, reply_to=user_message)
            reservation_attach(reservation=reservation, message_id=reply.pk)
    except IntegrityError:
        # A concurrent twin won the unique (author, client_id) race: answer with its result.
        if earlier := _earlier_send(author=author, client_id=client_id):
            return earlier
        raise
    return SendResult(user_message=user_message, reply=reply, created=True)


def reply_regenerate(*, message: Message, by: User) -> SendResult:
    """Answer the last user message again. The old reply is kept, superseded.

    A repeat (double click, retry) finds the old reply superseded already and answers with the
    reply that replaced it, so one regenerate makes one provider call.
    """
    if message.role != Message.Role.ASSISTANT or message.reply_to is None:
        raise ChatError("bad_frame", "Only an assistant reply can be regenerated.")
    with transaction.atomic():
        current = Message.objects.select_for_update().get(pk=message.pk)
        user_message = message.reply_to
        if current.superseded:
            return SendResult(
                user_message=user_message, reply=_current_reply(user_message), created=False
            )
        if not current.is_final:
            raise ChatError("bad_frame", "Stop the reply before regenerating it.")
        if _later_messages(current).exists():
            raise ChatError(
                "bad_frame", "Only the last reply can be regenerated; edit an earlier message."
            )
        reservation = quota_reserve(
            user_id=by.pk,
            organisation_id=current.conversation.organisation_id,
            prompt_tokens=selectors.prompt_tokens_estimate(
                conversation_id=current.conversation_id, before_id=current.pk
            ),
            prices=price_ceiling(),
        )
        current.superseded = True
        current.save(update_fields=["superseded"])
        event_publish_on_commit(current.conversation_id, superseded_event(current, [current.pk]))
        reply = _reply_create(conversation=current.conversation, reply_to=user_message)
        reservation_attach(reservation=reservation, message_id=reply.pk)
        Conversation.objects.filter(pk=current.conversation_id).update(updated_at=timezone.now())
    return SendResult(user_message=user_message, reply=reply, created=True)


def message_edit(*, message: Message, author: User, text: str, client_id: str) -> SendResult:
    """Replace a user message with new text and answer it afresh.

    The old message and everything after it are superseded (kept, hidden from pages and
    prompts); replies still running there are stopped. Idempotent on client_id like a send.
    """
    text = _clean_text(text)
    if message.role != Message.Role.USER or message.author_id != author.pk:
        raise ChatError("bad_frame", "Only your own messages can be edited.")
    if earlier := _earlier_send(author=author, client_id=client_id):
        return earlier
    try:
        with transaction.atomic():
            current = Message.objects.select_for_update().get(pk=message.pk)
            if current.superseded:
                raise ChatError("bad_frame", "This message was edited already; edit the new one.")
            doomed = list(
                Message.objects.select_for_update()
                .filter(conversation_id=current.conversation_id, id__gte=current.pk)
                .filter(superseded=False)
            )
            for old in doomed:
                if old.role == Message.Role.ASSISTANT and not old.is_final:
                    reply_cancel(message=old, by=author)
            Message.objects.filter(pk__in=[m.pk for m in doomed]).update(superseded=True)
            reservation = quota_reserve(
                user_id=author.pk,
                organisation_id=current.conversation.organisation_id,
                prompt_tokens=selectors.prompt_tokens_estimate(
                    conversation_id=current.conversation_id, text=text, before_id=current.pk
                ),
                prices=price_ceiling(),
            )
            event_publish_on_commit(
                current.conversation_id, superseded_event(current, [m.pk for m in doomed])
            )
            user_message = _user_message_create(
                conversation=current.conversation, author=author, text=text, client_id=client_id
            )
            event_publish_on_commit(current.conversation_id, message_event(user_message))
            reply = _reply_create(conversation=current.conversation, reply_to=user_message)
            reservation_attach(reservation=reservation, message_id=reply.pk)
    except IntegrityError:
        if earlier := _earlier_send(author=author, client_id=client_id):
            return earlier
        raise
    return SendResult(user_message=user_message, reply=reply, created=True)


def _later_messages(message: Message) -> QuerySet[Message]:
    return Message.objects.filter(
        conversation_id=message.conversation_id, id__gt=message.pk, superseded=False
    )


def superseded_event(message: Message, message_ids: list[int]) -> dict[str, Any]:
    return {
        "type": "chat.superseded",
        "conversation": message.conversation_id,
        "messages": message_ids,
    }


def _title_from(text: str) -> str:
    line = " ".join(text.split())
    return line[:60] + ("…" if len(line) > 60 else "")


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
        event_publish_on_commit(message.conversation_id, done_event(message))
        return
    # The generator, wherever it runs, polls this flag (the cache is Redis in production).
    cache.set(CANCEL_KEY.format(message_id=message.pk), by.pk, CANCEL_TTL_SECONDS)


def reply_cancel_requested(message_id: int) -> bool:
    return cache.get(CANCEL_KEY.format(message_id=message_id)) is not None


def reply_start(*, message_id: int) -> Message | None:
    """Claim a pending reply for generation; None if it is gone, final or claimed already."""
    now = timezone.now()
    claimed = Message.objects.filter(pk=message_id, status=Message.Status.PENDING).update(
        status=Message.Status.STREAMING, started_at=now, heartbeat_at=now
    )
    if not claimed:
        return None
    return Message.objects.select_related("conversation").get(pk=message_id)


def reply_first_token(*, message_id: int) -> None:
    Message.objects.filter(pk=message_id).update(first_token_at=timezone.now())


def reply_checkpoint(*, message_id: int, content: str, seq: int) -> None:
    """Save the text streamed so far, so a resume or a crash loses at most one interval."""
    Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(
        content=content, seq=seq, heartbeat_at=timezone.now()
    )


def reply_heartbeat(*, message_id: int) -> bool:
    """Say the generator is alive; False if the reply is no longer ours (reaped or final)."""
    return bool(
        Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(
            heartbeat_at=timezone.now()
        )
    )


@dataclass(frozen=True)
class ReplyCheckpoint:
    """The text of a streaming reply up to `seq`, waiting to be saved."""

    message_id: int
    content: str
    seq: int


def replies_cancel_requested(*, message_ids: Collection[int]) -> set[int]:
    """The replies among `message_ids` someone asked to stop: one cache read for them all."""
    keys = {CANCEL_KEY.format(message_id=message_id): message_id for message_id in message_ids}
    if not keys:
        return set()
    flags = cache.get_many(list(keys))
    return {keys[key] for key, value in flags.items() if value is not None}


def replies_checkpoint(*, checkpoints: Collection[ReplyCheckpoint]) -> int:
    """reply_checkpoint for many replies in one batch; a reply that is no longer streaming
    (finished, reaped) is left as it is. Returns how many were saved.

    One plain UPDATE run with executemany (psycopg pipelines it): Django's bulk_update builds a
    CASE per field per row, which cost more CPU than the writes (a fifth of a worker's CPU at
    100 streams, bench/stream_bench.py).
    """
    if not checkpoints:
        return 0
    connection = connections[Message.objects.db]
    meta, quote = Message._meta, connection.ops.quote_name

    def column(name: str) -> str:
        field = meta.get_field(name)
        assert isinstance(field, models.Field) and field.column
        return quote(field.column)

    now = meta.get_field("heartbeat_at").get_db_prep_value(timezone.now(), connection)
    # Identifiers come from the model's metadata; every value is a parameter.
    table, content, seq = quote(meta.db_table), column("content"), column("seq")
    heartbeat_at, pk, status = column("heartbeat_at"), column("id"), column("status")
    sql = f"UPDATE {table} SET {content} = %s, {seq} = %s, {heartbeat_at} = %s WHERE {pk} = %s AND {status} = %s"  # noqa: E501, S608
    rows = [(c.content, c.seq, now, c.message_id, Message.Status.STREAMING) for c in checkpoints]
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.executemany(sql, rows)
        return max(cursor.rowcount, 0)


def replies_heartbeat(*, message_ids: Collection[int]) -> set[int]:
    """reply_heartbeat for many replies: refresh them all, and return those still streaming
    (the others are no longer ours: reaped, or finished elsewhere)."""
    if not message_ids:
        return set()
    with transaction.atomic():
        streaming = Message.objects.filter(status=Message.Status.STREAMING)
        live = set(streaming.filter(pk__in=message_ids).order_by().values_list("pk", flat=True))
        # A reply reaped between the two statements is not refreshed (the update is
        # conditional) and is reported live this once: the next heartbeat tells its generator.
        if live:
            streaming.filter(pk__in=live).update(heartbeat_at=timezone.now())
    return live


_FINISH_FIELDS = (
    "content",
    "seq",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "tokens_estimated",
    "cost",
    "finished_at",
)


def reply_finish(
    *,
    message_id: int,
    content: str,
    status: str,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    tokens_estimated: bool = False,
    error: ChatError | None = None,
    provider: str | None = None,
    model: str | None = None,
    cost: Decimal | None = None,
    routing: dict[str, Any] | None = None,
) -> Message | None:
    """Save the final state of a streaming reply and tell every socket on its conversation.

    Only a streaming reply can be finished, and only once: if the reaper (or another worker)
    got there first, this returns None and publishes nothing, so no reply has two endings.
    `provider`/`model` name the deployment that answered (or last tried), `routing` how the
    router got there; None leaves what the message holds.
    """
    with transaction.atomic():
        message = (
            Message.objects.select_for_update()
            .filter(pk=message_id, status=Message.Status.STREAMING)
            .first()
        )
        if message is None:
            return None
        message.content = content
        message.seq = len(content)
        message.status = status
        message.prompt_tokens = prompt_tokens
        message.completion_tokens = completion_tokens
        message.tokens_estimated = tokens_estimated
        message.cost = cost
        message.finished_at = timezone.now()
        changed = [*_FINISH_FIELDS]
        if provider is not None:
            message.provider = provider
            changed.append("provider")
        if model is not None:
            message.model = model
            changed.append("model")
        if routing is not None:
            message.routing = routing
            changed.append("routing")
        if error is not None:
            message.error_code, message.error_message = error.code, error.detail
            changed += ["error_code", "error_message"]
        # Only what changed: the rest of the row is locked and equal to what was read.
        message.save(update_fields=changed)
        if status == Message.Status.FAILED and error is not None:
            event_publish_on_commit(message.conversation_id, error_event(message, error))
        else:
            event_publish_on_commit(message.conversation_id, done_event(message))
    try:
        cache.delete(CANCEL_KEY.format(message_id=message_id))
    except Exception:  # the cache (Redis) is down: the flag expires by itself (CANCEL_TTL)
        logging.getLogger(__name__).warning("cancel flag of %s not cleared", message_id)
    quota_settle_message(message=message)  # real usage replaces the reserved worst case
    return message


INTERRUPTED = ChatError(
    "interrupted",
    "The reply stopped before it was complete (the server generating it went away). "
    "The partial text is kept; regenerate to try again.",
    retryable=True,
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


def done_event(message: Message) -> dict[str, Any]:
    return {
        "type": "chat.done",
        "message": message.pk,
        "seq": message.seq,
        "status": message.status,
        "usage": {
            "prompt_tokens": message.prompt_tokens,
            "completion_tokens": message.completion_tokens,
            "estimated": message.tokens_estimated,
        },
        "cost": format(message.cost, "f") if message.cost is not None else None,
        "provider": message.provider,
        "model": message.model,
        "timings": {"first_token_ms": message.first_token_ms, "total_ms": message.total_ms},
        "cached": bool((message.routing or {}).get("cache")),  # answered by llm/cache/
    }


def error_event(message: Message, error: ChatError) -> dict[str, Any]:
    return {
        "type": "chat.error",
        "code": error.code,
        "detail": error.detail,
        "retryable": error.retryable,
        "message": message.pk,
        "seq": message.seq,
    }


# --- The programmable API (chat/api/, chat/openai_compat/) ---------------------------------


def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    """Give a conversation a new title (trimmed to what the column holds)."""
    title = " ".join(title.split())[:200]
    if not title:
        raise ChatError("bad_frame", "A title must have some text.")
    # An update, not a save: a conversation deleted meanwhile is a not_found, not a crash.
    if not Conversation.objects.filter(pk=conversation.pk).update(
        title=title, updated_at=timezone.now()
    ):
        raise ChatError("not_found", "No such conversation.")
    conversation.refresh_from_db(fields=["title", "updated_at"])
    return conversation


def conversation_delete(*, conversation: Conversation, by: User) -> None:
    """Delete a conversation and its messages; replies still running there are stopped first.

    A pending reply gives its reservation back (reply_cancel). A streaming one may already have
    been billed by its provider and will not be able to save its usage once its row is gone, so
    its reservation stays charged at the worst case, as for an interrupted reply.
    """
    with transaction.atomic():
        running = list(
            Message.objects.select_for_update().filter(
                conversation=conversation,
                role=Message.Role.ASSISTANT,
                status__in=[Message.Status.PENDING, Message.Status.STREAMING],
            )
        )
        for reply in running:
            reply_cancel(message=reply, by=by)
            if reply.status == Message.Status.STREAMING:
                quota_settle(
                    message_id=reply.pk,
                    started=True,
                    prompt_tokens=None,
                    completion_tokens=None,
                    content_chars=len(reply.content),
                    interrupted=True,
                )
        conversation.delete()


@dataclass(frozen=True)
class PriorMessage:
    """A message of a request's history, recorded as it was (OpenAI-compatible requests)."""

    role: str  # Message.Role
    content: str


def completion_request_create(
    *,
    author: User,
    organisation: Organisation,
    history: list[PriorMessage],
    text: str,
    client_id: str,
    alias: str,
) -> SendResult:
    """Record a stateless completion request (POST /v1/chat/completions) as a conversation and
    start its reply, the way message_send does: same budget reservation, same pending reply,
    same dispatch; only the model alias is the caller's choice.

    The request's earlier messages are saved as they were (final, never generated here); the
    last user message is `text`. Idempotent on (author, client_id) like a send.
    """
    text = _clean_text(text)
    if earlier := _earlier_send(author=author, client_id=client_id):
        return earlier
    try:
        with transaction.atomic():
            reservation = quota_reserve(
                user_id=author.pk,
                organisation_id=organisation.pk,
                prompt_tokens=selectors.prompt_tokens_estimate(
                    conversation_id=None, text=text + "".join(m.content for m in history)
                )
                + selectors.TOKENS_PER_MESSAGE * len(history),
                prices=price_ceiling(alias=alias),
            )
            conversation = conversation_create(
                owner=author,
                title=_title_from(text),
                organisation=organisation,
            )
            Message.objects.bulk_create(
                [
                    Message(
                        conversation=conversation,
                        role=prior.role,
                        author=author if prior.role == Message.Role.USER else None,
                        content=prior.content,
                        status=Message.Status.COMPLETE,
                        seq=len(prior.content),
                    )
                    for prior in history
                ]
            )
            user_message = _user_message_create(
                conversation=conversation, author=author, text=text, client_id=client_id
            )
            reply = _reply_create(conversation=conversation, reply_to=user_message, alias=alias)
            reservation_attach(reservation=reservation, message_id=reply.pk)
    except IntegrityError:
        if earlier := _earlier_send(author=author, client_id=client_id):
            return earlier
        raise
    return SendResult(user_message=user_message, reply=reply, created=True)
