"""Writes and side effects of the chat, one module per kind of thing written:

- `messages`: send, edit, regenerate (a user's message and the pending reply that answers it);
- `conversations`: create, rename, pin, instructions, delete;
- `completions`: an OpenAI-compatible request, recorded as a conversation and answered.

A reply's own life (claim, stream, checkpoint, cancel, heartbeat, reap, finish) is in
chat/replies/. Edges call `services.<name>`; the names below are the public ones.
"""

from __future__ import annotations

from chat.services.completions import PriorMessage, completion_request_create
from chat.services.conversations import (
    conversation_create,
    conversation_delete,
    conversation_instructions_set,
    conversation_pin,
    conversation_rename,
)
from chat.services.messages import SendResult, message_edit, message_send, reply_regenerate

__all__ = [
    "PriorMessage",
    "SendResult",
    "completion_request_create",
    "conversation_create",
    "conversation_delete",
    "conversation_instructions_set",
    "conversation_pin",
    "conversation_rename",
    "message_edit",
    "message_send",
    "reply_regenerate",
]
