"""ReplyFollower (chat/api/follow.py) on the production channel layer (chat/layers.py) and a
private redis-server: an idle stream costs Redis nothing between events, and a follower that
ends, or whose client goes away, leaves no subscription behind."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
import redis

from chat.api.follow import Delta, Final, Idle, ReplyFollower
from chat.events import conversation_group
from chat.layers import BatchingPubSubChannelLayer
from chat.models import Message
from chat.tests.conftest import PrivateRedis, streaming_reply
from conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

POLL = 0.05  # API_STREAM_POLL_INTERVAL here: quiet intervals come quickly
QUIET_POLLS = 10


@pytest.fixture
def admin(redis_server: PrivateRedis, settings: Any) -> redis.Redis:
    """The production layer on the private Redis, and a plain client to look at that Redis."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chat.layers.BatchingPubSubChannelLayer",
            "CONFIG": {"hosts": [redis_server.url]},
        }
    }
    settings.API_STREAM_POLL_INTERVAL = POLL
    return redis.Redis.from_url(redis_server.url)


def subscription_commands(admin: redis.Redis) -> int:
    """SUBSCRIBE and UNSUBSCRIBE commands this Redis has run."""
    stats: dict[str, dict[str, int]] = admin.info("commandstats")  # type: ignore[assignment]
    return sum(
        stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("subscribe", "unsubscribe")
    )


def subscribed(admin: redis.Redis) -> set[str]:
    """The channels someone is subscribed to."""
    return {name.decode() for name in admin.pubsub_channels()}  # type: ignore[union-attr]


async def joined(admin: redis.Redis, follower: ReplyFollower) -> set[str]:
    """Once both of the follower's subscriptions (its channel, its group) are in Redis."""

    async def both() -> set[str] | None:
        names = subscribed(admin)
        return names if follower.channel in names and len(names) == 2 else None

    result: set[str] = await wait_for(both)
    return result


async def nothing_subscribed(admin: redis.Redis) -> None:
    async def none() -> bool:
        return not subscribed(admin)

    await wait_for(none)


async def test_an_idle_follower_sends_redis_no_command_and_still_hears_the_reply(
    owner: Any, admin: redis.Redis, redis_server: PrivateRedis
) -> None:
    reply = await streaming_reply(owner, "Hi")
    worker = BatchingPubSubChannelLayer(hosts=[redis_server.url])
    async with ReplyFollower(message_id=reply.pk, conversation_id=reply.conversation_id) as f:
        events = f.events()
        assert await events.__anext__() == Delta(start=0, seq=2, text="Hi")
        await joined(admin, f)
        before = subscription_commands(admin)
        for _ in range(QUIET_POLLS):
            assert isinstance(await events.__anext__(), Idle)
        # Before, each quiet interval unsubscribed the channel and subscribed it again.
        assert subscription_commands(admin) == before
        await reply_finished(worker, reply, events)
    await nothing_subscribed(admin)
    await worker.flush()


async def reply_finished(worker: BatchingPubSubChannelLayer, reply: Message, events: Any) -> None:
    """A worker streams the rest of the reply ("!") and finishes it; the follower hears both."""
    group = conversation_group(reply.conversation_id)
    await Message.objects.filter(pk=reply.pk).aupdate(content="Hi!", seq=3)
    await worker.group_send(
        group, {"type": "chat.delta", "message": reply.pk, "start": 2, "seq": 3, "text": "!"}
    )
    heard = await anext(event async for event in events if not isinstance(event, Idle))
    assert heard == Delta(start=2, seq=3, text="!")
    await Message.objects.filter(pk=reply.pk).aupdate(status="complete")
    await worker.group_send(group, {"type": "chat.done", "message": reply.pk, "seq": 3})
    rest = [e async for e in events if not isinstance(e, Idle)]
    assert len(rest) == 1 and isinstance(rest[0], Final)


async def test_a_follower_whose_client_left_while_idle_leaves_no_subscription(
    owner: Any, admin: redis.Redis
) -> None:
    reply = await streaming_reply(owner, "Hi")

    async def follow(follower: ReplyFollower, idle: asyncio.Event) -> None:
        async with follower:
            async for event in follower.events():
                if isinstance(event, Idle):
                    idle.set()

    follower = ReplyFollower(message_id=reply.pk, conversation_id=reply.conversation_id)
    idle = asyncio.Event()
    streaming = asyncio.create_task(follow(follower, idle))
    await idle.wait()
    await joined(admin, follower)
    streaming.cancel()  # the SSE client disconnected
    with contextlib.suppress(asyncio.CancelledError):
        await streaming
    await nothing_subscribed(admin)


async def test_a_follower_that_heard_its_reply_end_leaves_no_subscription(
    owner: Any, admin: redis.Redis, redis_server: PrivateRedis, settings: Any
) -> None:
    settings.API_STREAM_POLL_INTERVAL = 60  # no quiet interval: `done` ends the last receive
    reply = await streaming_reply(owner, "Hi")
    worker = BatchingPubSubChannelLayer(hosts=[redis_server.url])
    async with ReplyFollower(message_id=reply.pk, conversation_id=reply.conversation_id) as f:
        events = f.events()
        assert await events.__anext__() == Delta(start=0, seq=2, text="Hi")
        await joined(admin, f)
        await Message.objects.filter(pk=reply.pk).aupdate(status="complete")
        group = conversation_group(reply.conversation_id)
        await worker.group_send(group, {"type": "chat.done", "message": reply.pk, "seq": 2})
        assert isinstance(await events.__anext__(), Final)
    await nothing_subscribed(admin)
    await worker.flush()


async def test_an_idle_follower_hears_the_reply_again_after_redis_restarts(
    owner: Any, admin: redis.Redis, redis_server: PrivateRedis
) -> None:
    """Its receive waits through the outage; the layer subscribes again once Redis is back."""
    reply = await streaming_reply(owner, "Hi")
    async with ReplyFollower(message_id=reply.pk, conversation_id=reply.conversation_id) as f:
        events = f.events()
        assert await events.__anext__() == Delta(start=0, seq=2, text="Hi")
        await joined(admin, f)
        assert isinstance(await events.__anext__(), Idle)
        redis_server.stop()
        redis_server.start()  # empty: no subscription survived
        admin = redis.Redis.from_url(redis_server.url)
        await joined(admin, f)
        worker = BatchingPubSubChannelLayer(hosts=[redis_server.url])
        await reply_finished(worker, reply, events)
    await nothing_subscribed(admin)
    await worker.flush()
