"""CPU per publish of a reply's generation task: the short way (project/celery.py
QuickPublishTask) against Celery's own apply_async, alternating in one process, on a real Redis.

    .venv/bin/python bench/publish_bench.py --broker redis://127.0.0.1:6379/15 --count 3000

Publishes `--count` messages per turn onto a queue of its own (no worker reads it) and deletes
that queue and its bindings at the end; nothing else on the Redis is touched. Prints the median
of `--rounds` turns: CPU (process time) and wall time per publish.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--count", type=int, default=3000, help="publishes per turn")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        CELERY_BROKER_URL=args.broker,
        REDIS_URL=args.broker,
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        PARLEY_ENCRYPTION_KEY=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        LOG_LEVEL="WARNING",
    )
    import django

    django.setup()
    import redis
    from celery import Task

    from chat.replies.tasks import generate_reply

    queue = f"publish-bench-{uuid.uuid4().hex[:8]}"
    ways: dict[str, Callable[[], object]] = {
        "short way": lambda: generate_reply.apply_async((1,), queue=queue),
        "celery": lambda: Task.apply_async(generate_reply, (1,), queue=queue),
    }
    cpu: dict[str, list[float]] = {name: [] for name in ways}
    wall: dict[str, list[float]] = {name: [] for name in ways}
    client = redis.Redis.from_url(args.broker)
    try:
        for publish in ways.values():  # warm: connections, imports, the first declare
            for _ in range(100):
                publish()
        for _ in range(args.rounds):
            for name, publish in ways.items():
                started_cpu, started = time.process_time(), time.perf_counter()
                for _ in range(args.count):
                    publish()
                cpu[name].append((time.process_time() - started_cpu) / args.count * 1e6)
                wall[name].append((time.perf_counter() - started) / args.count * 1e6)
    finally:
        # The queue, and the bindings Celery's declare left (kombu's key names).
        client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
        client.close()
    for name in ways:
        print(
            f"{name:>9}: CPU {statistics.median(cpu[name]):6.0f} us per publish, "
            f"wall {statistics.median(wall[name]):6.0f} us (median of {args.rounds})"
        )
    ratio = statistics.median(cpu["short way"]) / statistics.median(cpu["celery"])
    print(f"short way / celery CPU: {ratio:.2f}x; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
