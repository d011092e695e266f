"""Follow one reply over HTTP the way a socket does (chat/consumers.py): join the
conversation's channel-layer group, send the saved text first, then the live deltas, until
`done` or `error`; what of each to send is the reply cursor's call (chat/cursor.py).

Used by the SSE stream (GET /api/v1/messages/<id>/stream) and the OpenAI-compatible endpoint;
the latter follows a reply this process generates for it with `LiveFollower` (`follower_for`),
from the generator itself (chat/replies/live.py).
It works wherever the reply is generated — in this process (embedded mode, in-memory layer)
or in a Celery worker (Redis layer) — because it only listens to the group.

The layer is at-most-once, so a follower never trusts it alone:
- a delta that starts past what it holds (a drop) is filled from the saved text; if the
  checkpoint is not there yet, a later delta or the final event fills it (the cursor);
- when nothing arrives for API_STREAM_POLL_INTERVAL seconds it reads the reply from the
  database, so a dropped `done` ends the stream at the next poll instead of never;
- a read that meets a momentary database error (SQLite's "table is locked" while a generator
  writes, a PostgreSQL failover) is tried again a few times before the stream gives up;
- while the layer cannot be reached (Redis down or restarting, even when the follower
  starts) it follows from the database alone, a read every poll interval, until the layer
  answers again: an outage slows a stream down to the poll interval, it never cuts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from asgiref.sync import sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings
from django.db import OperationalError, close_old_connections, connection

from chat.cursor import NOTHING, Piece, ReplyCursor, Step
from chat.events import LAYER_RECONNECTED, conversation_group
from chat.models import Message
from chat.replies.live import ENDED, LiveListener, LiveReply, live_reply

logger = logging.getLogger(__name__)

READ_ATTEMPTS = 4
READ_BACKOFF = 0.05  # seconds, doubled each time


Delta = Piece  # reply text from `start` to `seq`


@dataclass(frozen=True)
class Final:
    """The reply is final: `message` is its saved row (status, content, usage, error)."""

    message: Message


@dataclass(frozen=True)
class Idle:
    """Nothing happened for a poll interval (time for an SSE keep-alive comment)."""


Event = Delta | Final | Idle


def connection_release() -> None:
    """Give this thread's database connection back (to the pool in production) unless a
    transaction holds it: a follower waits seconds between reads, and a stream that kept its
    connection for its whole life would empty the pool at a few dozen concurrent streams."""
    if not connection.in_atomic_block:
        close_old_connections()


def message_read_released(message_id: int) -> Message:
    """The reply's row, read with a connection that is released right after."""
    try:
        return Message.objects.get(pk=message_id)
    finally:
        connection_release()


