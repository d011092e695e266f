"""The Redis cache backend builds one redis-py client per pool, not one per call
(project/cache.py)."""

from __future__ import annotations

import asyncio

import redis
from asgiref.sync import sync_to_async
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache

from project.cache import SharedClientRedisCache
from tests.harness.services import REDIS_HOST, REDIS_PORT, redis_database, require_service


def test_the_redis_cache_reuses_one_client_per_pool():
    cache = SharedClientRedisCache("redis://127.0.0.1:1/0", {})
    first = cache._cache.get_client("a", write=True)
    assert cache._cache.get_client("b") is first  # one server: reads and writes share a pool
    assert first.connection_pool is cache._cache._get_connection_pool(write=True)
    assert isinstance(cache, RedisCache)


def test_cache_instances_share_the_process_pools():
    """Django builds a cache instance per asyncio task (per ASGI request); they must not each
    open their own connections to Redis."""
    first = SharedClientRedisCache("redis://127.0.0.1:1/0", {})
    second = SharedClientRedisCache("redis://127.0.0.1:1/0", {})
    other_db = SharedClientRedisCache("redis://127.0.0.1:1/1", {})
    client = first._cache.get_client("a", write=True)
    assert second._cache.get_client("a", write=True) is client
    assert other_db._cache.get_client("a", write=True).connection_pool is not client.connection_pool


async def test_concurrent_requests_reuse_connections_to_a_real_redis(settings):
    require_service("Redis", REDIS_HOST, REDIS_PORT)  # fails in CI, skips elsewhere
    with redis_database() as index:
        location = f"redis://{REDIS_HOST}:{REDIS_PORT}/{index}"
        settings.CACHES = {
            "default": {"BACKEND": "project.cache.SharedClientRedisCache", "LOCATION": location}
        }
        names = {f"request-{n}" for n in range(50)}
        # Connections other clients of this process left idle on this database index (it is
        # reused once released) are not ours: count only those opened from here on.
        before = {c["id"] for c in redis.Redis(host=REDIS_HOST, port=REDIS_PORT).client_list()}

        async def request(name: str) -> None:  # a task of its own, as Daphne gives a request
            await caches["default"].aset(name, 1)
            await sync_to_async(caches["default"].get)(name)

        await asyncio.gather(*(request(name) for name in names))
        listing = redis.Redis(host=REDIS_HOST, port=REDIS_PORT).client_list()
        ours = [
            c
            for c in listing
            if c["db"] == str(index) and c["name"] == "" and c["id"] not in before
        ]
        assert 0 < len(ours) <= 12  # the pool's connections, not one or more per request
