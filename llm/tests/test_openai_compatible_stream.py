"""The OpenAI kinds' models (llm/providers/openai_compatible.py), over real loopback HTTP: the
stream reads chunks as plain JSON (the same chunks, usage, finish reasons, request and errors
as langchain-openai's own path, without the SDK building a model object per chunk, and a plain
text chunk copied from a template instead of validated), and one built model serves the replies
of an event loop, concurrently, each closing its own upstream call when stopped. The SSE
decoding's edge cases (line ends, splits, an error chunk) are checked against the SDK's own
decoder on the same bytes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import httpx2
import openai
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from openai._streaming import SSEDecoder
from openai.types.chat import ChatCompletionChunk
from pydantic import SecretStr

from llm.options import GenerationOptions
from llm.providers.base import ProviderConfig, ProviderError, provider_error_from
from llm.providers.openai_compatible import SseData, _DictChunks
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


async def test_its_chunks_are_langchain_openais_field_for_field(fault: FaultServer):
    """Plain text chunks are copies of a template, not validated: the same objects as
    langchain-openai builds (fields, fields set, text), each with containers of its own."""
    fault.default("a", REPLY)
    ours = [c async for c in chat_model_for(_config(fault), max_tokens=50)._astream(MESSAGES)]
    fault.default("a", REPLY)
    theirs = [c async for c in _sdk_model(fault)._astream(MESSAGES)]
    assert len(ours) == len(theirs) > len(REPLY.chunks())
    for mine, sdk in zip(ours, theirs, strict=True):
        assert type(mine) is type(sdk) and type(mine.message) is type(sdk.message)
        assert mine == sdk and mine.text == sdk.text
        assert mine.model_fields_set == sdk.model_fields_set
        assert mine.message.model_fields_set == sdk.message.model_fields_set
        assert mine.message.model_dump() == sdk.message.model_dump()
    merged = ours[0]
    for chunk in ours[1:]:
        merged += chunk
    assert merged.message.content == REPLY.text and isinstance(merged.message, AIMessageChunk)
    first, second = ours[1].message, ours[2].message
    assert isinstance(first, AIMessageChunk) and isinstance(second, AIMessageChunk)
    first.response_metadata["touched"] = True
    first.tool_call_chunks.append({"name": "x", "args": None, "id": None, "index": 0})
    assert "touched" not in second.response_metadata and second.tool_call_chunks == []


STREAM = (
    b'data: {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}\r\n\r\n'
    b": a comment\n"
    b'event: message\nid: 7\ndata: {"choices": [{"index": 0, "delta": {"content": "two\\n"}}]}\n\n'
    b'data: {"choices": [{"index": 0,\rdata: "delta": {"content": "lines"}}]}\r\r'
    b"id: 8\n\n"
    b'data: {"choices": [], "usage": {"prompt_tokens": 1}}\n\n'
    b"data: [DONE]\n\n"
)


def _sdk_data(raw: bytes) -> list[bytes]:
    return [e.data.encode() for e in SSEDecoder().iter_bytes(iter([raw])) if e.data]


@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
def test_sse_events_split_anywhere_are_the_sdks(cut: int):
    decoder = SseData()
    events = [*decoder.feed(STREAM[:cut]), *decoder.feed(STREAM[cut:]), *decoder.finish()]
    assert events == _sdk_data(STREAM)
    assert (
        len(events) == 5
        and events[2] == b'{"choices": [{"index": 0,\n"delta": {"content": "lines"}}]}'
    )


def test_sse_a_last_event_without_its_blank_line_still_counts():
    decoder = SseData()
    assert [*decoder.feed(b"data: 1\r\ndata: 2\r"), *decoder.finish()] == [b"1\n2"]


def _client(body: bytes) -> openai.AsyncOpenAI:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    return openai.AsyncOpenAI(
        api_key="k",
        base_url="http://upstream.invalid/v1",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(answer)),
    )


async def _read(completions: Any) -> list[Any]:
    stream = await completions.create(model="m", messages=[], stream=True)
    return [chunk if isinstance(chunk, dict) else chunk.model_dump() async for chunk in stream]


async def test_the_stream_reads_what_the_sdk_reads_and_stops_at_done():
    # (The SDK fails on an event with no data, `id: 8` alone: SseData skips it, as SSE says.)
    stream = STREAM.replace(b"id: 8\n\n", b"")
    client = _client(stream + b'data: {"after": "done"}\n\n')
    ours = await _read(_DictChunks(client.chat.completions, client))
    assert ours == [json.loads(data) for data in _sdk_data(stream)[:4]]
    sdk = await _read(client.chat.completions)
    assert [c["choices"][0]["delta"]["content"] for c in sdk[1:3]] == ["two\n", "lines"]


async def test_an_error_chunk_mid_stream_raises_the_sdks_error():
    first = STREAM[: STREAM.index(b"\r\n\r\n") + 4]
    body = first + b'data: {"error": {"message": "overloaded", "type": "x"}}\n\n' + STREAM
    client = _client(body)
    with pytest.raises(openai.APIError) as ours:
        await _read(_DictChunks(client.chat.completions, client))
    with pytest.raises(openai.APIError) as sdk:
        await _read(client.chat.completions)
    assert (ours.value.message, ours.value.body) == (sdk.value.message, sdk.value.body)
    assert ours.value.message == "overloaded"


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
