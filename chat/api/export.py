"""A conversation as a file: JSON (the API's own shapes) or Markdown (to read or paste)."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from chat import selectors
from chat.models import Conversation, Message


def export_json(conversation: Conversation) -> dict[str, Any]:
    """What ConversationExportSerializer shapes: the conversation and its messages."""
    return {
        "conversation": conversation,
        "messages": list(selectors.message_history(conversation=conversation)),
        "exported_at": timezone.now(),
    }


def _speaker(message: Message) -> str:
    if message.role == Message.Role.USER:
        return "You"
    return f"Parley ({message.model})" if message.model else "Parley"


def export_markdown(conversation: Conversation) -> str:
    """The conversation as it stands (superseded messages left out), one section a message."""
    lines = [f"# {conversation.title}", "", f"_Exported {timezone.now():%Y-%m-%d %H:%M} UTC_", ""]
    for message in selectors.message_history(conversation=conversation):
        lines += [f"## {_speaker(message)}", ""]
        lines.append(message.content if message.content else "_(no text)_")
        if message.status in (Message.Status.FAILED, Message.Status.CANCELLED):
            why = f": {message.error_message}" if message.error_message else ""
            lines += ["", f"_({message.status}{why})_"]
        elif message.status == Message.Status.INCOMPLETE:
            lines += ["", "_(incomplete: cut short at the reply length limit)_"]
        lines.append("")
    return "\n".join(lines)
