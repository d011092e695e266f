"""The socket as a client sees it, through the full ASGI app (origin check, auth, routing)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from asgiref.sync import sync_to_async
from channels.exceptions import StopConsumer
from channels.testing import WebsocketCommunicator
from django.test import Client

from accounts.services import api_key_create
from chat.consumers import dispatch_in_turn
from chat.models import Conversation, Message
from chat.tests.conftest import streaming_reply
from core.memory import SocketQueue
from llm.providers.simulated import simulated_reply
from project.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1:8000")


async def connect_as(user, *, origin=ORIGIN) -> WebsocketCommunicator:
    client = Client()
    await sync_to_async(client.force_login)(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    headers = [(b"cookie", cookie), (b"host", b"127.0.0.1:8000")]
    if origin:
        headers.append(origin)
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def receive_until(communicator, kind: str, timeout: float = 10.0) -> list[dict]:
    frames = []
    while True:
        frame = await communicator.receive_json_from(timeout=timeout)
        frames.append(frame)
        if frame["type"] == kind:
            return frames


def reply_frames(frames: list[dict]) -> str:
    return "".join(f["text"] for f in frames if f["type"] == "delta")


async def test_it_streams_a_reply_then_done(owner):
    ws = await connect_as(owner)
    await ws.send_json_to(
        {"type": "send", "conversation": None, "text": "Hello", "client_id": "c1"}
    )
    frames = await receive_until(ws, "done")
    ack = next(f for f in frames if f["type"] == "ack")
    done = frames[-1]
    text = reply_frames(frames)
    assert text == simulated_reply("Hello")
    assert done["status"] == "complete" and done["seq"] == len(text)
    assert done["usage"]["completion_tokens"] > 0 and done["provider"] == "simulated"
    reply = await Message.objects.aget(pk=ack["reply"])
    assert reply.status == Message.Status.COMPLETE and reply.content == text
    await ws.disconnect()


async def test_deltas_are_contiguous_and_coalesced(owner, settings):
    settings.SIMULATED_TOKENS_PER_SECOND = 400.0
    settings.STREAM_FLUSH_INTERVAL = 0.05
    ws = await connect_as(owner)
    await ws.send_json_to(
        {"type": "send", "conversation": None, "text": "Hi there", "client_id": "c2"}
    )
    frames = await receive_until(ws, "done")
    deltas = [f for f in frames if f["type"] == "delta"]
    position = 0
    for delta in deltas:
        assert delta["start"] == position
        position = delta["seq"]
    tokens = simulated_reply("Hi there").split()
    assert 1 < len(deltas) < len(tokens)  # coalesced: fewer layer messages than tokens
    await ws.disconnect()


async def test_unauthenticated_socket_is_refused():
    communicator = WebsocketCommunicator(
        application, "/ws/chat/", headers=[(b"host", b"127.0.0.1:8000"), ORIGIN]
    )
    connected, _ = await communicator.connect()
    assert not connected


async def test_foreign_origin_is_refused(owner):
    client = Client()
    await sync_to_async(client.force_login)(owner)
    headers = [
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
        (b"host", b"127.0.0.1:8000"),
        (b"origin", b"https://evil.example"),
    ]
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect()
    assert not connected


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        '{"type": "teleport"}',
        '{"type": "send", "text": "x"}',
        '{"type": "resume", "message": "7"}',
        '{"type": "resume", "message": 7}',
        '{"type": "resume", "message": 7, "after_seq": -1}',
        '{"type": "resume", "message": 7, "after_seq": "0"}',
        '{"type": "send", "text": 5, "client_id": "a"}',
    ],
)
async def test_malformed_frames_get_an_error_and_the_socket_stays_open(owner, raw):
    ws = await connect_as(owner)
    await ws.send_to(text_data=raw)
    frame = await ws.receive_json_from()
    assert frame["type"] == "error" and frame["code"] == "bad_frame" and frame["detail"]
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from() == {"type": "pong"}
    await ws.disconnect()


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 100_000 + "]" * 100_000,  # past the JSON parser's recursion limit
        '{"type": "ping", "x": ' + "[" * 40 + "]" * 40 + "}",
        '{"type": "send", "conversation": null, "text": "a\\u0000b", "client_id": "nul"}',
        '{"type": "send", "conversation": null, "text": "hi", "client_id": "\\ud800"}',
        '{"type": "send", "conversation": null, "text": "\\udfff", "client_id": "lone"}',
        '{"type": "ping", "pad": "' + "x" * (256 * 1024) + '"}',
    ],
    ids=["deep", "nested-field", "nul-text", "surrogate-client-id", "surrogate-text", "huge"],
)
async def test_hostile_frames_are_bad_frames_and_the_socket_stays_open(owner, raw, caplog):
    ws = await connect_as(owner)
    await ws.send_to(text_data=raw)
    frame = await ws.receive_json_from()
    assert frame["type"] == "error" and frame["code"] == "bad_frame", frame
    assert frame["retryable"] is False and frame["message"] is None
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from() == {"type": "pong"}
    await ws.disconnect()
    assert await Message.objects.acount() == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_empty_message_is_refused_and_nothing_is_saved(owner):
    ws = await connect_as(owner)
    await ws.send_json_to({"type": "send", "conversation": None, "text": "   ", "client_id": "e"})
    frame = await ws.receive_json_from()
    assert frame["code"] == "bad_frame"
    assert await Message.objects.acount() == 0
    await ws.disconnect()


async def test_outsider_cannot_send_into_or_resume_a_conversation(owner, outsider):
    ws_owner = await connect_as(owner)
    await ws_owner.send_json_to(
        {"type": "send", "conversation": None, "text": "mine", "client_id": "o1"}
    )
    frames = await receive_until(ws_owner, "done")
    ack = frames[0]
    ws_out = await connect_as(outsider)
    await ws_out.send_json_to(
        {"type": "send", "conversation": ack["conversation"], "text": "hi", "client_id": "x1"}
    )
    assert (await ws_out.receive_json_from())["code"] == "not_found"
    await ws_out.send_json_to({"type": "resume", "message": ack["reply"], "after_seq": 0})
    assert (await ws_out.receive_json_from())["code"] == "not_found"
    await ws_out.send_json_to({"type": "cancel", "message": ack["reply"]})
    assert (await ws_out.receive_json_from())["code"] == "not_found"
    assert await Message.objects.filter(conversation_id=ack["conversation"]).acount() == 2
    await ws_owner.disconnect()
    await ws_out.disconnect()


async def test_a_repeated_send_returns_the_same_ids_and_generates_once(owner):
    ws = await connect_as(owner)
    frame = {"type": "send", "conversation": None, "text": "Once", "client_id": "same"}
    await ws.send_json_to(frame)
    first = await receive_until(ws, "done")
    await ws.send_json_to(frame)
    second = await receive_until(ws, "done")
    assert first[0]["reply"] == second[0]["reply"] and second[0]["created"] is False
    assert await Conversation.objects.acount() == 1
    assert await Message.objects.acount() == 2
    await ws.disconnect()


async def test_resume_sends_exactly_the_missing_text(owner):
    ws = await connect_as(owner)
    await ws.send_json_to(
        {"type": "send", "conversation": None, "text": "Resume me", "client_id": "r"}
    )
    frames = await receive_until(ws, "done")
    full = reply_frames(frames)
    reply_id = frames[0]["reply"]
    await ws.disconnect()

    ws2 = await connect_as(owner)
    await ws2.send_json_to({"type": "resume", "message": reply_id, "after_seq": 10})
    resumed = await receive_until(ws2, "done")
    assert resumed[0] == {
        "type": "delta",
        "message": reply_id,
        "start": 10,
        "seq": len(full),
        "text": full[10:],
    }
    await ws2.disconnect()


async def test_cancel_stops_the_reply_and_keeps_the_partial_text(owner, settings):
    settings.SIMULATED_TOKENS_PER_SECOND = 20.0
    settings.STREAM_CANCEL_POLL_INTERVAL = 0.05
    ws = await connect_as(owner)
    await ws.send_json_to(
        {"type": "send", "conversation": None, "text": "Long one", "client_id": "k"}
    )
    ack = await ws.receive_json_from()
    frames = []
    while not any(f["type"] == "delta" for f in frames):
        frames.append(await ws.receive_json_from(timeout=5))
    await ws.send_json_to({"type": "cancel", "message": ack["reply"]})
    frames += await receive_until(ws, "done")
    done = frames[-1]
    assert done["status"] == "cancelled"
    reply = await Message.objects.aget(pk=ack["reply"])
    assert reply.status == Message.Status.CANCELLED
    assert reply.content == reply_frames(frames)
    assert 0 < len(reply.content) < len(simulated_reply("Long one"))
    await ws.disconnect()


async def test_another_tab_sees_the_conversation_stream(owner):
    tab1 = await connect_as(owner)
    await tab1.send_json_to(
        {"type": "send", "conversation": None, "text": "first", "client_id": "t1"}
    )
    conversation_id = (await receive_until(tab1, "done"))[0]["conversation"]
    tab2 = await connect_as(owner)
    await tab2.send_json_to({"type": "subscribe", "conversation": conversation_id})
    await tab2.send_json_to({"type": "ping"})  # frames are handled in order: once the pong
    assert (await tab2.receive_json_from(timeout=30))["type"] == "pong"  # is back, tab2 follows
    await tab1.send_json_to(
        {"type": "send", "conversation": conversation_id, "text": "second", "client_id": "t2"}
    )
    seen = await receive_until(tab2, "done")
    assert reply_frames(seen) == simulated_reply("second")
    assert {f["role"] for f in seen if f["type"] == "message"} == {"user", "assistant"}
    await tab1.disconnect()
    await tab2.disconnect()


async def test_regenerate_answers_again_and_supersedes_the_old_reply(owner):
    ws = await connect_as(owner)
    await ws.send_json_to({"type": "send", "conversation": None, "text": "Again", "client_id": "g"})
    first = await receive_until(ws, "done")
    old_reply = first[0]["reply"]
    await ws.send_json_to({"type": "regenerate", "message": old_reply})
    second = await receive_until(ws, "done")
    ack = next(f for f in second if f["type"] == "ack")
    assert ack["reply"] != old_reply and ack["message"] == first[0]["message"] and ack["created"]
    assert any(f["type"] == "superseded" and old_reply in f["messages"] for f in second)
    assert reply_frames([f for f in second if f.get("message") == ack["reply"]]) == simulated_reply(
        "Again"
    )
    # A repeated regenerate of the same reply answers with the new one, no third generation.
    await ws.send_json_to({"type": "regenerate", "message": old_reply})
    repeat = await receive_until(ws, "done")
    assert repeat[0]["reply"] == ack["reply"] and repeat[0]["created"] is False
    assert await Message.objects.filter(role="assistant").acount() == 2
    await ws.disconnect()


async def test_edit_replaces_the_message_and_everything_after_it(owner):
    ws = await connect_as(owner)
    await ws.send_json_to({"type": "send", "conversation": None, "text": "one", "client_id": "e1"})
    first = await receive_until(ws, "done")
    conversation = first[0]["conversation"]
    await ws.send_json_to(
        {"type": "send", "conversation": conversation, "text": "two", "client_id": "e2"}
    )
    await receive_until(ws, "done")
    await ws.send_json_to(
        {"type": "edit", "message": first[0]["message"], "text": "uno", "client_id": "e3"}
    )
    edited = await receive_until(ws, "done")
    superseded = next(f for f in edited if f["type"] == "superseded")
    assert len(superseded["messages"]) == 4  # one, its reply, two, its reply
    visible = [
        m.content
        async for m in Message.objects.filter(
            conversation_id=conversation, superseded=False
        ).order_by("id")
    ]
    assert visible == ["uno", simulated_reply("uno")]
    await ws.disconnect()


async def test_a_streaming_reply_cannot_be_regenerated(owner, settings):
    settings.SIMULATED_TOKENS_PER_SECOND = 20.0
    ws = await connect_as(owner)
    await ws.send_json_to({"type": "send", "conversation": None, "text": "slow", "client_id": "s"})
    ack = await ws.receive_json_from()
    await ws.send_json_to({"type": "regenerate", "message": ack["reply"]})
    while (frame := await ws.receive_json_from(timeout=5))["type"] != "error":
        pass
    assert frame["code"] == "bad_frame" and "Stop" in frame["detail"]
    await ws.send_json_to({"type": "cancel", "message": ack["reply"]})
    await receive_until(ws, "done")
    await ws.disconnect()


async def test_a_channel_layer_outage_is_told_and_what_was_missed_is_resent(owner):
    """The production layer (chat/layers.py) tells every local channel when Redis drops and
    when it is back. The socket stays open: it says `unavailable`, then re-sends what was
    saved meanwhile (here the rest of the text and the end) and says `live`."""
    from channels.layers import get_channel_layer

    from chat import events
    from chat.events import LAYER_DISCONNECTED as DISCONNECTED
    from chat.events import LAYER_RECONNECTED as RECONNECTED
    from chat.events import conversation_group

    reply = await streaming_reply(owner, "Hello")
    conversation = reply.conversation
    ws = await connect_as(owner)
    await ws.send_json_to({"type": "resume", "message": reply.pk, "after_seq": 0})
    assert (await ws.receive_json_from())["text"] == "Hello"

    layer = get_channel_layer()
    await layer.group_send(conversation_group(conversation.pk), {"type": DISCONNECTED})
    outage = await ws.receive_json_from()
    assert outage["type"] == "error" and outage["code"] == "unavailable"
    assert outage["retryable"] is True and outage["message"] is None

    # Meanwhile the generator finished; its last deltas and `done` were lost with Redis. And
    # another tab asked again and got an answer, unannounced.
    await Message.objects.filter(pk=reply.pk).aupdate(
        content="Hello, world", seq=12, status=Message.Status.COMPLETE
    )
    question = await Message.objects.acreate(
        conversation=conversation, role=Message.Role.USER, author=owner, content="Again?"
    )
    answer = await Message.objects.acreate(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        content="Yes",
        seq=3,
        reply_to=question,
    )
    await layer.group_send(conversation_group(conversation.pk), {"type": RECONNECTED})
    frames = await receive_until(ws, "live")
    assert [(f["type"], f.get("message")) for f in frames] == [
        ("message", question.pk),
        ("message", answer.pk),
        ("delta", reply.pk),
        ("done", reply.pk),
        ("live", None),
    ]
    assert frames[1]["content"] == "Yes" and frames[1]["status"] == "streaming"
    assert frames[2] == {
        "type": "delta",
        "message": reply.pk,
        "start": 5,
        "seq": 12,
        "text": ", world",
    }
    assert frames[3]["status"] == "complete" and frames[3]["seq"] == 12

    # The other tab's answer goes on streaming to this socket, from where `message` left it.
    await Message.objects.filter(pk=answer.pk).aupdate(
        content="Yes, again", seq=10, status=Message.Status.COMPLETE
    )
    await layer.group_send(
        conversation_group(conversation.pk),
        {**events.done_event(await Message.objects.aget(pk=answer.pk))},
    )
    frames = await receive_until(ws, "done")
    assert frames[0] == {
        "type": "delta",
        "message": answer.pk,
        "start": 3,
        "seq": 10,
        "text": ", again",
    }
    await ws.disconnect()


async def test_a_send_whose_conversation_cannot_be_joined_is_acked_and_joined_once_back(
    owner, monkeypatch
):
    """The layer's Redis fails as the socket joins the new conversation's group: the send was
    saved, so the socket says `unavailable` (as on any outage) and acks it, never `internal`;
    when the layer is back it joins the group and the reply reaches it whole."""
    from channels.layers import get_channel_layer

    from chat.events import LAYER_RECONNECTED as RECONNECTED

    ws = await connect_as(owner)  # its own groups joined while Redis answered
    layer = get_channel_layer()
    group_add = layer.group_add
    refused: list[str] = []

    async def unreachable(group: str, channel: str) -> None:
        refused.append(channel)
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(layer, "group_add", unreachable)
    await ws.send_json_to(
        {"type": "send", "conversation": None, "text": "Hello", "client_id": "c-join"}
    )
    frames = await receive_until(ws, "ack")
    errors = [f for f in frames if f["type"] == "error"]
    assert [(e["code"], e["retryable"], e["message"]) for e in errors] == [
        ("unavailable", True, None)
    ]
    ack = frames[-1]
    reply = await Message.objects.aget(pk=ack["reply"])
    assert reply.reply_to_id == ack["message"]

    monkeypatch.setattr(layer, "group_add", group_add)
    await layer.send(refused[0], {"type": RECONNECTED})
    frames = await receive_until(ws, "done")
    assert reply_frames(frames) == simulated_reply("Hello")
    assert frames[-1]["message"] == reply.pk and frames[-1]["status"] == "complete"
    await ws.disconnect()


async def test_no_handler_waits_for_the_one_database_thread(owner, monkeypatch):
    """Channels closes stale database connections before every handler, a hop to Daphne's one
    sync thread; no handler pays it (ChatConsumer.dispatch): every database call closes its own
    (core/db.py)."""
    import channels.consumer

    hops = []
    original = channels.consumer.aclose_old_connections

    async def counted() -> None:
        hops.append(1)
        await original()

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted)
    ws = await connect_as(owner)
    await ws.send_json_to({"type": "send", "conversation": None, "text": "Hello", "client_id": "h"})
    frames = await receive_until(ws, "done")
    assert sum(1 for f in frames if f["type"] == "delta") > 1
    assert hops == []  # not for the connect, the `send` frame, its deltas or its `done`
    await ws.disconnect()


async def test_a_resume_behind_what_the_socket_sent_gets_no_overlapping_text(owner):
    """A client may resume from what it holds while deltas are still on their way to it (the
    page's stall resume): the answer and the deltas after it start where the socket's last
    frame ended, never inside text already sent (docs/protocol.md)."""
    from channels.layers import get_channel_layer

    from chat.events import conversation_group

    full = "Hello, wonderful world"
    reply = await streaming_reply(owner, full[:5])
    layer = get_channel_layer()
    group = conversation_group(reply.conversation_id)

    async def publish(start: int, seq: int) -> None:
        event = {"type": "chat.delta", "message": reply.pk, "start": start, "seq": seq}
        await layer.group_send(group, {**event, "text": full[start:seq]})

    async def until_pong() -> list[dict]:
        await ws.send_json_to({"type": "ping"})
        return (await receive_until(ws, "pong"))[:-1]

    ws = await connect_as(owner)
    await ws.send_json_to({"type": "resume", "message": reply.pk, "after_seq": 0})
    assert [(f["start"], f["seq"]) for f in await until_pong()] == [(0, 5)]
    await publish(5, 12)
    assert (await ws.receive_json_from())["seq"] == 12
    # Asked from 5 as if 5..12 had not arrived; the saved text (9) is behind what was sent.
    await Message.objects.filter(pk=reply.pk).aupdate(content=full[:9], seq=9)
    await ws.send_json_to({"type": "resume", "message": reply.pk, "after_seq": 5})
    assert await until_pong() == []
    await Message.objects.filter(pk=reply.pk).aupdate(content=full[:14], seq=14)
    await ws.send_json_to({"type": "resume", "message": reply.pk, "after_seq": 5})
    await publish(12, 18)
    frames = await until_pong()
    assert [(f["start"], f["seq"], f["text"]) for f in frames] == [
        (12, 14, full[12:14]),
        (14, 18, full[14:18]),
    ]
    await ws.disconnect()


async def test_a_dropped_delta_is_filled_from_the_saved_text_with_what_came_after(owner):
    from channels.layers import get_channel_layer

    from chat import events
    from chat.events import conversation_group

    full = "one two three four"
    reply = await streaming_reply(owner, full[:4])
    layer = get_channel_layer()
    group = conversation_group(reply.conversation_id)
    ws = await connect_as(owner)
    await ws.send_json_to({"type": "resume", "message": reply.pk, "after_seq": 0})
    assert (await ws.receive_json_from())["seq"] == 4
    # 4..8 never arrives; the checkpoint has reached 8 when 8..14 does.
    await Message.objects.filter(pk=reply.pk).aupdate(content=full[:8], seq=8)
    event = {"type": "chat.delta", "message": reply.pk, "start": 8, "seq": 14}
    await layer.group_send(group, {**event, "text": full[8:14]})
    assert await ws.receive_json_from() == {
        "type": "delta",
        "message": reply.pk,
        "start": 4,
        "seq": 14,
        "text": full[4:14],
    }
    await Message.objects.filter(pk=reply.pk).aupdate(
        content=full, seq=len(full), status=Message.Status.COMPLETE
    )
    done = events.done_event(await Message.objects.aget(pk=reply.pk))
    await layer.group_send(group, done)
    frames = await receive_until(ws, "done")
    assert [f["type"] for f in frames] == ["delta", "done"]
    assert (frames[0]["start"], frames[0]["text"]) == (14, full[14:])
    await ws.disconnect()


async def test_a_delta_is_sent_as_the_frame_its_producer_finished(owner):
    """The producer builds a delta's frame once (chat/events.py); a socket whose client holds
    the text before it forwards that frame's text as it is, byte for byte."""
    from channels.layers import get_channel_layer

    from chat.events import conversation_group

    reply = await streaming_reply(owner, "")
    layer = get_channel_layer()
    group = conversation_group(reply.conversation_id)
    ws = await connect_as(owner)
    await ws.send_json_to({"type": "resume", "message": reply.pk, "after_seq": 0})
    await ws.send_json_to({"type": "ping"})
    assert (await ws.receive_json_from())["type"] == "pong"
    # Spelled unlike json.dumps would (no spaces): it can only have come as it was published.
    frame = f'{{"type":"delta","message":{reply.pk},"start":0,"seq":5,"text":"Hello"}}'
    event = {"type": "chat.delta", "message": reply.pk, "start": 0, "seq": 5, "text": "Hello"}
    await layer.group_send(group, {**event, "frame": frame})
    assert await ws.receive_from() == frame
    # A delta that overlaps what the socket sent is trimmed: its frame is built here instead.
    event = {"type": "chat.delta", "message": reply.pk, "start": 3, "seq": 8, "text": "lo, w"}
    await layer.group_send(group, {**event, "frame": "not sent"})
    assert await ws.receive_json_from() == {
        "type": "delta",
        "message": reply.pk,
        "start": 5,
        "seq": 8,
        "text": ", w",
    }
    await ws.disconnect()


async def test_a_client_id_reused_with_another_organisations_key_is_a_new_conversation(
    owner, organisation
):
    """The personal-organisation key sending a client_id already used in Acme gets its own
    conversation and reply, and hears nothing of Acme's."""
    team_key = await sync_to_async(api_key_create)(user=owner, organisation=organisation, name="t")
    personal_key = await sync_to_async(api_key_create)(
        user=owner, organisation=owner.personal_organisation, name="p"
    )

    async def socket(raw):
        ws = WebsocketCommunicator(
            application,
            "/ws/chat/",
            headers=[(b"authorization", f"Bearer {raw}".encode()), (b"host", b"127.0.0.1:8000")],
        )
        assert (await ws.connect())[0]
        return ws

    team, personal = await socket(team_key.raw), await socket(personal_key.raw)
    send = {"type": "send", "conversation": None, "text": "Secret plan", "client_id": "c-1"}
    await team.send_json_to(send)
    team_frames = await receive_until(team, "done")
    team_ack = next(f for f in team_frames if f["type"] == "ack")
    await personal.send_json_to({**send, "text": "Hello"})
    frames = await receive_until(personal, "done")
    ack = frames[0]
    assert ack["type"] == "ack" and ack["created"] is True
    assert ack["conversation"] != team_ack["conversation"]
    assert {f.get("message") for f in frames[1:]} == {ack["reply"]}
    assert reply_frames(frames) == simulated_reply("Hello")
    await team.disconnect()
    await personal.disconnect()


# --- the socket's two sources, dispatched in turn (chat/consumers.py dispatch_in_turn) ---------


async def test_a_layer_event_waits_for_the_client_frame_being_handled():
    """One handler at a time, as channels does: an event that arrives while a frame's handler
    awaits (the database, say) is handled after it, not alongside."""
    client, layer = SocketQueue(), SocketQueue()
    database = asyncio.Event()
    seen: list[str] = []

    async def dispatch(message: dict) -> None:
        seen.append(f"{message['type']} begins")
        if message["type"] == "frame":
            await database.wait()
        if message["type"] == "close":
            raise StopConsumer
        seen.append(f"{message['type']} ends")

    socket = asyncio.create_task(dispatch_in_turn(client.get, layer.get, dispatch))
    client.put_nowait({"type": "frame"})
    while not seen:
        await asyncio.sleep(0)
    layer.put_nowait({"type": "event"})
    for _ in range(5):
        await asyncio.sleep(0)
    assert seen == ["frame begins"]
    database.set()
    client.put_nowait({"type": "close"})
    with pytest.raises(StopConsumer):
        await socket
    assert seen == ["frame begins", "frame ends", "event begins", "event ends", "close begins"]


async def test_a_socket_that_stops_cancels_its_layer_receive():
    """StopConsumer (the close) ends the socket, and the layer's pending receive is cancelled:
    that is the layer's cue to drop the channel (channels-redis' pub/sub layer unsubscribes)."""
    client = SocketQueue()
    cancelled = asyncio.Event()

    async def layer_receive() -> dict:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    async def dispatch(message: dict) -> None:
        raise StopConsumer

    client.put_nowait({"type": "websocket.disconnect"})
    with pytest.raises(StopConsumer):
        await dispatch_in_turn(client.get, layer_receive, dispatch)
    assert cancelled.is_set()


async def test_an_event_handler_that_fails_ends_the_socket_with_its_error():
    client, layer = SocketQueue(), SocketQueue()
    client_cancelled = asyncio.Event()

    async def client_receive() -> dict:
        try:
            return await client.get()
        except asyncio.CancelledError:
            client_cancelled.set()
            raise

    async def dispatch(message: dict) -> None:
        raise ValueError(f"No handler for message type {message['type']}")

    layer.put_nowait({"type": "chat.unknown"})
    with pytest.raises(ValueError, match=r"chat\.unknown"):
        await dispatch_in_turn(client_receive, layer.get, dispatch)
    assert client_cancelled.is_set()
