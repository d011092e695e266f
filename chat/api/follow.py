"""Follow one reply over HTTP the way a socket does (chat/consumers.py): join the
conversation's channel-layer group, send the saved text first, then the live deltas trimmed
by seq, until `done` or `error`.

Used by the SSE stream (GET /api/v1/messages/<id>/stream) and the OpenAI-compatible endpoint.
It works wherever the reply is generated — in this process (embedded mode, in-memory layer)
or in a Celery worker (Redis layer) — because it only listens to the group.

The layer is at-most-once, so a follower never trusts it alone:
- a delta that starts past what it holds (a drop) is filled from the saved text; if the
  checkpoint is not there yet, a later delta or the final event fills it;
- when nothing arrives for API_STREAM_POLL_INTERVAL seconds it reads the reply from the
  database, so a dropped `done` ends the stream at the next poll instead of never;
- a read that meets a momentary database error (SQLite's "table is locked" while a generator
  writes, a PostgreSQL failover) is tried again a few times before the stream gives up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings
from django.db import OperationalError

from chat.events import LAYER_RECONNECTED, conversation_group
from chat.models import Message
from chat.protocol import delta_trim

logger = logging.getLogger(__name__)

READ_ATTEMPTS = 4
READ_BACKOFF = 0.05  # seconds, doubled each time


@dataclass(frozen=True)
class Delta:
    start: int
    seq: int
    text: str


@dataclass(frozen=True)
class Final:
    """The reply is final: `message` is its saved row (status, content, usage, error)."""

    message: Message


@dataclass(frozen=True)
class Idle:
    """Nothing happened for a poll interval (time for an SSE keep-alive comment)."""


Event = Delta | Final | Idle


class ReplyFollower:
    def __init__(self, *, message_id: int, conversation_id: int, after_seq: int = 0) -> None:
        self.message_id = message_id
        self.group = conversation_group(conversation_id)
        self.held = after_seq
        self.layer: BaseChannelLayer | None = None
        self.channel = ""

    async def __aenter__(self) -> ReplyFollower:
        await self.join()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.leave()

    async def join(self) -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        self.layer = layer
        self.channel = await layer.new_channel()
        await layer.group_add(self.group, self.channel)

    async def leave(self) -> None:
        if self.layer is not None:
            layer, self.layer = self.layer, None
            with contextlib.suppress(Exception):
                await layer.group_discard(self.group, self.channel)

    async def events(self) -> AsyncGenerator[Event, None]:
        """Deltas (saved text first), then one Final; Idle while nothing happens."""
        message = await self._read()
        if (delta := self._from_saved(message)) is not None:
            yield delta
        if message.is_final:
            yield Final(message)
            return
        poll = settings.API_STREAM_POLL_INTERVAL
        while True:
            event = await self._receive(poll)
            if event is None or event.get("type") == LAYER_RECONNECTED:
                # Quiet, or live again after an outage: the database says what was missed.
                message = await self._read()
                if (delta := self._from_saved(message)) is not None:
                    yield delta
                if message.is_final:
                    yield Final(message)
                    return
                yield Idle()
                continue
            if event.get("message") != self.message_id:
                continue  # another message of the same conversation
            kind = event.get("type")
            if kind == "chat.delta":
                if event["start"] > self.held:
                    # A drop: fill the gap from the saved text (if it is saved yet).
                    message = await self._read()
                    if (delta := self._from_saved(message)) is not None:
                        yield delta
                text = delta_trim(
                    held=self.held, start=event["start"], seq=event["seq"], text=event["text"]
                )
                if text is not None:
                    start, self.held = self.held, event["seq"]
                    yield Delta(start=start, seq=event["seq"], text=text)
            elif kind in ("chat.done", "chat.error"):
                # The final row is committed before its event is published.
                message = await self._read()
                if (delta := self._from_saved(message)) is not None:
                    yield delta
                yield Final(message)
                return

    async def _read(self) -> Message:
        for attempt in range(READ_ATTEMPTS):
            try:
                return await Message.objects.aget(pk=self.message_id)
            except OperationalError:
                if attempt == READ_ATTEMPTS - 1:
                    raise
                logger.warning("reply %s unreadable; trying again", self.message_id)
                await asyncio.sleep(READ_BACKOFF * 2**attempt)
        raise AssertionError("unreachable")

    async def _receive(self, timeout: float) -> dict[str, Any] | None:  # noqa: ASYNC109
        if self.layer is None:
            await asyncio.sleep(timeout)
            return None
        try:
            event: dict[str, Any] = await asyncio.wait_for(
                self.layer.receive(self.channel), timeout
            )
        except TimeoutError:
            return None
        return event

    def _from_saved(self, message: Message) -> Delta | None:
        """What the database holds beyond what this follower has sent."""
        if message.seq <= self.held:
            return None
        start, self.held = self.held, message.seq
        return Delta(start=start, seq=message.seq, text=message.content[start : message.seq])
