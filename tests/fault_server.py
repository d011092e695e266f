"""A small OpenAI-compatible server on loopback that fails on cue, for the router's tests.

It serves `GET /<route>/v1/models` and `POST /<route>/v1/chat/completions` (SSE streaming
with usage when asked, and plain JSON), where each `<route>` stands for one deployment: tests
point every deployment at its own route (`server.base_url("a")`), script what the next
requests to it do, and count what it received.

    server.script("a", Fail(429, retry_after=1), Reply("Hello"))   # next two requests
    server.default("b", Hang())                                     # every later request

Behaviours: Reply (streams `text` in chunks, optional delay before the first and between
chunks, then its `finish_reason`: "length" plays a reply cut by the token cap, as does a request
whose `max_tokens` is fewer than the chunks), Fail (an HTTP
status with an OpenAI error body, optional Retry-After), Hang (never sends a byte until the test
ends), Stall (sends some chunks, then nothing), Disconnect (sends some chunks, then drops the
connection), Cut (sends some chunks, then ends the response cleanly with no finish_reason, as a
proxy or a server that gave up does), Endless (streams text until the client goes away). The
server runs in a thread with its own event loop, so it is independent of the test's loop and of
the code under test.

Each request's `Seen` record tells whether the client closed the connection before the response
ended (`closed_at`, on the time.monotonic() clock, which every process on the machine shares),
so a test can check that a cancelled reply let go of its upstream call, and when.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web


@dataclass(frozen=True)
class Reply:
    text: str = "Hello from the fault server."
    chunk_chars: int = 6
    first_delay: float = 0.0
    chunk_delay: float = 0.0
    prompt_tokens: int = 11
    completion_tokens: int | None = None  # default: one per chunk
    usage: bool = True  # send usage when the client asks (stream_options.include_usage)
    finish_reason: str = "stop"  # "length": the reply hit max_tokens
    held_until: threading.Event | None = None  # the first token waits for the test to set it
    name = "reply"

    def chunks(self) -> list[str]:
        step = max(1, self.chunk_chars)
        return [self.text[i : i + step] for i in range(0, len(self.text), step)]


@dataclass(frozen=True)
class Fail:
    status: int
    retry_after: float | None = None
    message: str = "scripted failure"
    error: dict | None = None  # the body's `error` object as a server words it (default: message)
    name = "fail"


@dataclass(frozen=True)
class Hang:
    name = "hang"


@dataclass(frozen=True)
class Stall:
    text: str = "Partial answer that then "
    after_chunks: int = 2
    chunk_chars: int = 8
    name = "stall"


@dataclass(frozen=True)
class Disconnect:
    text: str = "Partial answer that then "
    after_chunks: int = 2
    chunk_chars: int = 8
    name = "disconnect"


@dataclass(frozen=True)
class Cut:
    text: str = "Partial answer that then "
    after_chunks: int = 2
    chunk_chars: int = 8
    done: bool = True  # still send `data: [DONE]` before the end of the body
    name = "cut"


@dataclass(frozen=True)
class Endless:
    text: str = "and on "  # sent again and again, one chunk every chunk_delay seconds
    chunk_delay: float = 0.02
    name = "endless"


Behaviour = Reply | Fail | Hang | Stall | Disconnect | Cut | Endless


@dataclass
class Seen:
    """One request the server received, and how its connection ended."""

    route: str
    behaviour: str
    stream: bool
    at: float
    body: dict = field(repr=False)
    chunks: int = 0  # text chunks sent
    closed_at: float | None = None  # the client closed the connection before the response ended


class FaultServer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Behaviour]] = defaultdict(deque)
        self._defaults: dict[str, Behaviour] = {}
        self.seen: list[Seen] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._stopping: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    # --- scripting and counting, from the test's side -----------------------------------

    def base_url(self, route: str) -> str:
        return f"http://127.0.0.1:{self.port}/{route}/v1"

    def script(self, route: str, *behaviours: Behaviour) -> None:
        """What the next requests to `route` do, in order."""
        with self._lock:
            self._scripts[route].extend(behaviours)

    def default(self, route: str, behaviour: Behaviour) -> None:
        """What requests to `route` do once its script is used up (else: Reply())."""
        with self._lock:
            self._defaults[route] = behaviour

    def requests(self, route: str | None = None, behaviour: str | None = None) -> list[Seen]:
        with self._lock:
            return [
                s
                for s in self.seen
                if (route is None or s.route == route)
                and (behaviour is None or s.behaviour == behaviour)
            ]

    def count(self, route: str | None = None, behaviour: str | None = None) -> int:
        return len(self.requests(route, behaviour))

    def closed(self, route: str | None = None, behaviour: str | None = None) -> list[Seen]:
        """The requests whose client closed the connection before the response ended."""
        return [s for s in self.requests(route, behaviour) if s.closed_at is not None]

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> FaultServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_get("/{route}/v1/models", self._models)
        app.router.add_post("/{route}/v1/chat/completions", self._completions)
        app.router.add_post("/{route}/v1/embeddings", self._embeddings)
        # handler_cancellation: a handler learns at once that its client went away (Seen.closed_at)
        self._runner = web.AppRunner(
            app, shutdown_timeout=1.0, handle_signals=False, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _stop(self) -> None:
        assert self._stopping is not None and self._runner is not None
        self._stopping.set()  # releases every Hang and Stall
        await self._runner.cleanup()

    # --- the server's side -------------------------------------------------------------------

    def _next(self, route: str) -> Behaviour:
        with self._lock:
            queue = self._scripts[route]
            return queue.popleft() if queue else self._defaults.get(route, Reply())

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": "fault-model", "object": "model"}]}
        )

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        """Embeddings: a Fail answers as scripted; anything else gets `fake_embedding` of each
        input, with one prompt token per word."""
        route = request.match_info["route"]
        body = await request.json()
        behaviour = self._next(route)
        with self._lock:
            self.seen.append(
                Seen(route, f"embeddings-{behaviour.name}", False, time.monotonic(), body)
            )
        if isinstance(behaviour, Fail):
            return await self._answer(request, body, behaviour, self.seen[-1])
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        width = int(body.get("dimensions") or EMBEDDING_WIDTH)
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": fake_embedding(t, width)}
                    for i, t in enumerate(texts)
                ],
                "model": body.get("model"),
                "usage": {
                    "prompt_tokens": sum(len(t.split()) for t in texts),
                    "total_tokens": sum(len(t.split()) for t in texts),
                },
            }
        )

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        route = request.match_info["route"]
        body = await request.json()
        behaviour = self._next(route)
        stream = bool(body.get("stream"))
        seen = Seen(route, behaviour.name, stream, time.monotonic(), body)
        with self._lock:
            self.seen.append(seen)
        try:
            return await self._answer(request, body, behaviour, seen)
        except (asyncio.CancelledError, ConnectionResetError):
            # The client closed the connection (the handler is cancelled, or a write fails).
            seen.closed_at = time.monotonic()
            raise

    async def _answer(
        self, request: web.Request, body: dict, behaviour: Behaviour, seen: Seen
    ) -> web.StreamResponse:
        stream = seen.stream
        if isinstance(behaviour, Fail):
            headers = {}
            if behaviour.retry_after is not None:
                headers["Retry-After"] = f"{behaviour.retry_after:g}"
            error = behaviour.error or {"message": behaviour.message, "type": "fault", "code": None}
            return web.json_response(
                {"error": error},
                status=behaviour.status,
                headers=headers,
            )
        if isinstance(behaviour, Hang):
            await self._wait_until_stopped()
            return web.Response(status=503)
        if isinstance(behaviour, Reply) and not stream:
            await asyncio.sleep(behaviour.first_delay)
            return web.json_response(_completion(body, behaviour))
        return await self._stream(request, body, behaviour, seen)

    async def _stream(
        self,
        request: web.Request,
        body: dict,
        behaviour: Reply | Stall | Disconnect | Cut | Endless,
        seen: Seen,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        model = body.get("model", "fault-model")

        async def send(payload: dict | str) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            await response.write(f"data: {data}\n\n".encode())

        async def send_text(piece: str) -> None:
            await send(_chunk(model, {"content": piece}))
            seen.chunks += 1

        await send(_chunk(model, {"role": "assistant", "content": ""}))
        if isinstance(behaviour, Endless):
            assert self._stopping is not None
            while not self._stopping.is_set():
                await send_text(behaviour.text)
                await asyncio.sleep(behaviour.chunk_delay)
            return response
        if isinstance(behaviour, Reply):
            await asyncio.sleep(behaviour.first_delay)
            if behaviour.held_until is not None:
                await asyncio.to_thread(behaviour.held_until.wait, 120)
            pieces = behaviour.chunks()
            finish = behaviour.finish_reason
            # The classic `max_tokens` caps the reply, one chunk a token, as llama.cpp's server
            # does (it ignores max_completion_tokens).
            cap = body.get("max_tokens")
            if isinstance(cap, int) and cap < len(pieces):
                pieces, finish = pieces[:cap], "length"
            for index, piece in enumerate(pieces):
                if index and behaviour.chunk_delay:
                    await asyncio.sleep(behaviour.chunk_delay)
                await send_text(piece)
            await send(_chunk(model, {}, finish=finish))
            if behaviour.usage and (body.get("stream_options") or {}).get("include_usage"):
                completion = behaviour.completion_tokens or len(pieces)
                await send(_usage_chunk(model, behaviour.prompt_tokens, completion))
            # `[DONE]` and the body's end in one write, as a server ending its stream sends
            # them: the client's drain after `[DONE]` (the SDK's, 0.1 s) then finds the end
            # already read, however long the client's loop waits to run it.
            await response.write_eof(b"data: [DONE]\n\n")
            return response
        step = behaviour.chunk_chars
        pieces = [behaviour.text[i : i + step] for i in range(0, len(behaviour.text), step)]
        for piece in pieces[: behaviour.after_chunks]:
            await send_text(piece)
        if isinstance(behaviour, Cut):
            if behaviour.done:
                await send("[DONE]")
            await response.write_eof()  # a well-formed end of the body, but no finish_reason
            return response
        if isinstance(behaviour, Disconnect):
            await asyncio.sleep(0.05)  # let the sent chunks reach the client first
            assert request.transport is not None
            request.transport.close()  # mid-body: no final chunk, no [DONE]
            return response
        await self._wait_until_stopped()
        return response

    async def _wait_until_stopped(self) -> None:
        assert self._stopping is not None
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=120)
        except TimeoutError:
            pass


EMBEDDING_WIDTH = 8


def fake_embedding(text: str, width: int = EMBEDDING_WIDTH) -> list[float]:
    """A deterministic vector for `text` (its bytes' sums by position), for checking that
    vectors come back in input order."""
    data = text.encode("utf-8")
    return [float(sum(data[i::width]) % 997) / 997 for i in range(width)]


def _chunk(model: str, delta: dict, finish: str | None = None) -> dict:
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _usage_chunk(model: str, prompt: int, completion: int) -> dict:
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _completion(body: dict, reply: Reply) -> dict:
    completion = reply.completion_tokens or len(reply.chunks())
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fault-model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "finish_reason": reply.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": reply.prompt_tokens + completion,
        },
    }


@contextmanager
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer().start()
    try:
        yield server
    finally:
        server.stop()
