"""Rows the database holds, kept in the cache (Redis in production) only to spare a query.

Such a copy must never be why a request fails: a cache that cannot be reached (down, or a
timeout or dropped connection under load) is skipped and the database read instead, as rate
limits, the model catalogue and routing already go on without Redis. Without this a send whose
budget-rules lookup met a Redis error ended `internal` ("Something went wrong").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from django.core.cache import cache

logger = logging.getLogger(__name__)

T = TypeVar("T")


def cached_read(key: str, read: Callable[[], T], *, timeout: float) -> T:
    """The value cached under `key`, else `read()` (the database), cached for `timeout`
    seconds; with the cache unreachable, `read()` alone."""
    try:
        found: T | None = cache.get(key)
    except Exception as error:
        logger.warning("cache unreadable (%r); %s read from the database", error, key)
        return read()
    if found is not None:
        return found
    value = read()
    try:
        cache.set(key, value, timeout)
    except Exception as error:
        logger.warning("cache unwritable (%r); %s not kept", error, key)
    return value


def cached_forget(key: str) -> None:
    """Drop the copy under `key` (its rows changed). With the cache unreachable the change is
    still saved: the copy is out of reach too, and one that outlives the outage expires within
    its own timeout."""
    try:
        cache.delete(key)
    except Exception as error:
        logger.warning("cache unreachable (%r); %s not dropped, expires on its own", error, key)
