"""What Prometheus metrics cost on the streaming path: a Celery worker with metrics on
(multi-process mode, as deployed) against the same worker with PARLEY_METRICS=off (every metric a
no-op), in one run, interleaved.

The production topology on loopback from the test harness (PostgreSQL, a private Redis, one
Daphne replica, one Celery worker of compose.yaml's worker-remote, the simulated provider at a
fast token rate). Each repeat runs both modes in turn (every other repeat in reverse order), each
on a freshly started worker: S sockets each send one long prompt at once, and every reply streams
~330 tokens. Measured per mode: the worker process's CPU seconds per 1,000 tokens (from
/proc/PID/stat, before and after the batch), and client-side medians of time to first delta and
reply duration. A warm-up reply before each batch is not measured. Also: the cost of single
metric calls (a histogram observe with labels, as each provider chunk does) in-process, in
multi-process mode and as no-ops.

    .venv/bin/python bench/metrics_overhead.py --streams 50 --repeats 3

Loopback only; needs PostgreSQL on 127.0.0.1:5432 and redis-server, like the integration tests.
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
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness.metrics import metered_topology  # noqa: E402
from tests.harness.sockets import open_socket, recv_frame  # noqa: E402
from tests.harness.topology import Topology  # noqa: E402

USER = ("bench-metrics", "correct horse battery staple")
PROMPT = " ".join(f"word{i}" for i in range(300))  # the simulated reply quotes it: ~330 tokens
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Batch:
    mode: str
    streams: int
    tokens: int
    cpu: float
    first_delta: list[float]
    duration: list[float]
    failed: int

    @property
    def cpu_per_1k(self) -> float:
        return 1000 * self.cpu / max(self.tokens, 1)


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


async def one_reply(topo: Topology, prompt: str, go: asyncio.Event) -> tuple[float, float, int]:
    ws = await open_socket(topo)
    try:
        await go.wait()
        began = time.perf_counter()
        frame = {
            "type": "send",
            "conversation": None,
            "text": prompt,
            "client_id": os.urandom(8).hex(),
        }
        await ws.send(json.dumps(frame))
        first = None
        while True:
            frame = await recv_frame(ws, 120)
            if frame["type"] == "delta" and first is None:
                first = time.perf_counter() - began
            if frame["type"] == "done":
                tokens = int((frame.get("usage") or {}).get("completion_tokens") or 0)
                return first or 0.0, time.perf_counter() - began, tokens
            if frame["type"] == "error" and frame.get("message") is not None:
                raise RuntimeError(frame)
    finally:
        await ws.close()


async def batch(topo: Topology, mode: str, streams: int) -> Batch:
    await one_reply(topo, "warm up", _set(asyncio.Event()))
    go = asyncio.Event()
    tasks = [asyncio.create_task(one_reply(topo, PROMPT, go)) for _ in range(streams)]
    await asyncio.sleep(1.0)  # sockets open before the clock starts (no timing is asserted)
    pid = topo.pid("worker")
    before = process_cpu(pid)
    go.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    cpu = process_cpu(pid) - before
    ok = [r for r in results if isinstance(r, tuple)]
    return Batch(
        mode=mode,
        streams=streams,
        tokens=sum(r[2] for r in ok),
        cpu=cpu,
        first_delta=[r[0] for r in ok],
        duration=[r[1] for r in ok],
        failed=len(results) - len(ok),
    )


def _set(event: asyncio.Event) -> asyncio.Event:
    event.set()
    return event


def worker_env(mode: str, directory: Path) -> dict[str, str]:
    if mode == "on":
        for leftover in directory.glob("*.db"):
            leftover.unlink()
        return {"PROMETHEUS_MULTIPROC_DIR": str(directory), "PARLEY_METRICS": "on"}
    return {"PROMETHEUS_MULTIPROC_DIR": "", "PARLEY_METRICS": "off"}


MICRO = """
import time
from core.observability import metrics
n = 300_000
t = time.perf_counter()
for _ in range(n):
    metrics.INTER_TOKEN.labels("simulated", "simulated").observe(0.01)
