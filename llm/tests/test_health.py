"""What operators see per deployment (llm/health.py), and what recording it costs each reply:
the first token's record is one cache write, a window's running counter one increment."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache

from llm import breaker, health
from llm.breaker import counter_incr
from llm.catalog import DeploymentConfig
from llm.health import health_failure, health_success, key_health
from llm.providers.base import ProviderError
from llm.tests.test_breaker import shared_cache  # noqa: F401  (LocMem and real Redis)

DEPLOYMENT = DeploymentConfig(name="primary", kind="simulated", model="m", key="health-test")


class CountingCache:
    """The real cache, with the names of the calls made through it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(cache, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attribute(*args, **kwargs)

        return call


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> CountingCache:
    counting = CountingCache()
    monkeypatch.setattr(health, "cache", counting)
    monkeypatch.setattr(breaker, "cache", counting)
    return counting


def test_the_last_success_and_the_last_failure_are_both_shown(shared_cache):  # noqa: F811
    health_failure(DEPLOYMENT, ProviderError("provider_timeout", "No first token in 10 s."))
    health_success(DEPLOYMENT, first_token_ms=180)

    _status, record = key_health(DEPLOYMENT.key)

    assert record["last_first_token_ms"] == 180 and record["last_ok_at"]
    assert record["last_error_code"] == "provider_timeout" and record["last_error_at"]
    assert record["last_error"] == "No first token in 10 s."


def test_a_record_written_by_an_older_release_is_shown_under_the_newer_ones(shared_cache):  # noqa: F811
    cache.set(
        f"{health.PREFIX}:{DEPLOYMENT.key}",
        {"last_ok_at": 1.0, "last_first_token_ms": 999, "last_error_code": "rate_limited"},
    )
    health_success(DEPLOYMENT, first_token_ms=120)

    _status, record = key_health(DEPLOYMENT.key)

    assert record["last_first_token_ms"] == 120  # the newer record wins
    assert record["last_error_code"] == "rate_limited"  # kept until a newer failure


def test_a_first_token_is_recorded_with_one_write_and_no_read(counted):
    health_success(DEPLOYMENT, first_token_ms=95)

    assert counted.calls == ["set"]


def test_a_running_counter_counts_with_one_increment(shared_cache, counted):  # noqa: F811
    assert counter_incr("llm:test:window", 60) == 1  # the window's first: started
    assert counted.calls == ["incr", "add"]
    counted.calls.clear()

    assert [counter_incr("llm:test:window", 60) for _ in range(3)] == [2, 3, 4]
    assert counted.calls == ["incr"] * 3
    if shared_cache == "redis":  # the window's counter expires, as it did when added first
        client = cache._cache.get_client(write=False)  # type: ignore[attr-defined]
        assert 0 < client.ttl(cache.make_and_validate_key("llm:test:window")) <= 60


def test_a_counter_started_by_another_caller_meanwhile_is_counted_on(
    shared_cache,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
):
    key = "llm:test:raced"
    cache.delete(key)

    class AnotherCallerFirst(CountingCache):
        def add(self, *args: Any, **kwargs: Any) -> bool:
            cache.add(key, 1, 60)  # another process starts the window just before this add
            return bool(cache.add(*args, **kwargs))

    monkeypatch.setattr(breaker, "cache", AnotherCallerFirst())

    assert counter_incr(key, 60) == 2
    assert cache.get(key) == 2


def health_of(state: str, *, enabled: bool = True, problem: str = "") -> health.Health:
    return health.Health(
        key=f"k-{state}",
        alias="a",
        provider="p",
        kind="simulated",
        model="m",
        enabled=enabled,
        state=state,
        consecutive_failures=0,
        retry_in=None,
        last_ok_at=None,
        last_first_token_ms=None,
        last_error_at=None,
        last_error_code="",
        last_error_reason="",
        last_error="",
        problem=problem,
    )


def test_down_means_no_enabled_deployment_or_every_breaker_open() -> None:
    """docs/routing.md, Health: `down` when no enabled deployment is left or every one's
    breaker is open (one whose key cannot be decrypted does not count); half-open counts as
    able to take traffic (a Retry-After pause or a spent rpm is not a breaker state at all)."""
    assert health.overall([health_of("open"), health_of("open")]) == "down"
    assert health.overall([health_of("closed", enabled=False)]) == "down"
    assert health.overall([health_of("closed", problem="cannot be decrypted")]) == "down"
    assert health.overall([health_of("open"), health_of("half_open")]) == "degraded"
    assert health.overall([health_of("closed"), health_of("half_open")]) == "ok"
    assert health.overall([health_of("closed", problem="x"), health_of("open")]) == "down"
