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

import re
from collections.abc import AsyncIterator
from typing import Any

import h11
import httpcore2
import httpx2
from h11._readers import ChunkedReader
from httpcore2._async.connection_pool import PoolByteStream
from httpcore2._async.http11 import HTTP11ConnectionByteStream
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
    if (
        type(state) is not h11.Connection
        or state.their_state is not h11.SEND_BODY
        or type(reader) is not ChunkedReader
        or reader._bytes_in_chunk
        or reader._bytes_to_discard
        or reader._reading_trailer
        or state._receive_buffer_closed
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
    size = connection.READ_NUM_BYTES
    while not body.done:
        with map_httpcore_exceptions():
            raw = await network.read(size, timeout=read_timeout)
        if not raw:
            raise httpx2.RemoteProtocolError(
                "peer closed connection without sending complete message body "
                "(incomplete chunked read)"
            )
        if data := body.feed(raw):
            yield data
    # h11 reads the body's end itself, so that the connection is done with this response
    # and goes back to the pool when it is closed.
    state.receive_data(b"0\r\n\r\n" + body.after)
    if type(state.next_event()) is not h11.EndOfMessage:  # pragma: no cover - h11 knows
        raise httpx2.RemoteProtocolError("the response's end was not understood")
