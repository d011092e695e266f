"""The OpenAI kinds over the SDK's aiohttp client (LLM_HTTP_CLIENT=aiohttp), against a real
loopback upstream: the same replies, the same ProviderError for a read timeout, a refused
connection and a body cut midway as over httpx, and a stopped or cancelled reply lets go of its
upstream connection."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from llm.providers.base import ProviderConfig, ProviderError, provider_error_from
from llm.registry import chat_model_for
from tests.fault_server import Disconnect, Endless, FaultServer, Reply, Stall

MESSAGES = [SystemMessage("Be brief."), HumanMessage("Say hello.")]
REPLY = Reply(text="Hello there, how can I help you today?", chunk_chars=5)


@pytest.fixture(autouse=True)
def _aiohttp(settings):
    settings.LLM_HTTP_CLIENT = "aiohttp"


def _config(base_url: str, timeout: float = 10) -> ProviderConfig:
    return ProviderConfig(
        name="openai-compatible",
        kind="openai-compatible",
        model="m",
        base_url=base_url,
        api_key="k",
        timeout=timeout,
        connect_timeout=2,
    )


async def _text(model: Any) -> str:
    return "".join([chunk.text async for chunk in model._astream(MESSAGES)])


async def _failure(config: ProviderConfig) -> tuple[ProviderError, str]:
    """The ProviderError a reply ends with, and the text streamed before it."""
    text: list[str] = []
    with pytest.raises(Exception) as raised:
        async for chunk in chat_model_for(config, max_tokens=50)._astream(MESSAGES):
            text.append(chunk.text)
    return provider_error_from(raised.value), "".join(text)


async def _until_closed(fault: FaultServer, behaviour: str) -> None:
    async with asyncio.timeout(30):  # a bound for failing, not a speed requirement
        while not fault.closed("a", behaviour):  # the server sees its client go away
            await asyncio.sleep(0.01)


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port bound and not listening: a connection to it is refused."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


async def test_it_streams_through_the_sdks_aiohttp_client(fault: FaultServer, settings):
    fault.default("a", REPLY)
    model = chat_model_for(_config(fault.base_url("a")), max_tokens=50)
    assert isinstance(model.http_async_client, openai.DefaultAioHttpClient)  # type: ignore[attr-defined]
    assert await _text(model) == REPLY.text
    assert await _text(model) == REPLY.text  # the pooled connection, read again
    assert fault.closed("a") == []  # each body read to its end
    settings.LLM_HTTP_CLIENT = "httpx"
    assert chat_model_for(_config(fault.base_url("a")), max_tokens=50).http_async_client is None  # type: ignore[attr-defined]


async def test_a_silence_mid_body_is_a_read_timeout(fault: FaultServer):
    fault.default("a", Stall(text="Going, going, ", after_chunks=1, chunk_chars=7))
    error, text = await _failure(_config(fault.base_url("a"), timeout=0.5))
    assert (error.code, error.reason, error.retryable) == ("provider_unavailable", "timeout", True)
    assert text == "Going, "


async def test_a_refused_connection_is_a_connection_failure_not_a_timeout(refusing_port: int):
    """The SDK's aiohttp adapter calls it ConnectTimeout; our client says ConnectError, as
    httpx does, so the attempt's reason stays `connection`."""
    error, text = await _failure(_config(f"http://127.0.0.1:{refusing_port}/v1"))
    assert (error.code, error.reason, error.retryable) == (
        "provider_unavailable",
        "connection",
        True,
    )
    assert text == ""


async def test_a_body_cut_midway_is_a_broken_connection(fault: FaultServer):
    fault.default("a", Disconnect(text="Going, going, ", after_chunks=1, chunk_chars=7))
    error, text = await _failure(_config(fault.base_url("a")))
    assert (error.code, error.reason, error.retryable) == (
        "provider_unavailable",
        "connection",
        True,
    )
    assert text == "Going, "


async def test_a_stopped_reply_closes_its_connection_and_the_next_reply_streams(
    fault: FaultServer,
):
    fault.script("a", Endless(chunk_delay=0.01), REPLY)
    model = chat_model_for(_config(fault.base_url("a")), max_tokens=50)
    endless: Any = model._astream(MESSAGES)
    pieces = [(await endless.__anext__()).message.content for _ in range(4)]
    assert "".join(pieces).startswith("and on")
    await endless.aclose()
    await _until_closed(fault, "endless")
    assert await _text(model) == REPLY.text
    assert fault.closed("a", "reply") == []


async def test_a_cancelled_reply_closes_its_connection(fault: FaultServer):
    fault.default("a", Endless(chunk_delay=0.01))
    model = chat_model_for(_config(fault.base_url("a")), max_tokens=50)
    streaming = asyncio.Event()

    async def read() -> None:
        async for _chunk in model._astream(MESSAGES):
            streaming.set()

    reading = asyncio.create_task(read())
    await streaming.wait()
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    await _until_closed(fault, "endless")
