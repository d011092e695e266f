"""The floor for bench/stream_bench.py: Daphne writing frames straight from a consumer.

A bare ASGI WebSocket app (no Django, no channel layer, no database): a client connects to
`/?frames=N&rate=R` and receives N `delta` frames, one every 1/R seconds, each carrying the time
it was written ("<epoch seconds> "), then a `done` frame. Whatever the full path achieves is
measured against what this one Daphne process does on the same machine in the same run.

    python -m daphne -b 127.0.0.1 -p 8765 bench.floor_app:application
"""

from __future__ import annotations

import asyncio
import json
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
