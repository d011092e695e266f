"""What one delta costs in-process on each side of the channel layer, where load does not reach.

    .venv/bin/python bench/delta_cost.py

- producer: `delta_event` plus `EventQueue.put` on the Redis pub/sub layer (the journal write,
  msgpack, queueing for the next batch; nothing is sent: the batch never gets the loop);
- socket: `ChatConsumer.chat_delta` for one socket whose client holds the text before each
  delta, its `send` a no-op: with the producer's finished frame, and without one (an event of
  an older release: the frame built per socket).
Each figure is the fastest of five passes (other jobs on the machine only ever add to it).
Needs Redis on 127.0.0.1:6379 (database 15 is named, nothing is written to it).
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault(
    "PARLEY_ENCRYPTION_KEY", base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
)
os.environ["REDIS_URL"] = os.environ["CELERY_BROKER_URL"] = "redis://127.0.0.1:6379/15"
os.environ.pop("DATABASE_URL", None)


async def main() -> None:
    from chat.consumers import ChatConsumer
    from chat.events import EventQueue, delta_event

    count, passes = 20_000, 5
    producer = []
    for _ in range(passes):
        queue = EventQueue(1)
        began = time.perf_counter()
        for index in range(count):
            start = index * 8
            queue.put(delta_event(message_id=123456, start=start, seq=start + 8, text="tok "))
        producer.append((time.perf_counter() - began) / count * 1e6)
    print(f"producer, delta event + EventQueue.put: {min(producer):.2f} us per delta")

    async def send(message: dict[str, object]) -> None:
        pass

    events = [
        delta_event(message_id=7, start=index * 8, seq=index * 8 + 8, text="tok tok ")
        for index in range(50_000)
    ]
    for label, strip in (("with the producer's frame", False), ("without (built here)", True)):
        if strip:
            for event in events:
                event.pop("frame", None)
        per_event = []
        for _ in range(passes):
            consumer = ChatConsumer()
            consumer.cursors, consumer.base_send = {}, send
            began = time.perf_counter()
            for event in events:
                await consumer.chat_delta(event)
            per_event.append((time.perf_counter() - began) / len(events) * 1e6)
        print(f"socket, chat_delta {label}: {min(per_event):.2f} us per delta")


if __name__ == "__main__":
    import django

    django.setup()
    asyncio.run(main())
