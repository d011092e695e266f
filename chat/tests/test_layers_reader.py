"""The layer's receive side (core/pubsub.py read by chat/layers.py) against a private
redis-server: what a reader that takes many messages per socket read can get wrong.

To put many messages in one socket read, a test holds the event loop (a plain blocking call
inside the test's coroutine) while another connection publishes, until Redis reports that it
has written them all to the subscriber's socket; the layer then finds them all at once."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from redis._parsers import _AsyncRESP2Parser

from chat.events import LAYER_DISCONNECTED as DISCONNECTED
from chat.events import LAYER_RECONNECTED as RECONNECTED
from chat.layers import BatchingPubSubChannelLayer
from chat.tests.conftest import PrivateRedis
from chat.tests.test_layers import joined, layer_for, receive

pytestmark = pytest.mark.integration

HANG = 30  # seconds: only catches a hang


def layer_with(redis_server: PrivateRedis, **options: Any) -> BatchingPubSubChannelLayer:
    return BatchingPubSubChannelLayer(hosts=[{"address": redis_server.url, **options}])


def subscriber(admin: redis.Redis) -> dict[str, Any]:
    """The layer's subscriber connection as Redis sees it (CLIENT LIST)."""
    clients: list[dict[str, Any]] = admin.client_list()  # type: ignore[assignment]
    found = [c for c in clients if "P" in c["flags"]]
    assert len(found) == 1, found
    return found[0]


def published_and_written(admin: redis.Redis, publish: Callable[[], None]) -> None:
    """Publish (blocking the event loop: the layer reads nothing meanwhile), then wait until
    Redis has written every byte to the subscriber's socket: its output buffers are empty."""
    publish()
    deadline = time.monotonic() + HANG
    while True:
        client = subscriber(admin)
        if client["obl"] == client["oll"] == client["omem"] == "0":
            return
        assert time.monotonic() < deadline, client
        time.sleep(0.01)


def group_channel(group: str) -> str:
    return f"asgi__group__{group}"


def spy_on_reads(layer: BatchingPubSubChannelLayer) -> list[int]:
    """Sizes of the layer's socket reads from now on (the real reads, counted)."""
    stream = layer._get_layer()._shards[0]._pubsub.connection._parser._stream
    read, sizes = stream.read, []

    async def counted(n: int = -1) -> bytes:
        data: bytes = await read(n)
        sizes.append(len(data))
        return data

    stream.read = counted
    return sizes


async def test_many_messages_in_one_socket_read_are_all_delivered_in_order(
    redis_server: PrivateRedis,
) -> None:
    daphne = layer_for(redis_server)
    channels = [await joined(daphne, f"conversation.{index}") for index in range(5)]
    admin = redis.Redis.from_url(redis_server.url)
    reads = spy_on_reads(daphne)
    # The read in progress began before the spy: one message ends it, the next is counted.
    admin.publish(group_channel("conversation.0"), daphne.serialize({"type": "probe"}))
    assert (await receive(daphne, channels[0]))["type"] == "probe"
    reads.clear()

    def publish() -> None:
        with admin.pipeline(transaction=False) as pipe:
            for seq in range(60):  # interleaved over the five groups: 300 messages
                for index in range(5):
                    message = {"type": "chat.delta", "seq": seq, "index": index}
                    pipe.publish(group_channel(f"conversation.{index}"), daphne.serialize(message))
            pipe.execute()

    published_and_written(admin, publish)
    for index, channel in enumerate(channels):
        got = [await receive(daphne, channel) for _ in range(60)]
        assert [m["seq"] for m in got] == list(range(60))
        assert {m["index"] for m in got} == {index}
    assert 1 <= len(reads) < 10, f"300 messages took {len(reads)} socket reads"
    await daphne.flush()


async def test_messages_split_across_socket_reads_arrive_whole(
    redis_server: PrivateRedis,
) -> None:
    """Seven bytes per socket read: every message is cut, most of them several times; and one
    message larger than a default read (64 KiB)."""
    daphne = layer_with(redis_server, socket_read_size=7)
    worker = layer_for(redis_server)
    channel = await joined(daphne, "conversation.1")
    big = "x" * 300_000
    for seq in range(50):
        text = big if seq == 25 else f"token {seq} " * (seq % 7)
        await worker.group_send("conversation.1", {"type": "chat.delta", "seq": seq, "text": text})
    for seq in range(50):
        message = await receive(daphne, channel)
        assert message["seq"] == seq
        assert message["text"] == (big if seq == 25 else f"token {seq} " * (seq % 7))
    await worker.flush()
    await daphne.flush()


async def test_a_connection_killed_mid_burst_is_told_and_later_messages_arrive(
    redis_server: PrivateRedis,
) -> None:
    """CLIENT KILL the subscriber while a publisher streams: the channel hears `disconnected`,
    then `reconnected`, then messages again; whatever arrives is in publish order."""
    daphne, worker = layer_for(redis_server), layer_for(redis_server)
    channel = await joined(daphne, "conversation.1")
    admin = redis.Redis.from_url(redis_server.url)
    stop = asyncio.Event()

    async def stream() -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            await worker.group_send("conversation.1", {"type": "chat.delta", "seq": seq})
            if seq % 20 == 0:
                await asyncio.sleep(0.001)

    publisher = asyncio.create_task(stream())
    heard: list[Any] = []
    async with asyncio.timeout(HANG):
        while len(heard) < 200:  # mid-burst
            heard.append((await daphne.receive(channel))["seq"])
        admin.client_kill_filter(_id=subscriber(admin)["id"])
        kinds: list[str] = []
        while RECONNECTED not in kinds:
            message = await daphne.receive(channel)
            kinds.append(message["type"])
            if message["type"] == "chat.delta":
                heard.append(message["seq"])
        after: list[int] = []
        while len(after) < 100:
            after.append((await daphne.receive(channel))["seq"])
    stop.set()
    await publisher
    assert kinds.index(DISCONNECTED) < kinds.index(RECONNECTED)
    assert kinds.count(DISCONNECTED) == 1 and kinds.count(RECONNECTED) == 1
    assert heard == sorted(heard) and after == sorted(after) and heard[-1] < after[0]
    # Resubscribed in Redis, once.
    numsub: list[tuple[bytes, int]] = admin.pubsub_numsub(group_channel("conversation.1"))  # type: ignore[assignment]
    assert numsub[0][1] == 1
    await worker.flush()
    await daphne.flush()


