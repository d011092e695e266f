"""What a journaled delta costs the process that publishes it, and Redis, against a plain one.

    .venv/bin/python bench/publish_cost.py --publishes 40000 --repeats 5

The channel layer (chat/layers.py) publishes `--publishes` deltas for 500 replies, 500 at a
time as a worker's concurrent replies do (group commit: one pipeline per round trip), once
plain and once journaled (chat/journal.py: an RPUSH, and an EXPIRE on a reply's first delta),
repeat after repeat in turn, against a private redis-server. It reports the publisher's CPU
per publish and Redis' CPU, medians over repeats. The streaming benchmark's `unjournaled`
mode (bench/stream_bench.py) measures the same on the whole path, where machine noise hides
differences this small.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness.processes import ProcessGroup, free_port, start_redis_server  # noqa: E402

REPLIES = 500


async def publish_all(url: str, publishes: int, journaled: bool) -> float:
    """Publisher CPU seconds for `publishes` deltas, REPLIES at a time."""
    from chat.journal import Journal, journal_entry, journal_key
    from chat.layers import BatchingPubSubChannelLayer

    layer = BatchingPubSubChannelLayer(hosts=[url])
    await layer.group_send("warm-up", {"type": "chat.delta"})

    async def one(index: int) -> None:
        reply, start = index % REPLIES, index // REPLIES * 5
        event = {"type": "chat.delta", "message": reply, "start": start, "seq": start + 5}
        event["text"] = "hello"
        group = f"conversation.{reply}"
        if not journaled:
            await layer.group_send(group, event)
            return
        entry = journal_entry(start=start, text="hello")
        journal = Journal(journal_key(reply), entry, expire=3600 if start == 0 else None)
        await layer.group_send(group, event, journal=journal)

    cpu = time.process_time()
    for first in range(0, publishes, REPLIES):
        await asyncio.gather(*(one(i) for i in range(first, min(first + REPLIES, publishes))))
    cpu = time.process_time() - cpu
    await layer.flush()
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publishes", type=int, default=40000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    import redis

    workdir = Path(tempfile.mkdtemp(prefix="publish-cost-"))
    group = ProcessGroup(log_dir=workdir)
    port = free_port()
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on PATH")
    start_redis_server(group, "redis", binary, port, workdir)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        stats = redis.Redis(port=port)
        results: dict[str, list[tuple[float, float]]] = {"plain": [], "journaled": []}
        for repeat in range(args.repeats):
            modes = ["plain", "journaled"] if repeat % 2 == 0 else ["journaled", "plain"]
            for mode in modes:
                stats.flushall()
                before = stats.info("cpu")
                cpu = asyncio.run(publish_all(url, args.publishes, mode == "journaled"))
                after = stats.info("cpu")
                redis_cpu = sum(after[k] - before[k] for k in ("used_cpu_user", "used_cpu_sys"))
                results[mode].append((cpu, redis_cpu))
                print(f"[{repeat}] {mode:9} publisher {cpu:.2f} s, Redis {redis_cpu:.2f} s")
        print(f"\n{args.publishes} publishes, {REPLIES} replies at a time; medians:\n")
        print("| publish | publisher µs per publish | Redis µs per publish |")
        print("| --- | ---: | ---: |")
        for mode, runs in results.items():
            publisher = statistics.median(c for c, _ in runs) / args.publishes * 1e6
            server = statistics.median(r for _, r in runs) / args.publishes * 1e6
            print(f"| {mode} | {publisher:.1f} | {server:.1f} |")
    finally:
        group.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
