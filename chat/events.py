"""Every event that reaches a conversation's sockets, its shape, and the one way to publish it.

An event's `type` names the consumer handler that receives it (`chat.delta` → `chat_delta`,
chat/consumers.py); the socket forwards it as the frame named after the dot (docs/protocol.md).
Publishing from a transaction waits for the commit, so a socket never hears of a row that a
rollback then removes.
"""

from __future__ import annotations

import asyncio
import logging
from json.encoder import encode_basestring_ascii
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from chat.journal import Journal, journal_entry, journal_key
from chat.models import Message
from core.db import caller_loop
from core.errors import ParleyError

logger = logging.getLogger(__name__)

# What the channel layer (chat/layers.py) tells every socket of a process about its Redis.
LAYER_DISCONNECTED = "layer.disconnected"
LAYER_RECONNECTED = "layer.reconnected"


def conversation_group(conversation_id: int) -> str:
    return f"conversation.{conversation_id}"


# --- the shapes ------------------------------------------------------------------------------


def message_event(message: Message) -> dict[str, Any]:
    """A message was added (the other sockets on the conversation learn of it)."""
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


def superseded_event(*, conversation_id: int, message_ids: list[int]) -> dict[str, Any]:
    """Messages replaced by an edit or a regenerate: kept, hidden from pages and prompts."""
    return {"type": "chat.superseded", "conversation": conversation_id, "messages": message_ids}


def delta_event(*, message_id: int, start: int, seq: int, text: str) -> dict[str, Any]:
    """A reply's text from `start` to `seq` (code points, docs/protocol.md), with its `delta`
    frame finished: built once here by the producer, a socket that takes the delta whole sends
    it as it is (chat/consumers.py), instead of every socket building and encoding it again."""
    return {
        "type": "chat.delta",
        "message": message_id,
        "start": start,
        "seq": seq,
        "text": text,
        "frame": delta_frame(message_id=message_id, start=start, seq=seq, text=text),
    }


def delta_frame(*, message_id: int, start: int, seq: int, text: str) -> str:
    """The `delta` frame as JSON text, the same text `json.dumps` makes of its dict; the numbers
    are ints, and the text is encoded by the function `json.dumps` uses for a string."""
    return (
        f'{{"type": "delta", "message": {message_id:d}, "start": {start:d}, "seq": {seq:d}, '
        f'"text": {encode_basestring_ascii(text)}}}'
    )


# A final reply's status as a finish reason (OpenAI's words, and `cancelled`).
FINISH_REASONS: dict[str, str] = {
    Message.Status.COMPLETE: "stop",
    Message.Status.INCOMPLETE: "length",
    Message.Status.CANCELLED: "cancelled",
}


def done_event(message: Message) -> dict[str, Any]:
    """A reply ended (complete, cut by the token cap, or cancelled): how, its usage, cost,
    provider and timings."""
    return {
        "type": "chat.done",
        "message": message.pk,
        "seq": message.seq,
        "status": message.status,
        "finish_reason": FINISH_REASONS.get(message.status),
        "usage": {
            "prompt_tokens": message.prompt_tokens,
            "completion_tokens": message.completion_tokens,
            "estimated": message.tokens_estimated,
        },
        "cost": format(message.cost, "f") if message.cost is not None else None,
        "provider": message.provider,
        "model": message.model,
        "timings": {"first_token_ms": message.first_token_ms, "total_ms": message.total_ms},
        "cached": bool((message.routing or {}).get("cache")),  # answered by the reply cache
        # Document passages the reply was given (docs/documents.md): n, document, name, page,
        # chunk, url.
        "citations": message.citations or [],
    }


def error_event(message: Message, error: ParleyError) -> dict[str, Any]:
    """A reply failed; `seq` is the length of its text that is final (stored)."""
    return {
        "type": "chat.error",
        "code": error.code,
        "detail": error.detail,
        "retryable": error.retryable,
        "message": message.pk,
        "seq": message.seq,
    }


def final_event(message: Message) -> dict[str, Any]:
    """The `done` or `error` event of a final reply, as its row says it ended."""
    if message.status == Message.Status.FAILED:
        error = ParleyError(
            message.error_code or "internal", message.error_message or "The reply failed."
        )
        return error_event(message, error)
    return done_event(message)


# --- publishing ------------------------------------------------------------------------------


