"""Writes of what people say: a message sent, edited, or answered again.

Each saves the user's message (if any) and a pending reply in one transaction, with the budget
reserved first; the reply is born in chat/replies/dispatch.py and lives in chat/replies/.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import Organisation, User
from accounts.quotas import quota_reserve, reservation_attach
from accounts.services import organisation_personal_ensure
from chat import selectors
from chat.errors import ChatError, ReplyNotStarted
from chat.events import event_publish_on_commit, message_event, superseded_event
from chat.models import Conversation, Message
from chat.replies.dispatch import reply_create, reply_dispatch_again
from chat.replies.lifecycle import reply_cancel
from chat.replies.prompt import reply_options
from chat.services.conversations import conversation_create
from chat.services.prefetch import SendPrefetched
from chat.services.said import (
    conversation_touch,
    said_in_one_statement,
    title_from,
    user_message_new,
)
from core.errors import ParleyError
from core.observability.context import traced_sync
from core.rows import row_insert
from llm.catalog import catalog_held
from llm.context import send_check
from llm.options import GenerationOptions
from llm.pricing import price_ceiling


@dataclass(frozen=True)
class SendResult:
    user_message: Message
    reply: Message
    created: bool


def message_text_clean(text: object) -> str:
    """The text of a message as sent, or a bad_frame: non-empty, and not too long."""
    if not isinstance(text, str) or not text.strip():
        raise ChatError("bad_frame", "Write a message first: text must be a non-empty string.")
    if len(text) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise ChatError(
            "bad_frame",
            f"The message is too long (at most {settings.CHAT_MAX_MESSAGE_CHARS} characters).",
        )
    return text


def send_earlier(*, author: User, organisation_id: int, client_id: str) -> SendResult | None:
    """What an earlier send with this client id made in this organisation, if there was one
    (idempotency). The same id in another organisation is another message: a client reusing
    "c-1" there must not reach this organisation's conversation. Its reply is started if its
    first start failed (reply_dispatch_again)."""
    user_message = Message.objects.filter(
        author=author, organisation_id=organisation_id, client_id=client_id
    ).first()
    if user_message is None:
        return None
    reply = _current_reply(user_message)
    reply_dispatch_again(reply)
    return SendResult(user_message=user_message, reply=reply, created=False)


def _current_reply(user_message: Message) -> Message:
    """The latest reply to a user message (a regenerate adds one and supersedes the last)."""
    reply = user_message.replies.order_by("-id").first()
    assert reply is not None, "every user message is saved together with its reply"
    return reply


def user_message_create(
    *, conversation: Conversation, author: User, text: str, client_id: str | None
) -> Message:
    """A user's message as it is saved: complete at once, its seq the length of its text.
    Written by hand (core/rows.py): the ORM's INSERT was a send's largest CPU cost."""
    message = user_message_new(
        conversation=conversation, author=author, text=text, client_id=client_id
    )
    row_insert(message)
    return message


def _said_one_by_one(
    *,
    conversation: Conversation,
    author: User,
    text: str,
    client_id: str | None,
    alias: str,
    options: GenerationOptions | None,
) -> tuple[Message, Message]:
    """The user message, then its reply (two statements), each announced on commit."""
    user_message = user_message_create(
        conversation=conversation, author=author, text=text, client_id=client_id
    )
    event_publish_on_commit(conversation.pk, message_event(user_message))
    reply = reply_create(
        conversation=conversation, reply_to=user_message, alias=alias, options=options
    )
    return user_message, reply


def _said_in_a_transaction(
    *,
    author: User,
    conversation: Conversation | None,
    organisation: Organisation | None,
    origin: str,
    acting_in: int,
    text: str,
    client_id: str,
    alias: str,
    options: GenerationOptions | None,
) -> tuple[Message, Message]:
    """The send statement by statement in one transaction, its budget reserved first (and its
    locks held until the commit): a new conversation's, and every send on SQLite. A
    conversation gone meanwhile is not_found, and the rollback takes the charge back."""
    with transaction.atomic():
        reservation = quota_reserve(
            user_id=author.pk,
            organisation_id=acting_in,
            prompt_tokens=selectors.prompt_tokens_estimate(
                conversation_id=conversation.pk if conversation else None, text=text
            ),
            max_tokens=options.max_tokens if options else None,
            prices=price_ceiling(alias=alias),
            ledger_saved=False,  # saved with its reply's id by reservation_attach
        )
        if conversation is None:
            conversation = conversation_create(
                owner=author, title=title_from(text), organisation=organisation, origin=origin
            )
        elif not conversation_touch(conversation=conversation, first_text=text):
            raise ChatError("not_found", "No such conversation.")
        user_message, reply = _said_one_by_one(
            conversation=conversation,
            author=author,
            text=text,
            client_id=client_id,
            alias=alias,
            options=options,
        )
        reservation_attach(reservation=reservation, message_id=reply.pk)
    return user_message, reply


@traced_sync("chat.message_send")
def message_send(
    *,
    author: User,
    conversation: Conversation | None,
    text: str,
    client_id: str,
    organisation: Organisation | None = None,
    origin: str = Conversation.Origin.PAGE,
    alias: str = "",
    options: GenerationOptions | None = None,
    prefetched: SendPrefetched | None = None,
) -> SendResult:
    """Save a user message and a pending reply, then start generating it.

    Idempotent on (author, organisation, client_id): a retried or doubled send returns the
    first result and starts no second generation, even when the first one also created the
    conversation. A new conversation starts in `organisation` (default: the author's personal
    one), marked with `origin`. `alias` and `options` are the caller's model and generation
    choices (default: the default model, the deployment's settings). A send over budget raises
    QuotaExceeded and saves nothing. `prefetched`: the cached values a send reads, read with
    its rate limits (chat/services/prefetch.py).

    A new client id, the common case, costs no look-up: a repeat is found when its statement
    (or transaction) fails, on the unique (author, organisation, client_id) or on a check the
    first one passed (e.g. a budget it used up), and saves nothing.
    """
    text = message_text_clean(text)
    if conversation is not None and conversation.owner_id != author.pk:
        raise ChatError("not_found", "No such conversation.")
    if conversation is None and organisation is None:
        organisation = organisation_personal_ensure(user=author)
    # The organisation the send acts in: its conversation's, or the new conversation's.
    acting_in = conversation.organisation_id if conversation else organisation.pk  # type: ignore[union-attr]
    try:
        # One catalogue (llm/catalog.py) prices and routes the reply: one version check.
        with catalog_held(version=prefetched.catalog_version if prefetched else None):
            send_check(
                alias=alias,
                system_prompt=conversation.system_prompt if conversation else "",
                question=text,
                max_tokens=options.max_tokens if options else None,
            )
            if conversation is not None and connection.vendor == "postgresql":
                user_message, reply = said_in_one_statement(
                    author=author,
                    conversation=conversation,
                    text=text,
                    client_id=client_id,
                    alias=alias,
                    options=options,
                    prefetched=prefetched,
                )
            else:  # a new conversation's first send, and SQLite's
                user_message, reply = _said_in_a_transaction(
                    author=author,
                    conversation=conversation,
                    organisation=organisation,
                    origin=origin,
                    acting_in=acting_in,
                    text=text,
                    client_id=client_id,
                    alias=alias,
                    options=options,
                )
    except ReplyNotStarted:
        raise  # this send was saved (its reply marked): not a repeat of an earlier one
    except (IntegrityError, ParleyError):
        # A repeat of an earlier send (a retry, a double click, a concurrent twin that won the
        # race): answer with the earlier one's result.
        if earlier := send_earlier(author=author, organisation_id=acting_in, client_id=client_id):
            return earlier
        raise
    return SendResult(user_message=user_message, reply=reply, created=True)


@traced_sync("chat.reply_regenerate")
def reply_regenerate(*, message: Message, by: User) -> SendResult:
    """Answer the last user message again. The old reply is kept, superseded.

    A repeat (double click, retry) finds the old reply superseded already and answers with the
    reply that replaced it, so one regenerate makes one provider call; that reply is started
    if its first start failed (reply_dispatch_again), as a repeated send's is.
    """
    if message.role != Message.Role.ASSISTANT or message.reply_to is None:
        raise ChatError("bad_frame", "Only an assistant reply can be regenerated.")
    with catalog_held(), transaction.atomic():
        current = Message.objects.select_for_update().get(pk=message.pk)
        user_message = message.reply_to
        if current.superseded:
            reply = _current_reply(user_message)
            # Started if its first start failed, once the lock is released: as a send's repeat.
            transaction.on_commit(partial(reply_dispatch_again, reply))
            return SendResult(user_message=user_message, reply=reply, created=False)
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
            ledger_saved=False,
        )
        current.superseded = True
        current.save(update_fields=["superseded"])
        event_publish_on_commit(
            current.conversation_id,
            superseded_event(conversation_id=current.conversation_id, message_ids=[current.pk]),
        )
        reply = _reply_as_asked_before(
            current, conversation=current.conversation, reply_to=user_message
        )
        reservation_attach(reservation=reservation, message_id=reply.pk)
        Conversation.objects.filter(pk=current.conversation_id).update(updated_at=timezone.now())
    return SendResult(user_message=user_message, reply=reply, created=True)


@traced_sync("chat.message_edit")
def _reply_as_asked_before(
    replaced: Message | None, *, conversation: Conversation, reply_to: Message
) -> Message:
    """The new reply of a regenerate or an edit, asked of the model and with the generation
    options the answer it replaces was asked with (the page's model picker, REST's and the
    socket's `model`), not the default model. A model the organisation may no longer use, or
    that is no longer configured, gives way to the default (nothing is written before the
    route is chosen, so the second try starts clean)."""
    if replaced is None:
        return reply_create(conversation=conversation, reply_to=reply_to)
    alias, options = str(replaced.routing.get("alias") or ""), reply_options(replaced)
    try:
        return reply_create(
            conversation=conversation, reply_to=reply_to, alias=alias, options=options
        )
    except ParleyError as error:
        if not alias or error.code not in ("model_not_allowed", "provider_rejected"):
            raise
    return reply_create(conversation=conversation, reply_to=reply_to, options=options)


def message_edit(*, message: Message, author: User, text: str, client_id: str) -> SendResult:
    """Replace a user message with new text and answer it afresh.

    The old message and everything after it are superseded (kept, hidden from pages and
    prompts); replies still running there are stopped. Idempotent on client_id like a send.
    """
    text = message_text_clean(text)
    if message.role != Message.Role.USER or message.author_id != author.pk:
        raise ChatError("bad_frame", "Only your own messages can be edited.")
    acting_in = message.conversation.organisation_id
    if earlier := send_earlier(author=author, organisation_id=acting_in, client_id=client_id):
        return earlier
    try:
        with catalog_held(), transaction.atomic():
            current = Message.objects.select_for_update().get(pk=message.pk)
            if current.superseded:
                raise ChatError("bad_frame", "This message was edited already; edit the new one.")
            doomed = list(
                Message.objects.select_for_update()
                .filter(conversation_id=current.conversation_id, id__gte=current.pk)
                .filter(superseded=False)
            )
            answered = [m for m in doomed if m.reply_to_id == current.pk]
            replaced = max(answered, key=lambda m: m.pk) if answered else None
            send_check(
                alias=str(replaced.routing.get("alias") or "") if replaced else "",
                system_prompt=current.conversation.system_prompt,
                question=text,
                max_tokens=reply_options(replaced).max_tokens if replaced else None,
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
                ledger_saved=False,
            )
            event_publish_on_commit(
                current.conversation_id,
                superseded_event(
                    conversation_id=current.conversation_id, message_ids=[m.pk for m in doomed]
                ),
            )
            user_message = user_message_create(
                conversation=current.conversation, author=author, text=text, client_id=client_id
            )
            event_publish_on_commit(current.conversation_id, message_event(user_message))
            reply = _reply_as_asked_before(
                replaced, conversation=current.conversation, reply_to=user_message
            )
            reservation_attach(reservation=reservation, message_id=reply.pk)
    except IntegrityError:
        if earlier := send_earlier(author=author, organisation_id=acting_in, client_id=client_id):
            return earlier
        raise
    return SendResult(user_message=user_message, reply=reply, created=True)


def _later_messages(message: Message) -> QuerySet[Message]:
    return Message.objects.filter(
        conversation_id=message.conversation_id, id__gt=message.pk, superseded=False
    )
