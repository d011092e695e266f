"""Conversations longer than the bundled model's context window, through the REST API, the
socket and the OpenAI-compatible endpoint, with the real model: the reply is written from the
latest turns that fit (llama.cpp raised past its window, and every later send of the
conversation failed); a message too long on its own is refused before anything is saved.

The model runs with a window of 512 tokens here (LLM_LOCAL_CONTEXT; 2,048 by default) so that
reading a full prompt stays quick on a busy machine."""

from __future__ import annotations

import pytest
from django.test import Client

from chat import services
from chat.models import Conversation, Message
from chat.tests.test_api_send_options import final, send
from chat.tests.test_consumers import connect_as, receive_until

pytestmark = pytest.mark.django_db(transaction=True)

TURN = "The quick brown fox jumps over the lazy dog. " * 14  # ~630 characters, ~165 tokens
TOO_LONG = "Please read all of this. " + "word " * 800  # ~1,000 tokens, the model reads 512
WINDOW = 512


@pytest.fixture(autouse=True)
def small_window(settings):
    settings.LLM_LOCAL_CONTEXT = WINDOW


@pytest.fixture
def chat(owner, organisation) -> Conversation:
    return services.conversation_create(owner=owner, title="Long", organisation=organisation)


def said_before(chat: Conversation, owner, turns: int) -> None:
    """`turns` messages already in the conversation, user and assistant in turn."""
    Message.objects.bulk_create(
        Message(
            conversation=chat,
            role=Message.Role.USER if n % 2 == 0 else Message.Role.ASSISTANT,
            author=owner if n % 2 == 0 else None,
            content=f"{n}: {TURN}",
            status=Message.Status.COMPLETE,
            seq=len(TURN),
        )
        for n in range(turns)
    )


def test_a_conversation_past_the_bundled_models_window_is_still_answered(api: Client, chat, owner):
    said_before(chat, owner, 20)  # ~3,400 tokens of history against 512
    sent = send(api, chat, text="Say hello.", model="local", max_tokens=8)
    assert sent.status_code == 201, sent.content
    body = final(api, sent.json()["reply"], timeout=180)
    assert body["status"] in ("complete", "incomplete"), body
    assert body["content"], body
    prompt = Message.objects.get(pk=sent.json()["reply"]).routing["prompt"]
    assert prompt["window"] == WINDOW and 0 < prompt["left_out"] <= 19, prompt


def test_a_message_too_long_for_the_model_is_refused_and_nothing_saved(api: Client, chat):
    before = Message.objects.count()
    sent = send(api, chat, text=TOO_LONG, model="local")
    assert sent.status_code == 400, sent.content
    error = sent.json()["error"]
    assert error["code"] == "context_length_exceeded", error
    assert str(WINDOW) in error["detail"] and error["context_window"] == WINDOW, error
    assert Message.objects.count() == before
    # A model whose window is not known takes it (the provider decides).
    assert send(api, chat, text=TOO_LONG, model="simulated").status_code == 201


async def test_the_socket_refuses_a_message_too_long_for_the_model(owner, chat):
    before = await Message.objects.acount()
    ws = await connect_as(owner)
    try:
        await ws.send_json_to(
            {
                "type": "send",
                "conversation": chat.pk,
                "text": TOO_LONG,
                "client_id": "too-long-1",
                "model": "local",
            }
        )
        frame = (await receive_until(ws, "error"))[-1]
    finally:
        await ws.disconnect()
    assert frame["code"] == "context_length_exceeded" and frame["retryable"] is False, frame
    assert await Message.objects.acount() == before


async def test_the_openai_endpoint_answers_a_long_history_and_refuses_a_long_message(http):
    history = [
        {"role": "user" if n % 2 == 0 else "assistant", "content": f"{n}: {TURN}"}
        for n in range(19)
    ]
    answered = await http.post(
        "/v1/chat/completions",
        json={
            "model": "local",
            "messages": [*history, {"role": "user", "content": "Say hello."}],
            "max_tokens": 8,
        },
        timeout=180,
    )
    assert answered.status_code == 200, answered.text
    assert answered.json()["choices"][0]["message"]["content"]

    conversations = await Conversation.objects.acount()
    refused = await http.post(
        "/v1/chat/completions",
        json={"model": "local", "messages": [{"role": "user", "content": TOO_LONG}]},
    )
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "context_length_exceeded")
    assert "x-parley-message" not in refused.headers
    assert await Conversation.objects.acount() == conversations
