"""What operators see per deployment: breaker state, last error, last latencies.

Kept in the shared cache beside the breaker, written at each attempt's first token or failure,
read by the admin's Deployment list and by GET /llm/health. The last success and the last
failure are two records of their own, each written whole: a reply's first token is one SET,
not a read of the record and a write of it back (every reply pays it, on its way to the
first token).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from django.core.cache import cache

from llm.breaker import CircuitBreaker, State, Status
from llm.catalog import DeploymentConfig
from llm.providers.base import ProviderError

PREFIX = "llm:health"
RECORD_TTL = 7 * 86400


@dataclass(frozen=True)
class Health:
    key: str
    alias: str
    provider: str
    kind: str
    model: str
    enabled: bool
    state: str
    consecutive_failures: int
    retry_in: float | None
    last_ok_at: float | None
    last_first_token_ms: int | None
    last_error_at: float | None
    last_error_code: str
    last_error_reason: str
    last_error: str
    problem: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def health_success(deployment: DeploymentConfig, *, first_token_ms: int) -> None:
    key, record = success_record(deployment.key, at=time.time(), first_token_ms=first_token_ms)
    cache.set(key, record, RECORD_TTL)


def success_record(key: str, *, at: float, first_token_ms: int) -> tuple[str, dict[str, Any]]:
    """The cache key and value of a deployment's last success (its first text at `at`)."""
    return f"{PREFIX}:{key}:ok", {"last_ok_at": at, "last_first_token_ms": first_token_ms}


def health_failure(deployment: DeploymentConfig, error: ProviderError) -> None:
    record = {
        "last_error_at": time.time(),
        "last_error_code": error.code,
        "last_error_reason": error.reason,
        "last_error": error.detail,
    }
    cache.set(f"{PREFIX}:{deployment.key}:error", record, RECORD_TTL)


def key_health(key: str) -> tuple[Status, dict[str, Any]]:
    """The breaker's status and the last outcomes recorded under a deployment key (the
    combined record older releases wrote, under the last ones, until it expires)."""
    keys = [f"{PREFIX}:{key}", f"{PREFIX}:{key}:ok", f"{PREFIX}:{key}:error"]
    found = cache.get_many(keys)
    record: dict[str, Any] = {}
    for name in keys:
        record.update(found.get(name) or {})
    return CircuitBreaker(key).status(), record


def deployment_health(deployment: DeploymentConfig) -> Health:
    status, record = key_health(deployment.key)
    return Health(
        key=deployment.key,
        alias=deployment.alias,
        provider=deployment.name,
        kind=deployment.kind,
        model=deployment.model,
        enabled=deployment.enabled,
        state=str(status.state),
        consecutive_failures=status.consecutive_failures,
        retry_in=round(status.retry_in, 1) if status.retry_in is not None else None,
        last_ok_at=record.get("last_ok_at"),
        last_first_token_ms=record.get("last_first_token_ms"),
        last_error_at=record.get("last_error_at"),
        last_error_code=record.get("last_error_code", ""),
        last_error_reason=record.get("last_error_reason", ""),
        last_error=record.get("last_error", ""),
        problem=deployment.problem,
    )


def overall(healths: list[Health]) -> str:
    """ok: every enabled deployment closed; degraded: some open; down: none can take traffic."""
    enabled = [h for h in healths if h.enabled and not h.problem]
    if not enabled:
        return "down"
    usable = [h for h in enabled if h.state != State.OPEN]
    if not usable:
        return "down"
    return "ok" if len(usable) == len(enabled) else "degraded"
