"""Metrics, logs and probes on the production topology: a real Daphne replica and a real Celery
worker (each with its own PROMETHEUS_MULTIPROC_DIR, as two pods have), PostgreSQL and a private
Redis, JSON logs. One streamed reply must be counted exactly once across both scrapes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.harness.metrics import Samples, metered_topology, start_metered_worker, total
from tests.harness.metrics import scrape as scrape_with
from tests.harness.sockets import hear_reply, open_socket, recv_frame, send_text
from tests.harness.topology import Topology, production_topology

TOKEN = "metrics-token-for-the-test"
USER = ("obs-olivia", "correct horse battery staple")


@pytest.fixture(scope="module")
def topo() -> Iterator[tuple[Topology, int]]:
    env = {
        "METRICS_TOKEN": TOKEN,
        "LOG_FORMAT": "json",
        # Slow enough to scrape mid-stream: ~3 s for the simulated reply.
        "SIMULATED_TOKENS_PER_SECOND": "12",
        "SIMULATED_FIRST_TOKEN_DELAY": "0.3",
    }
    with metered_topology(name="metrics", user=USER, env=env) as (topology, worker_dir):
        yield topology, start_metered_worker(topology, worker_dir)


def scrape(url: str) -> Samples:
    return scrape_with(url, TOKEN)


@pytest.mark.integration
@pytest.mark.timeout(300, func_only=True)
async def test_a_streamed_reply_is_counted_once_across_daphne_and_the_worker(topo) -> None:
    topology, worker_port = topo
    web_url = f"http://127.0.0.1:{topology.daphne_ports[0]}/metrics"
    worker_url = f"http://127.0.0.1:{worker_port}/metrics"
    with topology.logs_on_failure():
        before = [scrape(web_url), scrape(worker_url)]
        ws = await open_socket(topology)
        await send_text(ws, "Tell me about metrics")
        first = await recv_frame(ws, 60)
        while first["type"] != "delta":  # ack, message frames, then the first delta
            first = await recv_frame(ws, 60)
        # Mid-stream: the worker generates it, the replica holds the socket.
        during_web, during_worker = scrape(web_url), scrape(worker_url)
        assert total(during_worker, "parley_reply_streams_active") == 1
        assert total(during_web, "parley_websocket_connections") == 1
        heard = await hear_reply(ws, first["message"], timeout=120)
        assert heard.final is not None and heard.final["status"] == "complete"
        await ws.close()
        reply = heard.reply
        (row,) = topology.query(
            "SELECT completion_tokens, provider, model FROM chat_message WHERE id = %s", reply
        )
        completion_tokens, provider, model = row

        deadline = time.monotonic() + 60
        while True:  # the generation returns a moment after its `done` went out
            after = [scrape(web_url), scrape(worker_url)]
            if total(after[1], "parley_reply_streams_active") == 0:
                break
            assert time.monotonic() < deadline, "the stream never ended on the worker"
            await asyncio.sleep(0.1)

        def counted(name: str, **labels: str) -> float:
            return sum(
                total(a, name, **labels) - total(b, name, **labels)
                for a, b in zip(after, before, strict=True)
            )

        assert counted("parley_replies_total", status="complete", provider=provider) == 1
        assert counted("parley_replies_total") == 1
        assert (
            counted(
                "parley_reply_time_to_first_token_seconds_count", provider=provider, model=model
            )
            == 1
        )
        assert (
            counted("parley_reply_tokens_total", provider=provider, model=model, kind="completion")
            == completion_tokens
            > 0
        )
        # Where each was counted: the reply on the worker, the socket on the replica.
        assert (
            total(after[1], "parley_replies_total") - total(before[1], "parley_replies_total") == 1
        )
        assert counted("parley_celery_task_wait_seconds_count", queue="llm-remote") == 1
        assert total(after[0], "parley_websocket_connections") == 0
        assert total(after[0], "parley_celery_queue_depth", queue="llm-remote") == 0

        # The worker's JSON logs carry the request id the replica put in the task's headers.
        lines = [
            json.loads(line) for line in topology.log("worker").splitlines() if line.startswith("{")
        ]
        assert lines, "the worker wrote no JSON log lines"
        tasks = [line for line in lines if line.get("task_id") and line.get("request_id")]
        assert any(line["request_id"] != line["task_id"] for line in tasks), tasks[-5:]


@pytest.mark.integration
@pytest.mark.timeout(120, func_only=True)
def test_the_replica_is_ready_and_live_and_its_metrics_are_protected(topo) -> None:
    topology, worker_port = topo
    base = f"http://127.0.0.1:{topology.daphne_ports[0]}"
    with topology.logs_on_failure():
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200 and set(ready.json()["checks"]) == {"database", "redis"}
        assert httpx.get(f"{base}/livez", timeout=10).status_code == 200
        assert httpx.get(f"{base}/metrics", timeout=10).status_code == 403
        assert httpx.get(f"http://127.0.0.1:{worker_port}/metrics", timeout=10).status_code == 403


@pytest.mark.integration
@pytest.mark.timeout(300, func_only=True)
def test_a_real_replica_that_lost_redis_is_not_ready_but_live_and_ready_again_after() -> None:
    with production_topology(replicas=1, nginx=False, worker=False, name="readiness") as topo:
        base = f"http://127.0.0.1:{topo.daphne_ports[0]}"
        with topo.logs_on_failure():
            assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200
            topo.kill("redis")
            down = httpx.get(f"{base}/readyz", timeout=10)
            assert down.status_code == 503
            assert down.json()["checks"]["redis"] == "down"
            assert down.json()["checks"]["database"].startswith("ok")
            assert httpx.get(f"{base}/livez", timeout=10).status_code == 200
            topo.restore()  # the same port, empty
            assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200
