"""The exact layer: one key per normalised request and tenant, in the default cache (Redis
in production, in-process memory in embedded mode), expiring with the entry's TTL."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypedDict

from django.core.cache import cache

PREFIX = "llmcache"


class Payload(TypedDict):
    entry: int
    kind: str
    answer: str
    model: str


def exact_key(namespace: str, key: str) -> str:
    # The namespace is part of the key: another tenant's entry cannot even be addressed.
    return f"{PREFIX}:x:{namespace}:{key}"


def exact_get(namespace: str, key: str) -> Payload | None:
    value: Any = cache.get(exact_key(namespace, key))
    if not isinstance(value, dict) or not isinstance(value.get("entry"), int):
        return None
    return Payload(
        entry=value["entry"],
        kind=str(value.get("kind", "")),
        answer=str(value.get("answer", "")),
        model=str(value.get("model", "")),
    )


def exact_put(namespace: str, key: str, payload: Payload, *, ttl: int) -> None:
    cache.set(exact_key(namespace, key), dict(payload), timeout=max(1, ttl))


def exact_delete(keys: Iterable[tuple[str, str]]) -> None:
    """Delete (namespace, key) pairs."""
    names = [exact_key(namespace, key) for namespace, key in keys]
    for start in range(0, len(names), 500):
        cache.delete_many(names[start : start + 500])
