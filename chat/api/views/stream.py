"""/api/v1/messages/<id>/stream: a reply's text as server-sent events, with the same seq
numbers as the WebSocket, resumable with `Last-Event-ID`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import renderers
from rest_framework.request import Request

from chat.api.follow import Delta, Final, Idle, ReplyFollower
from chat.api.views.base import ApiView, errors
from chat.errors import ChatError
from chat.events import final_event
from chat.models import Message


class EventStreamRenderer(renderers.BaseRenderer):
    """Lets `Accept: text/event-stream` (what EventSource sends) through negotiation; errors
    before the stream starts are one `error` event."""

    media_type = "text/event-stream"
    format = "sse"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        return sse_event("error", data).encode()


def sse_event(event: str, data: Any, *, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def after_seq_from(request: Request) -> int:
    """`Last-Event-ID` (what EventSource sends on reconnecting), else `?after_seq=`; each one
    present must be an integer ≥ 0."""
    header = request.headers.get("Last-Event-ID")
    query = request.query_params.get("after_seq")
    values = []
    for raw in (header, query):
        if raw is None:
            continue
        try:
            value = int(raw.strip())
        except ValueError:
            value = -1
        if value < 0:
            raise ChatError("bad_frame", "Last-Event-ID / after_seq must be an integer ≥ 0.")
        values.append(value)
    return values[0] if values else 0


async def reply_events(message: Message, after_seq: int) -> AsyncIterator[str]:
    """The SSE body: saved text after `after_seq`, the live tail, then `done` or `error`."""
    async with ReplyFollower(
        message_id=message.pk, conversation_id=message.conversation_id, after_seq=after_seq
    ) as follower:
        yield "retry: 2000\n\n"
        async for item in follower.events():
            if isinstance(item, Delta):
                delta = {
                    "message": message.pk,
                    "start": item.start,
                    "seq": item.seq,
                    "text": item.text,
                }
                yield sse_event("delta", delta, event_id=item.seq)
            elif isinstance(item, Idle):
                yield ": keep-alive\n\n"
            elif isinstance(item, Final):
                final = item.message
                body = final_event(final)
                kind = body.pop("type").removeprefix("chat.")  # done | error
                yield sse_event(kind, body, event_id=final.seq)
                return


# One event of the stream (what an SSE parser yields); `data` is JSON text.
SSE_EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["delta", "done", "error"]},
        "id": {"type": "string", "description": "The seq the text reaches."},
        "data": {"type": "string", "description": "JSON: a delta, or the final done/error."},
    },
    "required": ["event", "data"],
}


class MessageStreamApi(ApiView):
    renderer_classes = [renderers.JSONRenderer, EventStreamRenderer]

    @extend_schema(
        operation_id="message_stream",
        tags=["messages"],
        parameters=[
            OpenApiParameter(
                "Last-Event-ID",
                type=int,
                location=OpenApiParameter.HEADER,
                required=False,
                description="Resume after this seq (sent by EventSource when it reconnects).",
            ),
            OpenApiParameter(
                "after_seq",
                type=int,
                required=False,
                description="Resume after this seq (for clients that cannot set headers).",
            ),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                SSE_EVENT_SCHEMA,
                description="Server-sent events: `delta` (id = seq), then `done` or `error`.",
            ),
            **errors(400, 404, 409),
        },
    )
    def get(self, request: Request, message_id: int) -> StreamingHttpResponse:
        """A reply's text as server-sent events, with the same seq numbers as the WebSocket.

        Each `delta` event has `id: <seq>` and data {message, start, seq, text}; the stream
        ends with one `done` or `error` event (the socket's frames without `type`). Reconnect
        with `Last-Event-ID` to get only what you miss. Close the stream on `done`/`error`."""
        message = self.message(message_id)
        if message.role != Message.Role.ASSISTANT:
            raise ChatError("conflict", "Only an assistant reply can be streamed.")
        response = StreamingHttpResponse(
            reply_events(message, after_seq_from(request)),
            content_type="text/event-stream; charset=utf-8",
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: pass it through unbuffered
        return response
