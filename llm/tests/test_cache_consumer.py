"""A cached reply as a client sees it: over the real socket (project.asgi.application),
the same delta frames and `done` as a live reply, marked cached, with zero cost."""

from __future__ import annotations

from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db.models import Sum
from django.test import Client

from chat.models import Message
from conftest import wait_for
from llm.cache.semantic import indexes_forget
from llm.cache_models import CacheHit, CacheStat
from project.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1:8000")


@pytest.fixture(autouse=True)
def _deterministic(settings):
    settings.LLM_TEMPERATURE = 0.0
    settings.CACHE_REPLAY_CHARS_PER_SECOND = 1500.0
    settings.STREAM_FLUSH_INTERVAL = 0.02
    indexes_forget()


async def connect_as(user) -> WebsocketCommunicator:
    client = Client()
    await sync_to_async(client.force_login)(user)
    headers = [
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
        (b"host", b"127.0.0.1:8000"),
        ORIGIN,
    ]
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def send_and_collect(ws, text: str, client_id: str) -> list[dict]:
    """Send, read up to `done`, then wait for the cache to settle (it stores a reply just
    after publishing its `done`)."""
    await ws.send_json_to(
        {"type": "send", "conversation": None, "text": text, "client_id": client_id}
    )
    ws.sends = getattr(ws, "sends", 0) + 1
    frames = []
    while True:
        frame = await ws.receive_json_from(timeout=10)
        frames.append(frame)
        if frame["type"] == "done":
            break

    async def settled() -> bool:
        lookups = await CacheStat.objects.aaggregate(total=Sum("lookups"))
        return (lookups["total"] or 0) >= ws.sends

    await wait_for(settled)
    return frames


async def test_a_cached_reply_streams_deltas_then_done_marked_cached(owner):
    ws = await connect_as(owner)
    live = await send_and_collect(ws, "What is a mutex?", "c1")
    cached = await send_and_collect(ws, "what is a mutex", "c2")
    await ws.disconnect()

    live_done, done = live[-1], cached[-1]
    assert live_done["cached"] is False and live_done["provider"] == "simulated"
    assert done["cached"] is True and done["status"] == "complete"
    assert done["provider"] == "cache" and done["model"] == "simulated"
    assert Decimal(done["cost"]) == 0
    assert done["usage"]["prompt_tokens"] == 0 and done["usage"]["completion_tokens"] == 0

    deltas = [f for f in cached if f["type"] == "delta"]
    ack = next(f for f in cached if f["type"] == "ack")
    assert len(deltas) > 1 and all(d["message"] == ack["reply"] for d in deltas)
    position = 0
    for delta in deltas:
        assert delta["start"] == position
        position = delta["seq"]
    text = "".join(d["text"] for d in deltas)
    assert text == "".join(f["text"] for f in live if f["type"] == "delta")
    assert done["seq"] == position == len(text)
    assert done["timings"]["first_token_ms"] is not None

    reply = await Message.objects.aget(pk=ack["reply"])
    assert reply.content == text and reply.cost == 0 and reply.routing["cache"] == "exact"
    assert await CacheHit.objects.filter(message=reply).aexists()


async def test_resuming_a_cached_reply_says_it_was_cached(owner):
    ws = await connect_as(owner)
    await send_and_collect(ws, "What is a mutex?", "c1")
    cached = await send_and_collect(ws, "What is a mutex?", "c2")
    reply_id = next(f for f in cached if f["type"] == "ack")["reply"]
    await ws.disconnect()
    # A new socket (a reload): this one was sent the text already, so its resume would not
    # repeat it (docs/protocol.md, the server trims per socket).
    ws = await connect_as(owner)
    await ws.send_json_to({"type": "resume", "message": reply_id, "after_seq": 0})
    frames = []
    while not frames or frames[-1]["type"] != "done":
        frames.append(await ws.receive_json_from(timeout=10))
    await ws.disconnect()
    assert frames[-1]["cached"] is True
    assert (
        "".join(f["text"] for f in frames if f["type"] == "delta")
        == (await Message.objects.aget(pk=reply_id)).content
    )


async def test_an_outsider_on_the_same_server_gets_a_live_reply(owner, outsider):
    mine = await connect_as(owner)
    await send_and_collect(mine, "What is a mutex?", "c1")
    await mine.disconnect()
    theirs = await connect_as(outsider)
    frames = await send_and_collect(theirs, "What is a mutex?", "o1")
    await theirs.disconnect()
    assert frames[-1]["cached"] is False and frames[-1]["provider"] == "simulated"
