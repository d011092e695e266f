"""Where tokens land: the socket a person or program holds. Thin: parse, check, call a service."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from accounts import limits
from accounts.ws_auth import socket_access_groups, socket_access_lost, socket_organisation_of
from chat import selectors, services
from chat.api.catalog import send_choices
from chat.cursor import ReplyCursor, Step
from chat.errors import ChatError
from chat.events import conversation_group, delta_frame, final_event, message_event
from chat.models import Conversation, Message
from chat.protocol import (
    CancelFrame,
    EditFrame,
    PingFrame,
    RegenerateFrame,
    ResumeFrame,
    SendFrame,
    SubscribeFrame,
    frame_decode,
    frame_parse,
)
from chat.replies.lifecycle import reply_cancel
from chat.services.prefetch import SendPrefetched, send_prefetch_keys, send_prefetched
from core import hops
from core.db import db_async
from core.errors import ParleyError
from core.memory import memory_return_soon
from core.observability import metrics
from core.observability.context import traced
from llm.catalog import catalog_held

logger = logging.getLogger(__name__)

# The layer notices a lost connection at its next read, a moment after the last event it
# delivered: messages added within this margin before are sent again rather than missed.
FEED_LOSS_MARGIN = timedelta(seconds=5)


Receive = Callable[[], Awaitable[dict[str, Any]]]

_HANDLER_NAMES: dict[str, str] = {}  # a message's type → its handler (`chat.delta` → chat_delta)


def handler_name(message: dict[str, Any]) -> str:
    """channels' `get_handler_name` (a new string and its checks per message), remembered per
    type: a socket dispatches ~10 messages per send it makes. The types are the server's and
    the layer's own few; the cache is bounded all the same."""
    name = _HANDLER_NAMES.get(message.get("type"))  # type: ignore[arg-type]
    if name is None:
        name = get_handler_name(message)  # raises for a malformed type
        if len(_HANDLER_NAMES) < 100:
            _HANDLER_NAMES[message["type"]] = name
    return name


async def dispatch_in_turn(
    client: Receive, layer: Receive, dispatch: Callable[[dict[str, Any]], Awaitable[None]]
) -> None:
    """Channels' `await_many_dispatch` for a socket's two sources (its client, its layer
    channel): one handler at a time, until one raises (StopConsumer at the close).

    Channels makes a new task and an `asyncio.wait` for every message, and a message takes four
    passes of the event loop to reach its handler; a socket's frames and events are most of a
    replica's loop (py-spy: ~10 % of Daphne's CPU in that machinery at 20 senders). Here the
    client's messages are taken by the calling task and the layer's by one task for the
    socket's life, each waiting its turn: one pass, and no more held per socket than channels'
    two pending receives.
    """
    turn = asyncio.Lock()

    async def relay(receive: Receive) -> None:
        while True:
            message = await receive()
            async with turn:
                await dispatch(message)

    this = asyncio.current_task()
    assert this is not None

    def layer_failed(task: asyncio.Task[None]) -> None:
        if not task.cancelled():  # only an error ends it by itself: it ends the socket too
            this.cancel()

    layer_relay = asyncio.get_running_loop().create_task(relay(layer))
    layer_relay.add_done_callback(layer_failed)
    try:
        # The layer's receive is under way before anything can end the socket: cancelling it
        # is what drops the channel (below), and a task cancelled before it ran runs nothing.
        await asyncio.sleep(0)
        await relay(client)
    except asyncio.CancelledError:
        if layer_relay.done() and not layer_relay.cancelled():
            this.uncancel()
            layer_relay.result()  # raises what ended it
        raise
    finally:
        # As channels does: a layer receive cancelled is the layer's cue to drop the channel.
        layer_relay.remove_done_callback(layer_failed)
        layer_relay.cancel()
        await asyncio.gather(layer_relay, return_exceptions=True)


class ChatConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    async def __call__(self, scope: Any, receive: Receive, send: Any) -> None:
        """Channels' own, its messages dispatched by `dispatch_in_turn`."""
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        if self.channel_layer is None:
            await super().__call__(scope, receive, send)
            return
        self.channel_name = await self.channel_layer.new_channel()
        self.channel_receive = functools.partial(self.channel_layer.receive, self.channel_name)
        self.base_send = send
        try:
            await dispatch_in_turn(receive, self.channel_receive, self.dispatch)
        except StopConsumer:
            pass

    async def send_json(self, content: Any, close: bool = False) -> None:
        """A frame to the client, straight to the server's `send`: channels' way passes through
        three coroutines more per frame (`encode_json` and its two `send`s), and a socket sends
        ~9 frames per message it sends (ack, two `message`s, deltas, done)."""
        await self.base_send({"type": "websocket.send", "text": json.dumps(content)})
        if close:
            await self.close()

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()  # refused at the handshake: HTTP 403
            return
        self.user = user
        organisation, limited = await socket_organisation_of(self.scope)
        if organisation is None:
            await self.close()  # e.g. two-factor required but not verified: HTTP 403
            return
        self.organisation = organisation  # where new conversations start; rate limits count
        # Programs (ticket, API key) reach only their credential's organisation.
        self.only_organisation = organisation if limited else None
        self.groups_joined: set[str] = set()
        self.conversations: set[int] = set()  # followed, i.e. let in by an access check
        # Those of them looked up here, as the check returned them: a send into one needs no
        # second check (one database hop). Access that ends closes the socket (below).
        self.let_in: dict[int, Conversation] = {}
        self.feed_lost_at: datetime | None = None  # the layer's outage, as this socket heard
        # Per reply this socket follows, what its client holds and whether its final frame
        # went (chat/cursor.py): a group event arriving after that (in flight during a resume
        # or an ack's catch-up) is dropped, so no reply ends twice on a socket.
        self.cursors: dict[int, ReplyCursor] = {}
        # Access that ends closes the socket (accounts/revocation.py): events to these groups,
        # and a re-check before a send at most every ACCESS_RECHECK_INTERVAL.
        groups = socket_access_groups(scope=self.scope)
        await asyncio.gather(*(self.channel_layer.group_add(g, self.channel_name) for g in groups))
        self.groups_joined.update(groups)
        self.access_checked_at = time.monotonic()
        self.closing = False
        await self.accept()
        self.socket_counted = metrics.socket_opened()

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels (4.2+) closes stale database connections before every handler: a hop to
        Daphne's one sync thread, where it queues behind other sockets' queries. Every database
        call here goes through `db_async` (core/db.py), which closes (returns to the pool) its
        connection before and after itself, so no handler needs that hop."""
        handler = getattr(self, handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        first_delta = hops.enabled() and message["type"] == "chat.delta" and not message["start"]
        if first_delta:
            hops.hop("d.delta_in", message["message"])
        await handler(message)
        if first_delta:
            hops.hop("d.delta_out", message["message"])

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """Channels' own, without its hop to Daphne's one sync thread to close stale database
        connections after every close (13 % of a replica's CPU while sockets closed, py-spy):
        `db_async` closes its own (see `dispatch`). This consumer joins no class-level groups."""
        await self.disconnect(message["code"])
        raise StopConsumer

    async def disconnect(self, code: int) -> None:
        metrics.socket_closed(getattr(self, "socket_counted", False))
        groups = getattr(self, "groups_joined", ())
        await asyncio.gather(
            *(self.channel_layer.group_discard(g, self.channel_name) for g in groups)
        )
        memory_return_soon()  # after a storm of closes, the heap goes back to the system

    @traced("ws.frame", new_request=True)
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return  # access ended: nothing more is done for this socket
        arrived = time.monotonic_ns() if hops.enabled() else 0
        frame: Any = None
        prefetching: int | None = None
        try:
            try:
                frame = frame_parse(frame_decode(text_data))
            finally:
                # Every frame counts, per user and per organisation, on all replicas (Redis),
                # malformed ones too; a frame that starts a generation counts as a send as
                # well, in the same round trip, which reads what a send reads from the cache.
                starts = isinstance(frame, SendFrame | EditFrame | RegenerateFrame)
                prefetching = self.send_prefetching(frame)
                keys = send_prefetch_keys(organisation_id=prefetching) if prefetching else []
                reads = await limits.frame_check(
                    user_id=self.user.pk,
                    organisation_id=self.organisation.pk,
                    send=starts,
                    read=keys,
                )
        except ParleyError as error:
            await self.send_error(error)
            return
        if arrived and isinstance(frame, SendFrame):
            hops.hop("d.frame_in", frame.client_id, at=arrived)
            hops.hop("d.checked", frame.client_id)
        try:
            if starts and await self.access_lost():
                return
            if isinstance(frame, SendFrame):
                prefetched = None
                if prefetching is not None and reads:
                    prefetched = send_prefetched(organisation_id=prefetching, values=reads)
                await self.on_send(frame, prefetched=prefetched)
            else:
                await self.handle(frame)
        except ParleyError as error:
            await self.send_error(error)
        except Exception:
            logger.exception("frame failed")
            await self.send_error(ChatError("internal", "Something went wrong on our side."))

    async def access_lost(self) -> bool:
        """Re-check the socket's credentials (at most every ACCESS_RECHECK_INTERVAL): the
        backstop for a missed `access.revoked` event, and for keys that expire."""
        now = time.monotonic()
        if now - self.access_checked_at < settings.ACCESS_RECHECK_INTERVAL:
            return False
        code = await db_async(socket_access_lost)(scope=self.scope, organisation=self.organisation)
        if code is None:
            self.access_checked_at = now
            return False
        await self.access_revoked({"code": code, "reason": "access ended"})
        return True

    async def access_revoked(self, event: dict[str, Any]) -> None:
        """This socket's key, session, user or membership ended (accounts/revocation.py)."""
        if not self.closing:
            self.closing = True
            await self.close(code=event["code"], reason=event["reason"])

    async def handle(self, frame: Any) -> None:
        if isinstance(frame, SendFrame):
            await self.on_send(frame)
        elif isinstance(frame, CancelFrame):
            message = await db_async(selectors.message_access)(
                user=self.user, message_id=frame.message, organisation=self.only_organisation
            )
            await db_async(reply_cancel)(message=message, by=self.user)
        elif isinstance(frame, ResumeFrame):
            await self.on_resume(frame)
        elif isinstance(frame, SubscribeFrame):
            conversation = await db_async(selectors.conversation_access)(
                user=self.user,
                conversation_id=frame.conversation,
                organisation=self.only_organisation,
            )
            await self.follow(conversation.pk, conversation=conversation)
        elif isinstance(frame, RegenerateFrame):
            message = await db_async(selectors.message_access)(
                user=self.user, message_id=frame.message, organisation=self.only_organisation
            )
            await self.follow(message.conversation_id)
            result = await db_async(services.reply_regenerate)(message=message, by=self.user)
            await self.acknowledge(result, client_id=None)
        elif isinstance(frame, EditFrame):
            message = await db_async(selectors.message_access)(
                user=self.user, message_id=frame.message, organisation=self.only_organisation
            )
            await self.follow(message.conversation_id)
            result = await db_async(services.message_edit)(
                message=message, author=self.user, text=frame.text, client_id=frame.client_id
            )
            await self.acknowledge(result, client_id=frame.client_id)
        elif isinstance(frame, PingFrame):
            await self.send_json({"type": "pong"})

    def send_prefetching(self, frame: Any) -> int | None:
        """The organisation whose cached values a send reads, if they can be read with its
        rate limits (chat/services/prefetch.py): a send into a conversation this socket was
        let into, whose organisation is known without the database."""
        if not isinstance(frame, SendFrame) or frame.conversation is None:
            return None
        let_in = self.let_in.get(frame.conversation)
        return None if let_in is None else let_in.organisation_id

    async def on_send(self, frame: SendFrame, prefetched: SendPrefetched | None = None) -> None:
        let_in = self.let_in.get(frame.conversation) if frame.conversation is not None else None
        choices = None
        if frame.conversation is not None and let_in is None:
            # The first send into this conversation from this socket: the checks (model,
            # options, access) in one hop, then it is followed before the reply can start
            # publishing, then the send's transaction in a second hop.
            alias, options, let_in = await db_async(send_prepare)(
                frame=frame,
                conversation_id=frame.conversation,
                user=self.user,
                only_organisation=self.only_organisation,
            )
            choices = (alias, options)
            await self.follow(let_in.pk, conversation=let_in)
        # Otherwise one hop: a new conversation, or one this socket was let into already (a
        # conversation deleted since is found gone by the send, not_found).
        result = await db_async(send_save)(
            frame=frame,
            author=self.user,
            conversation=let_in,
            organisation=self.organisation,
            # A session's socket is the page's; a credential's (API key, ticket) a program's.
            origin=(
                Conversation.Origin.WEBSOCKET
                if self.only_organisation is not None
                else Conversation.Origin.PAGE
            ),
            choices=choices,
            prefetched=prefetched,
        )
        # Followed before the reply existed: it cannot have streamed unheard, so its row as
        # just saved is what the client holds (no catch-up read). Otherwise catch up.
        hops.hop("d.saved", frame.client_id)
        heard_all = let_in is not None and result.created
        reply = result.reply
        # A conversation the send made comes with its reply, as saved: this socket may write
        # to it without another check.
        made = (
            reply.conversation if result.created and Message.conversation.is_cached(reply) else None
        )
        await self.follow(reply.conversation_id, conversation=made)
        await self.acknowledge(result, client_id=frame.client_id, heard_all=heard_all)

    async def acknowledge(
        self, result: services.SendResult, *, client_id: str | None, heard_all: bool = False
    ) -> None:
        await self.send_json(
            {
                "type": "ack",
                "client_id": client_id,
                "conversation": result.reply.conversation_id,
                "message": result.user_message.pk,
                "reply": result.reply.pk,
                "created": result.created,
            }
        )
        hops.hop("d.ack", client_id)
        if heard_all:
            reply = result.reply
            cursor = self.cursor(reply.pk)
            cursor.resume(after_seq=0)
            await self.send_piece(
                reply.pk, cursor.saved(content=reply.content, seq=reply.seq, final=reply.is_final)
            )
            return
        # The group may have been joined only now: catch up on anything already streamed.
        await self.catch_up(result.reply.pk, after_seq=0)

    async def on_resume(self, frame: ResumeFrame) -> None:
        metrics.RESUMES.inc()
        message = await db_async(selectors.message_access)(
            user=self.user, message_id=frame.message, organisation=self.only_organisation
        )
        if message.role != Message.Role.ASSISTANT:  # a user message has no stream to pick up
            raise ChatError("bad_frame", "Only an assistant reply can be resumed.")
        await self.follow(message.conversation_id)
        await self.catch_up(message.pk, after_seq=frame.after_seq)

    def cursor(self, message_id: int) -> ReplyCursor:
        cursor = self.cursors.get(message_id)
        if cursor is None:
            cursor = self.cursors[message_id] = ReplyCursor(
                fill_every=settings.STREAM_CHECKPOINT_INTERVAL
            )
        return cursor

    async def catch_up(self, message_id: int, *, after_seq: int) -> None:
        """Send the saved text after what the client holds (`after_seq`, or more if this socket
        sent it more), then `done` or `error` if the reply is final, even if sent before."""
        cursor = self.cursor(message_id)
        cursor.resume(after_seq=after_seq)
        await self.advance(message_id, cursor, Step(fill=True))

    async def advance(
        self, message_id: int, cursor: ReplyCursor, step: Step, event: dict[str, Any] | None = None
    ) -> None:
        """Do what the cursor says: send text, fill it from the saved reply, end the reply (with
        the final `event` if one came, else from the saved reply)."""
        message: Message | None = None
        await self.send_piece(message_id, step)
        if step.fill:
            message = await _message_get(message_id)
            step = cursor.saved(content=message.content, seq=message.seq, final=message.is_final)
            await self.send_piece(message_id, step)
        if not step.end:
            return
        if message is not None or event is None:
            await self.send_final(message or await _message_get(message_id))
        else:
            await self.send_json({**event, "type": event["type"].removeprefix("chat.")})

    async def send_piece(self, message_id: int, step: Step) -> None:
        if (piece := step.piece) is not None:
            frame = delta_frame(
                message_id=message_id, start=piece.start, seq=piece.seq, text=piece.text
            )
            await self.base_send({"type": "websocket.send", "text": frame})

    async def send_final(self, message: Message) -> None:
        event = final_event(message)
        await self.send_json({**event, "type": event["type"].removeprefix("chat.")})

    async def follow(
        self, conversation_id: int, *, conversation: Conversation | None = None
    ) -> None:
        """Hear the conversation's events; `conversation`: it passed an access check here."""
        if conversation is not None:
            self.let_in[conversation_id] = conversation
        self.conversations.add(conversation_id)
        await self.join(conversation_group(conversation_id))

    async def join(self, group: str) -> None:
        """Join the group's live events. With the layer's Redis unreachable the socket is told
        `unavailable`, as on any outage, instead of its frame failing `internal` after the
        send it carried was saved: the group is joined again when the layer is back
        (`layer_reconnected`), and what was missed meanwhile comes from the database then."""
        if group in self.groups_joined:
            return
        try:
            await self.channel_layer.group_add(group, self.channel_name)
        except Exception as error:
            logger.warning("joining %s failed: %r", group, error)
            await self.layer_disconnected({})
            return
        self.groups_joined.add(group)

    async def send_error(self, error: ParleyError, message_id: int | None = None) -> None:
        await self.send_json(
            {
                "type": "error",
                "code": error.code,
                "detail": error.detail,
                "retryable": error.retryable,
                "message": message_id,
                **error.extra,  # e.g. retry_after (rate_limited), resets_at (quota_exceeded)
            }
        )

    # --- events from the conversation's group ---------------------------------------------

    async def chat_delta(self, event: dict[str, Any]) -> None:
        message_id = event["message"]
        cursor = self.cursors.get(message_id) or self.cursor(message_id)
        # Nearly every delta continues what the client holds: the frame the producer finished
        # goes as it is (chat/events.py), with no dict, no encoding and no step per socket.
        # An event without one (published by an older release) is built here.
        frame = event.get("frame")
        if frame is not None and cursor.takes_whole(start=event["start"], seq=event["seq"]):
            await self.base_send({"type": "websocket.send", "text": frame})
            return
        # A gap (the layer is at-most-once) is filled from the saved text (chat/cursor.py).
        step = cursor.live(
            start=event["start"], seq=event["seq"], text=event["text"], now=time.monotonic()
        )
        await self.advance(message_id, cursor, step)

    async def chat_done(self, event: dict[str, Any]) -> None:
        message_id = event["message"]
        cursor = self.cursor(message_id)
        await self.advance(message_id, cursor, cursor.final(seq=event["seq"]), event)

    async def chat_error(self, event: dict[str, Any]) -> None:
        await self.chat_done(event)

    # --- the channel layer's own events (chat/layers.py) ------------------------------------

    async def layer_disconnected(self, event: dict[str, Any]) -> None:
        """Redis is unreachable: live events stop until it is back. The socket stays open."""
        self.feed_lost_at = self.feed_lost_at or timezone.now()
        await self.send_error(
            ChatError(
                "unavailable",
                "Live updates are interrupted; they resume by themselves when the connection "
                "is back.",
            )
        )

    async def layer_reconnected(self, event: dict[str, Any]) -> None:
        """Live again: send what was saved while events could not arrive, then say so.

        That is the messages added meanwhile to the conversations this socket follows (e.g.
        from another tab; a `message` the client already has is a repeat it ignores by id),
        and the text and ending of every reply it follows."""
        lost_at, self.feed_lost_at = self.feed_lost_at, None
        for conversation_id in list(self.conversations):
            await self.join(conversation_group(conversation_id))  # any it could not join
        if lost_at is not None and self.conversations:
            missed = await db_async(selectors.messages_created_since)(
                conversation_ids=self.conversations, since=lost_at - FEED_LOSS_MARGIN
            )
            for message in missed:
                if message.pk in self.cursors:
                    continue
                await self.send_json({**message_event(message), "type": "message"})
                if message.role == Message.Role.ASSISTANT:
                    # The `message` frame carried its text so far.
                    self.cursor(message.pk).resume(after_seq=message.seq)
        for message_id, cursor in list(self.cursors.items()):
            if not cursor.finished:
                await self.catch_up(message_id, after_seq=cursor.position)
        await self.send_json({"type": "live"})

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json({**event, "type": "message"})

    async def chat_superseded(self, event: dict[str, Any]) -> None:
        await self.send_json({**event, "type": "superseded"})


def send_prepare(
    *, frame: SendFrame, conversation_id: int, user: Any, only_organisation: Any
) -> tuple[str, Any, Conversation]:
    """A send's model alias and options, and the conversation it names if the user may write
    to it: every check before the send, in one database call."""
    alias, options = send_choices(frame)
    conversation = selectors.conversation_access(
        user=user, conversation_id=conversation_id, organisation=only_organisation
    )
    return alias, options, conversation


def send_save(
    *,
    frame: SendFrame,
    author: Any,
    conversation: Conversation | None,
    organisation: Any,
    origin: str,
    choices: tuple[str, Any] | None,
    prefetched: SendPrefetched | None = None,
) -> services.SendResult:
    """The send itself (its model and options checked here unless `choices` were already),
    its model checked and its reply priced and routed from one catalogue (llm/catalog.py);
    `prefetched`: what it reads from the cache, read with its rate limits."""
    hops.hop("d.tx_begin", frame.client_id)
    with catalog_held(version=prefetched.catalog_version if prefetched else None):
        alias, options = choices if choices is not None else send_choices(frame)
        result = services.message_send(
            text=frame.text, client_id=frame.client_id, author=author, conversation=conversation,
            organisation=organisation, origin=origin, alias=alias, options=options,
            prefetched=prefetched,
        )  # fmt: skip
    hops.hop("d.tx_end", frame.client_id)
    return result


@db_async
def _message_get(message_id: int) -> Message:
    return Message.objects.get(pk=message_id)
