"""A socket's send into a conversation it follows reads what it needs from the cache (the
catalogue's version, the organisation's budget rules and allowed models) in its rate limits'
round trip (chat/services/prefetch.py), not from the database thread; what it read is what it
uses. Real Redis, as the cache and the limiter share it in production."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.core.cache.backends.redis import RedisCache
from django.db import connection

from accounts.quotas import BUDGETS_CACHE_KEY, BudgetRule
from chat.tests.test_consumers import connect_as, receive_until
from tests.harness.services import REDIS_HOST, REDIS_PORT, redis_database, require_service

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def redis_cache(settings):
    """The cache and the rate limiter on one real Redis database, as in production. Django's
    own RedisCache: project/cache.py's keeps its pools for the process's life, which would
    leave this database's connections open for the tests after this one."""
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    with redis_database() as index:
        url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{index}"
        settings.REDIS_URL = url
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": url,
                "KEY_PREFIX": "parley",
            }
        }
        yield url


@pytest.fixture
def cache_gets(monkeypatch) -> list[str]:
    """Every key the cache is asked for with GET, from any thread."""
    asked: list[str] = []
    get = RedisCache.get

    def counted(self, key, default=None, version=None):
        asked.append(key)
        return get(self, key, default, version)

    monkeypatch.setattr(RedisCache, "get", counted)
    return asked


async def _send(ws, conversation, client_id: str) -> dict:
    await ws.send_json_to(
        {"type": "send", "conversation": conversation, "text": "hi", "client_id": client_id}
    )
    frames = await receive_until(ws, "ack")
    return frames[-1]


async def test_a_send_into_a_followed_conversation_reads_the_cache_with_its_rate_limits(
    owner, redis_cache, no_dispatch, cache_gets
):
    ws = await connect_as(owner)
    first = await _send(ws, None, "a")  # a new conversation: followed from now on
    await _send(ws, first["conversation"], "b")  # the cache now holds what a send reads
    cache_gets.clear()

    ack = await _send(ws, first["conversation"], "c")

    assert ack["created"] and len(no_dispatch) == 3
    organisation_id = await sync_to_async(ack_org)(first)
    read_here = {"llm:catalog:version"}
    if connection.vendor == "postgresql":  # the send in one statement (chat/services/said.py)
        read_here |= {f"quota:budgets:{organisation_id}", f"tenant:models:{organisation_id}"}
    assert not read_here & set(cache_gets), cache_gets
    await ws.disconnect()


def ack_org(ack: dict) -> int:
    from chat.models import Conversation

    return Conversation.objects.get(pk=ack["conversation"]).organisation_id


async def test_the_budget_rules_read_with_the_rate_limits_are_the_ones_the_send_checks(
    owner, redis_cache, no_dispatch
):
    ws = await connect_as(owner)
    first = await _send(ws, None, "a")
    organisation_id = await sync_to_async(ack_org)(first)
    # A rule only the cache holds (no Budget row): the send can only know it from there.
    await sync_to_async(cache.set)(
        BUDGETS_CACHE_KEY.format(organisation_id=organisation_id),
        [BudgetRule(user_id=None, period="day", max_tokens=1, max_cost=None)],
        60,
    )

    answer = await _send_error(ws, first["conversation"], "b")

    assert answer["code"] == "quota_exceeded"
    await ws.disconnect()


async def _send_error(ws, conversation, client_id: str) -> dict:
    await ws.send_json_to(
        {"type": "send", "conversation": conversation, "text": "hi", "client_id": client_id}
    )
    return (await receive_until(ws, "error"))[-1]
