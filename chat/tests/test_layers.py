"""The production channel layer (chat/layers.py) against a private redis-server on loopback:
batched publishing keeps every message, in order, in far fewer round trips; an outage is told
to every local channel, and the subscription comes back by itself."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from chat.events import LAYER_DISCONNECTED as DISCONNECTED
from chat.events import LAYER_RECONNECTED as RECONNECTED
from chat.journal import Journal
from chat.layers import BatchingPubSubChannelLayer, journal_read
from chat.tests.conftest import PrivateRedis

pytestmark = pytest.mark.integration


def layer_for(redis_server: PrivateRedis) -> BatchingPubSubChannelLayer:
    """A layer as settings configure it; each one has its own connections, like a process."""
    return BatchingPubSubChannelLayer(
        hosts=[{"address": redis_server.url, "socket_connect_timeout": 2, "socket_timeout": 5}]
    )


async def receive(layer: Any, channel: str, timeout: float = 5.0) -> dict[str, Any]:
    message: dict[str, Any] = await asyncio.wait_for(layer.receive(channel), timeout)
    return message


async def joined(layer: Any, group: str) -> str:
    """A new local channel in `group`, its subscription confirmed by a first message."""
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    # SUBSCRIBE goes out without waiting for Redis' confirmation: probe until one arrives, then
    # drain the later probes (published after the first one, so none of them is lost).
    sent = 0
    async with asyncio.timeout(30):
        while True:
            sent += 1
            await layer.group_send(group, {"type": "test.joined", "probe": sent})
            try:
                heard = (await asyncio.wait_for(layer.receive(channel), 0.2))["probe"]
            except TimeoutError:
                continue
            while heard < sent:
                heard = (await layer.receive(channel))["probe"]
            return channel


async def test_concurrent_group_sends_all_arrive_in_order_in_few_round_trips(
    redis_server: PrivateRedis,
) -> None:
    worker, daphne = layer_for(redis_server), layer_for(redis_server)
    channels = [await joined(daphne, f"conversation.{index}") for index in range(20)]
    round_trips = 0
    shard = worker._get_layer()._shards[0]
    shard._ensure_redis()
    original_publish_batch = shard._publish_batch

    async def counted_publish_batch(batch: Any) -> None:
        nonlocal round_trips
        round_trips += 1
        await original_publish_batch(batch)

    shard._publish_batch = counted_publish_batch

    async def stream(index: int) -> None:
        for seq in range(25):  # 20 streams x 25 deltas, all published concurrently
            await worker.group_send(
                f"conversation.{index}", {"type": "chat.delta", "seq": seq, "text": "x"}
            )

    await asyncio.gather(*(stream(index) for index in range(20)))
    for channel in channels:
        got = [(await receive(daphne, channel))["seq"] for _ in range(25)]
        assert got == list(range(25))
    print(f"{round_trips} round trips for 500 messages")
    assert round_trips <= 500 / 4, f"{round_trips} round trips for 500 messages"
    await worker.flush()
    await daphne.flush()


async def test_a_lone_message_is_sent_at_once(redis_server: PrivateRedis) -> None:
    worker, daphne = layer_for(redis_server), layer_for(redis_server)
    channel = await joined(daphne, "conversation.1")
    await asyncio.wait_for(worker.group_send("conversation.1", {"type": "chat.delta"}), 2)
    assert (await receive(daphne, channel))["type"] == "chat.delta"
    await worker.flush()
    await daphne.flush()


async def test_publishing_during_an_outage_raises_instead_of_hanging(
    redis_server: PrivateRedis,
) -> None:
    worker = layer_for(redis_server)
    await worker.group_send("conversation.1", {"type": "chat.delta"})
    redis_server.stop()
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(worker.group_send("conversation.1", {"type": "chat.delta"}), 10)
    redis_server.start()
    await asyncio.wait_for(worker.group_send("conversation.1", {"type": "chat.delta"}), 10)
    await worker.flush()


async def test_an_outage_is_told_to_every_local_channel_and_the_subscription_comes_back(
    redis_server: PrivateRedis,
) -> None:
    daphne = layer_for(redis_server)
    first = await joined(daphne, "conversation.1")
    second = await joined(daphne, "conversation.2")

    redis_server.stop()
    assert (await receive(daphne, first))["type"] == DISCONNECTED
    assert (await receive(daphne, second))["type"] == DISCONNECTED

    redis_server.start()  # empty: the subscriptions must be made again by the layer
    assert (await receive(daphne, first, timeout=15))["type"] == RECONNECTED
    assert (await receive(daphne, second))["type"] == RECONNECTED

    worker = layer_for(redis_server)
    await worker.group_send("conversation.2", {"type": "chat.delta", "seq": 7})
    assert (await receive(daphne, second))["seq"] == 7
    await worker.flush()
    await daphne.flush()


async def test_flushing_the_layer_never_leaves_a_publisher_waiting(
    redis_server: PrivateRedis,
) -> None:
    """A batch on its way when the layer is flushed (its loop closing) ends its publishers."""
    worker = layer_for(redis_server)
    shard = worker._get_layer()._shards[0]
    shard._ensure_redis()
    on_the_wire = asyncio.Event()

    async def stalled_round_trip(*args: Any) -> None:  # a round trip that never comes back
        on_the_wire.set()
        await asyncio.Event().wait()

    shard._send_packed = stalled_round_trip
    sends = [
        asyncio.ensure_future(worker.group_send(f"conversation.{index}", {"type": "chat.delta"}))
        for index in range(50)
    ]
    await asyncio.wait_for(on_the_wire.wait(), 5)
    await worker.flush()
    _, pending = await asyncio.wait(sends, timeout=5)
    assert not pending, f"{len(pending)} publishers still waiting after flush"


async def test_a_journal_holds_what_was_published_and_outlives_the_publisher(
    redis_server: PrivateRedis, settings: Any
) -> None:
    """Journal writes travel in the publish's round trip, before it; after the publisher is
    gone, journal_read (sync, as the reaper calls it) gets them back in publish order."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chat.layers.BatchingPubSubChannelLayer",
            "CONFIG": {"hosts": [redis_server.url]},
        }
    }
    worker, daphne = layer_for(redis_server), layer_for(redis_server)
    channel = await joined(daphne, "conversation.1")
    round_trips = 0
    shard = worker._get_layer()._shards[0]
    shard._ensure_redis()
    original_publish_batch = shard._publish_batch

    async def counted_publish_batch(batch: Any) -> None:
        nonlocal round_trips
        round_trips += 1
        await original_publish_batch(batch)

    shard._publish_batch = counted_publish_batch
    sends = [
        worker.group_send(
            "conversation.1",
            {"type": "chat.delta", "seq": index},
            journal=Journal("reply.7", f"{index}".encode(), expire=60 if index == 0 else None),
        )
        for index in range(30)
    ]
    await asyncio.gather(*sends)
    assert [(await receive(daphne, channel))["seq"] for _ in range(30)] == list(range(30))
    assert round_trips < 30  # journaled publishes still batch
    await worker.flush()
    entries = await asyncio.to_thread(journal_read, group="conversation.1", key="reply.7")
    assert entries == [f"{index}".encode() for index in range(30)]
    ttl: int = redis.Redis.from_url(redis_server.url).ttl("reply.7")  # type: ignore[assignment]
    assert 0 < ttl <= 60  # set by the first entry
    # The final event deletes it.
    await worker.group_send(
        "conversation.1", {"type": "chat.done"}, journal=Journal("reply.7", None)
    )
    assert (await receive(daphne, channel))["type"] == "chat.done"
    assert await asyncio.to_thread(journal_read, group="conversation.1", key="reply.7") == []
    await worker.flush()
    await daphne.flush()


