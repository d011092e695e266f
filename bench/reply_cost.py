"""What one assistant reply costs a Celery worker outside its tokens: CPU, SQL and Redis.

    .venv/bin/python bench/reply_cost.py                    # 200 replies of 1 token, together
    .venv/bin/python bench/reply_cost.py --replies 200 --tokens 1 --sequential
    .venv/bin/python bench/reply_cost.py --replies 400 --tokens 1 --warmup 400   # in its stride
    .venv/bin/python bench/reply_cost.py --replies 100 --tokens 300 --rate 30 --upstream  # HTTP

Starts a private redis-server and a throwaway PostgreSQL database (tests/harness/), migrates,
saves N pending replies and runs the worker's generation (chat/replies/tasks.py
generate_on_database_lane: reply_start, prompt, routing, the simulated provider, reply_finish,
quota settlement) for all of them on one event loop, as a worker does; with `--upstream` the
model is read over HTTP (the openai-compatible provider against bench/sse_upstream.py).
With 1 token per reply almost all the CPU is the per-reply start and finish work: the figure
to watch is "CPU per reply". Without --warmup it includes what the first replies of a process
pay once (imports on first use, Redis and database connections opened). Needs PostgreSQL
(POSTGRES_ADMIN_URL) and redis-server on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import os
import pstats
import re
import shutil
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from unittest import mock

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness.processes import (  # noqa: E402
    PYTHON,
    ProcessGroup,
    base_env,
    free_port,
    manage,
    start_redis_server,
)
from tests.harness.services import POSTGRES_ADMIN_URL, postgres_database  # noqa: E402


def _count_sql(counts: collections.Counter[str]) -> None:
    """Count every statement Django sends, by its text (grouped for the report by its first 90
    characters): a dictionary increment, so the count costs the figures it reports next to
    nothing (a lock and a regular expression per statement were ~5 % of the CPU per reply)."""
    from django.db.backends import utils

    original = utils.CursorWrapper.execute

    def execute(self: Any, sql: str, params: Any = None) -> Any:
        counts[sql] += 1  # under the GIL; a count lost to a race would be one in thousands
        return original(self, sql, params)

    utils.CursorWrapper.execute = execute  # type: ignore[method-assign]


def _token_latency(latencies: list[tuple[float, float]]) -> None:
    """Note, for every stamped token a reply hands to the channel layer, (emit time, seconds
    from its emit to that hand-over): the worker's share of a token's latency, which the
    per-reply work on the same loop and GIL delays (SIMULATED_STAMP_TOKENS)."""
    from chat.events import EventQueue

    original = EventQueue.put

    def put(self: Any, event: dict[str, Any]) -> None:
        if event.get("type") == "chat.delta":
            now = time.time()
            for stamp in event["text"].split():
                latencies.append((float(stamp), now - float(stamp)))
        original(self, event)

    EventQueue.put = put  # type: ignore[method-assign]


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000 if ordered else 0.0


def _statements(counts: collections.Counter[str]) -> collections.Counter[str]:
    grouped: collections.Counter[str] = collections.Counter()
    for sql, count in counts.items():
        grouped[re.sub(r"\s+", " ", sql)[:90]] += count
    return grouped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replies", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=1, help="tokens per reply")
    parser.add_argument("--sequential", action="store_true", help="one reply after another")
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="replies generated first and not measured (imports, Redis and database "
        "connections opened: the measured ones then run in a process in its stride)",
    )
    parser.add_argument(
        "--rate", type=float, default=1000000.0, help="tokens/s per reply (the simulated model)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="cProfile the generation loop's thread, stats here (call counts resist load)",
    )
    parser.add_argument(
        "--latency",
        action="store_true",
        help="report each token's emit → hand-to-the-layer latency (p50, p95, p95 by second of "
        "emit): with --tokens 300 --rate 30, how the replies starting and ending together "
        "delay the tokens of those already streaming",
    )
    parser.add_argument(
        "--upstream",
        action="store_true",
        help="the model over HTTP: the openai-compatible provider against bench/sse_upstream.py "
        "(a process of its own, streaming at --rate), instead of the simulated provider",
    )
    args = parser.parse_args()
    replies, tokens = args.replies, args.tokens

    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="reply-cost-"))
        stack.callback(shutil.rmtree, workdir, True)
        database = stack.enter_context(postgres_database(POSTGRES_ADMIN_URL, "parley_reply_cost"))
        group = ProcessGroup(log_dir=workdir)
        stack.callback(group.stop_all)
        port = free_port()
        redis_server = shutil.which("redis-server")
        if redis_server is None:
            sys.exit("redis-server is not on PATH")
        start_redis_server(group, "redis", redis_server, port, workdir)
        upstream: dict[str, str] = {}
        if args.upstream:
            upstream_port = free_port()
            argv = [PYTHON, str(REPO / "bench" / "sse_upstream.py"), "--rate", str(args.rate)]
            group.start("upstream", [*argv, "--port", str(upstream_port)], base_env())
            group.wait_for_log("upstream", "ready")
            upstream = {
                "LLM_DEFAULT_PROVIDER": "openai-compatible",
                "OPENAI_COMPATIBLE_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
                "OPENAI_COMPATIBLE_MODEL": "upstream-model",
            }
        env = base_env(
            **{
                "LLM_DEFAULT_PROVIDER": "simulated",
                **upstream,
            },
            DATABASE_URL=database,
            REDIS_URL=f"redis://127.0.0.1:{port}/0",
            CELERY_BROKER_URL=f"redis://127.0.0.1:{port}/1",
            GENERATION_BACKEND="celery",
            SIMULATED_TOKENS_PER_SECOND=str(args.rate),
            SIMULATED_FIRST_TOKEN_DELAY="0",
            SIMULATED_STAMP_TOKENS="true",
            LLM_MAX_TOKENS=str(tokens),
            CACHE_ENABLED="false",
            REAP_STALE_AFTER="600",
            LOG_LEVEL="WARNING",
        )
        manage("migrate", "--noinput", env=env, timeout=300)
        os.environ.update(env)
        import django

        django.setup()
        import redis

        from accounts.models import User
        from chat import services
        from chat.replies import tasks

        user = User.objects.create_user(username="bench", password="bench")
        prompt = " ".join(f"w{i}" for i in range(tokens))
        with mock.patch("chat.replies.dispatch.dispatch_generation", lambda *a: None):
            ids = [
                services.message_send(
                    author=user, conversation=None, text=prompt, client_id=uuid.uuid4().hex
                ).reply.pk
                for _ in range(args.warmup + replies)
            ]
        warmup, ids = ids[: args.warmup], ids[args.warmup :]

        async def generate(message_ids: list[int]) -> None:
            if args.sequential:
                for message_id in message_ids:
                    await tasks.generate_on_database_lane(message_id)
            else:
                await asyncio.gather(
                    *(tasks.generate_on_database_lane(message_id) for message_id in message_ids)
                )

        sql: collections.Counter[str] = collections.Counter()
        _count_sql(sql)
        latencies: list[tuple[float, float]] = []
        if args.latency:
            _token_latency(latencies)
        stats_client = redis.Redis(port=port)
        profiler = cProfile.Profile() if args.profile else None

        async def measure() -> tuple[float, float]:
            # One loop for the warm-up and the measured replies, as a worker has (the layer's
            # and the clients' connections are the loop's).
            await generate(warmup)
            sql.clear()
            latencies.clear()
            stats_client.config_resetstat()
            wall, cpu = time.monotonic(), time.process_time()
            if profiler is not None:
                profiler.enable()
            await generate(ids)
            if profiler is not None:
                profiler.disable()
            return time.monotonic() - wall, time.process_time() - cpu

        wall, cpu = asyncio.run(measure())

        if latencies:
            first = min(emitted for emitted, _ in latencies)
            by_second: dict[int, list[float]] = collections.defaultdict(list)
            for emitted, latency in latencies:
                by_second[int(emitted - first)].append(latency)
            ordered = sorted(latency for _, latency in latencies)
            print(
                f"token emit → layer: p50 {ordered[len(ordered) // 2] * 1000:.1f} ms, "
                f"p95 {_p95(ordered):.1f} ms, max {ordered[-1] * 1000:.0f} ms; p95 ms by "
                "second of emit: "
                + " ".join(f"{_p95(by_second[s]):.0f}" for s in range(max(by_second) + 1))
            )
        mode = "one after another" if args.sequential else "together"
        print(f"{replies} replies x {tokens} token(s), {mode}: wall {wall:.2f} s")
        print(f"CPU per reply: {cpu / replies * 1000:.1f} ms")
        print(f"CPU per token: {cpu / (replies * tokens) * 1000:.3f} ms")
        print(f"SQL per reply: {sum(sql.values()) / replies:.2f}")
        for statement, count in _statements(sql).most_common(20):
            print(f"  {count / replies:5.2f}  {statement}")
        commands = {
            name.removeprefix("cmdstat_"): stat["calls"] / replies
            for name, stat in stats_client.info("commandstats").items()
            if not name.startswith("cmdstat_config")
        }
        print(f"Redis commands per reply: {sum(commands.values()):.2f}")
        for name, count in sorted(commands.items(), key=lambda item: -item[1]):
            print(f"  {count:5.2f}  {name}")
        if profiler is not None:
            profiler.dump_stats(args.profile)
            stats = pstats.Stats(profiler)
            calls = sum(entry[1] for entry in stats.stats.values())  # type: ignore[attr-defined]
            print(f"Python calls on the loop's thread: {calls:,} ({calls / replies:,.0f} a reply)")
            print(f"profile: {args.profile}")


if __name__ == "__main__":
    main()
