"""The Redis cache backend builds one redis-py client per pool, not one per call
(project/cache.py)."""

from __future__ import annotations

from django.core.cache.backends.redis import RedisCache

from project.cache import SharedClientRedisCache


def test_the_redis_cache_reuses_one_client_per_pool():
    cache = SharedClientRedisCache("redis://127.0.0.1:1/0", {})
    first = cache._cache.get_client("a", write=True)
    assert cache._cache.get_client("b") is first  # one server: reads and writes share a pool
    assert first.connection_pool is cache._cache._get_connection_pool(write=True)
    assert isinstance(cache, RedisCache)