async def event_publish(conversation_id: int, event: dict[str, Any]) -> None:
    """Send an event (its `type` names the consumer handler, e.g. chat.delta) to a group.

    Where the layer keeps journals (chat/layers.py), a reply's delta is journaled in the same
    round trip and its final event deletes the journal (chat/journal.py).
    """
    layer = get_channel_layer()
    if layer is None:
        return
    group = conversation_group(conversation_id)
    ttl = settings.STREAM_JOURNAL_TTL if getattr(layer, "journals", False) else 0
    journal = _journal_of(event, ttl) if ttl else None
    if journal is None:
        await layer.group_send(group, event)
    else:
        await layer.group_send(group, event, journal=journal)


class EventQueue:
    """One producer's events to one conversation, published in order with no await each (a
    reply's deltas, chat/replies/stream.py).

    On the batching layer (chat/layers.py) each event is queued for the layer's next pipeline
    at once, so an event published later from anywhere on the same loop (the reply's final
    event) leaves after it. On other layers (in memory, core) one task sends them in turn;
    `drain` waits for it. A channel-layer outage never stops the producer: it is logged, the
    text is saved at each checkpoint and clients recover missing deltas by seq (resume).
    """

    __slots__ = ("_group", "_journal_ttl", "_layer", "_nowait", "_sending", "_waiting")

    def __init__(self, conversation_id: int) -> None:
        self._layer = get_channel_layer()
        self._group = conversation_group(conversation_id)
        # 0: no journals (another layer, or STREAM_JOURNAL_TTL=0).
        self._journal_ttl = (
            settings.STREAM_JOURNAL_TTL if getattr(self._layer, "journals", False) else 0
        )
        self._nowait = getattr(self._layer, "group_send_nowait", None)
        self._waiting: list[dict[str, Any]] = []
        self._sending: asyncio.Task[None] | None = None

    def put(self, event: dict[str, Any]) -> None:
        if self._layer is None:
            return
        if self._nowait is None:
            self._waiting.append(event)
            if self._sending is None or self._sending.done():
                self._sending = asyncio.get_running_loop().create_task(self._send_waiting())
            return
        try:
            journal = _journal_of(event, self._journal_ttl) if self._journal_ttl else None
            self._nowait(self._group, event, journal)
        except Exception:
            logger.warning("event %s not published", event.get("type"), exc_info=True)

    async def _send_waiting(self) -> None:
        while self._waiting:
            event = self._waiting.pop(0)
            try:
                await self._layer.group_send(self._group, event)
            except Exception:
                logger.warning("event %s not published", event.get("type"), exc_info=True)

    async def drain(self) -> None:
        """Wait until every event put was handed to the layer."""
        if self._sending is not None:
            await asyncio.shield(self._sending)


def _journal_of(event: dict[str, Any], ttl: int) -> Journal | None:
    """The journal write that goes with `event`, journals kept `ttl` seconds."""
    if event["type"] == "chat.delta":
        entry = journal_entry(start=event["start"], text=event["text"])
        # The expiry is set once, by the first delta: one command per delta, not two. A reply
        # that streams longer than it starts a fresh list, which its final event deletes.
        expire = ttl if event["start"] == 0 else None
        return Journal(journal_key(event["message"]), entry, expire=expire)
    if event["type"] in ("chat.done", "chat.error"):
        return Journal(journal_key(event["message"]), None)
    return None


def event_publish_on_commit(conversation_id: int, event: dict[str, Any]) -> None:
    """From sync code: publish once the current transaction commits (at once outside one).

    The row is already saved when this runs, so a channel-layer outage only costs the live
    event: it is logged, and clients recover the state by resuming.
    """

    def publish() -> None:
        # Called from a server's database thread (core/db.py): hand the publish to the server's
        # own loop, which holds the layer, and go on: the send's ack waits for no round trip.
        # Handed over in commit order, they reach the layer's batch in that order.
        if (loop := caller_loop()) is not None:
            loop.call_soon_threadsafe(_publish_soon, conversation_id, event)
            return
        try:
            async_to_sync(event_publish)(conversation_id, event)
        except Exception:
            logger.warning(
                "event %s for conversation %s not published",
                event.get("type"),
                conversation_id,
                exc_info=True,
            )

    transaction.on_commit(publish)


_publishing: set[asyncio.Task[None]] = set()  # held here: the loop keeps weak references only


def _publish_soon(conversation_id: int, event: dict[str, Any]) -> None:
    """On the server's loop: publish in a task of its own, logging a failure (as above)."""
    task = asyncio.get_running_loop().create_task(event_publish(conversation_id, event))
    _publishing.add(task)

    def done(task: asyncio.Task[None]) -> None:
        _publishing.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.warning(
                "event %s for conversation %s not published",
                event.get("type"),
                conversation_id,
                exc_info=error,
            )

    task.add_done_callback(done)