async def test_a_redis_that_forgot_the_publish_script_is_taught_it_again(
    redis_server: PrivateRedis,
) -> None:
    """Each batch is one script call; a Redis restarted (or SCRIPT FLUSHed) under a running
    publisher answers NOSCRIPT, and the batch still goes out, once."""
    worker, daphne = layer_for(redis_server), layer_for(redis_server)
    channel = await joined(daphne, "conversation.1")
    await worker.group_send("conversation.1", {"type": "chat.delta", "seq": 1})
    assert (await receive(daphne, channel))["seq"] == 1
    redis.Redis.from_url(redis_server.url).script_flush()
    await worker.group_send(
        "conversation.1",
        {"type": "chat.delta", "seq": 2},
        journal=Journal("reply.8", b"0:x", expire=60),
    )
    assert (await receive(daphne, channel))["seq"] == 2
    assert redis.Redis.from_url(redis_server.url).lrange("reply.8", 0, -1) == [b"0:x"]
    await worker.flush()
    await daphne.flush()


async def test_after_redis_dropped_the_publishing_connection_the_next_batch_reconnects(
    redis_server: PrivateRedis,
) -> None:
    """Batches go out packed by hiredis on a pooled connection, as redis-py's own commands do:
    a connection Redis dropped between two batches (a restart, a CLIENT KILL) fails the batch
    that finds it dead (its publishers hear so; clients recover by seq), is dropped, and the
    next batch goes out on a fresh one."""
    worker, daphne = layer_for(redis_server), layer_for(redis_server)
    channel = await joined(daphne, "conversation.1")
    await worker.group_send("conversation.1", {"type": "chat.delta", "seq": 1})
    assert (await receive(daphne, channel))["seq"] == 1
    admin = redis.Redis.from_url(redis_server.url)
    clients: list[dict[str, Any]] = admin.client_list()  # type: ignore[assignment]
    publishers = [c for c in clients if c["cmd"] == "evalsha"]
    assert publishers, "the batch went out as one EVALSHA"
    for publisher in publishers:
        admin.client_kill_filter(_id=publisher["id"])
    with contextlib.suppress(RedisConnectionError):
        await worker.group_send("conversation.1", {"type": "chat.delta", "seq": 2})
    await worker.group_send(
        "conversation.1",
        {"type": "chat.delta", "seq": 3},
        journal=Journal("reply.9", b"0:y", expire=60),
    )
    while (await receive(daphne, channel))["seq"] != 3:
        pass
    assert admin.lrange("reply.9", 0, -1) == [b"0:y"]
    await worker.flush()
    await daphne.flush()


