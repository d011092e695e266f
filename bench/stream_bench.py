"""Streaming path benchmark: tokens/s and per-token latency, full path vs floor, in one run.

For 100, 200 and 500 concurrent streams of 300 tokens at 30 tokens/s (by default: a realistic
10 s answer) it measures, interleaved repeat by repeat:
  - floor: one Daphne process running bench/floor_app.py, writing each socket N frames at R
    frames/s straight from the consumer (no Django, no channel layer, no database);
  - relay: the relay floor, Parley's shape and nothing else: bench/relay_producer.py (one
    process, like a worker) emits the same stamped tokens, coalesces them by Parley's rule and
    publishes finished delta frames to Redis pub/sub in one pipeline per round trip; one Daphne
    running bench/floor_app.py relay_application forwards them to the sockets unchanged (no
    Django, no LangChain, no database, no journal);
  - full: the production path on loopback. PostgreSQL, a private Redis (channel layer, cache,
    broker), one Daphne replica (project.asgi), Celery workers (threads pool) running
    generate_reply (chat/replies/tasks.py) with the simulated provider at R tokens/s, N tokens
    per reply, each token stamped with its emit time (SIMULATED_STAMP_TOKENS), coalesced as
    configured (STREAM_FLUSH_INTERVAL 0.04 s by default). With `--provider openai-compatible`
    the workers read the same stamped tokens over HTTP instead, through the openai-compatible
    provider (langchain-openai), from bench/sse_upstream.py (a process of its own, one SSE
    event per token at R tokens/s, as a remote provider streams);
  - uncoalesced: the same with STREAM_FLUSH_INTERVAL=0 and STREAM_FLUSH_MAX_CHARS=1 (one
    group_send per token);
  - unjournaled: the full path with STREAM_JOURNAL_TTL=0 (no delta journaled in Redis,
    chat/journal.py): what the journal costs.
Each path mode has its own workers on a queue of its own, all started (and warmed up by a first,
unmeasured run) before measuring; each repeat then runs every mode in turn, every other repeat
in reverse order, so modes compared share the same minutes of machine noise.
Every stream's client is a WebSocket to its Daphne, subscribed to its conversation before the
replies are dispatched (all at once, straight to Celery, from a process of its own as Daphne
would: the send path is not measured here). Each full-path run also reports how long that
dispatch took and each reply's first delta after its dispatch (p50, p95).
Token latency = client receive time - provider emit time (one clock: one machine). Tokens/s =
tokens delivered / (last token received - first token emitted). A stream that does not end
with all N tokens and `done` within the time limit counts as incomplete.

    .venv/bin/python bench/stream_bench.py --repeats 2 --plot docs/stream_bench_300.png
    .venv/bin/python bench/stream_bench.py --modes floor full uncoalesced --tokens 60 --rate 40

Modes run by default: floor, relay, full (`--modes` adds uncoalesced, unjournaled). `--plot`
writes tokens/s and p95 token latency against the number of streams (matplotlib PNG).

Loopback only; it starts and stops every process through the test harness (tests/harness/:
the production topology without nginx, Daphne with `make run`'s command) and takes a few
minutes. It needs PostgreSQL on 127.0.0.1:5432 (as the integration tests do) and redis-server.
Each run also reports the CPU every process spent per token; `--profile DIR` adds py-spy
stacks of Daphne and the workers, sampling the thread that holds the GIL (`--gil`: where the
CPU goes, not where threads wait; `.venv/bin/pip install py-spy` first; sampling 256-thread
workers is slow and disturbs the latencies, so read only the stacks from such a run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from unittest import mock

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness.processes import PYTHON, ProcessGroup, base_env, free_port  # noqa: E402
from tests.harness.sockets import open_many  # noqa: E402
from tests.harness.topology import Topology, production_topology  # noqa: E402

USERNAME, PASSWORD = "bench-bo", "correct horse battery staple"
MODES = ("floor", "relay", "full", "uncoalesced", "unjournaled")
FLOORS = ("floor", "relay")  # measured next to each full-path run
LABELS = {"floor": "Daphne-direct floor", "relay": "relay floor", "full": "Parley (full path)"}
PATHS = ("full", "uncoalesced", "unjournaled")  # the modes that run the production path


@dataclass
class Run:
    mode: str
    streams: int
    tokens: int = 0
    incomplete: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    emits: list[float] = field(default_factory=list)  # each latency's token's emit time
    frames: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per process in the run
    first_delta: list[float] = field(default_factory=list)  # dispatch → first delta, per reply
    dispatch_seconds: float = 0.0  # how long handing every reply to Celery took (full path)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def quantile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def p95_by_second(self) -> list[float]:
        """p95 token latency (ms) of the tokens emitted in each second of the run: whether the
        tail is spread over the run or sits where replies start and end together."""
        if not self.emits:
            return []
        first = min(self.emits)
        seconds: dict[int, list[float]] = {}
        for emitted_at, latency in zip(self.emits, self.latencies, strict=True):
            seconds.setdefault(int(emitted_at - first), []).append(latency)
        p95 = []
        for second in range(max(seconds) + 1):
            ordered = sorted(seconds.get(second, [0.0]))
            p95.append(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000)
        return p95

    def first_delta_quantile(self, q: float) -> float:
        if not self.first_delta:
            return float("nan")
        ordered = sorted(self.first_delta)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


# --- One client per stream --------------------------------------------------------------------


async def _listen(
    ws: Any,
    run: Run,
    expected: int,
    deadline: float,
    emitted: list[float],
    first: list[float] | None = None,
) -> None:
    """Read one stream to its end; every stamp in a delta is one token. `first` gets the
    time its first delta came."""
    from websockets.exceptions import ConnectionClosed

    got = 0
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            async with asyncio.timeout(left):
                raw = await ws.recv()
            now = time.time()
            frame = json.loads(raw)
            if frame["type"] == "delta":
                if first is not None and not first:
                    first.append(now)
                run.frames += 1
                for stamp in frame["text"].split():
                    emitted_at = float(stamp)
                    emitted.append(emitted_at)
                    run.emits.append(emitted_at)
                    run.latencies.append(now - emitted_at)
                    got += 1
                run.tokens_last = now  # type: ignore[attr-defined]
            elif frame["type"] in ("done", "error"):
                break
    except (TimeoutError, ConnectionClosed):
        pass
    run.tokens += got
    if got < expected:
        run.incomplete += 1


async def _listen_all(
    sockets: list[Any],
    ready: str,
    run: Run,
    tokens: int,
    rate: float,
    emitted: list[float],
    mark: Callable[[], None],
    firsts: list[list[float]] | None = None,
) -> list[asyncio.Task[None]]:
    """Once every socket said `ready` (a frame of that type), mark the start and read every
    stream to its end (tasks); `firsts[i]` gets the time of socket i's first delta."""
    for ws in sockets:
        while json.loads(await ws.recv())["type"] != ready:
            pass
    await asyncio.to_thread(mark)
    deadline = time.monotonic() + tokens / rate * 4 + 60
    return [
        asyncio.create_task(
            _listen(ws, run, tokens, deadline, emitted, firsts[i] if firsts is not None else None)
        )
        for i, ws in enumerate(sockets)
    ]


