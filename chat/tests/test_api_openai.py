"""POST /v1/chat/completions and GET /v1/models through the full ASGI application: OpenAI's
shapes, its errors, and the chat path underneath (recorded conversation, limits, budgets)."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache

from accounts.models import Budget
from accounts.services import api_key_revoke
from chat.api import idempotency
from chat.models import Conversation, Message
from chat.tests.conftest import asgi_client
from llm.providers.simulated import simulated_reply
from tests.harness.processes import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def chat_request(text: str = "Hello", **extra) -> dict:
    return {"model": "simulated", "messages": [{"role": "user", "content": text}], **extra}


def sse_payloads(text: str) -> list:
    out = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def test_a_completion_has_openais_shape(http):
    response = await http.post("/v1/chat/completions", json=chat_request("Hi there"))
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "simulated"
    assert body["id"].startswith("chatcmpl-") and isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"] == {
        "role": "assistant",
        "content": simulated_reply("Hi there"),
        "refusal": None,
    }
    usage = body["usage"]
    assert usage["completion_tokens"] > 0 and usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_a_request_is_recorded_as_a_conversation(http, owner, organisation):
    payload = {
        "model": "simulated",
        "messages": [
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Bonjour !"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "How "}, {"type": "text", "text": "are you?"}],
            },
        ],
        "temperature": 0.2,
        "max_tokens": 50,
    }
    response = await http.post("/v1/chat/completions", json=payload)
    assert response.status_code == 200
    conversation = await Conversation.objects.aget(
        pk=int(response.headers["x-parley-conversation"])
    )
    assert conversation.owner_id == owner.pk and conversation.organisation_id == organisation.pk
    assert conversation.title == "How are you?"
    # Kept apart from the person's own chats, its system message as the conversation's prompt.
    assert conversation.origin == "openai" and conversation.system_prompt == "Answer in French."
    messages = [m async for m in conversation.messages.order_by("id")]
    assert [(m.role, m.content) for m in messages[:3]] == [
        ("user", "Hello"),
        ("assistant", "Bonjour !"),
        ("user", "How are you?"),
    ]
    reply = messages[3]
    assert reply.pk == int(response.headers["x-parley-message"])
    assert reply.status == "complete" and reply.routing["alias"] == "simulated"
    assert reply.routing["options"] == {"temperature": 0.2, "max_tokens": 50}
    assert reply.content == response.json()["choices"][0]["message"]["content"]


async def test_a_stream_is_chunks_then_done(http):
    async with http.stream(
        "POST",
        "/v1/chat/completions",
        json=chat_request("Stream it", stream=True, stream_options={"include_usage": True}),
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = (await response.aread()).decode()
    payloads = sse_payloads(raw)
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == simulated_reply("Stream it")
    finish = chunks[-2]
    assert finish["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_models_lists_the_aliases(http):
    body = (await http.get("/v1/models")).json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids[0] == "simulated" and "local" in ids
    assert body["data"][0] == {
        "id": "simulated",
        "object": "model",
        "created": 0,
        "owned_by": "parley",
    }
    assert (await http.get("/v1/models/simulated")).json()["id"] == "simulated"
    missing = await http.get("/v1/models/gpt-17")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


# --- errors in OpenAI's shape ---------------------------------------------------------------


def openai_error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


async def test_a_bad_key_is_401(api_key, owner):
    async with asgi_client() as client:
        missing = await client.post("/v1/chat/completions", json=chat_request())
        assert missing.status_code == 401
        wrong = await client.post(
            "/v1/chat/completions", json=chat_request(), headers={"Authorization": "Bearer pk_x_y"}
        )
        assert wrong.status_code == 401 and openai_error(wrong)["code"] == "invalid_api_key"
        await sync_to_async(api_key_revoke)(key=api_key.key, by=owner)
        revoked = await client.get("/v1/models", headers={"Authorization": f"Bearer {api_key.raw}"})
        assert revoked.status_code == 401


async def test_an_unknown_model_is_404(http):
    response = await http.post("/v1/chat/completions", json={**chat_request(), "model": "gpt-17"})
    assert response.status_code == 404
    error = openai_error(response)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert not await Conversation.objects.aexists()


@pytest.mark.parametrize(
    "payload,param",
    [
        (b"{not json", None),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "simulated", "messages": []}, "messages"),
        ({"model": "simulated", "messages": [{"role": "assistant", "content": "x"}]}, "messages"),
        ({"model": "simulated", "messages": [{"role": "user", "content": "  "}]}, "messages"),
        (
            {"model": "simulated", "messages": [{"role": "wizard", "content": "x"}]},
            "messages.[0].role",
        ),
        ({**chat_request(), "n": 2}, "n"),
        ({**chat_request(), "tools": [{"type": "function"}]}, "tools"),
        ({**chat_request(), "stream": "yes"}, "stream"),
        (
            {
                "model": "simulated",
                "messages": [{"role": "user", "content": [{"type": "image_url"}]}],
            },
            "messages.[0].content",
        ),
    ],
)
async def test_an_invalid_request_is_400(http, payload, param):
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    response = await http.post(
        "/v1/chat/completions", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    error = openai_error(response)
    assert error["type"] == "invalid_request_error" and error["param"] == param


async def test_rate_limits_are_429_with_retry_after(http, settings):
    settings.WS_RATE_SENDS_PER_USER = "1/m"
    assert (await http.post("/v1/chat/completions", json=chat_request())).status_code == 200
    refused = await http.post("/v1/chat/completions", json=chat_request())
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert openai_error(refused)["code"] == "rate_limit_exceeded"


async def test_a_budget_is_429_insufficient_quota(http, organisation):
    await Budget.objects.acreate(organisation=organisation, period="month", max_tokens=5)
    refused = await http.post("/v1/chat/completions", json=chat_request(stream=True))
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    error = openai_error(refused)
    assert error["type"] == "insufficient_quota" and error["code"] == "insufficient_quota"
    assert not await Conversation.objects.aexists()


async def test_the_budget_reserves_the_requests_own_max_tokens(http, organisation, settings):
    # 100 tokens a month: the deployment's cap (512) would not fit, the request's 20 does.
    await Budget.objects.acreate(organisation=organisation, period="month", max_tokens=100)
    refused = await http.post("/v1/chat/completions", json=chat_request())
    assert refused.status_code == 429
    capped = await http.post("/v1/chat/completions", json=chat_request(max_tokens=20))
    assert capped.status_code == 200, capped.text


@pytest.mark.parametrize("stream", [False, True])
async def test_every_provider_down_is_503(http, settings, stream):
    # A deployment nobody listens on: the router fails over to nothing and gives up.
    settings.OPENAI_COMPATIBLE_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"
    settings.LLM_RETRY_MAX_ATTEMPTS = 1
    settings.LLM_CONNECT_TIMEOUT = 1.0
    response = await http.post(
        "/v1/chat/completions", json={**chat_request(stream=stream), "model": "openai-compatible"}
    )
    assert response.status_code == 503
    error = openai_error(response)
    assert error["type"] == "server_error" and error["code"] == "provider_unavailable"


async def test_the_rest_of_v1_answers_in_openais_shape(http):
    response = await http.post("/v1/audio/speech", json={})
    assert response.status_code == 404 and openai_error(response)["type"] == "invalid_request_error"
    assert (await http.get("/v1/chat/completions")).status_code == 405


# --- idempotency ------------------------------------------------------------------------------


async def test_an_idempotency_key_repeat_returns_the_original_completion(http):
    headers = {"Idempotency-Key": "same-question"}
    first = await http.post("/v1/chat/completions", json=chat_request("Once"), headers=headers)
    again = await http.post("/v1/chat/completions", json=chat_request("Once"), headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert await Message.objects.filter(content="Once").acount() == 1
    other = await http.post("/v1/chat/completions", json=chat_request("Twice"), headers=headers)
    assert other.status_code == 422


async def test_a_concurrent_duplicate_completion_gets_409(http, api_key):
    payload = chat_request("Busy")
    slot = idempotency.slot_for(
        scope=f"key:{api_key.key.pk}",
        key="busy",
        method="POST",
        path="/v1/chat/completions",
        payload=payload,
    )
    assert await cache.aadd(slot.lock_key, 1, 60)  # the first is still running (elsewhere)
    response = await http.post(
        "/v1/chat/completions", json=payload, headers={"Idempotency-Key": "busy"}
    )
    assert response.status_code == 409 and openai_error(response)["code"] == "idempotency_conflict"


async def test_unstorable_text_is_a_400_not_a_crash(http):
    raw = b'{"model": "simulated", "messages": [{"role": "user", "content": "bad \\udc00 text"}]}'
    response = await http.post(
        "/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "simulated", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"model": "simulated", "messages": [{"role": "user", "content": "a\\u0000b"}]}',
        b'{"model": "simulated\\u0000", "messages": [{"role": "user", "content": "hi"}]}',
        b'{"model": "simulated", "messages": [{"role": "user", "content": [' * 20 + b"]}]" * 20,
    ],
    ids=["deep", "nul-content", "nul-model", "nested-parts"],
)
async def test_hostile_bodies_are_openai_400s_and_log_no_traceback(http, raw, caplog):
    response = await http.post(
        "/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert openai_error(response)["type"] == "invalid_request_error"
    assert not await Message.objects.aexists()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_a_body_over_the_limit_is_an_openai_413(http, settings):
    content = json.dumps(chat_request("x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10)))
    response = await http.post(
        "/v1/chat/completions", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert openai_error(response)["type"] == "invalid_request_error"
