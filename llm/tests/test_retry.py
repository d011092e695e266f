"""Retries: which errors, how long to wait, and the bounds — the policy on its own, then
replies against the fault-injecting server counting the requests it received."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx2
import openai
import pytest
from asgiref.sync import sync_to_async

from llm import failover
from llm.providers.base import ProviderError, provider_error_from, retry_after_from
from llm.retry import RetryPolicy
from tests.fault_server import Fail, Reply


def _unavailable(retry_after: float | None = None) -> ProviderError:
    return ProviderError("provider_unavailable", "x", retry_after=retry_after)


# --- the policy ---------------------------------------------------------------------------


def test_backoff_is_full_jitter_under_an_exponential_ceiling():
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0)
    rng = random.Random(4)
    for retry, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        waits = [policy.backoff(retry, rng) for _ in range(500)]
        assert all(0 <= w <= ceiling for w in waits)
        # Full jitter spreads over the whole range, not around the ceiling.
        assert min(waits) < ceiling * 0.1 and max(waits) > ceiling * 0.9


def test_retry_after_is_a_floor_on_the_wait_and_capped():
    policy = RetryPolicy(base_delay=0.01, max_delay=0.01, retry_after_max=20)
    assert policy.delay(0, [_unavailable(retry_after=3)]) == 3
    # The earliest any deployment may be retried: one without Retry-After counts as now.
    assert policy.delay(0, [_unavailable(retry_after=3), _unavailable()]) <= 0.01
    assert policy.delay(0, [_unavailable(retry_after=2), _unavailable(retry_after=5)]) == 2
    assert policy.delay(0, [_unavailable(retry_after=21)]) is None  # too long: give up now


def test_nothing_is_retried_after_non_retryable_errors_only():
    policy = RetryPolicy()
    rejected = ProviderError("provider_rejected", "400", status=400)
    assert policy.delay(0, [rejected]) is None
    assert policy.delay(0, []) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_headers_are_read(headers, expected):
    assert retry_after_from(headers) == expected


def test_retry_after_as_an_http_date():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    when = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after_from({"retry-after": when}, now=now.timestamp()) == 30


def test_a_vendor_429_carries_its_retry_after_into_provider_error():
    request = httpx2.Request("POST", "https://api.example.test/v1/chat/completions")
    response = httpx2.Response(429, request=request, headers={"Retry-After": "12"})
    error = provider_error_from(openai.RateLimitError("slow down", response=response, body=None))
    assert (error.code, error.retryable, error.status, error.retry_after) == (
        "provider_rate_limited",
        True,
        429,
        12.0,
    )


# --- against the fault server ----------------------------------------------------------------

with_db = pytest.mark.django_db(transaction=True)


@with_db
async def test_a_429_is_retried_after_its_retry_after_then_succeeds(fault, deploy, generate):
    await sync_to_async(deploy)("limited")
    fault.script("limited", Fail(429, retry_after=1), Reply("Second time lucky."))

    done = await generate()

    assert done.message.content == "Second time lucky."
    first, second = fault.requests("limited")
    assert second.at - first.at >= 1.0  # Retry-After honoured
    assert done.message.routing["retries"] == 1
    assert done.attempts[0]["retry_after"] == 1 and done.attempts[0]["status"] == 429


@with_db
async def test_server_errors_are_retried_with_backoff_then_succeed(fault, deploy, generate):
    await sync_to_async(deploy)("wobbly")
    fault.script("wobbly", Fail(500), Fail(503), Reply("Steady now."))

    done = await generate()

    assert done.message.status == "complete" and done.message.content == "Steady now."
    assert fault.count("wobbly") == 3
    assert [a.get("status") for a in done.attempts] == [500, 503, None]
    assert done.message.routing["retries"] == 2
    assert not [e for e in done.events if e["type"] == "chat.error"]


@with_db
@pytest.mark.parametrize("status", [400, 401, 403])
async def test_client_errors_are_not_retried(fault, deploy, generate, status):
    await sync_to_async(deploy)("strict")
    fault.default("strict", Fail(status))

    done = await generate()

    assert fault.count("strict") == 1
    assert (done.message.status, done.message.error_code) == ("failed", "provider_rejected")
    assert done.events[-1]["retryable"] is False


@with_db
async def test_a_bad_request_is_not_tried_on_other_deployments_either(fault, deploy, generate):
    await sync_to_async(deploy)("one")
    await sync_to_async(deploy)("two")
    fault.default("one", Fail(400))
    fault.default("two", Fail(400))

    done = await generate()

    assert fault.count() == 1  # the request itself is at fault, wherever it goes
    assert done.message.error_code == "provider_rejected"


@with_db
async def test_a_refused_key_hands_over_to_the_next_deployment(fault, deploy, generate):
    await sync_to_async(deploy)("revoked", priority=0)
    await sync_to_async(deploy)("valid", priority=1)
    fault.default("revoked", Fail(401))
    fault.default("valid", Reply("Other key works."))

    done = await generate()

    assert done.message.content == "Other key works."
    assert (fault.count("revoked"), fault.count("valid")) == (1, 1)


@with_db
async def test_a_retry_after_beyond_the_cap_ends_the_reply_at_once(fault, deploy, generate):
    await sync_to_async(deploy)("throttled")
    fault.default("throttled", Fail(429, retry_after=3600))

    done = await generate()

    assert done.seconds < 600  # not the hour it asked for
    assert fault.count("throttled") == 1
    assert (done.message.error_code, done.events[-1]["retryable"]) == (
        "provider_rate_limited",
        True,
    )


@with_db
async def test_retries_are_bounded_in_attempts(fault, deploy, generate, settings):
    settings.LLM_RETRY_MAX_ATTEMPTS = 4
    await sync_to_async(deploy)("down")
    fault.default("down", Fail(503))

    done = await generate()

    assert fault.count("down") == 4
    assert done.message.error_code == "provider_failed"  # the upstream's 503, carried through
    assert "(tried 4 times)" in done.message.error_message


class VirtualClock:
    """Retry time that passes only while the failover waits: attempts take no time on it, so
    the budget is spent by the backoff alone, however slowly a busy machine runs them."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self.waits: list[float] = []

    def now(self) -> float:
        return self.elapsed

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.elapsed += seconds
        await asyncio.sleep(0)


@with_db
async def test_retries_are_bounded_in_time(fault, deploy, generate, settings, monkeypatch):
    settings.LLM_RETRY_MAX_ATTEMPTS = 100
    settings.LLM_RETRY_BASE_DELAY = settings.LLM_RETRY_MAX_DELAY = 0.2
    settings.LLM_RETRY_BUDGET = 0.5
    settings.LLM_BREAKER_FAILURES = 100
    clock = VirtualClock()
    monkeypatch.setattr(failover, "retry_clock", clock)
    await sync_to_async(deploy)("down")
    fault.default("down", Fail(500))

    done = await generate()

    seen = fault.requests("down")
    assert 2 <= len(seen) < 100
    # One deployment: each wait separates two attempts, and the last attempt starts after all
    # of them. On the virtual clock the attempts take no time, so that start is sum(waits).
    assert sum(clock.waits) <= 0.5  # no attempt starts after the budget
    assert len(clock.waits) == len(seen) - 1
    assert all(0 <= wait <= 0.2 for wait in clock.waits)
    assert done.message.routing["retries"] == len(clock.waits)
    assert done.message.error_code == "provider_failed"