def _finish(run: Run, emitted: list[float]) -> Run:
    last = getattr(run, "tokens_last", None)
    if emitted and last:
        run.seconds = last - min(emitted)
    return run


async def floor_run(
    port: int, streams: int, tokens: int, rate: float, mark: Callable[[], None]
) -> Run:
    run, emitted = Run("floor", streams), list[float]()
    url = f"ws://127.0.0.1:{port}/?frames={tokens}&rate={rate}"
    sockets = await open_many([url] * streams, {}, None)
    deadline = time.monotonic() + tokens / rate * 4 + 30
    try:
        await asyncio.to_thread(mark)
        await asyncio.gather(*(ws.send("go") for ws in sockets))
        await asyncio.gather(*(_listen(ws, run, tokens, deadline, emitted) for ws in sockets))
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return _finish(run, emitted)


async def relay_run(
    port: int,
    redis_url: str,
    streams: int,
    tokens: int,
    rate: float,
    mark: Callable[[], None],
) -> Run:
    """The relay floor: bench/relay_producer.py publishes each stream's coalesced deltas to
    Redis pub/sub, bench/floor_app.py relay_application (one Daphne) forwards them."""
    import redis.asyncio as redis
    from django.conf import settings

    run, emitted = Run("relay", streams), list[float]()
    prefix = f"relay:{uuid.uuid4().hex[:8]}:"
    urls = [f"ws://127.0.0.1:{port}/relay/?stream={prefix}{i}" for i in range(streams)]
    sockets = await open_many(urls, {}, None)
    client = redis.Redis.from_url(redis_url)
    try:
        # Subscribed once Redis confirmed it.
        listeners = await _listen_all(sockets, "ready", run, tokens, rate, emitted, mark)
        job = {
            "streams": streams,
            "tokens": tokens,
            "rate": rate,
            "interval": settings.STREAM_FLUSH_INTERVAL,
            "max_chars": settings.STREAM_FLUSH_MAX_CHARS,
            "max_interval": settings.STREAM_FLUSH_MAX_INTERVAL,
            "rate_limit": settings.STREAM_FLUSH_RATE,
            "prefix": prefix,
        }
        await client.publish("relay:control", json.dumps(job))
        await asyncio.gather(*listeners)
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        await client.aclose()
    return _finish(run, emitted)


