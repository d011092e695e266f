"""REST and WebSocket sends with the caller's model and generation choices (model, max_tokens,
temperature); unknown fields refused; the OpenAI endpoint's `model="default"` on a fresh
install."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from chat import services
from chat.models import Conversation, Message
from chat.tests.conftest import API
from chat.tests.test_consumers import connect_as, receive_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def chat(owner, organisation) -> Conversation:
    return services.conversation_create(owner=owner, title="Options", organisation=organisation)


def final(api: Client, reply_id: int, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.get(f"{API}/messages/{reply_id}").json()
        if body["status"] not in ("pending", "streaming"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"reply {reply_id} not final within {timeout}s")


def send(api: Client, chat: Conversation, **body):
    return api.post(
        f"{API}/conversations/{chat.pk}/messages", body, content_type="application/json"
    )


def test_a_rest_send_takes_a_model_and_a_token_cap(api, chat):
    sent = send(api, chat, text="Hello", model="simulated", max_tokens=3, temperature=0.5)
    assert sent.status_code == 201, sent.content
    body = final(api, sent.json()["reply"])
    assert body["status"] == "incomplete"  # the simulated model stopped at 3 tokens
    reply = Message.objects.get(pk=sent.json()["reply"])
    assert reply.routing["alias"] == "simulated"
    assert reply.routing["options"] == {"max_tokens": 3, "temperature": 0.5}
    assert reply.completion_tokens == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "many"}, "max_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"temprature": 0.2}, "temprature"),
    ],
)
def test_a_bad_or_unknown_field_is_a_400_naming_it(api, chat, body, field):
    sent = send(api, chat, text="Hello", **body)
    assert sent.status_code == 400
    error = sent.json()["error"]
    assert error["code"] == "invalid" and field in error["fields"]
    assert not Message.objects.filter(conversation=chat).exists()


def test_an_unknown_model_is_a_404_naming_it(api, chat):
    sent = send(api, chat, text="Hello", model="local"[::-1])
    assert sent.status_code == 404
    error = sent.json()["error"]
    assert error["code"] == "not_found" and "model" in error["fields"]
    assert not Message.objects.filter(conversation=chat).exists()


def test_model_default_names_the_default_model_on_the_openai_endpoint(api):
    answered = api.post(
        "/v1/chat/completions",
        {"model": "default", "messages": [{"role": "user", "content": "Hi"}]},
        content_type="application/json",
    )
    assert answered.status_code == 200, answered.content
    assert answered.json()["model"] == "default"
    assert api.get("/v1/models/default").status_code == 200


async def test_a_socket_send_takes_a_model_and_a_token_cap(owner):
    socket = await connect_as(owner)
    await socket.send_json_to(
        {
            "type": "send",
            "conversation": None,
            "text": "Hi",
            "client_id": "w-1",
            "model": "simulated",
            "max_tokens": 3,
            "temperature": 0.4,
        }
    )
    done = (await receive_until(socket, "done"))[-1]
    assert (done["status"], done["finish_reason"]) == ("incomplete", "length")
    reply = await Message.objects.aget(pk=done["message"])
    assert reply.routing["options"] == {"max_tokens": 3, "temperature": 0.4}
    for bad in ({"model": "nope"}, {"max_tokens": -1}, {"temperature": "hot"}):
        await socket.send_json_to(
            {"type": "send", "conversation": None, "text": "Hi", "client_id": "w-2", **bad}
        )
        error = await socket.receive_json_from(timeout=5)
        assert (error["type"], error["code"]) == ("error", "bad_frame"), bad
    await socket.disconnect()
