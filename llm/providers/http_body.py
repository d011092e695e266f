"""A streamed HTTP/1.1 response body read a network read at a time, not a chunk at a time.

A provider's stream sends each token as its own HTTP chunk (chunked transfer encoding), and
httpx reads each through h11's state machine and four layers of async generators (httpcore's
connection and pool streams, httpx's transport and response): about half of the CPU that
reading a reply costs the worker generating it, more than the JSON and LangChain's chunk
together (docs/benchmarks.md, round 7b). `lean_body` takes over such a body once httpx has
read the response's headers: it reads the connection's socket as httpcore does (same stream,
same read timeout, the same errors as httpx raises) and undoes the chunked framing itself,
every chunk a read brought in one pass.

The connection stays httpx's: when the body ends, h11 is handed the end of it (a last chunk
and an empty trailer), so the connection goes back to the pool as after any response, and a
body left unfinished (a stop, an error, a cut) closes it, as httpx does. Anything but that
one shape (another HTTP version or transport, a proxy, a compressed or length-delimited body,
a body h11 has begun reading) is read by httpx, as before.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import h11
import httpcore2
import httpx2
from anyio._backends._asyncio import SocketStream, StreamProtocol
from h11._readers import ChunkedReader
from httpcore2._async.connection_pool import PoolByteStream
from httpcore2._async.http11 import HTTP11ConnectionByteStream
from httpcore2._backends.anyio import AnyIOStream
from httpx2._client import BoundAsyncStream
from httpx2._transports.default import AsyncResponseStream, map_httpcore_exceptions

_SIZE = re.compile(rb"[0-9A-Fa-f]{1,20}(?:;.*)?[ \t]*")  # h11's chunk header, less its CRLF
MAX_LINE = 64 * 1024  # a chunk header or trailer line longer than this is not HTTP


class ChunkedBody:
    """Chunked transfer encoding undone, fed whatever the network read brought (RFC 9112
    7.1: hex size, optional extensions, CRLF, data, CRLF; a zero size, trailer lines and an
    empty line end it). `feed` returns the body bytes in it; `done` once the end came, and
    `after` holds what followed it."""

    __slots__ = ("_crlf", "_left", "_rest", "_trailer", "after", "done")

    def __init__(self) -> None:
        self._left = 0  # bytes of the current chunk's data still to come
        self._crlf = b""  # what is still to come of the CRLF that ends a chunk's data
        self._rest = b""  # an unfinished header or trailer line
        self._trailer = False  # the last chunk came: trailer lines until an empty one
        self.done = False
        self.after = b""

    def feed(self, data: bytes) -> bytes:
        if self.done:
            self.after += data
            return b""
        buffer = self._rest + data if self._rest else data
        self._rest = b""
        size = len(buffer)
        pos = 0
        body: list[bytes] = []
        while pos < size:
            if self._left:
                end = min(size, pos + self._left)
                body.append(buffer[pos:end])
                self._left -= end - pos
                pos = end
                if not self._left:
                    self._crlf = b"\r\n"
            elif self._crlf:
                taken = buffer[pos : pos + len(self._crlf)]
                if not self._crlf.startswith(taken):
                    raise httpx2.RemoteProtocolError(f"malformed chunk footer: {taken!r}")
                self._crlf = self._crlf[len(taken) :]
                pos += len(taken)
            else:
                end = buffer.find(b"\n", pos)
                if end < 0:
                    self._rest = buffer[pos:]
                    if len(self._rest) > MAX_LINE:
                        raise httpx2.RemoteProtocolError("chunk header too long")
                    break
                line = buffer[pos : end - 1 if end > pos and buffer[end - 1] == 13 else end]
                pos = end + 1
                if self._trailer:
                    if not line:
                        self.done, self.after = True, buffer[pos:]
                        break
                    continue  # a trailer field: dropped, as httpx drops them
                if not _SIZE.fullmatch(line) or buffer[end - 1] != 13:
                    raise httpx2.RemoteProtocolError(f"illegal chunk header: {line!r}")
                chunk = int(line.split(b";", 1)[0].strip(), 16)
                if chunk:
                    self._left = chunk
                else:
                    self._trailer = True
        return body[0] if len(body) == 1 else b"".join(body)


# How a streamed response of httpx's own transport reaches its connection in httpcore's pool.
_LINKS = (
    ("_stream", AsyncResponseStream),
    ("_httpcore_stream", PoolByteStream),
    ("_stream", HTTP11ConnectionByteStream),
    ("_connection", httpcore2.AsyncHTTP11Connection),
)


def _connection_of(response: httpx2.Response) -> Any | None:
    """The HTTP/1.1 connection under a streamed httpx response, if it is httpx's own
    transport over httpcore's pool (exact types: anything else is read the usual way)."""
    link: Any = response.stream
    if type(link) is not BoundAsyncStream:
        return None
    for attribute, kind in _LINKS:
        link = getattr(link, attribute, None)
        if type(link) is not kind:
            return None
    return link


