"""What a delta costs the process that receives it from the channel layer (a Daphne replica).

    .venv/bin/python bench/receive_cost.py --streams 500 --messages 60000 --rate 6000 --repeats 3

One process holds the production layer (chat/layers.py, with settings' connection options) with
`--streams` local channels, each in its conversation's group and read by a task of its own the
way a consumer reads (`layer.receive`: the queue, then msgpack). A separate publisher process
publishes `--messages` delta events round-robin over the groups, `--rate` a second in batches
every 10 ms (0: as fast as it can), in pipelines as a worker's group commit sends them, to a
private redis-server. Reported: the receiving process's CPU per message from the first message
to the last (all of it: the layer's reads, the queues and the readers' wake-ups, the
deserialising), and the messages per second it kept up with; medians over repeats. No
Daphne, no sockets: bench/stream_bench.py measures the whole path.

Run it from two checkouts in turn (same minutes) to compare them: the layer is the checkout's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness.processes import (  # noqa: E402
    PYTHON,
    ProcessGroup,
    free_port,
    require_binary,
    start_redis_server,
)

# The publisher: plain redis-py, pipelines of PUBLISH, paced by batches every 10 ms.
PUBLISHER = """
import json, sys, time, msgpack, redis
url, streams, messages, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
client = redis.Redis.from_url(url)
text = "lorem ipsum dolor sit amet, consectetur "  # ~5 tokens of a coalesced delta
payloads = [
    msgpack.packb({"type": "chat.delta", "message": 1000 + i, "start": 0, "seq": 40, "text": text})
    for i in range(streams)
]
names = [f"asgi__group__conversation.{i}" for i in range(streams)]
batch = max(1, int(rate / 100)) if rate else 200
started, sent = time.monotonic(), 0
while sent < messages:
    with client.pipeline(transaction=False) as pipe:
        for k in range(sent, min(sent + batch, messages)):
            pipe.publish(names[k % streams], payloads[k % streams])
        pipe.execute()
    sent = min(sent + batch, messages)
    if rate:
        delay = started + sent / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
print(json.dumps({"seconds": time.monotonic() - started}))
"""


async def receive_all(url: str, streams: int, messages: int, rate: float) -> dict[str, float]:
    from chat.layers import BatchingPubSubChannelLayer

    host = {  # as project/settings.py configures each layer host
        "address": url,
        "socket_connect_timeout": 5,
        "socket_timeout": 15,
        "socket_keepalive": True,
        "health_check_interval": 30,
    }
    layer = BatchingPubSubChannelLayer(hosts=[host])
    channels = []
    for index in range(streams):
        channel = await layer.new_channel()
        await layer.group_add(f"conversation.{index}", channel)
        channels.append(channel)
    # Subscribed once a probe to the last group came back (SUBSCRIBEs go out in order).
    async with asyncio.timeout(60):
        while True:
            await layer.group_send(f"conversation.{streams - 1}", {"type": "probe"})
            try:
                await asyncio.wait_for(layer.receive(channels[-1]), 0.5)
                break
            except TimeoutError:
                continue
    await asyncio.sleep(0.5)
    while not layer._get_layer().channels[channels[-1]].empty():  # late probes
        await layer.receive(channels[-1])

    expected = [messages // streams + (1 if i < messages % streams else 0) for i in range(streams)]
    first: list[float] = []

    async def consumer(channel: str, count: int) -> None:
        for _ in range(count):
            await layer.receive(channel)
            if not first:
                first.extend((time.monotonic(), time.process_time()))

    readers = [asyncio.create_task(consumer(c, n)) for c, n in zip(channels, expected, strict=True)]
    publisher = await asyncio.create_subprocess_exec(
        PYTHON,
        "-c",
        PUBLISHER,
        url,
        str(streams),
        str(messages),
        str(rate),
        stdout=subprocess.PIPE,
    )
    async with asyncio.timeout(messages / max(rate, 1000) * 10 + 120):
        await asyncio.gather(*readers)
    wall, cpu = time.monotonic() - first[0], time.process_time() - first[1]
    out, _ = await publisher.communicate()
    await layer.flush()
    return {
        "cpu_us_per_message": cpu / messages * 1e6,
        "messages_per_second": messages / wall,
        "publish_seconds": json.loads(out)["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--messages", type=int, default=60000)
    parser.add_argument("--rate", type=float, default=6000, help="messages/s (0: flat out)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()

    with tempfile.TemporaryDirectory(prefix="parley-receive-") as workdir:
        group = ProcessGroup(log_dir=Path(workdir))
        try:
            port = free_port()
            start_redis_server(group, "redis", require_binary("redis-server"), port, Path(workdir))
            url = f"redis://127.0.0.1:{port}/0"
            runs = []
            for repeat in range(args.repeats):
                run = asyncio.run(receive_all(url, args.streams, args.messages, args.rate))
                runs.append(run)
                print(
                    f"[{repeat}] {run['cpu_us_per_message']:.1f} us CPU per message, "
                    f"{run['messages_per_second']:.0f} messages/s received "
                    f"(published in {run['publish_seconds']:.1f} s)",
                    flush=True,
                )
        finally:
            group.stop_all()
    cpu = statistics.median(r["cpu_us_per_message"] for r in runs)
    rate = statistics.median(r["messages_per_second"] for r in runs)
    print(
        f"\n{REPO.name}: {args.streams} streams, {args.messages} messages at "
        f"{args.rate:g}/s: median {cpu:.1f} us CPU per message received, {rate:.0f} messages/s"
    )


if __name__ == "__main__":
    main()
