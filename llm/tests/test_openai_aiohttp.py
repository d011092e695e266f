"""The OpenAI kinds over the SDK's aiohttp client (LLM_HTTP_CLIENT=aiohttp, the default),
against a real loopback upstream: the same replies, the same ProviderError for a read timeout, a
refused connection and a body cut midway as over httpx, and a stopped or cancelled reply lets go
of its upstream connection. The transport promises of langchain-openai's httpx client hold for
both clients, read back from the sockets themselves: the keep-alive probes and
TCP_USER_TIMEOUT, the connect, read and write timeouts, and the pool of 1,000 connections."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import sys
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from llm.providers.base import ProviderConfig, ProviderError, provider_error_from
from llm.providers.http_clients import async_http_client
from llm.registry import chat_model_for
from tests.fault_server import Disconnect, Endless, FaultServer, Hang, Reply, Stall

MESSAGES = [SystemMessage("Be brief."), HumanMessage("Say hello.")]
REPLY = Reply(text="Hello there, how can I help you today?", chunk_chars=5)
CLIENTS = ["httpx", "aiohttp"]


@pytest.fixture(autouse=True)
def _aiohttp(settings):
    settings.LLM_HTTP_CLIENT = "aiohttp"


def _config(base_url: str, timeout: float = 10, connect_timeout: float = 2) -> ProviderConfig:
    return ProviderConfig(
        name="openai-compatible",
        kind="openai-compatible",
        model="m",
        base_url=base_url,
        api_key="k",
        timeout=timeout,
        connect_timeout=connect_timeout,
    )


async def _text(model: Any) -> str:
    return "".join([chunk.text async for chunk in model._astream(MESSAGES)])


async def _failure(
    config: ProviderConfig, messages: list[Any] = MESSAGES
) -> tuple[ProviderError, str]:
    """The ProviderError a reply ends with, and the text streamed before it."""
    text: list[str] = []
    with pytest.raises(Exception) as raised:
        async with asyncio.timeout(30):  # a bound for failing, not a speed requirement
            async for chunk in chat_model_for(config, max_tokens=50)._astream(messages):
                text.append(chunk.text)
    assert not isinstance(raised.value, TimeoutError), "the client set no timeout of its own"
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


def _sockets_to(port: int) -> list[socket.socket]:
    """This process's TCP connections to `port`, one socket each (copies: the caller closes)."""
    found: dict[Any, socket.socket] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            if not stat.S_ISSOCK(os.fstat(int(name)).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue  # closed meanwhile
        try:
            if sock.type == socket.SOCK_STREAM and sock.getpeername()[1] == port:
                local = sock.getsockname()
                if local not in found:  # not a copy of one already found
                    found[local] = sock
                    continue
        except (OSError, IndexError):
            pass  # a listening or unconnected socket, or not an IP one
        sock.close()
    return list(found.values())


@pytest.fixture
def _default_socket_options(monkeypatch) -> None:
    """langchain-openai's defaults, whatever the developer's environment says."""
    for name in ("KEEPALIVE", "KEEPIDLE", "KEEPINTVL", "KEEPCNT", "USER_TIMEOUT_MS"):
        monkeypatch.delenv(f"LANGCHAIN_OPENAI_TCP_{name}", raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.skipif(sys.platform != "linux", reason="TCP_USER_TIMEOUT and /proc are Linux's")
@pytest.mark.usefixtures("_default_socket_options")
@pytest.mark.parametrize("client", CLIENTS)
async def test_its_connection_carries_keepalive_probes_and_a_user_timeout(
    fault: FaultServer, settings, client: str
):
    """A dead upstream (a host gone, a NAT that forgot the flow) is found by the kernel: probes
    after 60 s idle, every 10 s, 3 of them, and unacknowledged data fails the socket after
    120 s. Read back from the socket of a reply being streamed."""
    settings.LLM_HTTP_CLIENT = client
    fault.default("a", Endless(chunk_delay=0.01))
    endless: Any = chat_model_for(_config(fault.base_url("a")), max_tokens=50)._astream(MESSAGES)
    await endless.__anext__()
    sockets = _sockets_to(fault.port)
    try:
        assert len(sockets) == 1
        (sock,) = sockets
        assert [
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        ] == [1, 60, 10, 3, 120_000]
    finally:
        for sock in sockets:
            sock.close()
        await endless.aclose()


@pytest.mark.parametrize("client", CLIENTS)
async def test_an_upstream_that_never_answers_is_a_read_timeout(
    fault: FaultServer, settings, client: str
):
    settings.LLM_HTTP_CLIENT = client
    fault.default("a", Hang())
    error, text = await _failure(_config(fault.base_url("a"), timeout=0.5))
    assert (error.code, error.reason, error.retryable) == ("provider_unavailable", "timeout", True)
    assert text == ""


@pytest.fixture
def deaf_port() -> Iterator[int]:
    """A loopback port that accepts connections and never reads from them."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited when accepted
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("client", CLIENTS)
async def test_an_upstream_that_stops_reading_the_request_is_a_write_timeout(
    deaf_port: int, settings, client: str
):
    """httpx bounds every write of the request; aiohttp has no write timeout and starts its
    read timeout once the body is written, so this request waited for ever without ours."""
    settings.LLM_HTTP_CLIENT = client
    long_prompt = [HumanMessage("Summarise this. " + "word " * 4_000_000)]  # 20 MB: buffers fill
    error, text = await _failure(
        _config(f"http://127.0.0.1:{deaf_port}/v1", timeout=0.5), long_prompt
    )
    assert (error.code, error.reason, error.retryable) == ("provider_unavailable", "timeout", True)
    assert text == ""


@pytest.fixture
def full_backlog_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: the kernel drops new SYNs, so a connection
    attempt neither succeeds nor is refused."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        try:
            yield port
        finally:
            for filler in fillers:
                filler.close()


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_connection_that_never_completes_is_a_connect_timeout(
    full_backlog_port: int, settings, client: str
):
    """The deployment's connect timeout, not its read timeout (60 s, beyond the test's bound)."""
    settings.LLM_HTTP_CLIENT = client
    error, text = await _failure(
        _config(f"http://127.0.0.1:{full_backlog_port}/v1", timeout=60, connect_timeout=0.3)
    )
    assert (error.code, error.reason, error.retryable) == ("provider_unavailable", "timeout", True)
    assert text == ""


async def test_an_idle_connection_is_kept_for_reuse_then_closed_after_5_seconds(
    fault: FaultServer,
):
    """httpx's pool expiry (keepalive_expiry=5): the next reply reuses the connection; one left
    idle is closed (httpx closes it at its next use of the pool, aiohttp on a timer)."""
    fault.default("a", REPLY)
    model = chat_model_for(_config(fault.base_url("a")), max_tokens=50)
    ports = []
    for _ in range(2):
        assert await _text(model) == REPLY.text
        sockets = _sockets_to(fault.port)
        ports.append([sock.getsockname()[1] for sock in sockets])
        for sock in sockets:
            sock.close()
    assert len(ports[0]) == 1 and ports[1] == ports[0]
    async with asyncio.timeout(30):  # a bound for failing, not a speed requirement
        while _sockets_to(fault.port):
            await asyncio.sleep(0.2)


async def test_the_pool_holds_1000_connections_and_the_next_request_waits_for_one(
    fault: FaultServer,
):
    """httpx's pool size, with its wait: request 1,001 reaches the upstream only once one of
    the 1,000 before it has ended."""
    fault.default("a", Hang())
    client = async_http_client(fault.base_url("a"), 60.0)
    assert client is not None

    async def hang() -> None:
        async with client.stream("POST", "/chat/completions", json={"stream": True}):
            pass

    held = [asyncio.create_task(hang()) for _ in range(1000)]
    try:
        async with asyncio.timeout(120):  # a bound for failing, not a speed requirement
            while fault.count("a") < 1000:
                await asyncio.sleep(0.05)
        waiting = asyncio.create_task(hang())
        held.append(waiting)
        await asyncio.sleep(0.5)  # a slot would have been given by now (a slow machine: a miss)
        assert fault.count("a") == 1000 and not waiting.done()
        held[0].cancel()
        async with asyncio.timeout(30):
            while fault.count("a") < 1001:
                await asyncio.sleep(0.05)
    finally:
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)


@pytest.mark.skipif(sys.platform != "linux", reason="/proc is Linux's")
@pytest.mark.usefixtures("_default_socket_options")
async def test_through_a_proxy_from_the_environment_its_connection_keeps_the_probes(
    fault: FaultServer, monkeypatch, refusing_port: int
):
    """HTTP_PROXY is honoured (the upstream's own port refuses: the reply can only come through
    the proxy, here the fault server, which answers a proxied request as its own) and the
    connection to the proxy carries the keep-alive probes. langchain-openai's httpx client
    drops its socket options when the environment names a proxy."""
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{fault.port}")
    fault.default("a", Endless(chunk_delay=0.01))
    config = _config(f"http://127.0.0.1:{refusing_port}/a/v1")
    endless: Any = chat_model_for(config, max_tokens=50)._astream(MESSAGES)
    await endless.__anext__()
    sockets = _sockets_to(fault.port)
    try:
        assert [sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) for sock in sockets] == [1]
    finally:
        for sock in sockets:
            sock.close()
        await endless.aclose()
