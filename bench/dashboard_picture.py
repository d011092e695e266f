"""A picture of the Grafana dashboard's main panels, drawn from real scrapes of a bench run.

The production topology from the test harness (PostgreSQL, a private Redis, one Daphne replica,
one `worker-remote` Celery worker, the simulated provider), each with its own multi-process
metrics directory. For about a minute, waves of sockets send long prompts (some replies are
cancelled mid-stream, some repeat an earlier prompt and are answered by the reply cache) while
both /metrics endpoints are scraped every second. The panels evaluate the same expressions as
deploy/grafana/parley.json (rates and histogram quantiles over a 10 s window), computed here
from the scraped samples, and matplotlib draws them into docs/images/dashboard.png.

    .venv/bin/python bench/dashboard_picture.py

Loopback only; needs PostgreSQL on 127.0.0.1:5432 and redis-server, like the integration tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness import metrics as harness  # noqa: E402
from tests.harness.sockets import open_socket, recv_frame  # noqa: E402
from tests.harness.topology import Topology  # noqa: E402

TOKEN = "dashboard-picture"
USER = ("bench-dashboard", "correct horse battery staple")
WINDOW = 10.0  # seconds: the panels' rate window


async def one_reply(topo: Topology, prompt: str, cancel_after: float | None) -> None:
    ws = await open_socket(topo)
    try:
        frame = {"type": "send", "conversation": None, "text": prompt, "client_id": None}
        frame["client_id"] = f"{time.time_ns()}"
        await ws.send(json.dumps(frame))
        started = time.monotonic()
        cancelled = False
        while True:
            frame = await recv_frame(ws, 120)
            kind = frame["type"]
            if kind == "delta" and cancel_after is not None and not cancelled:
                if time.monotonic() - started > cancel_after:
                    await ws.send(json.dumps({"type": "cancel", "message": frame["message"]}))
                    cancelled = True
            if kind in ("done", "error") and frame.get("message") is not None:
                return
    finally:
        await ws.close()


async def load(topo: Topology, waves: int) -> None:
    for wave in range(waves):
        size = 10 + 10 * (wave % 3)
        prompts = [" ".join(f"w{wave}-{i}-{j}" for j in range(120)) for i in range(size)]
        prompts[:3] = ["What is a histogram?"] * 3  # the same question: cache hits after one
        cancel = [1.0 if i % 7 == 3 else None for i in range(size)]
        await asyncio.gather(*(one_reply(topo, p, c) for p, c in zip(prompts, cancel, strict=True)))
        await asyncio.sleep(3)


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """histogram_quantile over cumulative bucket counts (le -> count), as Prometheus does."""
    bounds = sorted(buckets)
    count = buckets[bounds[-1]]
    if count <= 0:
        return None
    rank, prev_bound, prev_count = q * count, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return prev_bound
            span = buckets[bound] - prev_count
            return prev_bound + (bound - prev_bound) * ((rank - prev_count) / span if span else 0)
        prev_bound, prev_count = bound, buckets[bound]
    return None


def draw(series: list[tuple[float, harness.Samples]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = series[0][0]

    def windowed(now_index: int) -> tuple[harness.Samples, harness.Samples, float] | None:
        now, current = series[now_index]
        for then, earlier in series:
            if now - then <= WINDOW:
                return (current, earlier, now - then) if now > then else None
        return None

    def rate(name: str, **labels: str) -> list[tuple[float, float]]:
        points = []
        for i in range(len(series)):
            found = windowed(i)
            if found is not None:
                current, earlier, seconds = found
                value = (
                    harness.total(current, name, **labels) - harness.total(earlier, name, **labels)
                ) / seconds
                points.append((series[i][0] - t0, value))
        return points

    def gauge(name: str) -> list[tuple[float, float]]:
        return [(t - t0, harness.total(s, name)) for t, s in series]

    def histogram_q(name: str, q: float) -> list[tuple[float, float]]:
        points = []
        for i in range(len(series)):
            found = windowed(i)
            if found is None:
                continue
            current, earlier, _ = found
            buckets: dict[float, float] = {}
            for (n, labels), value in current.items():
                if n == f"{name}_bucket":
                    le = float(dict(labels)["le"])
                    before = earlier.get((n, labels), 0.0)
                    buckets[le] = buckets.get(le, 0.0) + value - before
            if buckets and (v := quantile(q, buckets)) is not None:
                points.append((series[i][0] - t0, v))
        return points

    panels = [
        ("Open WebSockets (replica)", [("sockets", gauge("parley_websocket_connections"))], ""),
        ("Active streams (worker)", [("streams", gauge("parley_reply_streams_active"))], ""),
        (
            "Time to first token",
            [
                ("p50", histogram_q("parley_reply_time_to_first_token_seconds", 0.5)),
                ("p95", histogram_q("parley_reply_time_to_first_token_seconds", 0.95)),
            ],
            "s",
        ),
        (
            "Completion tokens per second",
            [("tokens/s", rate("parley_reply_tokens_total", kind="completion"))],
            "",
        ),
        (
            "Replies by final status (/s)",
            [
                (status, rate("parley_replies_total", status=status))
                for status in ("complete", "cancelled", "failed")
            ],
            "",
        ),
        (
            "Cache lookups (/s)",
            [
                (result, rate("parley_cache_lookups_total", result=result))
                for result in ("hit_exact", "miss")
            ],
            "",
        ),
        (
            "Inter-chunk gap p95",
            [("p95", histogram_q("parley_provider_inter_chunk_seconds", 0.95))],
            "s",
        ),
        (
            "Channel-layer publish p95",
            [("p95", histogram_q("parley_layer_publish_seconds", 0.95))],
            "s",
        ),
        (
            "Celery queue wait p95 (llm-remote)",
            [("p95", histogram_q("parley_celery_task_wait_seconds", 0.95))],
            "s",
        ),
    ]
    fig, axes = plt.subplots(3, 3, figsize=(15, 9), constrained_layout=True)
    fig.suptitle("Parley (deploy/grafana/parley.json panels, from a bench run's scrapes)")
    for ax, (title, lines, unit) in zip(axes.flat, panels, strict=True):
        for label, points in lines:
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("seconds", fontsize=8)
        if unit:
            ax.set_ylabel(unit, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waves", type=int, default=6)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "dashboard.png")
    args = parser.parse_args()
    unlimited = "1000000/m"
    env = {
        "METRICS_TOKEN": TOKEN,
        "SIMULATED_TOKENS_PER_SECOND": "60",
        "SIMULATED_FIRST_TOKEN_DELAY": "0.3",
        "CACHE_SAMPLED_REPLIES": "true",  # the simulated model samples; cache its answers
        "WS_RATE_FRAMES_PER_USER": unlimited,
        "WS_RATE_FRAMES_PER_ORG": unlimited,
        "WS_RATE_SENDS_PER_USER": unlimited,
        "WS_RATE_SENDS_PER_ORG": unlimited,
        "LOG_LEVEL": "WARNING",
    }
    with harness.metered_topology(name="dashboard", user=USER, env=env) as (topo, worker_dir):
        port = harness.start_metered_worker(topo, worker_dir)
        urls = [
            f"http://127.0.0.1:{topo.daphne_ports[0]}/metrics",
            f"http://127.0.0.1:{port}/metrics",
        ]
        series: list[tuple[float, harness.Samples]] = []
        stop = threading.Event()

        def scraper() -> None:
            while not stop.is_set():
                began = time.monotonic()
                merged: harness.Samples = {}
                for url in urls:
                    for key, value in harness.scrape(url, TOKEN).items():
                        merged[key] = merged.get(key, 0.0) + value
                series.append((began, merged))
                stop.wait(max(0.0, 1.0 - (time.monotonic() - began)))

        thread = threading.Thread(target=scraper, daemon=True)
        thread.start()
        time.sleep(3)
        asyncio.run(load(topo, args.waves))
        time.sleep(5)
        stop.set()
        thread.join(timeout=30)
    draw(series, args.out)
    last = series[-1][1]
    print(
        f"{len(series)} scrapes; replies: ",
        {
            status: harness.total(last, "parley_replies_total", status=status)
            for status in ("complete", "cancelled", "failed")
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
