"""A context window Parley was not told, learnt from the provider's refusal: a conversation that
grew past an OpenAI-compatible server's window is answered from its latest turns (the refusal
states the window; the prompt is fitted to it and sent again at once, and later replies in the
process are fitted before they go), instead of failing at every send from then on. Over real
loopback HTTP: the fault server speaking as each server words the refusal, and llama-cpp-python's
own server, which answers a streamed prompt past its window with an empty stream."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from langchain_core.messages import HumanMessage

from chat import services
from chat.models import Conversation, Message
from chat.replies.stream import reply_stream
from chat.tests.test_context_window_sends import said_before
from llm import catalog
from llm.accounting import estimate_tokens
from llm.catalog import DeploymentConfig
from llm.models import Deployment, Provider
from llm.providers.base import ProviderError, provider_error_from
from llm.registry import chat_model_for
from tests.fault_server import Fail, FaultServer, Reply
from tests.llama_server import LlamaServer, start_llama_server

pytestmark = pytest.mark.django_db(transaction=True)

# How servers word the refusal of a prompt past the window (1,024 tokens in each).
REFUSALS: dict[str, dict[str, Any]] = {
    "openai": {
        "message": "This model's maximum context length is 1024 tokens. However, your messages "
        "resulted in 3391 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    },
    "vllm": {
        "message": "This model's maximum context length is 1024 tokens. However, you requested "
        "3903 tokens (3391 in the messages, 512 in the completion). Please reduce the length "
        "of the messages or completion.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    },
    "vllm, newer": {
        "message": "'max_tokens' or 'max_completion_tokens' is too large: 512. This model's "
        "maximum context length is 1024 tokens and your request has 3391 input tokens "
        "(512 > 1024 - 3391).",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    },
    "llama.cpp server": {
        "code": 400,
        "message": "the request exceeds the available context size, try increasing it",
        "type": "exceed_context_size_error",
        "n_prompt_tokens": 3391,
        "n_ctx": 1024,
    },
}


@pytest.fixture(autouse=True)
def nothing_learnt() -> Iterator[None]:
    catalog._learnt_windows.clear()
    yield
    catalog._learnt_windows.clear()


@pytest.fixture(autouse=True)
def generated_here(monkeypatch, settings):
    """Replies generated in the test's loop (reply_stream), not handed to a worker."""
    monkeypatch.setattr("chat.replies.dispatch.dispatch_generation", lambda mid, provider: None)
    settings.LLM_MAX_TOKENS = 16


def _config(fault: FaultServer) -> DeploymentConfig:
    return DeploymentConfig(
        name="a",
        kind="openai-compatible",
        model="m",
        base_url=fault.base_url("a"),
        connect_timeout=2,
        timeout=30,
        alias="default",
        key="learnt-a",
    )


async def _refusal(fault: FaultServer) -> ProviderError:
    model = chat_model_for(_config(fault), max_tokens=16)
    with pytest.raises(Exception) as raised:
        async with asyncio.timeout(30):  # a bound for failing, not a speed requirement
            async for _ in model._astream([HumanMessage("Hello?")]):
                pass
    return provider_error_from(raised.value)


@pytest.mark.parametrize("server", REFUSALS)
async def test_a_refusal_states_the_window_as_each_server_words_it(fault: FaultServer, server):
    fault.default("a", Fail(400, error=REFUSALS[server]))
    error = await _refusal(fault)
    assert (error.code, error.context_window, error.retryable) == (
        "context_length_exceeded",
        1024,
        False,
    )
    assert "1024" in error.detail


async def test_any_other_refusal_is_still_a_plain_refusal(fault: FaultServer):
    fault.default(
        "a",
        Fail(400, error={"message": "temperature must be at most 2", "type": "invalid_request"}),
    )
    error = await _refusal(fault)
    assert (error.code, error.context_window) == ("provider_rejected", None)


def _conversation_with_history(owner, organisation, turns: int) -> Conversation:
    chat = services.conversation_create(owner=owner, title="Long", organisation=organisation)
    said_before(chat, owner, turns)
    return chat


async def _answer(owner, chat: Conversation, text: str, alias: str) -> Message:
    sent = await sync_to_async(services.message_send)(
        author=owner, conversation=chat, text=text, client_id=f"c-{text}", alias=alias
    )
    async with asyncio.timeout(180):  # a bound for failing, not a speed requirement
        await reply_stream(message_id=sent.reply.pk)
    return await Message.objects.aget(pk=sent.reply.pk)