observe = (time.perf_counter() - t) / n * 1e6
t = time.perf_counter()
for _ in range(n // 300):  # a 300-chunk stream: a bisect per chunk, one flush at its end
    gaps = metrics.ChunkGaps("simulated", "simulated")
    for i in range(300):
        gaps.chunk(i * 0.01)
    gaps.flush()
print(observe, (time.perf_counter() - t) / n * 1e6)
"""


def micro() -> dict[str, tuple[float, float]]:
    """Microseconds per chunk: a labelled histogram observe, and what the provider stream does
    (ChunkGaps), per mode, each in a fresh interpreter."""
    out = {}
    with tempfile.TemporaryDirectory() as directory:
        for mode, env in (
            ("in-process", {"PARLEY_METRICS": "on"}),
            ("multi-process", {"PARLEY_METRICS": "on", "PROMETHEUS_MULTIPROC_DIR": directory}),
            ("off", {"PARLEY_METRICS": "off"}),
        ):
            base = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
            result = subprocess.run(
                [sys.executable, "-c", MICRO],
                env={**base, **env},
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            )
            observe, batched = result.stdout.split()
            out[mode] = (float(observe), float(batched))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens-per-second", type=float, default=200.0)
    args = parser.parse_args()
    costs = micro()
    print("| metrics mode | labelled observe per chunk (µs) | ChunkGaps per chunk (µs) |")
    print("| --- | --- | --- |")
    for mode, (observe, batched) in costs.items():
        print(f"| {mode} | {observe:.2f} | {batched:.2f} |")
    batches: list[Batch] = []
    unlimited = "1000000/m"
    env = {
        "SIMULATED_TOKENS_PER_SECOND": str(args.tokens_per_second),
        "SIMULATED_FIRST_TOKEN_DELAY": "0.05",
        "LLM_MAX_TOKENS": "1000",
        "WS_RATE_FRAMES_PER_USER": unlimited,
        "WS_RATE_FRAMES_PER_ORG": unlimited,
        "WS_RATE_SENDS_PER_USER": unlimited,
        "WS_RATE_SENDS_PER_ORG": unlimited,
        "CACHE_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
    }
    with metered_topology(name="metrics-bench", user=USER, env=env) as (topo, worker_dir):
        for repeat in range(args.repeats):
            modes = ("on", "off") if repeat % 2 == 0 else ("off", "on")
            for mode in modes:
                topo.start_worker(env=worker_env(mode, worker_dir))
                result = asyncio.run(batch(topo, mode, args.streams))
                topo.kill("worker")  # SIGKILL: every reply is final, nothing to wait for
                batches.append(result)
                print(
                    f"repeat {repeat + 1} metrics {mode}: {result.tokens} tokens, "
                    f"{result.cpu:.2f} s worker CPU = {result.cpu_per_1k:.3f} s/1k tokens, "
                    f"first delta p50 {statistics.median(result.first_delta):.3f} s, "
                    f"reply p50 {statistics.median(result.duration):.3f} s, "
                    f"failed {result.failed}",
                    flush=True,
                )
    print()
    print("| metrics | worker CPU s / 1k tokens (median) | first delta p50 | reply p50 | failed |")
    print("| --- | --- | --- | --- | --- |")
    medians = {}
    for mode in ("off", "on"):
        mine = [b for b in batches if b.mode == mode]
        medians[mode] = statistics.median(b.cpu_per_1k for b in mine)
        first = statistics.median(statistics.median(b.first_delta) for b in mine)
        duration = statistics.median(statistics.median(b.duration) for b in mine)
        print(
            f"| {mode} | {medians[mode]:.3f} | {first:.3f} s | {duration:.3f} s | "
            f"{sum(b.failed for b in mine)} |"
        )
    print(f"\nworker CPU per token, on / off: {medians['on'] / medians['off']:.3f}")


if __name__ == "__main__":
    main()
