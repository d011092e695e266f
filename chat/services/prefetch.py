"""What a send reads from the cache, read before it in its rate limits' round trip.

A send into a conversation reads three values from the cache (Redis in production): the
model catalogue's version (llm/catalog.py), its organisation's budget rules
(accounts/quotas/) and its allowed models (accounts/selectors.py). Each was a round trip from
the database thread, where every wait may also wait for the GIL behind the event loop. The
socket's rate-limit script runs anyway before the send (accounts/limits.py, on the loop), so
it reads them too (`send_prefetch_keys`) and the send starts with them (`SendPrefetched`).

Read a few milliseconds before the send used them: a change saved in between (a budget, a
deployment) is seen by the next send, as if this one had come that much earlier. A value the
cache does not hold is read as before (the database, then cached).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache, RedisSerializer

from accounts.quotas import BUDGETS_CACHE_KEY, BudgetRule
from accounts.selectors import ALLOWED_MODELS_CACHE_KEY
from llm.models import CATALOG_VERSION_KEY

_serializer = RedisSerializer()


@dataclass(frozen=True)
class SendPrefetched:
    """The cached values a send into a conversation of `organisation_id` reads; None where
    the cache held none (read as usual then)."""

    organisation_id: int
    catalog_version: int | None
    budget_rules: list[BudgetRule] | None
    allowed_models: frozenset[str] | None


def _keys(organisation_id: int) -> list[str]:
    cache = caches["default"]
    return [
        cache.make_key(CATALOG_VERSION_KEY),
        cache.make_key(BUDGETS_CACHE_KEY.format(organisation_id=organisation_id)),
        cache.make_key(ALLOWED_MODELS_CACHE_KEY.format(organisation_id=organisation_id)),
    ]


def send_prefetch_keys(*, organisation_id: int) -> list[str]:
    """The raw Redis keys of what a send in this organisation reads, for the rate limiter to
    read with its counters; none if the cache is not the limiter's Redis."""
    cache = caches["default"]
    if not settings.REDIS_URL or not isinstance(cache, RedisCache):
        return []
    if settings.CACHES["default"].get("LOCATION") != settings.REDIS_URL:
        return []  # another server or database than the limiter's
    return _keys(organisation_id)


def _loaded(value: bytes | None) -> Any:
    return None if value is None else _serializer.loads(value)


def send_prefetched(*, organisation_id: int, values: list[bytes | None]) -> SendPrefetched:
    """The values the limiter read for `send_prefetch_keys`, as the send uses them."""
    version, rules, allowed = (_loaded(value) for value in values)
    return SendPrefetched(
        organisation_id=organisation_id,
        catalog_version=None if version is None else int(version),
        budget_rules=rules,
        allowed_models=allowed,
    )
