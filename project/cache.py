"""The Redis cache backend with one redis-py client per connection pool, not one per call.

Django's RedisCacheClient builds a new `redis.Redis` for every cache call, and each build copies
redis-py's ~160 response callbacks into a fresh dict: about a tenth of a Celery worker's CPU per
reply went there (bench/reply_cost.py). A `redis.Redis` is safe to share between threads (every
command takes its own connection from the pool), so each pool keeps one.

The pools are the process's, not the backend instance's. Django keeps one cache instance per
asyncio task (its connection handler is a context-local), so every ASGI request built its own
instance, its own pools and new TCP connections to Redis: four per OpenAI request, on the path
to the first token. redis-py's pools are thread-safe and reset themselves in a forked child.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

_PROCESS_POOLS: dict[tuple[str, str], Any] = {}  # (server URL, pool options) -> pool
_PROCESS_CLIENTS: dict[int, Any] = {}  # id(pool) -> the redis.Redis over it
_POOLS_LOCK = threading.Lock()


class SharedClientRedisCacheClient(RedisCacheClient):
    def _get_connection_pool(self, write: bool) -> Any:
        # Django's own helpers and attributes, which django-stubs does not declare.
        index = self._get_connection_pool_index(write)  # type: ignore[attr-defined]
        key = (self._servers[index], repr(sorted(self._pool_options.items())))  # type: ignore[attr-defined]
        pool = _PROCESS_POOLS.get(key)
        if pool is None:
            with _POOLS_LOCK:
                pool = _PROCESS_POOLS.get(key)
                if pool is None:
                    pool = self._pool_class.from_url(key[0], **self._pool_options)  # type: ignore[attr-defined]
                    _PROCESS_POOLS[key] = pool
        return pool

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        pool = self._get_connection_pool(write)
        client = _PROCESS_CLIENTS.get(id(pool))
        if client is None:
            # A race builds two clients over the same pool; either one serves.
            client = _PROCESS_CLIENTS[id(pool)] = self._client(connection_pool=pool)  # type: ignore[attr-defined]
        return client


class SharedClientRedisCache(RedisCache):
    """django.core.cache.backends.redis.RedisCache, sharing its redis-py clients."""

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = SharedClientRedisCacheClient
