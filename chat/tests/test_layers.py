"""The production channel layer (chat/layers.py) against a private redis-server on loopback:
batched publishing keeps every message, in order, in far fewer round trips; an outage is told
to every local channel, and the subscription comes back by itself."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from chat.events import LAYER_DISCONNECTED as DISCONNECTED
from chat.events import LAYER_RECONNECTED as RECONNECTED
from chat.layers import BatchingPubSubChannelLayer
from tests.servers import ProcessGroup, free_port, require_binary, start_redis_server

pytestmark = pytest.mark.integration


class PrivateRedis:
    def __init__(self, group: ProcessGroup, binary: str, workdir: Path) -> None:
        self.group, self.binary, self.workdir = group, binary, workdir
        self.port = free_port()
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        start_redis_server(self.group, "redis", self.binary, self.port, self.workdir)

    def stop(self) -> None:
        self.group.kill("redis", 15)


@pytest.fixture
def redis_server() -> Iterator[PrivateRedis]:
    binary = require_binary("redis-server")
    with tempfile.TemporaryDirectory(prefix="parley-layer-") as workdir:
        group = ProcessGroup(log_dir=Path(workdir))
        try:
            yield PrivateRedis(group, binary, Path(workdir))
        finally:
            group.stop_all()


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
    await asyncio.sleep(0.2)  # SUBSCRIBE goes out without waiting for Redis' confirmation
    return channel


async def test_concurrent_group_sends_all_arrive_in_order_in_few_round_trips(
    redis_server: PrivateRedis,
) -> None:
    worker, daphne = layer_for(redis_server), layer_for(redis_server)
    channels = [await joined(daphne, f"conversation.{index}") for index in range(20)]
    round_trips = 0
    shard = worker._get_layer()._shards[0]
    shard._ensure_redis()
    original_pipeline = shard._redis.pipeline

    def counted_pipeline(*args: Any, **kwargs: Any) -> Any:
        nonlocal round_trips
        round_trips += 1
        return original_pipeline(*args, **kwargs)

    shard._redis.pipeline = counted_pipeline

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

    class StalledPipeline:  # a round trip that never comes back
        async def __aenter__(self) -> StalledPipeline:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

        def publish(self, channel: str, message: bytes) -> None:
            pass

        async def execute(self) -> None:
            on_the_wire.set()
            await asyncio.Event().wait()

    shard._redis.pipeline = lambda **kwargs: StalledPipeline()
    sends = [
        asyncio.ensure_future(worker.group_send(f"conversation.{index}", {"type": "chat.delta"}))
        for index in range(50)
    ]
    await asyncio.wait_for(on_the_wire.wait(), 5)
    await worker.flush()
    _, pending = await asyncio.wait(sends, timeout=5)
    assert not pending, f"{len(pending)} publishers still waiting after flush"
