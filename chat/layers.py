"""How events cross processes in production: Redis pub/sub, published in batches, with
outages told to the consumers.

channels-redis' RedisPubSubChannelLayer pushes every message of a process's groups over one
subscriber connection: no round trip per message, unlike the list-based core layer, whose one
reader per Daphne process fell seconds behind at 100 streams (docs/benchmarks.md). It lacks two
things token streaming needs, added here:

- **Batched publishing.** Its publish holds a per-process lock for one round trip per message,
  so a worker streaming hundreds of replies queues behind its own publishes. Here the messages
  published while a round trip is in flight leave together in the next round trip, one
  script call (group commit): a message alone goes at once, and under load batches grow by
  themselves, with no fixed window and no added latency.
- **Outage signals.** When the subscriber connection drops, redis-py reconnects and
  resubscribes on its own, but consumers are never told, so sockets would silently miss every
  event of the outage. Here each local channel gets `layer.disconnected` when the connection
  drops and `layer.reconnected` once it is subscribed again; consumers tell their clients and
  re-send what was saved meanwhile (chat/consumers.py).
- **Journals.** A publish may carry a write to a Redis list (chat/journal.py), sent in the same
  round trip just before the PUBLISH: whatever subscribers were sent, the list holds, and it
  outlives the publisher. A reply's deltas are journaled so that the reaper can keep the text
  clients were shown when the worker streaming it dies between two checkpoints
  (chat/journal.py); `journal_read` reads a list back from sync code.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import threading
import time
from typing import Any, cast

import hiredis
import redis
from channels.layers import get_channel_layer
from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
)
from channels_redis.utils import _consistent_hash, _wrap_close, decode_hosts
from redis.exceptions import NoScriptError
from redis.sentinel import Sentinel, SentinelConnectionPool

from chat.events import LAYER_DISCONNECTED, LAYER_RECONNECTED
from chat.journal import Journal
from core.memory import SocketQueue
from core.observability import metrics
from core.pubsub import pubsub_read

logger = logging.getLogger(__name__)

RECONNECT_DELAY = 0.5  # seconds between attempts while Redis is unreachable

# A batch of publishes in one command. ARGV holds five fields per message: its journal write
# ("" none, "a" append, "d" delete the list), the entry, the seconds to expire after ("" keep),
# the channel and the message; KEYS the journal of each message that has one, in order. Redis
# runs a script whole and in order: a journal write before its PUBLISH means no subscriber gets
# text the journal lacks.
_PUBLISH_BATCH = """
local k = 0
for i = 1, #ARGV, 5 do
  local write = ARGV[i]
  if write ~= '' then
    k = k + 1
    if write == 'a' then
      redis.call('RPUSH', KEYS[k], ARGV[i + 1])
      if ARGV[i + 2] ~= '' then
        redis.call('EXPIRE', KEYS[k], ARGV[i + 2])
      end
    else
      redis.call('DEL', KEYS[k])
    end
  end
  redis.call('PUBLISH', ARGV[i + 3], ARGV[i + 4])
end
return k
"""
# Redis names a script by its SHA-1 (EVALSHA): an identifier, not a security measure.
_PUBLISH_BATCH_SHA = hashlib.sha1(_PUBLISH_BATCH.encode(), usedforsecurity=False).hexdigest()


class BatchingPubSubChannelLayer(RedisPubSubChannelLayer):  # type: ignore[misc]
    """RedisPubSubChannelLayer with batched publishing, outage signals and journals (module
    docstring). `group_send(group, message, journal=Journal(...))` journals a publish."""

    journals = True

    def group_send_nowait(
        self, group: str, message: dict[str, Any], journal: Journal | None = None
    ) -> None:
        """Queue a publish for the next round trip and return at once (from the running loop):
        a reply's deltas go in order, with no await per delta; a failed batch is logged."""
        self._get_layer().group_send_nowait(group, message, journal)

    async def receive(self, channel: str) -> dict[str, Any]:
        """The base reaches its loop's layer through __getattr__, a new partial and a proxy
        coroutine per call: a consumer calls this once per event (~5 % of a relaying Daphne's
        CPU, py-spy); straight here it is one call."""
        message: dict[str, Any] = await self._get_layer().receive(channel)
        return message

    def _get_layer(self) -> RedisPubSubLoopLayer:
        loop = asyncio.get_running_loop()
        try:
            return self._layers[loop]
        except KeyError:
            layer = _LoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)  # flushes the layer when its loop closes, as the base does
            return layer


