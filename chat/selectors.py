"""Reads, each checked against who is asking."""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import User
from chat.errors import ChatError
from chat.models import Conversation, Message


def conversation_list(*, user: User) -> QuerySet[Conversation]:
    return Conversation.objects.filter(owner=user)


def conversation_access(*, user: User, conversation_id: int) -> Conversation:
    """The conversation if this user may read it; otherwise not_found (no existence leak)."""
    try:
        return Conversation.objects.get(pk=conversation_id, owner=user)
    except Conversation.DoesNotExist:
        raise ChatError("not_found", "No such conversation.") from None


def message_access(*, user: User, message_id: int) -> Message:
    try:
        return Message.objects.select_related("conversation").get(
            pk=message_id, conversation__owner=user
        )
    except Message.DoesNotExist:
        raise ChatError("not_found", "No such message.") from None


def message_history(*, conversation: Conversation) -> QuerySet[Message]:
    """The conversation as it stands: superseded messages (regenerated, edited) left out."""
    return conversation.messages.filter(superseded=False)