def _pending_replies(streams: int, tokens: int) -> list[tuple[int, int, Any]]:
    """(conversation, reply, routing) for `streams` new pending replies, not yet dispatched."""
    from accounts.models import User
    from chat import services

    user = User.objects.get(username=USERNAME)
    held: list[tuple[int, Any]] = []
    prompt = " ".join(f"w{i}" for i in range(tokens))  # a reply of >= `tokens` tokens
    with mock.patch("chat.replies.dispatch.dispatch_generation", lambda *args: held.append(args)):
        results = [
            services.message_send(
                author=user, conversation=None, text=prompt, client_id=uuid.uuid4().hex
            )
            for _ in range(streams)
        ]
    return [(r.reply.conversation_id, r.reply.pk, r.reply.routing) for r in results]


def _dispatch_when_told(conn: Connection, queue: str) -> None:
    """The dispatcher process: hands each list of reply ids it is sent to Celery (the
    worker's queue `queue`), as Daphne would, and answers with when each went."""
    import django

    django.setup()
    from chat.replies.tasks import generate_reply, route_carried

    conn.send("ready")
    while (replies := conn.recv()) is not None:
        sent = []
        for reply, routing in replies:
            # With the reply's route in the task's headers, as Daphne's dispatch sends it
            # (chat/replies/dispatch.py): the worker plans the first call on the task's thread.
            with route_carried(routing):
                generate_reply.apply_async((reply,), queue=queue)
            sent.append(time.time())
        conn.send(sent)


@contextmanager
def dispatcher(queue: str) -> Iterator[Connection]:
    """A process of its own that dispatches the replies (`_dispatch_when_told`).

    Not this client's: handing 500 tasks to Celery is CPU (kombu, ~1 s on a busy machine), and
    done on the event loop that reads the sockets it held back every frame already on its way,
    so the first second's tokens were measured late by the time the dispatch took (the
    client's, not Parley's). Daphne dispatches from its own process too."""
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=_dispatch_when_told, args=(theirs, queue), daemon=True
    )
    process.start()
    try:
        yield ours
    finally:
        ours.send(None)
        process.join(timeout=30)
        if process.is_alive():
            process.kill()


async def full_run(
    mode: str,
    queue: str,
    port: int,
    cookie: str,
    streams: int,
    tokens: int,
    rate: float,
    mark: Callable[[], None],
) -> Run:
    run, emitted = Run(mode, streams), list[float]()
    with dispatcher(queue) as dispatch:
        pending = await asyncio.to_thread(_pending_replies, streams, tokens)
        base = f"http://127.0.0.1:{port}"
        url = f"ws://127.0.0.1:{port}/ws/chat/"
        sockets = await open_many([url] * streams, {"Cookie": cookie}, base)
        firsts: list[list[float]] = [[] for _ in sockets]
        try:
            for ws, (conversation, _, _) in zip(sockets, pending, strict=True):
                await ws.send(json.dumps({"type": "subscribe", "conversation": conversation}))
                await ws.send(json.dumps({"type": "ping"}))
            assert await asyncio.to_thread(dispatch.recv) == "ready"
            # Frames are handled in order: a pong means subscribed.
            listeners = await _listen_all(sockets, "pong", run, tokens, rate, emitted, mark, firsts)
            dispatch.send([(reply, routing) for _, reply, routing in pending])
            sent: list[float] = await asyncio.to_thread(dispatch.recv)
            run.dispatch_seconds = sent[-1] - sent[0]
            await asyncio.gather(*listeners)
            run.first_delta = [got[0] - at for got, at in zip(firsts, sent, strict=True) if got]
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return _finish(run, emitted)


