"""A remote model server stand-in for load benchmarks: OpenAI's chat completions streamed over
HTTP/1.1 at a fixed rate, each token its own SSE event, as OpenAI and vLLM send them.

`bench/stream_bench.py --provider openai-compatible` points Parley's workers at it
(LLM_DEFAULT_PROVIDER=openai-compatible, OPENAI_COMPATIBLE_BASE_URL), so the worker reads every
token through the provider protocol as it would from a real provider: HTTP, SSE, JSON,
langchain-openai. Each token's content is its emit time ("<epoch seconds, 6 decimals> ", as the
simulated provider's stamped tokens), so the benchmark's client measures emit → receive.

    python bench/sse_upstream.py --port 18210 --rate 30

A request streams `max_tokens` tokens (the classic field, which Parley sends to compatible
servers), token i due i / rate after the first, then the finish chunk ("length": the cap
ended it), a usage chunk when `stream_options.include_usage` asks, and `[DONE]`; chunked
transfer encoding, the connection kept for the next request. Written on asyncio's transport
(no framework) so that 500 streams at 30 tokens/s cost this process little of the cores the
processes under test share with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n"
    b"\r\n"
)


def _event(payload: bytes) -> bytes:
    """One SSE event in one HTTP chunk."""
    body = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(body), body)


class Upstream(asyncio.Protocol):
    """One connection: requests one after another, each answered by a paced stream."""

    def __init__(self, rate: float, first_delay: float) -> None:
        self.rate = rate
        self.first_delay = first_delay
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.streaming = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.streaming:
            self._next_request()

    def _next_request(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].decode("latin-1").split("\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if len(self.buffer) < end + 4 + length:
            return
        body = json.loads(self.buffer[end + 4 : end + 4 + length] or b"{}")
        self.buffer = self.buffer[end + 4 + length :]
        assert self.transport is not None
        if not head[0].startswith("POST ") or "/chat/completions" not in head[0]:
            self.transport.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            return
        self._stream(body)

    def _stream(self, body: dict) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        model = str(body.get("model", "upstream-model"))
        tokens = int(body.get("max_tokens") or 300)
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        created = int(time.time())
        # OpenAI's chunk, its text and finish reason spliced in (json.dumps of each would
        # cost this process more than the stream it stands for).
        before = (
            b'{"id":"chatcmpl-upstream","object":"chat.completion.chunk","created":%d,'
            b'"model":%s,"system_fingerprint":"fp_upstream","choices":[{"index":0,'
            % (created, json.dumps(model).encode())
        )
        self.streaming = True
        self.transport.write(HEAD)
        self.transport.write(
            _event(
                before + b'"delta":{"role":"assistant","content":""},"logprobs":null,'
                b'"finish_reason":null}]}'
            )
        )
        started = loop.time() + self.first_delay
        sent = 0

        def tick() -> None:
            nonlocal sent
            self.timer = None
            if self.transport is None or self.transport.is_closing():
                return
            stamp = b"%.6f " % time.time()
            self.transport.write(
                _event(
                    before
                    + b'"delta":{"content":"'
                    + stamp
                    + b'"},"logprobs":null,"finish_reason":null}]}'
                )
            )
            sent += 1
            if sent < tokens:
                self.timer = loop.call_at(started + sent / self.rate, tick)
                return
            self.transport.write(
                _event(before + b'"delta":{},"logprobs":null,"finish_reason":"length"}]}')
            )
            if usage:
                self.transport.write(
                    _event(
                        before[: before.index(b'"choices"')]
                        + b'"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,'
                        b'"total_tokens":%d}}' % (tokens, tokens, 2 * tokens)
                    )
                )
            self.transport.write(_event(b"[DONE]") + b"0\r\n\r\n")
            self.streaming = False
            self._next_request()

        self.timer = loop.call_at(started, tick)


async def serve(port: int, rate: float, first_delay: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Upstream(rate, first_delay), "127.0.0.1", port, backlog=2048
    )
    print(f"ready on {port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=30.0, help="tokens/s per stream")
    parser.add_argument("--first-delay", type=float, default=0.0, help="s before the first")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.rate, args.first_delay))


if __name__ == "__main__":
    main()
