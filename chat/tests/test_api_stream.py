"""GET /api/v1/messages/<id>/stream: a reply as server-sent events, resumable by seq.

Requests go through the full ASGI application (as Daphne serves it), so generation runs on the
test's event loop and publishes to the in-memory channel layer, as in embedded mode.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.layers import get_channel_layer

from chat.api.follow import Delta, Final, Idle, ReplyFollower
from chat.events import conversation_group
from chat.models import Message
from chat.tests.conftest import streaming_reply
from conftest import wait_for
from llm.providers.simulated import simulated_reply

pytestmark = pytest.mark.django_db(transaction=True)


def parse_sse(text: str) -> list[dict]:
    """Events as dicts {event, id, data}; comments and `retry` lines are left out."""
    events = []
    for block in text.split("\n\n"):
        fields: dict = {}
        for line in block.splitlines():
            if line.startswith(":") or line.startswith("retry:"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if "event" in fields:
            fields["data"] = json.loads(fields["data"])
            events.append(fields)
    return events


async def post_message(http, text: str) -> dict:
    conversation = (await http.post("/api/v1/conversations", json={"title": "SSE"})).json()
    response = await http.post(
        f"/api/v1/conversations/{conversation['id']}/messages", json={"text": text}
    )
    assert response.status_code == 201
    return response.json()


async def final_reply(reply_id: int) -> Message:
    async def final():
        message = await Message.objects.aget(pk=reply_id)
        return message if message.is_final else None

    return await wait_for(final)


def check_contiguous(deltas: list[dict], start: int) -> None:
    position = start
    for delta in deltas:
        assert delta["data"]["start"] == position
        assert delta["id"] == str(delta["data"]["seq"])
        position = delta["data"]["seq"]


async def test_it_streams_a_reply_as_events_then_done(http):
    sent = await post_message(http, "Hello there")
    response = await http.get(sent["stream_url"], headers={"Accept": "text/event-stream"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-accel-buffering"] == "no"
    events = parse_sse(response.text)
    deltas = [e for e in events if e["event"] == "delta"]
    check_contiguous(deltas, 0)
    text = "".join(d["data"]["text"] for d in deltas)
    assert text == simulated_reply("Hello there")
    done = events[-1]
    assert done["event"] == "done" and done["data"]["status"] == "complete"
    assert done["data"]["seq"] == len(text) and done["id"] == str(len(text))
    assert done["data"]["usage"]["completion_tokens"] > 0


async def test_it_resumes_after_last_event_id(http):
    sent = await post_message(http, "Resume me")
    reply = await final_reply(sent["reply"])
    response = await http.get(sent["stream_url"], headers={"Last-Event-ID": "17"})
    events = parse_sse(response.text)
    deltas = [e for e in events if e["event"] == "delta"]
    check_contiguous(deltas, 17)
    assert "".join(d["data"]["text"] for d in deltas) == reply.content[17:]
    assert events[-1]["event"] == "done"
    # Holding everything already: only `done`.
    caught_up = parse_sse(
        (await http.get(sent["stream_url"], params={"after_seq": reply.seq})).text
    )
    assert [e["event"] for e in caught_up] == ["done"]


async def test_it_resumes_mid_reply_with_saved_text_then_the_live_tail(http, settings):
    settings.SIMULATED_TOKENS_PER_SECOND = 60.0
    settings.STREAM_CHECKPOINT_INTERVAL = 0.05
    sent = await post_message(http, "A reply long enough to join in the middle")

    async def partly_saved():
        message = await Message.objects.aget(pk=sent["reply"])
        return message if message.seq >= 30 and not message.is_final else None

    partial = await wait_for(partly_saved)
    after = partial.seq - 10  # the client holds less than is saved
    response = await http.get(sent["stream_url"], headers={"Last-Event-ID": str(after)})
    events = parse_sse(response.text)
    deltas = [e for e in events if e["event"] == "delta"]
    check_contiguous(deltas, after)
    assert len(deltas) > 2  # saved text, then live deltas
    full = simulated_reply("A reply long enough to join in the middle")
    assert "".join(d["data"]["text"] for d in deltas) == full[after:]
    assert events[-1]["event"] == "done" and events[-1]["data"]["seq"] == len(full)


async def test_a_failed_reply_ends_with_an_error_event(http, owner):
    sent = await post_message(http, "Fail me")
    reply = await final_reply(sent["reply"])
    await Message.objects.filter(pk=reply.pk).aupdate(
        status="failed", error_code="interrupted", error_message="It stopped."
    )
    events = parse_sse((await http.get(sent["stream_url"])).text)
    error = events[-1]
    assert error["event"] == "error"
    assert error["data"]["code"] == "interrupted" and error["data"]["retryable"] is True


async def test_stream_errors_are_json_even_for_an_event_stream_client(http):
    response = await http.get(
        "/api/v1/messages/999999/stream", headers={"Accept": "text/event-stream"}
    )
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "not_found"
    bad = await http.get("/api/v1/messages/1/stream", headers={"Last-Event-ID": "x"})
    assert bad.status_code in (400, 404)


async def test_a_user_message_cannot_be_streamed(http):
    sent = await post_message(http, "Mine")
    response = await http.get(f"/api/v1/messages/{sent['message']}/stream")
    assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"


# --- the follower: drops, duplicates, a lost `done` -----------------------------------------


async def test_the_follower_fills_a_dropped_delta_from_saved_text(owner):
    reply = await streaming_reply(owner, "Hello ")
    layer = get_channel_layer()
    group = conversation_group(reply.conversation_id)
    received: list = []
    async with ReplyFollower(message_id=reply.pk, conversation_id=reply.conversation_id) as f:
        events = f.events()
        received.append(await events.__anext__())  # the saved text
        # A duplicate of what is held, then a delta after a gap (6..11 was dropped).
        await layer.group_send(
            group,
            {"type": "chat.delta", "message": reply.pk, "start": 0, "seq": 6, "text": "Hello "},
        )
        await Message.objects.filter(pk=reply.pk).aupdate(content="Hello world, ", seq=13)
        await layer.group_send(
            group,
            {"type": "chat.delta", "message": reply.pk, "start": 13, "seq": 19, "text": "again!"},
        )
        # The gap from the saved text, joined to the delta after it.
        received.append(await events.__anext__())
        await Message.objects.filter(pk=reply.pk).aupdate(
            content="Hello world, again!", seq=19, status="complete"
        )
        await layer.group_send(group, {"type": "chat.done", "message": reply.pk, "seq": 19})
        received.append(await events.__anext__())
    assert received[:2] == [
        Delta(start=0, seq=6, text="Hello "),
        Delta(start=6, seq=19, text="world, again!"),
    ]
    assert isinstance(received[2], Final) and received[2].message.status == "complete"


async def test_the_follower_ends_when_done_was_dropped(owner, settings):
    settings.API_STREAM_POLL_INTERVAL = 0.05
    reply = await streaming_reply(owner, "Partial")
    async with ReplyFollower(message_id=reply.pk, conversation_id=reply.conversation_id) as f:
        events = f.events()
        assert await events.__anext__() == Delta(start=0, seq=7, text="Partial")
        assert isinstance(await events.__anext__(), Idle)
        # The reply finishes, but its `done` never reaches this replica.
        await Message.objects.filter(pk=reply.pk).aupdate(
            content="Partial and more", seq=16, status="complete"
        )
        rest = [e async for e in events if not isinstance(e, Idle)]
    assert rest[0] == Delta(start=7, seq=16, text=" and more")
    assert isinstance(rest[1], Final)


async def test_the_follower_ignores_other_messages_of_the_conversation(owner):
    reply = await streaming_reply(owner, "")
    layer = get_channel_layer()
    group = conversation_group(reply.conversation_id)
    async with ReplyFollower(message_id=reply.pk, conversation_id=reply.conversation_id) as f:
        events = f.events()
        await layer.group_send(
            group,
            {"type": "chat.delta", "message": reply.pk + 1, "start": 0, "seq": 3, "text": "no!"},
        )
        await layer.group_send(group, {"type": "chat.message", "message": reply.pk + 1})
        await layer.group_send(
            group, {"type": "chat.delta", "message": reply.pk, "start": 0, "seq": 3, "text": "yes"}
        )
        assert await asyncio.wait_for(events.__anext__(), 5) == Delta(start=0, seq=3, text="yes")
        await events.aclose()


async def test_the_follower_reads_again_after_a_momentary_database_error(owner, monkeypatch):
    from django.db import OperationalError

    reply = await streaming_reply(owner, "Saved")
    real_aget = Message.objects.aget
    failures = iter([True])

    async def flaky_aget(**kwargs):
        if next(failures, False):
            raise OperationalError("database table is locked: chat_message")
        return await real_aget(**kwargs)

    monkeypatch.setattr(Message.objects, "aget", flaky_aget)
    async with ReplyFollower(message_id=reply.pk, conversation_id=reply.conversation_id) as f:
        events = f.events()
        assert await events.__anext__() == Delta(start=0, seq=5, text="Saved")
        await events.aclose()