async def test_unsubscribing_while_messages_are_buffered_drops_only_that_channel(
    redis_server: PrivateRedis,
) -> None:
    """A consumer leaves (its receive cancelled) and another leaves a group while messages for
    them are already in the layer's socket: the rest are delivered in order, the leavers'
    subscriptions end in Redis and stay ended across a reconnection."""
    daphne = layer_for(redis_server)
    staying = await joined(daphne, "conversation.1")
    leaving = await joined(daphne, "conversation.2")
    discarding = await joined(daphne, "conversation.3")
    leaver = asyncio.create_task(daphne.receive(leaving))
    await asyncio.sleep(0)  # waiting on its queue
    admin = redis.Redis.from_url(redis_server.url)

    def publish() -> None:
        for seq in range(100):
            for index in (1, 2, 3):
                message = {"type": "chat.delta", "seq": seq}
                admin.publish(group_channel(f"conversation.{index}"), daphne.serialize(message))

    published_and_written(admin, publish)
    # Both leave before the layer has read any of it, as a consumer's disconnect does.
    leaver.cancel()
    await daphne.group_discard("conversation.2", leaving)
    await daphne.group_discard("conversation.3", discarding)
    await asyncio.gather(leaver, return_exceptions=True)
    got = [(await receive(daphne, staying))["seq"] for _ in range(100)]
    assert got == list(range(100))

    gone = [group_channel("conversation.2"), group_channel("conversation.3"), leaving]

    def subscribed(names: list[str]) -> int:
        counts: list[tuple[bytes, int]] = admin.pubsub_numsub(*names)  # type: ignore[assignment]
        return sum(n for _, n in counts)

    async with asyncio.timeout(HANG):
        while subscribed(gone):
            await asyncio.sleep(0.01)
    assert leaving not in daphne._get_layer().channels
    assert subscribed([discarding]) == 1  # it left a group, not the process
    assert daphne._get_layer().channels[discarding].empty()

    # A reconnection subscribes again to what is still subscribed, and nothing else.
    admin.client_kill_filter(_id=subscriber(admin)["id"])
    assert (await receive(daphne, staying, timeout=HANG))["type"] == DISCONNECTED
    assert (await receive(daphne, staying, timeout=HANG))["type"] == RECONNECTED
    assert subscribed(gone) == 0
    assert subscribed([group_channel("conversation.1"), staying, discarding]) == 3
    await daphne.flush()


async def test_a_redis_that_stops_answering_is_noticed_by_the_health_check(
    redis_server: PrivateRedis,
) -> None:
    """A Redis frozen with its sockets open (SIGSTOP: no FIN, no RST): once the connection has
    been quiet for the health-check interval it is pinged, and when no pong comes within the
    socket timeout the channels hear `disconnected`; after SIGCONT, `reconnected`, and
    messages flow again."""
    daphne = layer_with(redis_server, health_check_interval=1, socket_timeout=1)
    channel = await joined(daphne, "conversation.1")
    pid = redis_server.group.procs["redis"].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        assert (await receive(daphne, channel, timeout=HANG))["type"] == DISCONNECTED
    finally:
        os.kill(pid, signal.SIGCONT)
    assert (await receive(daphne, channel, timeout=HANG))["type"] == RECONNECTED
    worker = layer_for(redis_server)
    await worker.group_send("conversation.1", {"type": "chat.delta", "seq": 1})
    assert (await receive(daphne, channel))["seq"] == 1
    await worker.flush()
    await daphne.flush()


async def test_with_redis_pys_own_parser_it_reads_one_message_at_a_time_and_still_recovers(
    redis_server: PrivateRedis,
) -> None:
    """The bulk reader needs hiredis' parser; with another one configured the layer reads the
    public way, and keeps the same promises."""
    daphne = layer_with(redis_server, parser_class=_AsyncRESP2Parser)
    worker = layer_for(redis_server)
    channel = await joined(daphne, "conversation.1")
    for seq in range(50):
        await worker.group_send("conversation.1", {"type": "chat.delta", "seq": seq})
    assert [(await receive(daphne, channel))["seq"] for _ in range(50)] == list(range(50))
    admin = redis.Redis.from_url(redis_server.url)
    admin.client_kill_filter(_id=subscriber(admin)["id"])
    assert (await receive(daphne, channel, timeout=HANG))["type"] == DISCONNECTED
    assert (await receive(daphne, channel, timeout=HANG))["type"] == RECONNECTED
    await worker.group_send("conversation.1", {"type": "chat.delta", "seq": 99})
    assert (await receive(daphne, channel))["seq"] == 99
    await worker.flush()
    await daphne.flush()
