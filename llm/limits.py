"""Per-deployment request and token budgets, and Retry-After pauses, in the shared cache.

Fixed one-minute windows: a counter per deployment per minute, so limits hold across every
worker that shares the cache. A provider's Retry-After pauses the deployment for everyone.
"""

from __future__ import annotations

import math
import time

from django.core.cache import cache

from llm.breaker import counter_incr
from llm.catalog import DeploymentConfig

PREFIX = "llm:limit"


def _minute(now: float) -> int:
    return int(now // 60)


def limit_check(
    deployment: DeploymentConfig, *, prompt_tokens: int, now: float | None = None
) -> tuple[str, float] | None:
    """Take one request from the deployment's budget, or say why not: (reason, retry_in)."""
    now = time.time() if now is None else now
    paused_until = cache.get(f"{PREFIX}:{deployment.key}:paused")
    if paused_until is not None and now < paused_until:
        return "retry_after", paused_until - now
    minute = _minute(now)
    next_minute = (minute + 1) * 60 - now
    if deployment.tpm_limit:
        used = int(cache.get(f"{PREFIX}:{deployment.key}:tpm:{minute}") or 0)
        # An empty window takes any one request, however large, so nothing waits forever.
        if used and used + prompt_tokens > deployment.tpm_limit:
            return "tpm_limit", next_minute
    if deployment.rpm_limit:
        key = f"{PREFIX}:{deployment.key}:rpm:{minute}"
        if counter_incr(key, 120) > deployment.rpm_limit:
            return "rpm_limit", next_minute
    return None


def tokens_record(deployment: DeploymentConfig, tokens: int, now: float | None = None) -> None:
    """Count the tokens a reply used against the deployment's tokens-per-minute budget."""
    if not deployment.tpm_limit or tokens <= 0:
        return
    key = f"{PREFIX}:{deployment.key}:tpm:{_minute(time.time() if now is None else now)}"
    cache.add(key, 0, 120)
    try:
        cache.incr(key, tokens)
    except ValueError:
        cache.set(key, tokens, 120)


def pause(deployment: DeploymentConfig, seconds: float) -> None:
    """Skip the deployment for `seconds` (its provider said Retry-After)."""
    until = time.time() + seconds
    cache.set(f"{PREFIX}:{deployment.key}:paused", until, max(1, math.ceil(seconds)) + 1)