class _LoopLayer(RedisPubSubLoopLayer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plain: list[RedisSingleShardConnection] = self.__dict__["_shards"]
        self._shards: list[RedisSingleShardConnection] = [
            _Shard(shard.host, self) for shard in plain
        ]

    async def group_send(
        self, group: str, message: dict[str, Any], journal: Journal | None = None
    ) -> None:
        channel = self._get_group_channel_name(group)
        shard: _Shard = self._get_shard(channel)
        await shard.publish(channel, self.channel_layer.serialize(message), journal)

    def group_send_nowait(
        self, group: str, message: dict[str, Any], journal: Journal | None = None
    ) -> None:
        channel = self._get_group_channel_name(group)
        shard: _Shard = self._get_shard(channel)
        shard.publish_nowait(channel, self.channel_layer.serialize(message), journal)

    async def _subscribe_to_channel(self, channel: str) -> None:
        # As the base does, with a queue that costs an idle socket nothing (core/memory.py),
        # not an asyncio.Queue (~3 KB). The queue is registered before subscribing: one whose
        # subscription failed (Redis down at a handshake) would stay behind and collect outage
        # events forever.
        self.channels[channel] = SocketQueue()
        try:
            await self._get_shard(channel).subscribe(channel)
        except BaseException:
            self.channels.pop(channel, None)
            raise

    def tell_local_channels(self, kind: str) -> None:
        """Put an event of `kind` on every channel of this process (each consumer's queue)."""
        event = self.channel_layer.serialize({"type": kind})
        for queue in self.channels.values():
            queue.put_nowait(event)


class _Shard(RedisSingleShardConnection):  # type: ignore[misc]
    def __init__(self, host: dict[str, Any], channel_layer: _LoopLayer) -> None:
        super().__init__(host, channel_layer)
        # (channel, message, journal, the publisher's future: None when nobody waits)
        self._outbox: list[tuple[str, bytes, Journal | None, asyncio.Future[None] | None]] = []
        self._sender: asyncio.Task[None] | None = None
        self._connected = True  # what local channels were last told
        self._commands: list[tuple[str, str, asyncio.Future[None] | None]] = []
        self._commander: asyncio.Task[None] | None = None

    # --- publishing: one command per round trip -------------------------------------------

    async def publish(self, channel: str, message: bytes, journal: Journal | None = None) -> None:
        """Resolves once Redis took the message (and its journal write); raises if it could
        not (e.g. an outage)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outbox.append((channel, message, journal, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_batches())
        await future

    def publish_nowait(self, channel: str, message: bytes, journal: Journal | None = None) -> None:
        """Queue a publish without waiting for it (a failed batch is logged, not raised)."""
        self._outbox.append((channel, message, journal, None))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_batches())

    async def _send_batches(self) -> None:
        while self._outbox:
            batch, self._outbox = self._outbox, []
            try:
                self._ensure_redis()
                began = time.perf_counter()
                await self._publish_batch(batch)
                metrics.layer_published(len(batch), time.perf_counter() - began)
            except Exception as error:
                metrics.LAYER_PUBLISH_FAILURES.inc(len(batch))
                unwaited = 0
                for *_, future in batch:
                    if future is None:
                        unwaited += 1
                    elif not future.done():  # its publisher may have been cancelled
                        future.set_exception(error)
                if unwaited:
                    logger.warning("%d publishes lost: %r", unwaited, error)
            except BaseException:  # this sender was cancelled (flush): nobody waits forever
                for *_, future in batch:
                    if future is not None:
                        future.cancel()
                raise
            else:
                for *_, future in batch:
                    if future is not None and not future.done():
                        future.set_result(None)

    async def _publish_batch(
        self, batch: list[tuple[str, bytes, Journal | None, asyncio.Future[None] | None]]
    ) -> None:
        """One round trip for the whole batch: one EVALSHA of _PUBLISH_BATCH, not a pipeline of
        two or three commands per message (redis-py parses every reply of a pipeline, each
        under a timer of its own: that was a third of a streaming worker's loop)."""
        keys: list[str] = []
        args: list[str | bytes | int] = []
        for channel, message, journal, _ in batch:
            if journal is None:
                args += ("", "", "", channel, message)
            else:
                keys.append(journal.key)
                if journal.entry is None:
                    args += ("d", "", "", channel, message)
                else:
                    args += ("a", journal.entry, journal.expire or "", channel, message)
        command = hiredis.pack_command(
            ("EVALSHA", _PUBLISH_BATCH_SHA, len(keys), *keys, *args)  # type: ignore[arg-type]
        )  # (hiredis' stub says a tuple of one)
        try:
            await self._send_packed(command)
        except NoScriptError:  # a restarted (or flushed) Redis forgot the script
            await self._redis.script_load(_PUBLISH_BATCH)
            await self._send_packed(command)

    async def _send_packed(self, command: bytes) -> Any:
        """Send a command packed by hiredis (in C) and read its reply, as redis-py's
        execute_command does with one it packs itself: a connection from the pool, and on a
        connection error or timeout that connection dropped (and retried as the connection's
        retry policy says). redis-py's asyncio client packs in Python, ~1.5 us an argument, five
        arguments a message: most of a publishing worker's cost per round trip
        (bench/reply_cost.py)."""
        client = self._redis
        pool = client.connection_pool
        connection = await pool.get_connection()

        async def send() -> Any:
            await connection.send_packed_command(command)
            return await connection.read_response()

        async def drop(_: Exception) -> None:
            await connection.disconnect()

        try:
            return await connection.retry.call_with_retry(send, drop)
        finally:
            await pool.release(connection)

    # --- subscriptions: batched, and an unsubscribe never waits -----------------------------
    #
    # The base takes one lock per SUBSCRIBE/UNSUBSCRIBE. A socket's handshake subscribes three
    # times (its own channel, its user's and its session's groups) and its close unsubscribes
    # as often; when thousands close at once (a replica's clients leaving, a deploy) the
    # closes queue on that lock, Daphne cancels the stragglers, and a cancelled unsubscribe
    # left its channel subscribed in Redis and held in memory for the process's life
    # (bench/socket_bench.py: "Unexpected exception while cleaning-up channel", RSS kept).
    # Here commands queue in order and leave in runs (one SUBSCRIBE or UNSUBSCRIBE naming
    # every channel of the run); an unsubscribe returns at once, so it cannot be cancelled
    # half-way, and a subscribe resolves once its command was written, as the base's does.

    async def subscribe(self, channel: str) -> None:
        if channel in self._subscribed_to:
            return
        self._subscribed_to.add(channel)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._commands.append(("subscribe", channel, future))
        self._commands_kick()
        await future

    async def unsubscribe(self, channel: str) -> None:
        if channel not in self._subscribed_to:
            return
        self._subscribed_to.discard(channel)
        self._commands.append(("unsubscribe", channel, None))
        self._commands_kick()

    def _commands_kick(self) -> None:
        if self._commander is None or self._commander.done():
            self._commander = asyncio.create_task(self._send_commands())

    async def _send_commands(self) -> None:
        while self._commands:
            commands, self._commands = self._commands, []
            for kind, run_of in itertools.groupby(commands, key=lambda command: command[0]):
                run = list(run_of)
                try:
                    self._ensure_redis()
                    self._ensure_receiver()
                    await getattr(self._pubsub, kind)(*[channel for _, channel, _ in run])
                except Exception as error:
                    for _, channel, future in run:
                        if kind == "subscribe":
                            self._subscribed_to.discard(channel)
                        if future is not None and not future.done():
                            future.set_exception(error)
                    if kind == "unsubscribe":
                        logger.warning("unsubscribe of %d channels failed: %r", len(run), error)
                else:
                    for *_, future in run:
                        if future is not None and not future.done():
                            future.set_result(None)

    async def flush(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            self._sender = None
        for *_, future in self._outbox:
            if future is not None:
                future.cancel()
        self._outbox = []
        if self._commander is not None:
            self._commander.cancel()
            self._commander = None
        for *_, waiting in self._commands:
            if waiting is not None:
                waiting.cancel()
        self._commands = []
        await super().flush()

    # --- receiving: in bulk, and consumers told when the subscription drops and comes back --
    #
    # core/pubsub.py reads every message a socket read brought without a timer or health
    # check each (redis-py's get_message had both, per message). When the connection fails it
    # raises; local channels are told `layer.disconnected` once, and `layer.reconnected` when
    # the first bytes of a new connection arrive: those are the confirmations of its
    # resubscription (redis-py subscribes again on connect), so whatever is published after a
    # consumer hears it reaches the consumer.

    async def _do_receiving(self) -> None:
        while True:
            try:
                pubsub = self._pubsub
                if pubsub is not None and pubsub.connection is not None and pubsub.subscribed:
                    await pubsub_read(pubsub, self._deliver, self._alive)
                else:
                    await asyncio.sleep(0.1)
            except Exception:
                # Not only ConnectionError: a read timeout or a half-closed socket too.
                if self._connected:
                    self._connected = False
                    metrics.LAYER_OUTAGES.inc()
                    logger.warning("channel layer subscription lost; reconnecting", exc_info=True)
                    self.channel_layer.tell_local_channels(LAYER_DISCONNECTED)
                await asyncio.sleep(RECONNECT_DELAY)

    def _alive(self) -> None:
        if not self._connected:
            self._connected = True
            logger.warning("channel layer subscription restored")
            self.channel_layer.tell_local_channels(LAYER_RECONNECTED)

    def _deliver(self, name: bytes, data: bytes) -> None:
        """A message to the queue of its channel, or of every local member of its group."""
        layer = self.channel_layer
        channel = name.decode()
        queue = layer.channels.get(channel)
        if queue is not None:
            queue.put_nowait(data)
            return
        members = layer.groups.get(channel)
        if members:
            for member in members:
                if (queue := layer.channels.get(member)) is not None:
                    queue.put_nowait(data)


# --- reading journals back, from sync code (the reaper) --------------------------------------

_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def journal_read(*, group: str, key: str) -> list[bytes] | None:
    """The entries of the journal `key` written with publishes to `group`, from the Redis that
    carries that group; None when the configured layer keeps no journals (in memory, core)."""
    layer = get_channel_layer()
    if not isinstance(layer, BatchingPubSubChannelLayer):
        return None
    hosts = decode_hosts(layer._kwargs.get("hosts"))
    prefix = layer._kwargs.get("prefix", "asgi")
    # The shard the layer publishes the group on (RedisPubSubLoopLayer._get_shard).
    host = hosts[_consistent_hash(f"{prefix}__group__{group}", len(hosts))]
    return cast(list[bytes], _client(host).lrange(key, 0, -1))


def _client(host: dict[str, Any]) -> redis.Redis:
    """One sync client per Redis host, built as channels-redis builds its async pools."""
    name = repr(sorted(host.items()))
    with _clients_lock:
        client = _clients.get(name)
        if client is None:
            options = dict(host)
            if "address" in options:
                pool = redis.ConnectionPool.from_url(options.pop("address"), **options)
            elif "master_name" in options:
                master = options.pop("master_name")
                sentinel = Sentinel(
                    options.pop("sentinels"), sentinel_kwargs=options.pop("sentinel_kwargs", None)
                )
                pool = SentinelConnectionPool(master, sentinel, **options)
            else:
                pool = redis.ConnectionPool(**options)
            client = _clients[name] = redis.Redis(connection_pool=pool)
        return client
