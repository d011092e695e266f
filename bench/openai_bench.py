"""Added latency of Parley's /v1/chat/completions over the upstream it calls.

One run measures, interleaved request by request, the same streamed completion
  - direct: against a loopback OpenAI-compatible upstream (tests/fault_server.py) that streams
    fixed chunks after a fixed first-token delay, and
  - via Parley, with LLM_DEFAULT_PROVIDER=openai-compatible and OPENAI_COMPATIBLE_BASE_URL at
    that upstream, in each `--mode`:
      embedded: one Daphne (SQLite, in-memory layer, in-process generation);
      production: tests/harness' topology — nginx → 2 Daphne replicas → Redis ← a Celery
      worker, PostgreSQL (as compose.yaml runs it), with its default settings: the Daphne
      process holding the request generates the reply (API_GENERATION_IN_SERVER);
      production-celery: the same with API_GENERATION_IN_SERVER=false (the reply goes through
      the Celery worker, as page and WebSocket replies do), for comparison,
and reports median and p95 of time to first byte (TTFB: first byte of the response body), time
to first token (TTFT: first chunk with content) and total time, plus Parley's added latency.
Parley starts its response with the first text (errors before it get a real status), so its
TTFB is close to its TTFT; the upstream sends a role chunk at once, so its TTFB is not.

The reply cache is off (CACHE_ENABLED=false) and every prompt is unique; the run checks that
the upstream served every request, direct or via Parley.

    .venv/bin/python bench/openai_bench.py --requests 60 --concurrency 1 --concurrency 8 \
        --concurrency 32 --mode embedded --mode production

`--profile PREFIX` records daphne-1 with py-spy during each level of a production mode (CPU
only, `--gil`, 200 Hz; raw samples to PREFIX-MODE-CONCURRENCY.txt; `--py-spy` names the
binary, which the venv does not have).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fault_server import Reply, fault_server
from tests.harness.embedded import MAKE_KEY, running_parley
from tests.harness.processes import manage
from tests.harness.topology import production_topology

WARM_UP = 3
UPSTREAM_TEXT = "Parley benchmark reply: " + " ".join(f"token{n}" for n in range(40))


@dataclass
class Sample:
    ttfb: float
    ttft: float
    total: float
    text: str
    started_wall: float = 0.0  # time.time() when the request was sent
    reply_id: int | None = None  # Parley's reply (X-Parley-Message)


async def one(client: httpx.AsyncClient, url: str, key: str, prompt: str, model: str) -> Sample:
    payload = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True}
    start, started_wall = time.perf_counter(), time.time()
    ttfb = ttft = None
    reply_id = None
    text = []
    buffer = b""
    async with client.stream(
        "POST", url, json=payload, headers={"Authorization": f"Bearer {key}"}
    ) as response:
        response.raise_for_status()
        if "x-parley-message" in response.headers:
            reply_id = int(response.headers["x-parley-message"])
        async for raw in response.aiter_raw():
            now = time.perf_counter()
            if ttfb is None:
                ttfb = now - start
            buffer += raw
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                if not event.startswith(b"data: ") or event == b"data: [DONE]":
                    continue
                chunk = json.loads(event[6:])
                for choice in chunk.get("choices", []):
                    content = choice.get("delta", {}).get("content")
                    if content:
                        if ttft is None:
                            ttft = now - start
                        text.append(content)
    total = time.perf_counter() - start
    assert ttfb is not None and ttft is not None, "no content streamed"
    return Sample(ttfb, ttft, total, "".join(text), started_wall, reply_id)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def ms(value: float) -> str:
    return f"{value * 1000:.1f}"


async def run(
    parley_url: str, parley_key: str, upstream_url: str, requests: int, concurrency: int
) -> dict[str, list[Sample]]:
    samples: dict[str, list[Sample]] = {"direct": [], "parley": []}
    targets = {
        "direct": (f"{upstream_url}/chat/completions", "none", "bench-model"),
        "parley": (f"{parley_url}/v1/chat/completions", parley_key, "openai-compatible"),
    }
    limits = httpx.Limits(
        max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2
    )
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        # Warm up both paths (imports, connection pools, the SQLite file).
        for name, (url, key, model) in targets.items():
            for n in range(WARM_UP):
                await one(client, url, key, f"warm-up {name} {n}", model)
        counter = iter(range(10**9))
        semaphore = asyncio.Semaphore(concurrency)

        async def worker(name: str) -> None:
            url, key, model = targets[name]
            async with semaphore:
                sample = await one(client, url, key, f"bench {name} {next(counter)}", model)
            assert sample.text == UPSTREAM_TEXT, sample.text[:80]
            samples[name].append(sample)

        # Interleaved, so both paths see the same machine load over the run.
        tasks = []
        for _ in range(requests):
            tasks += [asyncio.create_task(worker("direct")), asyncio.create_task(worker("parley"))]
        await asyncio.gather(*tasks)
    return samples


def table(samples: dict[str, list[Sample]], concurrency: int, mode: str) -> list[str]:
    rows = []
    for name in ("direct", "parley"):
        s = samples[name]
        ttfb, ttft, total = [x.ttfb for x in s], [x.ttft for x in s], [x.total for x in s]
        rows.append(
            f"| {mode} | {concurrency} | {'upstream direct' if name == 'direct' else 'via Parley'} "
            f"| {len(s)} | {ms(statistics.median(ttfb))} | {ms(pct(ttfb, 0.95))} "
            f"| {ms(statistics.median(ttft))} | {ms(pct(ttft, 0.95))} "
            f"| {ms(statistics.median(total))} | {ms(pct(total, 0.95))} |"
        )
    direct, parley = samples["direct"], samples["parley"]
    added_med = statistics.median([x.ttft for x in parley]) - statistics.median(
        [x.ttft for x in direct]
    )
    added_p95 = pct([x.ttft for x in parley], 0.95) - pct([x.ttft for x in direct], 0.95)
    rows.append(
        f"| {mode} | {concurrency} | **added by Parley (TTFT)** | | | | **{ms(added_med)}** "
        f"| **{ms(added_p95)}** | | |"
    )
    return rows


# Same for both modes: the path to the upstream, not the reply cache; no rate limit in the way.
PARLEY_ENV = {
    "LLM_DEFAULT_PROVIDER": "openai-compatible",
    "OPENAI_COMPATIBLE_MODEL": "bench-model",
    "CACHE_ENABLED": "false",
    "LOG_LEVEL": "WARNING",
    "WS_RATE_SENDS_PER_USER": "100000/m",
    "WS_RATE_SENDS_PER_ORG": "100000/m",
}


def breakdown(samples: list[Sample], query: Any, mode: str, concurrency: int) -> str:
    """Where a reply's first-token time goes, from the reply rows' timestamps (one clock: one
    machine): request sent → reply row created (the view: key, limits, budget, saving), →
    started (dispatch to the generator), → first token (routing, the upstream call and its
    first-token delay), → the client's first text (publish, layer, the view's relay, nginx)."""
    ids = [s.reply_id for s in samples if s.reply_id is not None]
    rows = {
        row[0]: row[1:]
        for row in query(
            "SELECT id, extract(epoch from created_at), extract(epoch from started_at), "
            "extract(epoch from first_token_at) FROM chat_message WHERE id = ANY(%s)",
            ids,
        )
    }
    parts: dict[str, list[float]] = {"view": [], "dispatch": [], "upstream": [], "relay": []}
    for sample in samples:
        created, started, first = (float(v) for v in rows[sample.reply_id])
        parts["view"].append(created - sample.started_wall)
        parts["dispatch"].append(started - created)
        parts["upstream"].append(first - started)
        parts["relay"].append(sample.started_wall + sample.ttft - first)
    cells = " | ".join(f"{ms(statistics.median(v))} / {ms(pct(v, 0.95))}" for v in parts.values())
    return f"| {mode} | {concurrency} | {cells} |"


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live descendants (a Celery worker's pool)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
        todo += children.get(current, [])
    return total


class ServerCpu:
    """CPU seconds the topology's Parley processes (Daphne replicas, Celery worker) and its
    nginx and Redis used: what a request costs, which the neighbours' load disturbs less than
    its latency."""

    def __init__(self, topo: Any) -> None:
        self.topo = topo

    def read(self) -> dict[str, float]:
        used: dict[str, float] = {"daphne": 0.0, "worker": 0.0, "nginx+redis": 0.0}
        for role in self.topo.roles:
            if not self.topo.alive(role):
                continue
            kind = role if role in ("worker",) else "daphne" if role.startswith("daphne") else ""
            used[kind or "nginx+redis"] += _cpu_seconds(self.topo.pid(role))
        return used


@contextmanager
def profiled(topo: Any, out: Path | None, py_spy: str) -> Iterator[None]:
    """py-spy on daphne-1 while inside (CPU only: --gil), its raw samples written to `out`."""
    if out is None or topo is None:
        yield
        return
    pid = topo.topo.pid("daphne-1")
    argv = [py_spy, "record", "--pid", str(pid), "--gil", "--rate", "200", "--format", "raw"]
    proc = subprocess.Popen([*argv, "--output", str(out)], stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


@contextmanager
def parley_in(mode: str, upstream_url: str) -> Iterator[tuple[str, str, Any, Any]]:
    """(base URL, API key, a SQL query function, a ServerCpu) of a Parley in `mode` whose
    default model is the upstream; the last two only for a topology."""
    env = {**PARLEY_ENV, "OPENAI_COMPATIBLE_BASE_URL": upstream_url}
    if mode == "embedded":
        with tempfile.TemporaryDirectory() as workdir, running_parley(Path(workdir), **env) as p:
            yield p.url, p.key, None, None
        return
    if mode == "production-celery":
        env["API_GENERATION_IN_SERVER"] = "false"
    with production_topology(provider="openai-compatible", env=env, name="openai-bench") as topo:
        key = manage("shell", "-c", MAKE_KEY, env=topo.env).strip().splitlines()[-1]
        yield topo.base, key, topo.query, ServerCpu(topo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60, help="per path and concurrency")
    parser.add_argument("--concurrency", type=int, action="append", help="repeatable; default 1")
    parser.add_argument(
        "--mode",
        action="append",
        choices=["embedded", "production", "production-celery"],
        help="default: embedded",
    )
    parser.add_argument("--first-delay", type=float, default=0.05, help="upstream first token, s")
    parser.add_argument("--chunk-delay", type=float, default=0.005, help="upstream between chunks")
    parser.add_argument(
        "--profile",
        type=Path,
        help="write py-spy's raw samples of daphne-1 (production modes) to PROFILE-MODE-N.txt",
    )
    parser.add_argument("--py-spy", default="py-spy", help="the py-spy binary for --profile")
    args = parser.parse_args()
    levels = args.concurrency or [1]
    reply = Reply(
        text=UPSTREAM_TEXT,
        chunk_chars=8,
        first_delay=args.first_delay,
        chunk_delay=args.chunk_delay,
    )
    split: list[str] = []
    costs: list[str] = []
    lines = [
        "| mode | concurrency | path | requests | TTFB median ms | TTFB p95 ms | TTFT median ms "
        "| TTFT p95 ms | total median ms | total p95 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    with fault_server() as upstream:
        upstream.default("bench", reply)
        upstream_url = upstream.base_url("bench")
        for mode in args.mode or ["embedded"]:
            with parley_in(mode, upstream_url) as (url, key, query, cpu):
                for concurrency in levels:
                    before = upstream.count("bench")
                    cpu_before = cpu.read() if cpu is not None else {}
                    out = Path(f"{args.profile}-{mode}-{concurrency}.txt") if args.profile else None
                    with profiled(cpu, out, args.py_spy):
                        samples = asyncio.run(
                            run(url, key, upstream_url, args.requests, concurrency)
                        )
                    if cpu is not None:
                        after = cpu.read()
                        per_request = {
                            kind: (after[kind] - cpu_before[kind]) / (args.requests + WARM_UP)
                            for kind in after
                        }
                        costs.append(
                            f"| {mode} | {concurrency} | {ms(per_request['daphne'])} "
                            f"| {ms(per_request['worker'])} | {ms(per_request['nginx+redis'])} |"
                        )
                        print(costs[-1], file=sys.stderr, flush=True)
                    # Every request, direct or via Parley, reached the upstream exactly once.
                    served = upstream.count("bench") - before
                    assert served == 2 * (args.requests + WARM_UP), (served, args.requests)
                    lines += table(samples, concurrency, mode)
                    print(lines[-1], file=sys.stderr, flush=True)
                    if query is not None:
                        split.append(breakdown(samples["parley"], query, mode, concurrency))
                        print(split[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))
    if split:
        print(
            "\nWhere Parley's first-token time goes (production; median / p95 ms):\n\n"
            "| mode | concurrency | request → reply saved (view) | → generation started "
            "(dispatch) | → first token (routing + upstream) | → client's first text (relay) |\n"
            "| --- | --- | --- | --- | --- | --- |"
        )
        print("\n".join(split))
    if costs:
        print(
            "\nServer CPU per Parley request (ms; the upstream-direct requests of the same run "
            "cost these processes nothing; an idle worker's own polling counts too):\n\n"
            "| mode | concurrency | Daphne replicas | Celery worker | nginx + Redis |\n"
            "| --- | --- | --- | --- | --- |"
        )
        print("\n".join(costs))


if __name__ == "__main__":
    main()
