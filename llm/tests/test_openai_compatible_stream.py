"""The OpenAI kinds' models (llm/providers/openai_compatible.py), over real loopback HTTP: the
stream reads chunks as plain JSON (the same chunks, usage, finish reasons, request and errors
as langchain-openai's own path, without the SDK building a model object per chunk), and one
built model serves the replies of an event loop, concurrently, each closing its own upstream
call when stopped."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletionChunk
from pydantic import SecretStr

from llm.options import GenerationOptions
from llm.providers.base import ProviderConfig, ProviderError, provider_error_from
from llm.registry import chat_model_for
from tests.fault_server import Endless, Fail, FaultServer, Reply

MESSAGES = [SystemMessage("Be brief."), HumanMessage("Say hello.")]
REPLY = Reply(text="Hello there, how can I help you today?", chunk_chars=5, prompt_tokens=9)


def _config(fault: FaultServer, kind: str = "openai-compatible") -> ProviderConfig:
    return ProviderConfig(
        name=kind, kind=kind, model="m", base_url=fault.base_url("a"), api_key="k", timeout=10
    )


def _sdk_model(fault: FaultServer) -> ChatOpenAI:
    """langchain-openai's own stream, configured as our builder configures the model."""
    return ChatOpenAI(  # type: ignore[call-arg]
        model="m",
        api_key=SecretStr("k"),
        base_url=fault.base_url("a"),
        timeout=10,
        max_retries=0,
        streaming=True,
        stream_usage=True,
        stream_chunk_timeout=0,
        temperature=0.25,
        extra_body={"seed": 7, "max_tokens": 50},
    )


async def _chunks(model: Any) -> list[tuple[Any, ...]]:
    return [
        (
            chunk.message.content,
            chunk.message.usage_metadata,
            chunk.generation_info,
            chunk.message.response_metadata,
        )
        async for chunk in model._astream(MESSAGES)
    ]


@pytest.fixture
def chunk_models_built(monkeypatch) -> list[int]:
    """How many ChatCompletionChunk objects the SDK builds (one a chunk on its own path)."""
    built = [0]
    construct = ChatCompletionChunk.construct.__func__  # type: ignore[attr-defined]

    def counting(cls: type, *args: Any, **kwargs: Any) -> Any:
        built[0] += 1
        return construct(cls, *args, **kwargs)

    monkeypatch.setattr(ChatCompletionChunk, "construct", classmethod(counting))
    return built


async def test_it_streams_what_langchain_openai_streams_without_a_model_per_chunk(
    fault: FaultServer, chunk_models_built: list[int]
):
    fault.default("a", REPLY)
    options = GenerationOptions(temperature=0.25, seed=7)
    ours = await _chunks(chat_model_for(_config(fault), max_tokens=50, options=options))
    assert chunk_models_built[0] == 0
    theirs = await _chunks(_sdk_model(fault))
    assert chunk_models_built[0] >= len(REPLY.chunks())  # the SDK's path builds them
    assert ours == theirs
    assert "".join(content for content, *_ in ours) == REPLY.text
    assert any(usage == {**(usage or {}), "input_tokens": 9} for _, usage, *_ in ours)
    assert any((info or {}).get("finish_reason") == "stop" for _, _, info, _ in ours)
    # The same request on the wire: model, messages, sampling, cap, usage asked for.
    mine, sdk = (seen.body for seen in fault.requests("a"))
    assert mine == sdk
    assert mine["max_tokens"] == 50 and mine["seed"] == 7 and mine["temperature"] == 0.25
    assert mine["stream"] is True and mine["stream_options"] == {"include_usage": True}


async def test_the_openai_kind_still_sends_max_completion_tokens(fault: FaultServer):
    fault.default("a", REPLY)
    await _chunks(chat_model_for(_config(fault, "openai"), max_tokens=12))
    (seen,) = fault.requests("a")
    assert seen.body["max_completion_tokens"] == 12 and "max_tokens" not in seen.body


async def test_an_upstream_error_keeps_its_status_and_retry_after(fault: FaultServer):
    fault.default("a", Fail(429, retry_after=2))
    model = chat_model_for(_config(fault), max_tokens=8)
    with pytest.raises(Exception) as raised:
        await _chunks(model)
    error = provider_error_from(raised.value)
    assert isinstance(error, ProviderError)
    assert (error.status, error.retry_after, error.retryable) == (429, 2.0, True)


async def test_a_plain_invoke_still_answers(fault: FaultServer):
    """Only streams take the JSON path; a non-streaming call goes through the SDK as before."""
    fault.default("a", REPLY)
    model = chat_model_for(_config(fault), max_tokens=50)
    answer = await model.ainvoke(MESSAGES, stream=False)
    assert answer.content == REPLY.text
    (seen,) = fault.requests("a")
    assert seen.stream is False


async def test_replies_on_one_event_loop_share_a_built_model(fault: FaultServer):
    config = _config(fault)
    model = chat_model_for(config, max_tokens=50)
    assert chat_model_for(config, max_tokens=50) is model
    assert chat_model_for(config, max_tokens=51) is not model
    other = chat_model_for(config, max_tokens=50, options=GenerationOptions(seed=1))
    assert other is not model and other is not chat_model_for(config, max_tokens=50)
    assert chat_model_for(
        dataclasses.replace(config, api_key="another"), max_tokens=50
    ) is not chat_model_for(config, max_tokens=50)


def test_outside_an_event_loop_each_call_builds_its_own(fault: FaultServer):
    config = _config(fault)
    assert chat_model_for(config, max_tokens=50) is not chat_model_for(config, max_tokens=50)


async def test_a_shared_model_streams_concurrent_replies_and_stops_each_alone(
    fault: FaultServer,
):
    """Two replies stream at once through one model; stopping one closes its upstream call
    while the other goes on to its end."""
    fault.script(
        "a", Endless(chunk_delay=0.01), Reply(text="The other reply, whole.", chunk_delay=0.01)
    )
    model = chat_model_for(_config(fault), max_tokens=50)
    endless: Any = model._astream(MESSAGES)
    pieces = [(await endless.__anext__()).message.content for _ in range(4)]
    assert "".join(pieces).startswith("and on")
    whole = asyncio.create_task(_chunks(model))
    await endless.aclose()
    async with asyncio.timeout(30):  # a bound for failing, not a speed requirement
        while not fault.closed("a", "endless"):  # the server sees its client go away
            await asyncio.sleep(0.01)
    assert "".join(content for content, *_ in await whole) == "The other reply, whole."
    assert fault.closed("a", "reply") == []  # read to its end