# --- The processes ---------------------------------------------------------------------------


def _process_cpu(pid: int | str) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_seconds(group: ProcessGroup) -> dict[str, float]:
    """CPU seconds used so far by each running process of the group, by each PostgreSQL
    backend connected to this run's database (`postgres-<pid>`: other sessions' databases on
    the same server are not this run's, nor are backends that come and go between the two
    readings), and by the whole machine (busy time of all cores)."""
    used = {}
    for name, proc in group.procs.items():
        if (seconds := _process_cpu(proc.pid)) is not None:
            used[name] = seconds
    database = urllib.parse.urlsplit(os.environ.get("DATABASE_URL", "")).path.lstrip("/")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() != "postgres":
                    continue
                # A backend's title: "postgres: CLUSTER: USER DATABASE HOST(PORT) STATE".
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().split()
            except OSError:
                continue
            if database and database in title:
                used[f"postgres-{entry.name}"] = _process_cpu(entry.name) or 0.0
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    used["machine"] = (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")
    return used


def measured(
    group: ProcessGroup, run: Any, profile: Path | None = None, workers: Sequence[str] = ()
) -> Run:
    """Run a benchmark (a coroutine function taking a `mark` callback) and note the CPU each
    process (and this client) spends from its mark, when the streams start, to its end. Only
    `workers` count as the run's workers (other modes' idle ones count in `machine` only).

    With `profile`, py-spy samples Daphne and the workers over the same span (collapsed
    stacks in that folder).
    """
    samplers: list[subprocess.Popen[bytes]] = []
    before: dict[str, float] = {}
    client_before = 0.0

    def mark() -> None:
        nonlocal client_before
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            for name, proc in group.procs.items():
                if proc.poll() is None and name.split("-")[0] in ("daphne", "worker"):
                    out = profile / f"{name}-{len(list(profile.iterdir()))}.txt"
                    py_spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
                    argv = [py_spy, "record", "--nonblocking", "--gil", "-r", "100", "-f", "raw"]
                    samplers.append(
                        subprocess.Popen(
                            [*argv, "-o", str(out), "-p", str(proc.pid)],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                    )
            time.sleep(1.5)  # py-spy attaches
        before.update(cpu_seconds(group))
        client_before = time.process_time()

    result: Run = asyncio.run(run(mark))
    for sampler in samplers:
        sampler.send_signal(signal.SIGINT)
        sampler.wait(timeout=30)
    after = cpu_seconds(group)
    for name in after:
        if name.startswith("worker") and name not in workers:
            continue
        if name in before and after[name] > before[name]:
            role = name.split("-")[0]
            result.cpu[role] = result.cpu.get(role, 0) + after[name] - before[name]
    result.cpu["client"] = time.process_time() - client_before
    return result


def start_workers(
    topo: Topology, env: dict[str, str], args: argparse.Namespace, mode: str
) -> list[str]:
    """compose.yaml's worker-remote, `args.workers` times, with `args.threads` threads each,
    consuming the queue of `mode` (bench-<mode>)."""
    roles = [f"worker-{mode}-{index}" for index in range(args.workers)]
    for role in roles:
        extra = (f"--concurrency={args.threads}", "--without-heartbeat", f"--queues=bench-{mode}")
        topo.start_worker(role, env=env, extra=extra)
    return [topo.current(role) for role in roles]


def log_problems(group: ProcessGroup) -> dict[str, int]:
    text = "".join(group.log(name) for name in group.procs)
    patterns = {
        "over capacity": r"over capacity",
        "Too many connections": r"Too many connections",
        "Timeout reading": r"Timeout reading",
        "reply failed": r"reply \d+ failed",
    }
    return {key: len(re.findall(pattern, text)) for key, pattern in patterns.items()}


def versions() -> str:
    from importlib.metadata import version

    names = ["django", "channels", "channels-redis", "redis", "daphne", "celery", "websockets"]
    redis_v = subprocess.run(
        [shutil.which("redis-server") or "redis-server", "--version"],
        capture_output=True,
        text=True,
    ).stdout.split()[2]
    found = ", ".join(f"{n} {version(n)}" for n in names)
    return f"Python {platform.python_version()}, {found}, Redis {redis_v.removeprefix('v=')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[100, 200, 500])
    parser.add_argument("--tokens", type=int, default=300, help="tokens per stream (N)")
    parser.add_argument("--rate", type=float, default=30.0, help="tokens/s per stream (R)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--threads", type=int, default=256, help="threads per worker")
    parser.add_argument("--modes", nargs="+", default=["floor", "relay", "full"], choices=MODES)
    parser.add_argument("--json", type=Path, help="write every run here too")
    parser.add_argument("--plot", type=Path, help="tokens/s and p95 against streams, a PNG here")
    parser.add_argument("--profile", type=Path, help="py-spy Daphne and workers, stacks here")
    parser.add_argument("--layer", default="", help="CHANNEL_LAYER_BACKEND (default: settings')")
    parser.add_argument(
        "--provider",
        default="simulated",
        choices=["simulated", "openai-compatible"],
        help="the full path's model: the simulated provider in the worker, or an OpenAI-"
        "compatible server streaming over HTTP (bench/sse_upstream.py, a process of its own)",
    )
    args = parser.parse_args()
    assert max(args.streams) <= args.workers * args.threads, "more streams than worker threads"

    unlimited = "100000000/m"
    env = {
        "SIMULATED_TOKENS_PER_SECOND": str(args.rate),
        "SIMULATED_FIRST_TOKEN_DELAY": "0",
        "SIMULATED_STAMP_TOKENS": "true",
        "LLM_MAX_TOKENS": str(args.tokens),
        "CACHE_ENABLED": "false",
        "REAP_STALE_AFTER": "600",
        "WS_RATE_FRAMES_PER_USER": unlimited,
        "WS_RATE_FRAMES_PER_ORG": unlimited,
        "WS_RATE_SENDS_PER_USER": unlimited,
        "WS_RATE_SENDS_PER_ORG": unlimited,
        "LOG_LEVEL": "WARNING",
    }
    if args.layer:
        env["CHANNEL_LAYER_BACKEND"] = args.layer
    upstream_port = free_port()
    if args.provider == "openai-compatible":
        env["OPENAI_COMPATIBLE_BASE_URL"] = f"http://127.0.0.1:{upstream_port}/v1"
        env["OPENAI_COMPATIBLE_MODEL"] = "upstream-model"
    # Stopped by SIGTERM (kill, timeout), a run unwinds as after Ctrl-C: its processes stop and
    # its database goes. That database is its own (parley_bench_<pid>_<random>: two runs at once
    # never share one), dropped at the end (tests/harness/services.py postgres_database).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    # One replica that clients reach directly, Celery workers started below for each mode.
    with production_topology(
        replicas=1,
        provider=args.provider,
        env=env,
        worker=False,
        nginx=False,
        as_in_image=False,
        user=(USERNAME, PASSWORD),
        name=f"bench-{os.getpid()}",
    ) as topo:
        group = topo.group
        daphne_port, floor_port = topo.daphne_ports[0], free_port()
        group.daphne(
            "floor", floor_port, base_env(), app="bench.floor_app:application", wait_for="/"
        )
        redis_url, relay_port = topo.env["REDIS_URL"], free_port()
        if "relay" in args.modes:
            relay_env = base_env(RELAY_REDIS_URL=redis_url)
            relay_app = "bench.floor_app:relay_application"
            group.daphne("relay", relay_port, relay_env, app=relay_app, wait_for="/")
            group.start("producer", [PYTHON, str(REPO / "bench" / "relay_producer.py")], relay_env)
            group.wait_for_log("producer", "ready")
        if args.provider == "openai-compatible":
            upstream = [PYTHON, str(REPO / "bench" / "sse_upstream.py"), "--rate", str(args.rate)]
            group.start("upstream", [*upstream, "--port", str(upstream_port)], base_env())
            group.wait_for_log("upstream", "ready")
        os.environ.update(topo.env)  # this process creates rows and dispatches like Daphne does
        import django

        django.setup()
        cookie = topo.cookie

        runs: list[Run] = []
        settings_of = {
            "full": {},
            "uncoalesced": {"STREAM_FLUSH_INTERVAL": "0", "STREAM_FLUSH_MAX_CHARS": "1"},
            "unjournaled": {"STREAM_JOURNAL_TTL": "0"},
        }
        started = time.monotonic()
        modes: list[str | None] = [m for m in PATHS if m in args.modes]
        workers = {m: start_workers(topo, settings_of[m], args, m) for m in modes if m}

        def path_run(mode: str, streams: int) -> Run:
            benchmark = partial(
                full_run,
                mode,
                f"bench-{mode}",
                daphne_port,
                cookie,
                streams,
                args.tokens,
                args.rate,
            )
            return measured(group, benchmark, args.profile, workers[mode])

        for warming in workers:  # warm-up: a fresh worker's first replies cost it more
            path_run(warming, min(args.streams))
        for repeat in range(args.repeats):
            # Every other repeat in reverse order: no mode always runs first (or last).
            for mode in (modes if repeat % 2 == 0 else modes[::-1]) or [None]:
                for streams in args.streams:
                    # The floors are measured next to each full-path run (same minute, same
                    # noise), every other repeat in reverse order.
                    if mode == "full" or mode is None:
                        floors = [f for f in FLOORS if f in args.modes]
                        for floor in floors if repeat % 2 == 0 else floors[::-1]:
                            benchmark = (
                                partial(floor_run, floor_port, streams, args.tokens, args.rate)
                                if floor == "floor"
                                else partial(
                                    relay_run,
                                    relay_port,
                                    redis_url,
                                    streams,
                                    args.tokens,
                                    args.rate,
                                )
                            )
                            runs.append(measured(group, benchmark))
                            _report(runs[-1], repeat)
                    if mode:
                        runs.append(path_run(mode, streams))
                        _report(runs[-1], repeat)
        for roles in workers.values():
            for role in roles:
                group.kill(role, signal.SIGTERM)
        problems = log_problems(group)
        print(f"\nlog lines: {problems}; whole run {time.monotonic() - started:.0f} s")
        print(f"machine: {os.cpu_count()} cores; {versions()}\n")
        print(table(runs, args))
        print()
        print(cpu_table(runs, args.streams))
        if args.plot:
            plot(runs, args, args.plot)
            print(f"\nplot: {args.plot}")
        if args.json:
            args.json.write_text(
                json.dumps(
                    [
                        {
                            "mode": r.mode,
                            "streams": r.streams,
                            "tokens": r.tokens,
                            "seconds": r.seconds,
                            "incomplete": r.incomplete,
                            "frames": r.frames,
                            "p50_ms": r.quantile(0.5),
                            "p95_ms": r.quantile(0.95),
                            "p95_ms_by_second": r.p95_by_second(),
                            "dispatch_seconds": r.dispatch_seconds,
                            "first_delta_p50_ms": r.first_delta_quantile(0.5),
                            "first_delta_p95_ms": r.first_delta_quantile(0.95),
                            "cpu_seconds": r.cpu,
                        }
                        for r in runs
                    ],
                    indent=1,
                )
            )


def _report(run: Run, repeat: int) -> None:
    print(
        f"[{repeat}] {run.mode:12} {run.streams:4} streams: {run.tokens_per_second:9.0f} tok/s, "
        f"p50 {run.quantile(0.5):7.1f} ms, p95 {run.quantile(0.95):8.1f} ms, "
        f"{run.frames} frames, incomplete {run.incomplete}; CPU s: "
        + ", ".join(f"{name} {seconds:.1f}" for name, seconds in sorted(run.cpu.items()))
        + "; p95 ms by second of emit: "
        + " ".join(f"{p95:.0f}" for p95 in run.p95_by_second())
        + (
            f"; dispatched in {run.dispatch_seconds:.2f} s, first delta after dispatch "
            f"p50 {run.first_delta_quantile(0.5):.0f} ms, "
            f"p95 {run.first_delta_quantile(0.95):.0f} ms"
            if run.first_delta
            else ""
        ),
        flush=True,
    )


def table(runs: list[Run], args: argparse.Namespace) -> str:
    """Medians over repeats; ratios against the floor at the same stream count."""
    rows = [
        f"N={args.tokens} tokens per stream at R={args.rate:g} tokens/s; "
        f"medians of {args.repeats} repeats",
        "",
        "| streams | path | tokens/s | x floor | x relay | p50 ms | p95 ms | frames/stream "
        "| incomplete |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for streams in args.streams:
        floor_tps = _median_tps(runs, "floor", streams)
        relay_tps = _median_tps(runs, "relay", streams)
        for mode in MODES:
            some = [r for r in runs if r.mode == mode and r.streams == streams]
            if not some:
                continue
            tps = statistics.median(r.tokens_per_second for r in some)
            ratio = f"{tps / floor_tps:.2f}" if floor_tps else "-"
            relay_ratio = f"{tps / relay_tps:.2f}" if relay_tps else "-"
            p50 = statistics.median(r.quantile(0.5) for r in some)
            p95 = statistics.median(r.quantile(0.95) for r in some)
            frames = statistics.median(r.frames / r.streams for r in some)
            incomplete = max(r.incomplete for r in some)
            rows.append(
                f"| {streams} | {mode} | {tps:.0f} | {ratio} | {relay_ratio} | {p50:.1f} | "
                f"{p95:.1f} | "
                f"{frames:.0f} | {incomplete} |"
            )
    return "\n".join(rows)


def _median_tps(runs: list[Run], mode: str, streams: int) -> float:
    some = [r.tokens_per_second for r in runs if r.mode == mode and r.streams == streams]
    return statistics.median(some) if some else 0.0


def plot(runs: list[Run], args: argparse.Namespace, path: Path) -> None:
    """Tokens/s and p95 token latency against the number of streams, one line per path
    (medians over repeats), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rate_axes, latency_axes) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode in MODES:
        counts = [n for n in args.streams if any(r.mode == mode and r.streams == n for r in runs)]
        if not counts:
            continue
        label = LABELS.get(mode, mode)
        rate_axes.plot(counts, [_median_tps(runs, mode, n) for n in counts], "o-", label=label)
        p95 = [
            statistics.median(r.quantile(0.95) for r in runs if r.mode == mode and r.streams == n)
            for n in counts
        ]
        latency_axes.plot(counts, p95, "o-", label=label)
    rate_axes.set(xlabel="concurrent streams", ylabel="tokens/s delivered", title="Throughput")
    latency_axes.set(xlabel="concurrent streams", ylabel="p95 token latency (ms)")
    latency_axes.set_title("Latency (emit → socket)")
    latency_axes.set_yscale("log")
    for axes in (rate_axes, latency_axes):
        axes.grid(True, alpha=0.3)
        axes.legend()
    figure.suptitle(
        f"{args.tokens} tokens per stream at {args.rate:g} tokens/s, "
        f"medians of {args.repeats} repeats (bench/stream_bench.py)"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def cpu_table(runs: list[Run], stream_counts: list[int]) -> str:
    """CPU milliseconds per token delivered, by process, from the streams' start to their end
    (medians over repeats). `machine` is all cores' busy time, whoever used it."""
    roles = [
        "floor",
        "relay",
        "producer",
        "daphne",
        "worker",
        "upstream",
        "redis",
        "postgres",
        "client",
    ]
    roles.append("machine")
    rows = [
        "CPU ms per token delivered (per frame for the floor), medians:",
        "",
        "| streams | path | " + " | ".join(roles) + " |",
        "| ---: | --- |" + " ---: |" * len(roles),
    ]
    for streams in stream_counts:
        for mode in MODES:
            some = [r for r in runs if r.mode == mode and r.streams == streams and r.tokens]
            if not some:
                continue
            cells = []
            for role in roles:
                values = [r.cpu.get(role, 0.0) / r.tokens * 1000 for r in some]
                median = statistics.median(values)
                cells.append(f"{median:.3f}" if median >= 0.0005 else "-")
            rows.append(f"| {streams} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
