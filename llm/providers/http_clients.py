"""The async HTTP client under the OpenAI kinds' streams (LLM_HTTP_CLIENT).

`aiohttp` (the default): the SDK's aiohttp client, whose compiled HTTP parser reads a streamed
body for less CPU than httpx and h11 (docs/benchmarks.md, round 7c), made to keep the promises
of langchain-openai's pooled httpx client, which `httpx` selects: the same socket options
(TCP keep-alive probes and TCP_USER_TIMEOUT, so a dead upstream is found), the same pool (up to
1,000 connections, idle ones closed after 5 s) and the same timeouts (connect; read; pool, as
aiohttp's wait for a connection; write, which aiohttp lacks, added here). What aiohttp does
differently is in docs/routing.md.
"""

from __future__ import annotations

import asyncio
import json
import socket
import weakref
from contextvars import ContextVar
from functools import partial
from typing import Any

import aiohttp
import httpx2
import openai
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractStreamWriter
from aiohttp.client_middlewares import ClientHandlerType
from aiohttp.payload import BytesPayload
from django.conf import settings
from langchain_openai.chat_models._client_utils import (
    _DEFAULT_CONNECTION_LIMITS,
    _resolve_socket_options,
)
from openai._vendor.httpx_aiohttp import AiohttpTransport

SocketOption = tuple[int, int, int]

# langchain-openai's httpx pool: 1,000 connections, 100 of them kept idle, for 5 s.
LIMITS = httpx2.Limits(
    max_connections=_DEFAULT_CONNECTION_LIMITS.max_connections,
    max_keepalive_connections=_DEFAULT_CONNECTION_LIMITS.max_keepalive_connections,
    keepalive_expiry=_DEFAULT_CONNECTION_LIMITS.keepalive_expiry,
)


def socket_options() -> tuple[SocketOption, ...]:
    """The options langchain-openai sets on its httpx client's sockets: SO_KEEPALIVE, probes
    after 60 s idle, every 10 s, 3 of them, and a 120 s TCP_USER_TIMEOUT on Linux (its
    LANGCHAIN_OPENAI_TCP_* variables change them, for both clients)."""
    return _resolve_socket_options(None)


def _socket(options: tuple[SocketOption, ...], addr_info: AddrInfoType) -> socket.socket:
    """A socket for one connection attempt, with `options` set before it connects."""
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=kind, proto=proto)
    try:
        for level, name, value in options:
            sock.setsockopt(level, name, value)
    except OSError:
        sock.close()
        raise
    return sock


class _TimedBody(BytesPayload):
    """A request body written 64 KiB at a time, each write bounded by `timeout`: httpx's write
    timeout, which aiohttp lacks (an upstream that stops reading the request would hold it
    for ever: aiohttp's read timeout starts once the body is written)."""

    def __init__(self, value: bytes, timeout: float, content_type: str) -> None:
        super().__init__(value, content_type=content_type)
        self._timeout = timeout

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        body = memoryview(self._value)[:content_length]
        for start in range(0, len(body), _WRITE_PIECE):
            try:
                async with asyncio.timeout(self._timeout):
                    await writer.write(body[start : start + _WRITE_PIECE])
            except TimeoutError as err:
                # aiohttp's own timeout error, which the SDK's adapter maps to httpx's.
                raise aiohttp.ServerTimeoutError("Timeout on writing the request") from err


_WRITE_PIECE = 0x10000
# The write timeout of the request being sent (httpx's `write`), for _bounded_writes.
_write_timeout: ContextVar[float | None] = ContextVar("_write_timeout", default=None)


async def _bounded_writes(
    request: aiohttp.ClientRequest, handler: ClientHandlerType
) -> aiohttp.ClientResponse:
    """aiohttp middleware: the request's body is written with its write timeout."""
    timeout = _write_timeout.get()
    body = request.body
    if timeout is not None and isinstance(body, BytesPayload):
        await request.update_body(_TimedBody(await body.as_bytes(), timeout, body.content_type))
    return await handler(request)


class _Transport(AiohttpTransport):
    """The SDK's aiohttp transport with the socket options and pool limits it is given (the
    vendored one drops the options and uses only the connection limit), and a write timeout."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._options = socket_options()

    def get_client(self) -> aiohttp.ClientSession:
        limit = self.limits.max_connections
        connector = aiohttp.TCPConnector(
            ssl=self.ssl_context,
            limit=0 if limit is None else limit,  # 0: no limit, as httpx's None
            keepalive_timeout=self.limits.keepalive_expiry,
            socket_factory=partial(_socket, self._options),
        )
        return aiohttp.ClientSession(connector=connector, middlewares=(_bounded_writes,))

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        token = _write_timeout.set(request.extensions.get("timeout", {}).get("write"))
        try:
            return await super().handle_async_request(request)
        finally:
            _write_timeout.reset(token)


class AioHttpClient(openai.DefaultAioHttpClient):
    """The SDK's aiohttp client over _Transport (also through a proxy from the environment),
    with a failed connection told from a timed-out one: the adapter maps every aiohttp
    connection error (a refused connection, a dropped keep-alive connection) to httpx's
    ConnectTimeout, which the SDK reports as a timeout."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("limits", LIMITS)
        super().__init__(**kwargs)

    # httpx's AsyncClient calls these two with keywords only.
    def _init_transport(self, **kwargs: Any) -> httpx2.AsyncBaseTransport:  # type: ignore[override]
        transport = kwargs.pop("transport", None)
        return transport if transport is not None else _Transport(**kwargs)

    def _init_proxy_transport(  # type: ignore[override]
        self, proxy: httpx2.Proxy, **kwargs: Any
    ) -> httpx2.AsyncBaseTransport:
        return _Transport(proxy=proxy, **kwargs)

    async def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        try:
            return await super().send(request, **kwargs)
        except httpx2.ConnectTimeout as err:
            if isinstance(err.__cause__, TimeoutError):
                raise
            raise httpx2.ConnectError(str(err), request=request) from err.__cause__


# aiohttp clients, per event loop and (base URL, timeout): what langchain-openai does for its
# own httpx clients (one pool per upstream, whatever the options), each pool on its own loop.
_aiohttp_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, AioHttpClient]] = (
    weakref.WeakKeyDictionary()
)


def async_http_client(base_url: str, timeout: Any) -> AioHttpClient | None:
    """The aiohttp client for this upstream when LLM_HTTP_CLIENT says so, one per event loop;
    None leaves langchain-openai's own pooled httpx client. Every request still carries the
    model's timeout."""
    if settings.LLM_HTTP_CLIENT != "aiohttp":
        return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return AioHttpClient(base_url=base_url, timeout=timeout)
    clients = _aiohttp_clients.setdefault(loop, {})
    key = json.dumps([base_url, timeout])
    client = clients.get(key)
    if client is None:
        client = clients[key] = AioHttpClient(base_url=base_url, timeout=timeout)
    return client
