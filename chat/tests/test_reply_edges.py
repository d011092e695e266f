"""The edges of a reply, with the real reply code and a real HTTP upstream: cancel lets go of the
provider's stream at once (fifty at a time, from another socket), a stream the upstream cuts is
`failed`/`interrupted` and never `complete`, and a reply the token cap cuts is `incomplete`
with finish reason `length` — on the socket, the REST API (with its event stream) and the
OpenAI-compatible endpoint.

Everything goes through the full ASGI application on the test's event loop, so generation runs
in process (embedded mode); the upstream is tests/fault_server.py, an OpenAI-compatible server on
loopback in a thread of its own, reached through langchain-openai and httpx like any provider.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import defaultdict
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from chat.models import Message
from project.asgi import application
from tests.fault_server import Cut, Disconnect, Endless, FaultServer, Hang, Reply

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1:8000")
# How long a wait may take before the test gives up: a deadline for a hung test, not a speed
# requirement. The 1 s from cancel to the upstream let go is measured and printed, and is a
# benchmark's business; that the replies end at all proves the cancel, since the upstream never
# stops and no provider timeout (30 s and more) can end them first on a machine this test
# accepts.
GENEROUS = 120.0
ROUTE = "up"
MODEL = "openai-compatible"  # the settings provider's alias


@pytest.fixture
def upstream(settings, fault: FaultServer) -> FaultServer:
    """Replies come from the fault server, as the settings' OpenAI-compatible provider."""
    settings.LLM_DEFAULT_PROVIDER = MODEL
    settings.OPENAI_COMPATIBLE_BASE_URL = fault.base_url(ROUTE)
    settings.OPENAI_COMPATIBLE_MODEL = "fault-model"
    settings.LLM_FIRST_TOKEN_TIMEOUT = 60.0
    settings.LLM_INTER_TOKEN_TIMEOUT = 60.0
    settings.LLM_RETRY_MAX_ATTEMPTS = 1  # a failure is the test's subject, not a retry
    settings.WS_RATE_SENDS_PER_USER = "10000/m"
    settings.WS_RATE_SENDS_PER_ORG = "10000/m"
    settings.WS_RATE_FRAMES_PER_USER = "10000/m"
    settings.WS_RATE_FRAMES_PER_ORG = "10000/m"
    # Fifty streams into one socket: the in-memory layer's default capacity (100 a channel)
    # would drop events, which the production layer does not do at this rate.
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 100_000},
        }
    }
    return fault


# --- the socket ------------------------------------------------------------------------------


