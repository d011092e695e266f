"""Helpers for the cache tests: ask a question and run its reply to the end."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from chat import services
from chat.events import conversation_group
from chat.models import Message
from chat.replies.stream import reply_stream


@dataclass
class Asked:
    message: Message
    events: list[dict] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(e["text"] for e in self.events if e["type"] == "chat.delta")

    @property
    def done(self) -> dict:
        return next(e for e in self.events if e["type"] == "chat.done")

    @property
    def cache(self) -> str | None:
        return self.message.routing.get("cache")


async def _drain(layer, channel) -> list[dict]:
    events = []
    while True:
        try:
            events.append(await asyncio.wait_for(layer.receive(channel), 0.05))
        except TimeoutError:
            return events


_sent = itertools.count()


async def ask(user, text, *, conversation=None, organisation=None) -> Asked:
    """Send `text` as `user` and run its reply to the end, recording the group's events.
    (The test must stop dispatch_generation from starting it too.)"""
    result = await sync_to_async(services.message_send)(
        author=user,
        conversation=conversation,
        text=text,
        client_id=f"cache-{next(_sent)}",
        organisation=organisation,
    )
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(conversation_group(result.reply.conversation_id), channel)
    async with asyncio.timeout(30):
        await reply_stream(message_id=result.reply.pk)
    events = await _drain(layer, channel)
    return Asked(await Message.objects.aget(pk=result.reply.pk), events)
