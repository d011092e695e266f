"""K frame checks at once on one event loop against real Redis: main's limiter (one script call
per frame over a pool of 64 connections) against this one (frames checked while a round trip is
in flight leave together in the next one).

    .venv/bin/python bench/limiter_bench.py --frames 2000 5000 --repeats 5
    .venv/bin/python bench/limiter_bench.py --frames 2000 --spread 2 --busy-ms 50 --repeats 3
    .venv/bin/python bench/limiter_bench.py --frames 5000 --repeats 3 --private-redis

Both run in the same process and minutes, in alternating order, against the machine's Redis in
a database index of their own (tests/harness/services.py `redis_database`). `--base` names the
git revision whose accounts/limits.py is the "before" (default `main`). Each check is a socket's
frame (`frame_check`): its user's counter and its organisation's, 1,000 users in 50
organisations, limits high enough that every frame passes. All at once, or arriving over
`--spread` seconds; `--busy-ms` makes every pass of the loop last at least that long (a busy
replica's loop, as in a reconnect storm). Reported per mode, medians over repeats: wall time
until the last check answered, process CPU, each check's wait (median and longest), checks let
through unchecked (the limiter's fail-open when Redis or its pool timed out) and, for the
batched one, script calls; with `--private-redis` (a redis-server of its own instead) also the
time that server spent in the scripts per frame (`INFO commandstats`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from bench.revision import module_at  # noqa: E402

USERS, ORGANISATIONS = 1000, 50
STATS: Any = None  # with --private-redis: a client of that server, for its commandstats


def redis_script_usec() -> float:
    """Microseconds the server spent in script calls so far (0 without --private-redis)."""
    if STATS is None:
        return 0.0
    return float(STATS.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0))


def base_limiter(revision: str, workdir: Path) -> ModuleType:
    """accounts/limits.py as it is at `revision`, imported under another name."""
    return module_at(revision, "accounts/limits.py", "limits_base", workdir)


async def hog(busy: float, stop: asyncio.Event) -> None:
    """Each pass of the loop takes at least `busy` seconds, as a replica's loop in a storm; it
    sleeps rather than spins so that the CPU figures stay the limiter's."""
    while not stop.is_set():
        time.sleep(busy)
        await asyncio.sleep(0)


async def run(limiter: Any, frames: int, spread: float, busy: float) -> dict[str, float]:
    """`frames` checks arriving over `spread` seconds; the numbers the module docstring
    lists."""
    limiter._unavailable = {"warned": -math.inf, "since": 0}
    calls = [0]
    real = getattr(limiter, "_round_trip", None)
    if real is not None:

        async def counted(script: Any, batch: list[Any]) -> Any:
            calls[0] += 1
            return await real(script, batch)

        limiter._round_trip = counted
    waits: list[float] = []

    async def frame(i: int) -> None:
        if spread:
            await asyncio.sleep(spread * i / frames)
        began = time.perf_counter()
        await limiter.frame_check(user_id=i % USERS, organisation_id=i % ORGANISATIONS)
        waits.append(time.perf_counter() - began)

    stop = asyncio.Event()
    hogging = asyncio.create_task(hog(busy, stop)) if busy else None
    in_redis = redis_script_usec()
    try:
        began, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(frame(i) for i in range(frames)))
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
        in_redis = redis_script_usec() - in_redis
    finally:
        stop.set()
        if hogging is not None:
            await hogging
        if real is not None:
            limiter._round_trip = real
    state = limiter._unavailable
    unchecked = state["since"] + (1 if state["warned"] != -math.inf else 0)
    waits.sort()
    return {
        "wall": wall,
        "cpu": cpu,
        "unchecked": unchecked,
        "calls": calls[0],
        "p50": waits[len(waits) // 2],
        "max": waits[-1],
        "redis": in_redis / frames,
    }


async def bench(
    modes: dict[str, ModuleType], sizes: list[int], repeats: int, spread: float, busy: float
) -> None:
    for limiter in modes.values():  # a connection and the script loaded, before any timing
        await limiter.frame_check(user_id=0, organisation_id=0)
    names = list(modes)
    for frames in sizes:
        seen: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        for repeat in range(repeats):
            for name in names if repeat % 2 == 0 else names[::-1]:
                seen[name].append(await run(modes[name], frames, spread, busy))
                await asyncio.sleep(0.5)  # let the other's stragglers settle
        for name in names:
            runs = seen[name]

            def med(field: str, runs: list[dict[str, float]] = runs) -> float:
                return statistics.median(r[field] for r in runs)

            print(
                f"{frames:>6} frames  {name:<8} wall {med('wall'):6.3f} s"
                f" ({min(r['wall'] for r in runs):.3f}-{max(r['wall'] for r in runs):.3f})"
                f"  CPU {med('cpu'):6.3f} s  ({med('cpu') / frames * 1e6:5.1f} us/frame)"
                f"  wait p50 {med('p50'):6.3f} s max {med('max'):6.3f} s"
                f"  unchecked {med('unchecked'):5.0f}  script calls {med('calls'):4.0f}"
                + (f"  Redis {med('redis'):.1f} us/frame" if STATS is not None else ""),
                flush=True,
            )
        base, new = seen[names[0]], seen[names[1]]
        pairs = list(zip(base, new, strict=True))
        wall_ratio = statistics.median(n["wall"] / b["wall"] for b, n in pairs)
        cpu_ratio = statistics.median(n["cpu"] / b["cpu"] for b, n in pairs)
        print(f"{frames:>6} frames  batched/base: wall {wall_ratio:.2f}x, CPU {cpu_ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[2000, 5000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--base", default="main")
    parser.add_argument("--spread", type=float, default=0.0, help="frames arrive over S s")
    parser.add_argument("--busy-ms", type=float, default=0.0, help="each loop pass at least")
    parser.add_argument(
        "--private-redis",
        action="store_true",
        help="a redis-server of its own, and the time it spent in the scripts per frame",
    )
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings

    from tests.harness.services import REDIS_HOST, REDIS_PORT, redis_database

    logging.getLogger("accounts.limits").setLevel(logging.ERROR)  # fail-open warnings: counted
    logging.getLogger("limits_base").setLevel(logging.ERROR)
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory())
        if args.private_redis:
            global STATS
            import redis

            from tests.harness.processes import (
                ProcessGroup,
                free_port,
                require_binary,
                start_redis_server,
            )

            group = ProcessGroup(log_dir=Path(workdir))
            stack.callback(group.stop_all)
            port = free_port()
            start_redis_server(group, "redis", require_binary("redis-server"), port, Path(workdir))
            settings.REDIS_URL, index = f"redis://127.0.0.1:{port}/0", 0
            STATS = redis.Redis(port=port)
        else:
            index = stack.enter_context(redis_database())
            settings.REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{index}"
        settings.WS_RATE_FRAMES_PER_USER = settings.WS_RATE_FRAMES_PER_ORG = "1000000/h"
        from accounts import limits

        modes = {"base": base_limiter(args.base, Path(workdir)), "batched": limits}
        print(f"Redis db {index}; load average {os.getloadavg()[0]:.1f}", flush=True)
        asyncio.run(bench(modes, args.frames, args.repeats, args.spread, args.busy_ms / 1000))
        print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
