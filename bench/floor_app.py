"""The floors for bench/stream_bench.py: Daphne writing frames straight from a consumer, and a
relay (Redis pub/sub to sockets, `relay_application`, below).

A bare ASGI WebSocket app (no Django, no channel layer, no database): a client connects to
`/?frames=N&rate=R` and receives N `delta` frames, one every 1/R seconds, each carrying the time
it was written ("<epoch seconds> "), then a `done` frame. Whatever the full path achieves is
measured against what this one Daphne process does on the same machine in the same run.

    python -m daphne -b 127.0.0.1 -p 8765 bench.floor_app:application
    RELAY_REDIS_URL=redis://127.0.0.1:6379/0 python -m daphne -b 127.0.0.1 -p 8766 \
        bench.floor_app:relay_application     # with bench/relay_producer.py
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any
from urllib.parse import parse_qs


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":  # a health check answers 200
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    query = parse_qs(scope.get("query_string", b"").decode())
    frames = int(query.get("frames", ["100"])[0])
    rate = float(query.get("rate", ["20"])[0])
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    # Wait for the client's "go" (any frame), so every socket starts at once.
    if (await receive())["type"] != "websocket.receive":
        return
    started = time.monotonic()
    for index in range(frames):
        # Paced like the simulated provider: frame i is due at i / rate from the start.
        delay = started + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        text = f"{time.time():.6f} "
        frame = {"type": "delta", "start": index, "seq": index + 1, "text": text}
        await send({"type": "websocket.send", "text": json.dumps(frame)})
    await send({"type": "websocket.send", "text": json.dumps({"type": "done", "seq": frames})})
    message = await receive()  # the client closes
    if message["type"] == "websocket.receive":
        await send({"type": "websocket.close"})


# --- The relay floor: Redis pub/sub → sockets, Parley's shape without Django or LangChain ---
#
# A client connects to `/relay/?stream=NAME`; the app subscribes to the Redis pub/sub channel
# NAME over the process's one subscriber connection (as channels-redis' pub/sub layer does),
# sends `{"type": "ready"}` once Redis confirmed the subscription, then forwards every message
# published on NAME as a text frame, unchanged (the producer publishes finished JSON frames:
# bench/relay_producer.py), until a `done` frame. RELAY_REDIS_URL names the Redis.


class _Relay:
    """The process's subscriber connection and the queue of each subscribed channel."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(url)
        self._pubsub = self._redis.pubsub()
        self._queues: dict[bytes, asyncio.Queue[bytes]] = {}
        self._ready: dict[bytes, asyncio.Event] = {}
        self._reader: asyncio.Task[None] | None = None
        # redis-py opens the subscriber connection on the first command: concurrent first
        # subscribes would open one each, and nobody would read the second.
        self._lock = asyncio.Lock()

    async def subscribe(self, name: str) -> asyncio.Queue[bytes]:
        channel = name.encode()
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._queues[channel] = queue
        ready = self._ready[channel] = asyncio.Event()
        async with self._lock:
            await self._pubsub.subscribe(channel)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read())
        await ready.wait()
        return queue

    async def unsubscribe(self, name: str) -> None:
        self._queues.pop(name.encode(), None)
        await self._pubsub.unsubscribe(name)

    async def _read(self) -> None:
        while True:
            message = await self._pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            channel = message["channel"]
            if message["type"] == "message":
                if (queue := self._queues.get(channel)) is not None:
                    queue.put_nowait(message["data"])
            elif message["type"] == "subscribe" and (ready := self._ready.pop(channel, None)):
                ready.set()


_relay: _Relay | None = None


async def relay_application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _relay
    if scope["type"] != "websocket":
        await application(scope, receive, send)  # lifespan and the health check
        return
    name = parse_qs(scope.get("query_string", b"").decode())["stream"][0]
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    if _relay is None:
        _relay = _Relay(os.environ["RELAY_REDIS_URL"])
    queue = await _relay.subscribe(name)
    await send({"type": "websocket.send", "text": '{"type": "ready"}'})
    try:
        while True:
            frame = (await queue.get()).decode()
            await send({"type": "websocket.send", "text": frame})
            if frame.startswith('{"type": "done"'):
                break
        message = await receive()  # the client closes
        if message["type"] == "websocket.receive":
            await send({"type": "websocket.close"})
    finally:
        await _relay.unsubscribe(name)
