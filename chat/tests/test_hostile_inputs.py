"""Property: whatever a client sends, Parley answers in the path's own error shape, never with a
5xx or a logged traceback, and a socket stays open through every bad frame (issue 12).

Generated inputs: random JSON with wrong types, hostile strings (NUL, lone surrogates, huge),
deep nesting, non-JSON text, frames past the frame limit. They go through the real ASGI
application (origin check, auth, routing, consumer; Django and DRF for HTTP). Examples are
bounded so the file runs in well under a minute.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import Organisation
from accounts.services import api_key_create
from chat.models import Conversation
from chat.tests.conftest import asgi_client
from project.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FRAME_TYPES = ["send", "cancel", "resume", "subscribe", "regenerate", "edit", "ping", "", "x"]
FIELDS = ["text", "client_id", "conversation", "message", "after_seq"]

# Every code point, lone surrogates and NUL included; some strings far past any limit.
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
hostile_text = st.one_of(
    any_text,
    st.sampled_from(["\x00", "a\x00b", "\ud800", "\udfff", "x\udc00y", "c-1", "", " "]),
    st.integers(16_000, 20_000).map(lambda n: "y" * n),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(hostile_text, children, max_size=3)
    ),
    max_leaves=8,
)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


frame_like = st.builds(
    lambda kind, fields: json.dumps({"type": kind, **fields}),
    st.one_of(st.sampled_from(FRAME_TYPES), json_values),
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4),
)
raw_frames = st.one_of(
    frame_like,
    json_values.map(json.dumps),
    st.integers(20, 200_000).map(nested),
    st.integers(20, 2_000).map(lambda n: '{"type": "ping", "x": ' + nested(n) + "}"),
    any_text,  # mostly not JSON
    st.integers(260_000, 300_000).map(lambda n: json.dumps({"type": "ping", "pad": "x" * n})),
)
bodies = st.one_of(
    json_values.map(lambda value: json.dumps(value).encode()),
    st.builds(
        lambda fields: json.dumps(fields).encode(),
        st.dictionaries(
            st.sampled_from(["title", "text", "client_id", "model", "messages", "stream"]),
            json_values,
            max_size=4,
        ),
    ),
    st.builds(
        lambda content, model: json.dumps(
            {"model": model, "messages": [{"role": "user", "content": content}]}
        ).encode(),
        json_values,
        st.sampled_from(["simulated", "nope", ""]),
    ),
    st.integers(20, 200_000).map(lambda n: nested(n).encode()),
    st.binary(max_size=50),
)
KNOWN_SERVER_FRAMES = {"ack", "message", "delta", "done", "error", "superseded", "pong", "live"}


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


@pytest.fixture(autouse=True)
def _no_rate_limits(settings: Any) -> None:
    # Generated frames are many; a rate_limited answer would hide everything after it.
    for kind in ("FRAMES", "SENDS"):
        for who in ("USER", "ORG"):
            setattr(settings, f"WS_RATE_{kind}_PER_{who}", "1000000/m")


@given(frames=st.lists(raw_frames, min_size=1, max_size=6))
@EXAMPLES
async def test_no_frame_breaks_the_socket_or_logs_a_traceback(owner, caplog, frames) -> None:
    client = Client()
    await sync_to_async(client.force_login)(owner)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    ws = WebsocketCommunicator(
        application,
        "/ws/chat/",
        headers=[
            (b"cookie", cookie),
            (b"host", b"127.0.0.1:8000"),
            (b"origin", b"http://127.0.0.1:8000"),
        ],
    )
    connected, _ = await ws.connect()
    assert connected
    try:
        for raw in frames:
            await ws.send_input({"type": "websocket.receive", "text": raw})
            await ws.send_json_to({"type": "ping"})  # frames are answered in order
            while True:
                answer = await ws.receive_json_from(timeout=10)
                assert answer["type"] in KNOWN_SERVER_FRAMES, answer
                if answer["type"] == "error":
                    assert answer["code"] != "internal", (raw[:200], answer)
                if answer["type"] == "pong":
                    break
    finally:
        await ws.disconnect()
    no_tracebacks(caplog)


@given(body=bodies, path=st.sampled_from(["conversations", "conversations/{c}/messages", "v1"]))
@EXAMPLES
async def test_no_body_gets_a_5xx_or_logs_a_traceback(owner, caplog, body, path) -> None:
    key = await sync_to_async(api_key_create)(
        user=owner, organisation=await Organisation.objects.aget(personal_owner=owner), name="fuzz"
    )
    conversation = await Conversation.objects.filter(owner=owner).afirst()
    if conversation is None:
        conversation = await Conversation.objects.acreate(
            owner=owner, organisation=key.key.organisation, title="fuzz"
        )
    url = "/v1/chat/completions" if path == "v1" else "/api/v1/" + path.format(c=conversation.pk)
    headers = {"Authorization": f"Bearer {key.raw}", "Content-Type": "application/json"}
    async with asgi_client(headers=headers) as http:
        response = await http.post(url, content=body)
    assert response.status_code < 500, (body[:200], response.status_code, response.text[:300])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert ("message" in error) if path == "v1" else ("code" in error), error
    no_tracebacks(caplog)
