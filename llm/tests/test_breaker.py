"""Circuit breakers: closed → open → half-open → closed, on LocMem and on real Redis, then
against the fault-injecting server with many replies at once."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from langchain_core.messages import HumanMessage

from llm.breaker import CircuitBreaker, State
from llm.catalog import DeploymentConfig
from llm.failover import RoutingRecord, stream_with_failover
from llm.registry import chat_model_for
from llm.retry import RetryPolicy
from llm.router import RoutePlan
from tests.fault_server import Fail, Reply
from tests.harness.services import REDIS_HOST, REDIS_PORT, redis_database, require_service


@pytest.fixture(params=["locmem", "redis"])
def shared_cache(request, settings):
    """The breaker's store: this process's LocMem cache, or a real Redis database."""
    if request.param == "locmem":
        yield "locmem"
        return
    require_service("Redis", REDIS_HOST, REDIS_PORT)  # fails in CI, skips elsewhere
    with redis_database() as index:
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": f"redis://{REDIS_HOST}:{REDIS_PORT}/{index}",
                "KEY_PREFIX": "parley-test",
            }
        }
        yield "redis"


class Clock:
    """Wall-clock time that moves only when the test says: a cooldown passes, or it does not."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """Every breaker made during the test reads this clock."""
    fake = Clock()
    monkeypatch.setattr("llm.breaker.wall_clock", fake)
    return fake


def _trip(breaker: CircuitBreaker, times: int = 5) -> None:
    for _ in range(times):
        permit = breaker.allow()
        assert permit is not None
        breaker.record_failure(permit)


def test_it_opens_after_five_consecutive_failures(shared_cache):
    breaker = CircuitBreaker("five")
    _trip(breaker, 4)
    assert breaker.status().state == State.CLOSED and breaker.status().consecutive_failures == 4
    _trip(breaker, 1)
    status = breaker.status()
    assert status.state == State.OPEN and 25 < status.retry_in <= 30
    assert breaker.allow() is None


def test_a_success_resets_the_consecutive_count(shared_cache):
    breaker = CircuitBreaker("reset")
    _trip(breaker, 4)
    breaker.record_success(breaker.allow())
    _trip(breaker, 4)
    assert breaker.status().state == State.CLOSED


def test_it_opens_on_the_error_rate_over_the_window(settings):
    breaker = CircuitBreaker("rate", failures=100, min_requests=10, error_rate=0.5, window=60)
    for n in range(9):  # alternate: never two failures in a row
        permit = breaker.allow()
        (breaker.record_failure if n % 2 else breaker.record_success)(permit)
    assert breaker.status().state == State.CLOSED  # 4 of 9: under the minimum of requests
    breaker.record_failure(breaker.allow())
    assert breaker.status().state == State.OPEN  # 5 of 10 failed


def test_after_the_cooldown_exactly_one_probe_goes_among_many_callers(shared_cache, clock):
    breaker = CircuitBreaker("probe", cooldown=30)
    _trip(breaker)
    clock.advance(29.9)
    assert breaker.status().state == State.OPEN and breaker.allow() is None
    clock.advance(0.2)
    assert breaker.status().state == State.HALF_OPEN
    callers = 32
    barrier = threading.Barrier(callers)

    def ask():
        barrier.wait()
        return CircuitBreaker("probe", cooldown=30).allow()

    with ThreadPoolExecutor(callers) as pool:
        permits = list(pool.map(lambda _: ask(), range(callers)))
    granted = [p for p in permits if p is not None]
    assert len(granted) == 1 and granted[0].probe


def test_a_successful_probe_closes_the_breaker(shared_cache, clock):
    breaker = CircuitBreaker("heal", cooldown=30)
    _trip(breaker)
    clock.advance(31)
    probe = breaker.allow()
    breaker.record_success(probe)
    assert breaker.status().state == State.CLOSED
    assert breaker.status().consecutive_failures == 0
    assert breaker.allow() is not None


def test_a_failed_probe_opens_it_for_another_cooldown(shared_cache, clock):
    breaker = CircuitBreaker("relapse", cooldown=30)
    _trip(breaker)
    clock.advance(31)
    breaker.record_failure(breaker.allow())
    assert breaker.status().state == State.OPEN
    clock.advance(29)
    assert breaker.allow() is None
    clock.advance(2)
    assert breaker.allow().probe


def test_a_probe_given_back_unjudged_lets_the_next_caller_probe(shared_cache, clock):
    breaker = CircuitBreaker("cancelled", cooldown=30)
    _trip(breaker)
    clock.advance(31)
    probe = breaker.allow()
    assert breaker.allow() is None  # one probe in flight
    breaker.release(probe)
    assert breaker.allow().probe


# --- through the failover loop, against the fault server -----------------------------------


def _deployment(fault, route: str, priority: int) -> DeploymentConfig:
    return DeploymentConfig(
        name=route,
        kind="openai-compatible",
        model="m",
        base_url=fault.base_url(route),
        connect_timeout=2,
        timeout=5,
        alias="default",
        key=f"breaker-{route}",
        priority=priority,
    )


async def test_an_open_deployment_is_skipped_then_probed_once_by_concurrent_replies(
    fault, settings, clock
):
    settings.LLM_BREAKER_COOLDOWN = 30
    primary, backup = _deployment(fault, "primary", 0), _deployment(fault, "backup", 1)
    plan = RoutePlan("default", ["default"], [primary, backup])
    fault.default("primary", Fail(500))

    async def reply() -> tuple[str, RoutingRecord]:
        record = RoutingRecord("default")
        pieces: list[str] = []

        async def sink(text: str) -> None:
            pieces.append(text)

        answered = await stream_with_failover(
            alias="default",
            messages=[HumanMessage("hi")],
            sink=sink,
            build=lambda d: chat_model_for(d, max_tokens=16),
            record=record,
            policy=RetryPolicy(max_attempts=2),
            plan_for=lambda alias: plan,
        )
        assert answered is not None  # None only when stopped, and nothing stops it here
        return answered.name, record

    for _ in range(5):  # each fails over silently to the backup
        assert (await reply())[0] == "backup"
    assert fault.count("primary") == 5
    assert CircuitBreaker(primary.key).status().state == State.OPEN

    for _ in range(3):  # open: skipped without a request
        name, record = await reply()
        assert name == "backup" and record.skipped[0]["reason"] == "circuit_open"
    assert fault.count("primary") == 5

    clock.advance(31)
    # The probe's answer is held until the other nineteen have asked and gone to the backup.
    release_probe = threading.Event()
    fault.default("primary", Reply("recovered", held_until=release_probe))
    try:
        replies = [asyncio.create_task(reply()) for _ in range(20)]
        while sum(task.done() for task in replies) < 19:
            await asyncio.sleep(0.01)  # the test's timeout catches a probe that never went
        assert fault.count("primary") == 6  # exactly one probe among twenty replies
        assert CircuitBreaker(primary.key).status().state == State.HALF_OPEN
    finally:
        release_probe.set()
    results = await asyncio.gather(*replies)
    assert sorted(name for name, _ in results).count("primary") == 1
    assert CircuitBreaker(primary.key).status().state == State.CLOSED

    assert (await reply())[0] == "primary"  # closed: traffic is back