class Socket:
    """A signed-in socket whose frames a reader task sorts by reply as they come."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.ws = communicator
        self.acks: dict[str, dict[str, Any]] = {}
        self.texts: dict[int, str] = defaultdict(str)
        self.finals: dict[int, dict[str, Any]] = {}
        self.final_at: dict[int, float] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, user) -> Socket:
        client = Client()
        await sync_to_async(client.force_login)(user)
        cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
        headers = [(b"cookie", cookie), (b"host", b"127.0.0.1:8000"), ORIGIN]
        communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
        connected, _ = await communicator.connect()
        assert connected
        return cls(communicator)

    async def _read(self) -> None:
        while True:
            # A long timeout: asgiref's communicator cancels the application on a timeout.
            frame = await self.ws.receive_json_from(timeout=300)
            kind = frame["type"]
            if kind == "ack":
                self.acks[frame["client_id"]] = frame
            elif kind == "delta":
                held = self.texts[frame["message"]]
                if frame["seq"] > len(held):
                    self.texts[frame["message"]] = (
                        held + frame["text"][len(held) - frame["start"] :]
                    )
            elif kind in ("done", "error") and frame.get("message") is not None:
                self.finals.setdefault(frame["message"], frame)
                self.final_at.setdefault(frame["message"], time.monotonic())

    async def send(self, text: str, client_id: str) -> int:
        await self.ws.send_json_to(
            {"type": "send", "conversation": None, "text": text, "client_id": client_id}
        )
        await until(lambda: client_id in self.acks, f"ack of {client_id}")
        return int(self.acks[client_id]["reply"])

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.disconnect()


async def until(predicate, what: str, timeout: float = GENEROUS) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.01)


def _ms(seconds: list[float]) -> str:
    return f"median {statistics.median(seconds) * 1000:.0f} ms, max {max(seconds) * 1000:.0f} ms"


async def test_fifty_replies_cancelled_from_another_socket_end_at_once_and_close_the_upstream(
    upstream, owner
):
    """Fifty replies stream from an upstream that never stops; a second socket cancels them all.
    Each ends `cancelled` with its partial text on both sockets and in the database, and the
    upstream sees every one of its fifty responses closed (the time is measured and printed)."""
    count = 50
    upstream.default(ROUTE, Endless(text="and on ", chunk_delay=0.05))
    sender, canceller = await Socket.open(owner), await Socket.open(owner)
    try:
        replies = [await sender.send(f"Go on forever {n}", f"forever-{n}") for n in range(count)]
        await until(lambda: all(sender.texts[r] for r in replies), "text of every reply")
        assert upstream.count(ROUTE) == count and not upstream.closed(ROUTE)

        cancelled_at: dict[int, float] = {}
        for reply in replies:
            cancelled_at[reply] = time.monotonic()
            await canceller.ws.send_json_to({"type": "cancel", "message": reply})
        await until(lambda: all(r in sender.finals for r in replies), "done for every reply")
        await until(lambda: len(upstream.closed(ROUTE)) == count, "every upstream closed")
    finally:
        await sender.close()
        await canceller.close()

    first_cancel = min(cancelled_at.values())
    closed = [seen.closed_at - first_cancel for seen in upstream.closed(ROUTE)]
    done = [sender.final_at[r] - cancelled_at[r] for r in replies]
    for reply in replies:
        final = sender.finals[reply]
        assert (final["type"], final["status"], final["finish_reason"]) == (
            "done",
            "cancelled",
            "cancelled",
        )
        row = await Message.objects.aget(pk=reply)
        assert row.status == Message.Status.CANCELLED
        assert row.content and row.content == sender.texts[reply]  # nothing after the stop
        assert final["seq"] == len(row.content)
    last_cancel = max(cancelled_at.values()) - first_cancel
    print(
        f"\n{count} cancels (sent over {last_cancel * 1000:.0f} ms): `done` {_ms(done)} after"
        f" each cancel; upstream closed {_ms(closed)} after the first cancel"
    )
    # The upstream stopped streaming: nothing more was sent after the closes.
    sent = sum(seen.chunks for seen in upstream.requests(ROUTE))
    await asyncio.sleep(0.2)
    assert sum(seen.chunks for seen in upstream.requests(ROUTE)) == sent


async def test_a_reply_cancelled_while_the_upstream_is_silent_ends_at_once(upstream, owner):
    """The provider has not sent a word: the reply still ends `cancelled` at once (it does not
    wait for a first-token timeout), and the request to the provider is closed."""
    upstream.default(ROUTE, Hang())
    socket = await Socket.open(owner)
    try:
        reply = await socket.send("Say something", "silent")
        await until(lambda: upstream.count(ROUTE) == 1, "the upstream request")
        cancelled_at = time.monotonic()
        await socket.ws.send_json_to({"type": "cancel", "message": reply})
        await until(lambda: reply in socket.finals, "done")
        await until(lambda: upstream.closed(ROUTE), "the upstream request closed")
    finally:
        await socket.close()
    final = socket.finals[reply]
    assert (final["type"], final["status"], final["seq"]) == ("done", "cancelled", 0)
    (seen,) = upstream.closed(ROUTE)
    print(
        f"\nsilent upstream: `done` {(socket.final_at[reply] - cancelled_at) * 1000:.0f} ms,"
        f" upstream closed {(seen.closed_at - cancelled_at) * 1000:.0f} ms after the cancel"
    )


CUTS = {
    "connection-dropped": Disconnect(text="The first half, then ", after_chunks=2, chunk_chars=8),
    "ended-without-finish-reason": Cut(text="The first half, then ", after_chunks=2, chunk_chars=8),
    "ended-without-finish-reason-or-DONE": Cut(
        text="The first half, then ", after_chunks=2, chunk_chars=8, done=False
    ),
}


@pytest.mark.parametrize("cut", list(CUTS.values()), ids=list(CUTS))
async def test_a_stream_cut_mid_reply_fails_interrupted_on_the_socket(upstream, owner, cut):
    upstream.default(ROUTE, cut)
    socket = await Socket.open(owner)
    try:
        reply = await socket.send("Tell me everything", "cut")
        await until(lambda: reply in socket.finals, "the reply's end")
    finally:
        await socket.close()
    partial = "The first half, then "[:16]
    final = socket.finals[reply]
    assert (final["type"], final["code"], final["retryable"]) == ("error", "interrupted", True)
    assert final["seq"] == len(partial)
    assert socket.texts[reply] == partial
    row = await Message.objects.aget(pk=reply)
    assert (row.status, row.error_code, row.content) == (
        Message.Status.FAILED,
        "interrupted",
        partial,
    )


async def test_a_reply_cut_by_the_token_cap_is_incomplete_on_the_socket(upstream, owner):
    upstream.script(
        ROUTE, Reply("Cut short by the cap", finish_reason="length"), Reply("A whole answer.")
    )
    socket = await Socket.open(owner)
    try:
        capped = await socket.send("Write a novel", "capped")
        await until(lambda: capped in socket.finals, "the capped reply's end")
        whole = await socket.send("Say hi", "whole")
        await until(lambda: whole in socket.finals, "the whole reply's end")
    finally:
        await socket.close()
    final = socket.finals[capped]
    assert (final["type"], final["status"], final["finish_reason"]) == (
        "done",
        "incomplete",
        "length",
    )
    assert final["seq"] == len("Cut short by the cap") == len(socket.texts[capped])
    row = await Message.objects.aget(pk=capped)
    assert row.status == Message.Status.INCOMPLETE and row.error_code == ""
    assert row.routing["finish_reason"] == "length"
    final = socket.finals[whole]
    assert (final["type"], final["status"], final["finish_reason"]) == ("done", "complete", "stop")
    # The cap went to the upstream in the field OpenAI-compatible servers honour.
    assert all(seen.body["max_tokens"] > 0 for seen in upstream.requests(ROUTE))


# --- REST and its event stream ------------------------------------------------------------


def sse_events(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(
            line.partition(": ")[::2] for line in block.splitlines() if not line.startswith(":")
        )
        if "event" in fields:
            events.append({"event": fields["event"], "data": json.loads(fields["data"])})
    return events


async def _rest_reply(http: httpx.AsyncClient, text: str) -> tuple[list[dict], dict]:
    conversation = (await http.post("/api/v1/conversations", json={"title": "edges"})).json()
    sent = await http.post(
        f"/api/v1/conversations/{conversation['id']}/messages", json={"text": text}
    )
    assert sent.status_code == 201
    stream = await http.get(sent.json()["stream_url"], headers={"Accept": "text/event-stream"})
    assert stream.status_code == 200
    message = await http.get(sent.json()["reply_url"])
    return sse_events(stream.text), message.json()


async def test_rest_shows_a_cut_reply_as_failed_interrupted(upstream, http):
    upstream.default(ROUTE, Cut(text="The first half, then ", after_chunks=2, chunk_chars=8))
    events, message = await _rest_reply(http, "Tell me everything")
    assert events[-1]["event"] == "error"
    assert (events[-1]["data"]["code"], events[-1]["data"]["retryable"]) == ("interrupted", True)
    assert message["status"] == "failed" and message["error"]["code"] == "interrupted"
    assert message["content"] == "The first half, then "[:16]


async def test_rest_shows_a_capped_reply_as_incomplete(upstream, http):
    upstream.default(ROUTE, Reply("Cut short by the cap", finish_reason="length"))
    events, message = await _rest_reply(http, "Write a novel")
    assert events[-1]["event"] == "done"
    assert (events[-1]["data"]["status"], events[-1]["data"]["finish_reason"]) == (
        "incomplete",
        "length",
    )
    assert message["status"] == "incomplete" and message["error"] is None
    assert message["content"] == "Cut short by the cap"


# --- the OpenAI-compatible endpoint -----------------------------------------------------------


def _openai_request(stream: bool) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "stream": stream}


def sse_payloads(text: str) -> list[Any]:
    out: list[Any] = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def test_openai_endpoint_answers_a_cut_reply_with_an_interrupted_error(upstream, http):
    upstream.default(ROUTE, Cut(text="The first half, then ", after_chunks=2, chunk_chars=8))

    whole = await http.post("/v1/chat/completions", json=_openai_request(stream=False))
    assert whole.status_code == 503
    assert whole.json()["error"]["code"] == "interrupted"

    streamed = await http.post("/v1/chat/completions", json=_openai_request(stream=True))
    assert streamed.status_code == 200  # the text had started: OpenAI's in-stream error
    payloads = sse_payloads(streamed.text)
    assert payloads[-1]["error"]["code"] == "interrupted"
    text = "".join(
        p["choices"][0]["delta"].get("content") or "" for p in payloads if "choices" in p
    )
    assert text == "The first half, then "[:16]
    finishes = [p["choices"][0]["finish_reason"] for p in payloads if p.get("choices")]
    assert not any(finishes), "a cut reply never ends with a finish_reason"


async def test_openai_endpoint_answers_a_capped_reply_with_finish_reason_length(upstream, http):
    upstream.default(ROUTE, Reply("Cut short by the cap", finish_reason="length"))

    whole = await http.post("/v1/chat/completions", json=_openai_request(stream=False))
    assert whole.status_code == 200
    choice = whole.json()["choices"][0]
    assert (choice["finish_reason"], choice["message"]["content"]) == (
        "length",
        "Cut short by the cap",
    )

    streamed = await http.post("/v1/chat/completions", json=_openai_request(stream=True))
    payloads = sse_payloads(streamed.text)
    assert payloads[-1] == "[DONE]"
    finishes = [p["choices"][0]["finish_reason"] for p in payloads[:-1] if p.get("choices")]
    assert finishes[-1] == "length" and not any(finishes[:-1])

    upstream.default(ROUTE, Reply("A whole answer."))
    finished = await http.post("/v1/chat/completions", json=_openai_request(stream=False))
    assert finished.json()["choices"][0]["finish_reason"] == "stop"
