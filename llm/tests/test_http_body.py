"""The streamed body of an OpenAI-compatible reply read a network read at a time
(llm/providers/http_body.py), against a real HTTP server on loopback that writes exactly the
bytes a test gives it: split anywhere, cut, malformed, stalled, compressed."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
from langchain_core.messages import HumanMessage

import llm.providers.openai_compatible as openai_compatible
from llm.providers import http_body
from llm.providers.base import ProviderConfig, provider_error_from
from llm.providers.http_body import ChunkedBody
from llm.registry import chat_model_for

MESSAGES = [HumanMessage("Say hello.")]
TEXT = ["Hello", " there,", " how", " can", " I", " help?"]


def _event(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


def _sse(text: list[str] = TEXT) -> list[bytes]:
    """A reply's SSE events, one a token, as OpenAI streams them."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}

    return [
        _event(chunk({"role": "assistant", "content": ""})),
        *(_event(chunk({"content": piece})) for piece in text),
        _event(chunk({}, "stop")),
        _event("[DONE]"),
    ]


def _chunked(events: list[bytes], *, extension: bool = False, trailer: bool = False) -> bytes:
    """Each event its own HTTP chunk, then the last chunk (and a trailer field)."""
    ext = b";name=value" if extension else b""
    body = b"".join(b"%x%s\r\n%s\r\n" % (len(e), ext, e) for e in events)
    return body + b"0\r\n" + (b"x-trailer: 1\r\n" if trailer else b"") + b"\r\n"


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"


@dataclass
class RawServer:
    """Answers each request with the next script: a list of byte strings written one by one
    (each flushed, the loop let go between them), then `close` or keep the connection."""

    port: int = 0
    scripts: list[tuple[list[bytes], bool]] = field(default_factory=list)
    connections: int = 0
    requests: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                self.requests += 1
                pieces, close = self.scripts.pop(0)
                for piece in pieces:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0)
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self.closed.set()


@asynccontextmanager
async def raw_server() -> AsyncIterator[RawServer]:
    server = RawServer()
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listening.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listening.close()


def _split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _model(server: RawServer, timeout: float = 10) -> Any:
    config = ProviderConfig(
        name="raw", kind="openai-compatible", model="m", base_url=server.base_url(), timeout=timeout
    )
    return chat_model_for(config, max_tokens=50)


async def _text(model: Any) -> str:
    return "".join([chunk.text async for chunk in model._astream(MESSAGES)])


@pytest.fixture
def lean_reads(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each stream was read by http_body (True) or by httpx (False); a body read by
    http_body must have read its socket directly (a plain TCP connection here)."""
    seen: list[bool] = []
    lean_body: Callable[..., Any] = openai_compatible.lean_body
    socket_of = http_body._SocketReads.of

    def spy(response: Any) -> Any:
        body = lean_body(response)
        seen.append(body is not None)
        return body

    def socket_spy(network: Any) -> Any:
        reads = socket_of(network)
        assert reads is not None
        return reads

    monkeypatch.setattr(openai_compatible, "lean_body", spy)
    monkeypatch.setattr(http_body._SocketReads, "of", staticmethod(socket_spy))
    return seen


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100_000])
def test_a_chunked_body_split_anywhere_is_the_same_body(size: int):
    events = _sse()
    decoder = ChunkedBody()
    wire = _chunked(events, extension=True, trailer=True) + b"next"
    body = b"".join(decoder.feed(piece) for piece in _split(wire, size))
    assert body == b"".join(events)
    assert decoder.done and decoder.after == b"next"


@pytest.mark.parametrize(
    "wire",
    [b"zz\r\ndata\r\n", b"4\ndata\r\n", b"4\r\ndataXY", b"4\r\ndata\r\r"],
    ids=["not hex", "bare LF", "no CRLF after the data", "CR CR"],
)
def test_a_malformed_chunk_is_a_protocol_error(wire: bytes):
    import httpx2

    with pytest.raises(httpx2.RemoteProtocolError):
        ChunkedBody().feed(wire)


@pytest.mark.parametrize("size", [1, 5, 64, 100_000])
async def test_a_reply_split_anywhere_streams_whole_and_its_connection_serves_the_next(
    size: int, lean_reads: list[bool]
):
    async with raw_server() as server:
        for _ in range(2):
            wire = HEAD + b"\r\n" + _chunked(_sse(), extension=True, trailer=True)
            server.scripts.append((_split(wire, size), False))
        model = _model(server)
        assert await _text(model) == "".join(TEXT)
        assert await _text(model) == "".join(TEXT)
    assert lean_reads == [True, True]
    assert server.requests == 2 and server.connections == 1


async def test_a_reply_stopped_midway_closes_its_connection_and_the_next_opens_one(
    lean_reads: list[bool],
):
    async with raw_server() as server:
        events = _sse([f" t{n}" for n in range(50)])
        server.scripts.append(([HEAD + b"\r\n", *_split(_chunked(events), 40)], False))
        server.scripts.append(([HEAD + b"\r\n" + _chunked(_sse())], False))
        model = _model(server)
        stream = model._astream(MESSAGES)
        assert [(await stream.__anext__()).text for _ in range(3)] == ["", " t0", " t1"]
        await stream.aclose()
        await server.closed.wait()  # the unfinished body's connection is not reused
        assert await _text(model) == "".join(TEXT)
    assert server.connections == 2 and lean_reads == [True, True]


async def test_a_body_cut_mid_chunk_is_a_broken_connection(lean_reads: list[bool]):
    async with raw_server() as server:
        wire = HEAD + b"\r\n" + _chunked(_sse())
        server.scripts.append(([wire[: len(wire) // 2]], True))
        server.scripts.append(([HEAD + b"\r\n" + _chunked(_sse())], False))
        model = _model(server)
        with pytest.raises(openai.APIConnectionError) as raised:
            await _text(model)
        error = provider_error_from(raised.value)
        assert (error.code, error.reason, error.retryable) == (
            "provider_unavailable",
            "connection",
            True,
        )
        assert await _text(model) == "".join(TEXT)  # a new connection
    assert lean_reads == [True, True]


async def test_an_illegal_chunk_header_fails_the_reply_as_a_broken_connection(
    lean_reads: list[bool],
):
    async with raw_server() as server:
        server.scripts.append(([HEAD + b"\r\n" + _chunked(_sse()[:2])[:-5] + b"zz\r\n"], True))
        with pytest.raises(openai.APIConnectionError):
            await _text(_model(server))
    assert lean_reads == [True]


async def test_a_silence_mid_body_is_the_sdks_read_timeout(lean_reads: list[bool]):
    async with raw_server() as server:
        # The rest of the body never comes; the connection stays open.
        server.scripts.append(([HEAD + b"\r\n" + _chunked(_sse())[:-40]], False))
        with pytest.raises(openai.APITimeoutError) as raised:
            await _text(_model(server, timeout=1))
        assert provider_error_from(raised.value).reason == "timeout"
    assert lean_reads == [True]


async def test_a_compressed_or_length_delimited_body_is_read_by_httpx(lean_reads: list[bool]):
    body = b"".join(_sse())
    packed = gzip.compress(body)
    async with raw_server() as server:
        compressed = HEAD + b"content-encoding: gzip\r\n\r\n" + _chunked([packed])
        sized = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        server.scripts += [([compressed], False), ([sized], False)]
        model = _model(server)
        assert await _text(model) == "".join(TEXT)
        assert await _text(model) == "".join(TEXT)
    assert lean_reads == [False, False]