def _sent_tokens(body: dict) -> int:
    return sum(estimate_tokens(m["content"]) + 8 for m in body["messages"])


async def test_a_conversation_past_an_unstated_window_is_answered_after_one_refusal(
    fault: FaultServer, deploy, owner, organisation
):
    await sync_to_async(deploy)("a", alias="long")  # no context window configured
    chat = await sync_to_async(_conversation_with_history)(owner, organisation, 20)
    fault.script("a", Fail(400, error=REFUSALS["vllm"]))
    fault.default("a", Reply(text="Hello there."))

    reply = await _answer(owner, chat, "Say hello.", "long")

    assert (reply.status, reply.content) == ("complete", "Hello there."), reply.error_message
    attempts = reply.routing["attempts"]
    assert [(a["outcome"], a.get("code")) for a in attempts] == [
        ("failed", "context_length_exceeded"),
        ("answered", None),
    ]
    refused, answered = fault.requests("a")
    # The history as it was first (~3,300 tokens); then the latest turns within 1,024 with
    # the reply's room, the question last.
    assert _sent_tokens(refused.body) > 3000
    assert len(answered.body["messages"]) < len(refused.body["messages"])
    assert _sent_tokens(answered.body) + answered.body["max_tokens"] <= 1024
    assert answered.body["messages"][-1]["content"] == "Say hello."
    # The reply's routing says the window and how many earlier turns were left out.
    kept = len(answered.body["messages"]) - 2  # without the system prompt and the question
    assert reply.routing["prompt"] == {"window": 1024, "left_out": 19 - kept}

    # The window is known from now on in this process: the next reply goes out fitted.
    again = await _answer(owner, chat, "And goodbye?", "long")
    assert again.status == "complete" and len(again.routing["attempts"]) == 1
    assert fault.count("a") == 3 and _sent_tokens(fault.requests("a")[-1].body) <= 1024


async def test_a_question_longer_than_the_stated_window_fails_once_as_too_long(
    fault: FaultServer, deploy, owner, organisation
):
    await sync_to_async(deploy)("a", alias="long")
    chat = await sync_to_async(_conversation_with_history)(owner, organisation, 0)
    fault.default("a", Fail(400, error=REFUSALS["openai"]))

    reply = await _answer(owner, chat, "word " * 1500, "long")  # ~1,900 tokens

    assert (reply.status, reply.error_code) == ("failed", "context_length_exceeded")
    assert "1024" in reply.error_message
    assert fault.count("a") == 1  # not retried: no shorter prompt can be made


@pytest.fixture(scope="module")
def small_llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """llama-cpp-python's OpenAI-compatible server reading 512 tokens at most."""
    server = start_llama_server(Path(tmp_path_factory.mktemp("llama-512")), n_ctx=512)
    yield server
    server.stop()


async def test_llama_cpp_python_servers_empty_stream_is_read_as_its_window(
    small_llama: LlamaServer, owner, organisation
):
    """Its stream of a prompt past the window is a 200 with no event at all; asked again not
    streamed, it states the window, and the conversation is answered from its latest turns."""
    provider = await Provider.objects.acreate(
        name="llama-512",
        kind=Provider.Kind.OPENAI_COMPATIBLE,
        base_url=small_llama.base_url,
        connect_timeout=3,
        first_token_timeout=60,
        inter_token_timeout=30,
    )
    deployment = await Deployment.objects.acreate(provider=provider, alias="smol", model="smol")
    chat = await sync_to_async(_conversation_with_history)(owner, organisation, 12)

    reply = await _answer(owner, chat, "Say hello.", "smol")

    assert reply.status in ("complete", "incomplete"), (reply.error_code, reply.error_message)
    assert reply.content.strip()
    outcomes = [(a["outcome"], a.get("code")) for a in reply.routing["attempts"]]
    assert outcomes == [("failed", "context_length_exceeded"), ("answered", None)]
    assert catalog.alias_window("smol") == 512 and deployment.context_window is None


def test_anthropics_refusal_states_its_window():
    """Anthropic words it "prompt is too long: N tokens > M maximum" (its SDK's error)."""
    import anthropic
    import httpx

    body = {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 210000 tokens > 200000 maximum",
        },
    }
    response = httpx.Response(
        400, request=httpx.Request("POST", "https://api.anthropic.com/v1/messages"), json=body
    )
    error = provider_error_from(anthropic.BadRequestError("400", response=response, body=body))
    assert (error.code, error.context_window) == ("context_length_exceeded", 200_000)
