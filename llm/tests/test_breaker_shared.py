"""Breaker state is shared through Redis: separate worker processes see the same breaker.

Three `python -c` processes with the production cache (REDIS_URL) and one deployment on the
fault server, started together: the first trips the breaker with five failing replies; the
second, waiting for the breaker to open, is then refused at once without sending a request; the
third waits out the cooldown, sends the one half-open probe and closes the breaker for everyone.
Redis must run: in CI a missing Redis fails this test, elsewhere it skips.
"""

from __future__ import annotations

import json
import subprocess

from tests.fault_server import Fail
from tests.harness.processes import PYTHON, REPO, base_env
from tests.harness.services import REDIS_HOST, REDIS_PORT, redis_database, require_service

WORKER = """
import asyncio, json, sys, time
import django
django.setup()
from langchain_core.messages import HumanMessage
from llm.breaker import CircuitBreaker
from llm.catalog import DeploymentConfig
from llm.failover import RoutingRecord, stream_with_failover
from llm.providers.base import ProviderError
from llm.registry import chat_model_for
from llm.retry import RetryPolicy
from llm.router import RoutePlan

base_url, replies, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deployment = DeploymentConfig(
    name="shared", kind="openai-compatible", model="m", base_url=base_url,
    connect_timeout=2, timeout=5, alias="default", key="shared-deployment",
)
plan = RoutePlan("default", ["default"], [deployment])
breaker = CircuitBreaker(deployment.key)

async def reply():
    async def sink(text):
        pass
    began = time.monotonic()
    try:
        await stream_with_failover(
            alias="default", messages=[HumanMessage("hi")], sink=sink,
            build=lambda d: chat_model_for(d, max_tokens=8), record=RoutingRecord("default"),
            policy=RetryPolicy(max_attempts=1), plan_for=lambda alias: plan,
        )
        outcome = "answered"
    except ProviderError as error:
        outcome = error.reason
    return outcome, time.monotonic() - began

async def wait_until(condition):
    deadline = time.monotonic() + 30
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)

async def main():
    if mode in ("when-open", "probe"):  # until another process opens it
        await wait_until(lambda: breaker.status().state == "open")
    seen_first = str(breaker.status().state)
    if mode == "probe":  # until its cooldown is over
        await wait_until(lambda: breaker.status().state != "open")
    results = [await reply() for _ in range(replies)]
    print(json.dumps({
        "seen_first": seen_first,
        "outcomes": [o for o, _ in results],
        "seconds": [s for _, s in results],
        "state": str(breaker.status().state),
    }))

asyncio.run(main())
"""


def _worker(env: dict[str, str], base_url: str, replies: int, mode: str) -> subprocess.Popen:
    return subprocess.Popen(
        [PYTHON, "-c", WORKER, base_url, str(replies), mode],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_worker_processes_share_one_breaker_through_redis(fault):
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    with redis_database() as index:
        env = base_env(
            REDIS_URL=f"redis://{REDIS_HOST}:{REDIS_PORT}/{index}",
            LLM_BREAKER_COOLDOWN="20",  # the refused worker must ask while open, however busy
            LOG_LEVEL="WARNING",
        )
        url = fault.base_url("shared")
        fault.script("shared", *[Fail(500)] * 5)  # then the default: a good reply

        # Started together, so that their start-up time does not eat into the cooldown.
        refused = _worker(env, url, 1, "when-open")
        prober = _worker(env, url, 1, "probe")
        tripper = _worker(env, url, 5, "trip")
        tripped, refused_result, probe_result = map(_result, (tripper, refused, prober))

        assert tripped["outcomes"] == ["http_500"] * 5
        assert tripped["state"] == "open"

        assert refused_result["seen_first"] == "open"
        assert refused_result["outcomes"] == ["all_unavailable"]

        assert probe_result["seen_first"] == "open"
        assert probe_result["outcomes"] == ["answered"]
        assert fault.count("shared") == 6  # five trips and one probe: the refusal sent nothing
        assert probe_result["state"] == "closed"
        # Five failures, then exactly one request: the probe. The refused process sent none.
        assert [s.behaviour for s in fault.requests("shared")] == ["fail"] * 5 + ["reply"]
