"""The exact layer on real Redis, as in production: keys per tenant, with the entry's TTL,
gone after eviction and purges; and a reply answered from it. Redis must run: in CI a
missing Redis fails this test, elsewhere it skips."""

from __future__ import annotations

import pytest
import redis
from asgiref.sync import sync_to_async

from llm.cache.entries import entries_purge, entry_store
from llm.cache.keys import CacheRequest, Params
from llm.cache.semantic import indexes_forget
from llm.tests.cache_support import ask
from tests.harness.services import REDIS_HOST, REDIS_PORT, redis_database, require_service

PARAMS = Params(temperatures=(0.0,), max_tokens=512, deployments=("simulated/simulated",))


@pytest.fixture
def redis_cache(settings):
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    with redis_database() as index:
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": f"redis://{REDIS_HOST}:{REDIS_PORT}/{index}",
                "KEY_PREFIX": "parley",
            }
        }
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=index)
        yield client
        client.close()


def request(question: str, namespace: str) -> CacheRequest:
    return CacheRequest(
        namespace=namespace,
        organisation_id=None,
        alias="default",
        params=PARAMS,
        system="",
        history=(),
        question=question,
    )


def redis_key(req: CacheRequest) -> str:
    return f"parley:1:llmcache:x:{req.namespace}:{req.key}"


@pytest.mark.django_db
def test_entries_live_in_redis_per_tenant_with_their_ttl(redis_cache):
    mine, theirs = request("What is a mutex?", "org:1"), request("What is a mutex?", "org:2")
    entry_store(mine, answer="A lock.", ttl=120, max_entries=2)
    entry_store(theirs, answer="Un verrou.", ttl=120, max_entries=2)
    assert mine.key == theirs.key and redis_key(mine) != redis_key(theirs)
    assert 110 < redis_cache.ttl(redis_key(mine)) <= 120

    entry_store(request("one", "org:1"), answer="1", ttl=120, max_entries=2)
    entry_store(request("two", "org:1"), answer="2", ttl=120, max_entries=2)
    assert not redis_cache.exists(redis_key(mine)), "evicted: least recently used beyond 2"
    assert redis_cache.exists(redis_key(theirs))

    assert entries_purge(namespace="org:2") == 1
    assert not redis_cache.exists(redis_key(theirs))
    entries_purge(everything=True)
    assert not redis_cache.keys("parley:1:llmcache:x:*")


@pytest.mark.django_db(transaction=True)
async def test_a_reply_is_answered_from_redis(redis_cache, owner, settings, monkeypatch):
    settings.LLM_TEMPERATURE = 0.0
    settings.CACHE_REPLAY_CHARS_PER_SECOND = 0
    monkeypatch.setattr("chat.replies.dispatch.dispatch_generation", lambda mid, provider: None)
    indexes_forget()
    first = await ask(owner, "What is a mutex?")
    keys = await sync_to_async(redis_cache.keys)("parley:1:llmcache:x:org:*")
    assert len(keys) == 1
    again = await ask(owner, "What is a mutex?")
    assert again.cache == "exact" and again.text == first.message.content
