"""The relay floor's producer (bench/stream_bench.py): what a worker does for streaming replies,
and nothing else — no Django, no LangChain, no database, no journal.

A long-lived process, like a Celery worker: it subscribes to the Redis pub/sub channel
`relay:control` and prints "ready". Each job published there (JSON: streams, tokens, rate,
interval, max_chars, max_interval, rate_limit, prefix) runs `streams` streams at once; stream i
emits `tokens` tokens, token k due k / rate seconds after the stream's start (as the simulated
provider paces them), each token its emit time ("<epoch seconds> ", as SIMULATED_STAMP_TOKENS makes
them), coalesced by Parley's own rule (chat/replies/coalesce.py: the first piece at once, then at
most once per window: `interval` seconds, widened under load up to `max_interval` so that the
process publishes at most `rate_limit` deltas a second) into `delta` frames published on the
channel `<prefix><i>`, finished JSON that the relay app (bench/floor_app.py relay_application)
forwards unchanged, then a `done` frame. Publishes go out as Parley's layer sends them
(chat/layers.py): all publishes waiting while a round trip is in flight leave together in the next
pipeline.

    RELAY_REDIS_URL=redis://127.0.0.1:6379/0 python bench/relay_producer.py
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chat.replies.coalesce import DeltaCoalescer  # pure asyncio, no Django

CONTROL = "relay:control"


class Publisher:
    """Group commit: one pipeline per round trip, carrying every publish queued meanwhile."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._outbox: list[tuple[str, str]] = []
        self._sender: asyncio.Task[None] | None = None

    def publish(self, channel: str, frame: str) -> None:
        self._outbox.append((channel, frame))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        while self._outbox:
            batch, self._outbox = self._outbox, []
            async with self._client.pipeline(transaction=False) as pipe:
                for channel, frame in batch:
                    pipe.publish(channel, frame)
                await pipe.execute()

    async def drain(self) -> None:
        while self._sender is not None and not self._sender.done():
            await self._sender


async def stream(publisher: Publisher, channel: str, index: int, job: dict[str, Any]) -> None:
    text_length = 0

    def flush(text: str) -> None:
        nonlocal text_length
        start, text_length = text_length, text_length + len(text)
        frame = {"type": "delta", "message": index, "start": start, "seq": text_length}
        frame["text"] = text
        publisher.publish(channel, json.dumps(frame))

    coalescer = DeltaCoalescer(
        flush,
        interval=job["interval"],
        max_chars=job["max_chars"],
        max_interval=job["max_interval"],
        rate=job["rate_limit"],
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    for token in range(job["tokens"]):
        if token:
            await asyncio.sleep(max(0.0, started + token / job["rate"] - loop.time()))
        coalescer.add(f"{time.time():.6f} ")
    coalescer.close()
    publisher.publish(channel, json.dumps({"type": "done", "message": index, "seq": text_length}))


async def run_job(client: Any, job: dict[str, Any]) -> None:
    publisher = Publisher(client)
    await asyncio.gather(
        *(stream(publisher, f"{job['prefix']}{i}", i, job) for i in range(job["streams"]))
    )
    await publisher.drain()


async def main() -> None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(os.environ["RELAY_REDIS_URL"])
    pubsub = client.pubsub()
    await pubsub.subscribe(CONTROL)
    print("ready", flush=True)
    jobs: set[asyncio.Task[None]] = set()
    while True:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if message is None:
            continue
        job = asyncio.create_task(run_job(client, json.loads(message["data"])))
        jobs.add(job)
        job.add_done_callback(jobs.discard)


if __name__ == "__main__":
    asyncio.run(main())
