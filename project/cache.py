"""The Redis cache backend with one redis-py client per connection pool, not one per call.

Django's RedisCacheClient builds a new `redis.Redis` for every cache call, and each build copies
redis-py's ~160 response callbacks into a fresh dict: about a tenth of a Celery worker's CPU per
reply went there (bench/reply_cost.py). A `redis.Redis` is safe to share between threads (every
command takes its own connection from the pool), so each pool keeps one.
"""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient


class SharedClientRedisCacheClient(RedisCacheClient):
    def __init__(self, servers: Any, **options: Any) -> None:
        super().__init__(servers, **options)
        self._clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        # Django's own helpers, which django-stubs does not declare.
        pool = self._get_connection_pool(write)  # type: ignore[attr-defined]
        client = self._clients.get(id(pool))
        if client is None:
            # A race builds two clients over the same pool; either one serves.
            client = self._clients[id(pool)] = self._client(connection_pool=pool)  # type: ignore[attr-defined]
        return client


class SharedClientRedisCache(RedisCache):
    """django.core.cache.backends.redis.RedisCache, sharing its redis-py clients."""

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = SharedClientRedisCacheClient
