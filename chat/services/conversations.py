"""Writes of conversations: create, rename, pin, instructions, delete."""

from __future__ import annotations

from dataclasses import replace

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import Organisation, User
from accounts.quotas import quota_settle
from accounts.services import organisation_personal_ensure
from chat.errors import ChatError
from chat.models import Conversation, Message
from chat.replies.accounting import reply_outcome
from chat.replies.lifecycle import reply_cancel

TITLE_MAX_CHARS = 200  # Conversation.title's column, and page.md's rename limit


def conversation_create(
    *,
    owner: User,
    title: str = "New chat",
    organisation: Organisation | None = None,
    origin: str = Conversation.Origin.PAGE,
    system_prompt: str = "",
) -> Conversation:
    """A conversation in `organisation` (the owner's personal one if not given), marked with
    where it was started (the page lists people's own chats apart from programs')."""
    return Conversation.objects.create(
        owner=owner,
        organisation=organisation or organisation_personal_ensure(user=owner),
        title=title[:200] or "New chat",
        origin=origin,
        system_prompt=system_prompt,
    )


def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    """Give a conversation a new title: 1-200 characters once whitespace is collapsed (a longer
    one is refused, not cut, so no part of what was typed is lost silently)."""
    title = " ".join(title.split())
    if not title:
        raise ChatError("bad_frame", "A title must have some text.")
    if len(title) > TITLE_MAX_CHARS:
        raise ChatError("bad_frame", f"A title is at most {TITLE_MAX_CHARS} characters.")
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
                    # The ledger keeps what it was: the conversation takes the message along.
                    outcome=replace(
                        reply_outcome(reply), status=Message.Status.CANCELLED, error_code="deleted"
                    ),
                )
        conversation.delete()


def conversation_pin(*, conversation: Conversation, pinned: bool) -> Conversation:
    """Pin a conversation to the top of its owner's list, or unpin it; not a use of the chat,
    so its place among the unpinned (updated_at) stays."""
    if not Conversation.objects.filter(pk=conversation.pk).update(pinned=pinned):
        raise ChatError("not_found", "No such conversation.")
    conversation.pinned = pinned
    return conversation


def conversation_instructions_set(
    *, conversation: Conversation, system_prompt: str
) -> Conversation:
    """The conversation's own instructions for the model (chat/replies/prompt.py), from the
    next reply on."""
    if len(system_prompt) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise ChatError(
            "bad_frame",
            f"A system prompt is at most {settings.CHAT_MAX_MESSAGE_CHARS} characters.",
        )
    if not Conversation.objects.filter(pk=conversation.pk).update(
        system_prompt=system_prompt.strip()
    ):
        raise ChatError("not_found", "No such conversation.")
    conversation.system_prompt = system_prompt.strip()
    return conversation