class _Following:
    """`async with follower:` joins, and leaves at the end."""

    async def join(self) -> None:
        raise NotImplementedError

    async def leave(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.join()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.leave()


class ReplyFollower(_Following):
    def __init__(self, *, message_id: int, conversation_id: int, after_seq: int = 0) -> None:
        self.message_id = message_id
        self.group = conversation_group(conversation_id)
        self.cursor = ReplyCursor(fill_every=settings.STREAM_CHECKPOINT_INTERVAL)
        self.cursor.resume(after_seq=after_seq)
        self.layer: BaseChannelLayer | None = None
        self.channel = ""
        self.joined = False  # the group is joined: false until the layer first answers
        self.layer_lost = False  # the last try to reach the layer failed
        # The receive in flight, kept across quiet poll intervals (see _receive).
        self.receiving: asyncio.Future[dict[str, Any]] | None = None

    async def join(self) -> None:
        self.layer = get_channel_layer()
        if self.layer is not None:
            await self._join_group()

    async def _join_group(self) -> None:
        """Join the conversation's group, unless the layer cannot be reached (then later)."""
        assert self.layer is not None
        try:
            if not self.channel:
                self.channel = await self.layer.new_channel()
            await self.layer.group_add(self.group, self.channel)
        except Exception as error:
            self._lost(error)
            return
        self.joined = True

    def _lost(self, error: Exception) -> None:
        if not self.layer_lost:
            logger.warning(
                "reply %s: channel layer unreachable (%r); following it from the database",
                self.message_id,
                error,
            )
        self.layer_lost = True

    async def leave(self) -> None:
        if self.layer is not None:
            layer, self.layer = self.layer, None
            with contextlib.suppress(Exception):
                await layer.group_discard(self.group, self.channel)
            # After a failed try (Redis out of reach) the layer may hold no subscription, and
            # a receive to release it would subscribe it first.
            if self.channel and not self.layer_lost:
                await self._channel_release(layer)

    async def _channel_release(self, layer: BaseChannelLayer) -> None:
        """Unsubscribe this follower's channel. channels-redis has no call for it: it
        unsubscribes a channel when a receive waiting on it is cancelled (as when a consumer
        exits). So cancel the receive in flight, or one started for the purpose; one that
        took an event already (left in the queue) is followed by another."""
        while True:
            receiving, self.receiving = self.receiving, None
            if receiving is None:
                receiving = asyncio.ensure_future(layer.receive(self.channel))
                await asyncio.sleep(0)  # it runs up to its wait on the channel's queue
            if not receiving.done():
                receiving.cancel()
                await asyncio.gather(receiving, return_exceptions=True)
                return
            if receiving.cancelled() or receiving.exception() is not None:
                return  # the layer is out of reach: it dropped the channel itself

    async def events(self) -> AsyncGenerator[Event, None]:
        """Deltas (saved text first), then one Final; Idle while nothing happens."""
        step, quiet = Step(fill=True), False
        while True:
            if step.piece is not None:
                yield step.piece
            message: Message | None = None
            if step.fill:
                message = await self._read()
                step = self.cursor.saved(
                    content=message.content, seq=message.seq, final=message.is_final
                )
                if step.piece is not None:
                    yield step.piece
            if step.end:
                # After a final event the row is final too: it is committed before publishing.
                yield Final(message or await self._read())
                return
            if quiet:
                yield Idle()
            step, quiet = await self._next()

    async def _next(self) -> tuple[Step, bool]:
        """What the cursor makes of the next event of this reply; a quiet poll interval (or
        the layer live again after an outage) asks the database what was missed."""
        while True:
            event = await self._receive(settings.API_STREAM_POLL_INTERVAL)
            if event is None or event.get("type") == LAYER_RECONNECTED:
                return Step(fill=True), True
            if event.get("message") != self.message_id:
                continue  # another message of the same conversation
            kind = event.get("type")
            if kind == "chat.delta":
                step = self.cursor.live(
                    start=event["start"],
                    seq=event["seq"],
                    text=event["text"],
                    now=time.monotonic(),
                )
            elif kind in ("chat.done", "chat.error"):
                step = self.cursor.final(seq=event["seq"])
            else:
                continue
            if step != NOTHING:
                return step, False

    async def _read(self) -> Message:
        return await _read(self.message_id)

    async def _receive(self, timeout: float) -> dict[str, Any] | None:  # noqa: ASYNC109
        """The group's next event; None after `timeout` seconds without one, or when the
        layer cannot be reached (the caller then reads the database, as after a quiet
        interval). A channel whose subscription failed is subscribed again by the next
        `receive`, and the layer re-subscribes the groups once Redis is back.

        A quiet interval leaves the receive waiting, to be awaited again next time: cancelling
        it (asyncio.wait_for) would make channels-redis unsubscribe the channel, and the next
        receive subscribe it again, two Redis commands per idle stream per interval, and
        events published in between would find no queue. leave() releases it."""
        if self.layer is None:
            await asyncio.sleep(timeout)
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not self.joined:
            await self._join_group()
        if self.joined:
            if self.receiving is None:
                self.receiving = asyncio.ensure_future(self.layer.receive(self.channel))
            done, _ = await asyncio.wait((self.receiving,), timeout=timeout)
            if not done:
                return None
            receiving, self.receiving = self.receiving, None
            try:
                event: dict[str, Any] = receiving.result()
            except Exception as error:
                self._lost(error)
            else:
                self.layer_lost = False
                return event
        await asyncio.sleep(max(0.0, deadline - loop.time()))
        return None


class LiveFollower(_Following):
    """Follow a reply generated on this event loop from its generator (chat/replies/live.py):
    the same events as ReplyFollower's, with no layer subscription and no read of the reply
    (its text comes as it streams, its final row as the generator saved it).

    When nothing arrives for API_STREAM_POLL_INTERVAL seconds it yields Idle and reads the
    reply, as ReplyFollower does (a reply finished by the reaper ends the stream). A generation
    that ends without a final row of its own hands the reader to a ReplyFollower from where
    it is.
    """

    def __init__(self, live: LiveReply, *, conversation_id: int) -> None:
        self.live = live
        self.message_id = live.message_id
        self.conversation_id = conversation_id
        self.cursor = ReplyCursor(fill_every=settings.STREAM_CHECKPOINT_INTERVAL)
        self.listener: LiveListener | None = None

    async def join(self) -> None:
        self.listener = self.live.listen()

    async def leave(self) -> None:
        if self.listener is not None:
            self.live.unlisten(self.listener)
            self.listener = None

    async def events(self) -> AsyncGenerator[Event, None]:
        """Deltas, then one Final; Idle while nothing happens."""
        assert self.listener is not None, "join() first"
        listener, cursor = self.listener, self.cursor
        while True:
            try:
                event = listener.get_nowait()
                if event is None:  # no timer for what is already here
                    async with asyncio.timeout(settings.API_STREAM_POLL_INTERVAL):
                        event = await listener.get()
            except TimeoutError:
                yield Idle()
                message = await _read(self.message_id)
                if message.is_final:
                    step = cursor.saved(content=message.content, seq=message.seq, final=True)
                    if step.piece is not None:
                        yield step.piece
                    yield Final(message)
                    return
                continue
            if event is ENDED:
                break
            assert isinstance(event, Piece)
            step = cursor.live(
                start=event.start, seq=event.seq, text=event.text, now=time.monotonic()
            )
            if step.piece is not None:
                yield step.piece
        final = self.live.final
        if final is not None and final.is_final:
            step = cursor.saved(content=final.content, seq=final.seq, final=True)
            if step.piece is not None:
                yield step.piece
            yield Final(final)
            return
        # Ended with no final row of its own (the reaper's, or a crash): the database says.
        async with ReplyFollower(
            message_id=self.message_id,
            conversation_id=self.conversation_id,
            after_seq=cursor.position,
        ) as follower:
            async with contextlib.aclosing(follower.events()) as events:
                async for item in events:
                    yield item


def follower_for(*, message_id: int, conversation_id: int) -> LiveFollower | ReplyFollower:
    """A LiveFollower if this event loop generates the reply now, else a ReplyFollower."""
    live = live_reply(message_id)
    if live is not None:
        return LiveFollower(live, conversation_id=conversation_id)
    return ReplyFollower(message_id=message_id, conversation_id=conversation_id)


async def _read(message_id: int) -> Message:
    for attempt in range(READ_ATTEMPTS):
        try:
            return await sync_to_async(message_read_released)(message_id)
        except OperationalError:
            if attempt == READ_ATTEMPTS - 1:
                raise
            logger.warning("reply %s unreadable; trying again", message_id)
            await asyncio.sleep(READ_BACKOFF * 2**attempt)
    raise AssertionError("unreachable")
