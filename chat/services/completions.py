"""Writes of the OpenAI-compatible endpoint (chat/openai_compat/): a stateless completion
request recorded as a conversation, answered like a send."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import IntegrityError, transaction

from accounts.models import Organisation, UsageLedger, User
from accounts.quotas import budget_applies, quota_reserve, reservation_attach
from chat import selectors
from chat.errors import ReplyNotStarted
from chat.models import Conversation, Message
from chat.replies.dispatch import reply_create, reply_generation_begin
from chat.replies.early import EarlyReply
from chat.services.conversations import conversation_create
from chat.services.messages import (
    SendResult,
    message_text_clean,
    send_earlier,
    title_from,
    user_message_create,
)
from core.errors import ParleyError
from llm.context import send_check
from llm.options import GenerationOptions
from llm.pricing import price_ceiling


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
    system_prompt: str = "",
    options: GenerationOptions | None = None,
) -> SendResult:
    """Record a stateless completion request (POST /v1/chat/completions) as a conversation and
    start its reply, the way message_send does: same budget reservation, same pending reply,
    same dispatch; only the model alias is the caller's choice.

    The request's earlier messages are saved as they were (final, never generated here); the
    last user message is `text`; its system messages become the conversation's system prompt,
    its generation `options` the reply's (the budget reserves its max tokens).
    Idempotent on (author, organisation, client_id) like a send, and like a send without a
    look-up first: a repeat (an Idempotency-Key's client id again) is found when its
    transaction fails, on the unique client id or on a check the first one passed (a budget it
    used up), and rolls back. A request without a key has a new id and costs no look-up.

    When this server generates the reply (chat/replies/dispatch.py generation_in_this_server),
    its provider call begins once the budget cannot refuse it, while the rest is written
    (chat/replies/early.py), and stops if the transaction does not end with this request's reply.
    The reservation locks the budget's counters until the commit, and every request of the
    same user waits on them: it comes first only when a budget applies (it may refuse, and the
    call must wait for its word), else last, just before the commit.
    """
    text = message_text_clean(text)
    send_check(
        alias=alias,
        system_prompt=system_prompt,
        question=text,
        max_tokens=options.max_tokens if options else None,
    )
    early: EarlyReply | None = None

    def reserve() -> UsageLedger:
        return quota_reserve(
            user_id=author.pk,
            organisation_id=organisation.pk,
            prompt_tokens=selectors.prompt_tokens_estimate(
                conversation_id=None, text=text + "".join(m.content for m in history)
            )
            + selectors.TOKENS_PER_MESSAGE * len(history),
            max_tokens=options.max_tokens if options else None,
            prices=price_ceiling(alias=alias),
            ledger_saved=False,  # saved with its reply's id (reservation_attach): one INSERT
        )

    try:
        with transaction.atomic():
            refusable = budget_applies(user_id=author.pk, organisation_id=organisation.pk)
            reservation = reserve() if refusable else None
            early = reply_generation_begin(
                organisation_id=organisation.pk,
                owner_id=author.pk,
                alias=alias,
                options=options,
                system_prompt=system_prompt,
                history=[(prior.role, prior.content) for prior in history],
                text=text,
            )
            conversation = conversation_create(
                owner=author,
                title=title_from(text),
                organisation=organisation,
                origin=Conversation.Origin.OPENAI,
                system_prompt=system_prompt,
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
            user_message = user_message_create(
                conversation=conversation, author=author, text=text, client_id=client_id
            )
            reply = reply_create(
                conversation=conversation,
                reply_to=user_message,
                alias=alias,
                options=options,
                early=early,
            )
            reservation_attach(reservation=reservation or reserve(), message_id=reply.pk)
    except ReplyNotStarted:
        raise  # this request was saved (its reply marked): not a repeat of an earlier one
    except BaseException as exc:
        if early is not None:
            early.abort()  # nothing of this request was saved: its provider call stops
        if not isinstance(exc, IntegrityError | ParleyError):
            raise
        if earlier := send_earlier(
            author=author, organisation_id=organisation.pk, client_id=client_id
        ):
            return earlier
        raise
    return SendResult(user_message=user_message, reply=reply, created=True)