def lean_body(response: httpx2.Response) -> AsyncIterator[bytes] | None:
    """The response's body, read as the module docstring says, or None if it must be read
    by httpx (call before reading any of it)."""
    if response.http_version != "HTTP/1.1" or response.is_stream_consumed:
        return None
    headers = response.headers
    if headers.get("transfer-encoding", "").lower() != "chunked":
        return None
    if headers.get("content-encoding", "identity").lower() != "identity":
        return None
    connection = _connection_of(response)
    if connection is None:
        return None
    state = getattr(connection, "_h11_state", None)
    reader = getattr(state, "_reader", None)
    # Private state of h11 and httpcore, read by name: if a release renames any of it, the
    # body is read by httpx (llm/tests/test_http_body.py then fails: it expects this path).
    if (
        type(state) is not h11.Connection
        or state.their_state is not h11.SEND_BODY
        or type(reader) is not ChunkedReader
        or getattr(reader, "_bytes_in_chunk", None) != 0
        or getattr(reader, "_bytes_to_discard", None) != b""
        or getattr(reader, "_reading_trailer", None) is not False
        or getattr(state, "_receive_buffer_closed", None) is not False
        or not hasattr(getattr(state, "_receive_buffer", None), "_extract")
        or not isinstance(getattr(connection, "READ_NUM_BYTES", None), int)
        or getattr(connection, "_network_stream", None) is None
    ):
        return None
    read_timeout = response.request.extensions.get("timeout", {}).get("read")
    return _read(connection, state, read_timeout)


async def _read(
    connection: Any, state: h11.Connection, read_timeout: float | None
) -> AsyncIterator[bytes]:
    body = ChunkedBody()
    buffered = state._receive_buffer  # the body's first bytes, read with the headers
    first = bytes(buffered)
    buffered._extract(len(first))
    if first and (data := body.feed(first)):
        yield data
    network = connection._network_stream
    socket = _SocketReads.of(network)
    size = connection.READ_NUM_BYTES
    try:
        while not body.done:
            if socket is not None:
                raw = await socket.received(read_timeout)
            else:
                with map_httpcore_exceptions():
                    raw = await network.read(size, timeout=read_timeout)
            if not raw:
                raise httpx2.RemoteProtocolError(
                    "peer closed connection without sending complete message body "
                    "(incomplete chunked read)"
                )
            if data := body.feed(raw):
                yield data
    finally:
        if socket is not None:
            socket.done()
    # h11 reads the body's end itself, so that the connection is done with this response
    # and goes back to the pool when it is closed.
    state.receive_data(b"0\r\n\r\n" + body.after)
    if type(state.next_event()) is not h11.EndOfMessage:  # pragma: no cover - h11 knows
        raise httpx2.RemoteProtocolError("the response's end was not understood")


class _SocketReads:
    """Everything a plain TCP connection received, taken at once, with its transport left
    reading for as long as the body lasts.

    anyio's `receive`, under httpcore's read, resumes the transport's reading and pauses it
    again for each read (an epoll registration and its removal: two system calls), inside a
    cancel scope with a timer of its own: per read, that was more than undoing the read's
    chunks. Here the transport reads while the body lasts, into anyio's own queue, and a wait
    for more is the protocol's own event, bounded by the read timeout (a timer per wait). When
    the body is done (or left) the transport is paused and anyio's flag set as its `receive`
    leaves them, so the connection's next response is read by anyio as usual. A TLS stream
    (anyio's TLSStream) is not this: it reads the usual way.
    """

    __slots__ = ("_loop", "_protocol", "_transport")

    def __init__(self, transport: asyncio.Transport, protocol: Any) -> None:
        self._transport = transport
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        transport.resume_reading()

    @classmethod
    def of(cls, network: Any) -> _SocketReads | None:
        stream = getattr(network, "_stream", None)
        if type(network) is not AnyIOStream or type(stream) is not SocketStream:
            return None
        transport = getattr(stream, "_transport", None)
        protocol = getattr(stream, "_protocol", None)
        if (
            not isinstance(transport, asyncio.Transport)
            or type(protocol) is not StreamProtocol
            or not isinstance(getattr(protocol, "read_queue", None), deque)
            or not isinstance(getattr(protocol, "read_event", None), asyncio.Event)
        ):
            return None
        return cls(transport, protocol)

    async def received(self, read_timeout: float | None) -> bytes:
        """What came since the last call, waiting up to `read_timeout` for something; b""
        at the end of the stream."""
        protocol = self._protocol
        queue = protocol.read_queue
        if not queue:
            if protocol.exception is not None:
                raise httpx2.ReadError(str(protocol.exception))
            if protocol.is_at_eof or self._transport.is_closing():
                return b""
            event = protocol.read_event
            event.clear()
            timer = None if read_timeout is None else self._loop.call_later(read_timeout, event.set)
            try:
                await event.wait()
            finally:
                if timer is not None:
                    timer.cancel()
            if not queue:
                if protocol.exception is not None:
                    raise httpx2.ReadError(str(protocol.exception))
                if protocol.is_at_eof or self._transport.is_closing():
                    return b""
                raise httpx2.ReadTimeout("timed out reading the response body")
        data = queue.popleft() if len(queue) == 1 else b"".join(queue)
        queue.clear()
        return data

    def done(self) -> None:
        """Leave the transport and anyio's flag as anyio's `receive` leaves them."""
        if not self._transport.is_closing():
            self._transport.pause_reading()
        if self._protocol.read_queue:
            self._protocol.read_event.set()
        else:
            self._protocol.read_event.clear()