async def test_a_journal_is_read_from_the_shard_its_group_is_published_on(
    redis_server: PrivateRedis, settings: Any
) -> None:
    shards = [f"{redis_server.url[:-2]}/{db}" for db in (1, 2, 3)]
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chat.layers.BatchingPubSubChannelLayer",
            "CONFIG": {"hosts": shards},
        }
    }
    worker = BatchingPubSubChannelLayer(hosts=shards)
    groups = [f"conversation.{index}" for index in range(12)]
    for group in groups:
        await worker.group_send(group, {"type": "chat.delta"}, journal=Journal(group, b"x"))
    await worker.flush()
    used = set()
    for group in groups:
        assert await asyncio.to_thread(journal_read, group=group, key=group) == [b"x"]
        used |= {db for db, url in enumerate(shards) if redis.Redis.from_url(url).exists(group)}
    assert len(used) > 1  # the groups spread over the shards, and each was found on its own


async def test_sockets_closing_all_at_once_leave_no_subscription_behind(
    redis_server: PrivateRedis,
) -> None:
    """Hundreds of consumers leaving together (their receives cancelled, some twice, as Daphne
    does to stragglers): every channel is unsubscribed in Redis and forgotten in memory, in
    a few commands rather than one lock-held round trip each."""
    layer = layer_for(redis_server)
    channels = [await layer.new_channel() for _ in range(300)]
    receivers = [asyncio.create_task(layer.receive(channel)) for channel in channels]
    await asyncio.sleep(0)  # every receive is waiting on its queue
    for task in receivers:
        task.cancel()
    await asyncio.sleep(0)
    for task in receivers[::2]:
        task.cancel()  # cancelled again while cleaning up
    await asyncio.gather(*receivers, return_exceptions=True)
    client = redis.Redis.from_url(redis_server.url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10

    def subscribed() -> int:
        counts: list[tuple[bytes, int]] = client.pubsub_numsub(*channels)  # type: ignore[assignment]
        return sum(n for _, n in counts)

    while subscribed():
        assert loop.time() < deadline, "channels still subscribed in Redis"
        await asyncio.sleep(0.05)
    shard = layer._get_layer()._shards[0]
    assert not shard._subscribed_to and not layer._get_layer().channels
    await layer.flush()
