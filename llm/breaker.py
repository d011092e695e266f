"""Circuit breakers per deployment, with their state in the Django cache.

In production the cache is Redis, so every Daphne replica and Celery worker sees the same
breaker: when one worker's failures open it, all of them skip the deployment. Embedded mode
uses the process's LocMem cache, which is all one process needs.

    closed ──(N consecutive failures, or error rate ≥ R over the window)──▶ open
    open ──(cooldown passes)──▶ half-open: exactly one probe may go (cache.add is the lock)
    half-open ──probe succeeds──▶ closed          half-open ──probe fails──▶ open again

Times are wall-clock (time.time) so that processes agree. "Open until" is a stored timestamp,
not a key's TTL: the cache's TTLs are whole seconds on Redis.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from django.conf import settings
from django.core.cache import cache

from core.observability import metrics

PREFIX = "llm:cb"
_STATE_TTL = 7 * 86400  # a forgotten open breaker closes itself after a week at most


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Permit:
    """Leave to send one request; a probe's outcome decides a half-open breaker."""

    key: str
    probe: bool = False
    token: str = ""


@dataclass(frozen=True)
class Status:
    state: State
    consecutive_failures: int
    open_until: float | None
    retry_in: float | None  # seconds until a probe may go, when open


def wall_clock() -> float:
    """Now, as every process agrees on it; tests replace it to move time on."""
    return time.time()


def counter_incr(key: str, ttl: float, by: int = 1) -> int:
    """Atomically add `by` (one) to a cache counter that expires `ttl` seconds after it starts.

    The counter is there for all but its window's first call (a breaker's requests, a
    deployment's rotation and requests per minute: every reply counts some), so the add comes
    only when the increment finds nothing: one command fewer a count than adding first."""
    try:
        return int(cache.incr(key, by))
    except ValueError:  # not started yet (or expired): start it, unless another caller just did
        timeout = counter_timeout(ttl)
        if cache.add(key, by, timeout):
            return by
    try:
        return int(cache.incr(key, by))
    except ValueError:  # expired between the add and the increment
        cache.set(key, by, timeout)
        return by


def counter_timeout(ttl: float) -> int:
    """A counter's lifetime in the cache's whole seconds."""
    return max(1, math.ceil(ttl))


class CircuitBreaker:
    def __init__(
        self,
        key: str,
        *,
        failures: int | None = None,
        error_rate: float | None = None,
        min_requests: int | None = None,
        window: int | None = None,
        cooldown: float | None = None,
        probe_ttl: int | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.key = key
        self.failures = failures or settings.LLM_BREAKER_FAILURES
        self.error_rate = error_rate if error_rate is not None else settings.LLM_BREAKER_ERROR_RATE
        self.min_requests = min_requests or settings.LLM_BREAKER_MIN_REQUESTS
        self.window = window or settings.LLM_BREAKER_WINDOW
        self.cooldown = cooldown if cooldown is not None else settings.LLM_BREAKER_COOLDOWN
        self.probe_ttl = probe_ttl or settings.LLM_BREAKER_PROBE_TTL
        self.clock = clock or wall_clock
        base = f"{PREFIX}:{key}"
        self._fails, self._open, self._probe = f"{base}:fails", f"{base}:open", f"{base}:probe"
        self._bucket_seconds = max(1, self.window // 6)
        self._base = base

    def status(self) -> Status:
        found = cache.get_many([self._fails, self._open])
        fails = int(found.get(self._fails) or 0)
        open_until = found.get(self._open)
        if open_until is None:
            return Status(State.CLOSED, fails, None, None)
        now = self.clock()
        if now < open_until:
            return Status(State.OPEN, fails, open_until, open_until - now)
        return Status(State.HALF_OPEN, fails, open_until, 0.0)

    def allow(self) -> Permit | None:
        """A permit to send, or None: open, or half-open with another probe in flight."""
        open_until = cache.get(self._open)
        if open_until is None:
            return Permit(self.key)
        if self.clock() < open_until:
            return None
        token = secrets.token_hex(8)
        # Half-open: of all workers asking now, exactly one wins this add.
        if cache.add(self._probe, token, self.probe_ttl):
            return Permit(self.key, probe=True, token=token)
        return None

    @property
    def fails_key(self) -> str:
        """The consecutive-failure counter, which a success clears."""
        return self._fails

    def window_bucket(self) -> tuple[str, float]:
        """The error-rate window's request counter for now, and how long it lives."""
        size = self._bucket_seconds
        return f"{self._base}:n:{int(self.clock() // size)}", self.window + size

    def record_success(self, permit: Permit) -> None:
        self._count(failed=False)
        if permit.probe:
            cache.delete_many([self._open, self._fails, self._probe])
        else:
            cache.delete(self._fails)

    def record_failure(self, permit: Permit) -> None:
        failures, requests = self._count(failed=True)
        fails = counter_incr(self._fails, _STATE_TTL)
        if permit.probe:
            cache.set(self._open, self.clock() + self.cooldown, _STATE_TTL)
            cache.delete(self._probe)
            metrics.BREAKER_OPENS.labels(self.key).inc()
            return
        too_many = fails >= self.failures
        too_often = requests >= self.min_requests and failures / requests >= self.error_rate
        if too_many or too_often:
            # add, not set: failures of requests already in flight do not extend the cooldown.
            if cache.add(self._open, self.clock() + self.cooldown, _STATE_TTL):
                metrics.BREAKER_OPENS.labels(self.key).inc()

    def release(self, permit: Permit) -> None:
        """Give a permit back without a verdict (the reply was cancelled)."""
        if permit.probe and cache.get(self._probe) == permit.token:
            cache.delete(self._probe)

    def reset(self) -> None:
        cache.delete_many([self._open, self._fails, self._probe])

    def _count(self, *, failed: bool) -> tuple[int, int]:
        """Count an outcome in the error-rate window; after a failure, returns (failures,
        requests) in the window (only a failure can open the breaker, so only then)."""
        size = self._bucket_seconds
        bucket = int(self.clock() // size)
        ttl = self.window + size
        counter_incr(f"{self._base}:n:{bucket}", ttl)
        if not failed:
            return 0, 0
        counter_incr(f"{self._base}:f:{bucket}", ttl)
        buckets = range(bucket - self.window // size + 1, bucket + 1)
        keys = [f"{self._base}:{kind}:{b}" for b in buckets for kind in ("n", "f")]
        found = cache.get_many(keys)
        requests = sum(int(found.get(f"{self._base}:n:{b}") or 0) for b in buckets)
        failures = sum(int(found.get(f"{self._base}:f:{b}") or 0) for b in buckets)
        return failures, requests
