"""Read a redis-py pub/sub connection in bulk: every message a socket read brought, parsed by
hiredis, with nothing around each message but its delivery.

redis-py's `PubSub.get_message` reads one message per call, and each call checks the
connection's health, runs the read in the connection's retry policy and under an
`asyncio.timeout` of its own, and builds a dict. On a Daphne replica relaying 500 streams that
was 26 % of the process's CPU (docs/benchmarks.md, "Streaming, issue 14", round 3).
`pubsub_read` keeps what those calls are for and pays for them once per socket read, or once
per health-check interval:

- replies already buffered in the connection's hiredis reader are taken one after another,
  without an await; a message is `[b"message", channel, data]` and goes to `deliver` as is;
- every other reply (subscribe and unsubscribe confirmations, the health check's pong) goes
  through redis-py's own `PubSub.handle_message`, which keeps its record of subscriptions (the
  channels a reconnection subscribes again) right;
- the socket is read with one timer per health-check interval, not one per read: while bytes
  flow nothing is pinged; once the connection has been quiet for the interval it sends the PING
  redis-py would, and a connection that still says nothing after its socket timeout (else
  another interval) counts as lost. A peer that vanished without closing the socket is noticed;
  redis-py's loop kept pinging it.

It uses redis-py's private parts (the hiredis parser's reader and stream, redis-py 6.4, pinned
in requirements.txt); with any other parser or RESP3 it reads one message at a time the public
way instead. chat/tests/test_layers_reader.py checks both against a real Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

Deliver = Callable[[bytes, bytes], None]
"""Called with (channel, data) for each message, in the order Redis sent them."""

_PUBLISHED = PubSub.PUBLISH_MESSAGE_TYPES


async def pubsub_read(pubsub: PubSub, deliver: Deliver, alive: Callable[[], None]) -> None:
    """Read `pubsub`'s connection, connecting it first if it is not (redis-py then subscribes
    again to everything it had), until the connection fails.

    `alive()` is called once, when the first bytes arrive, before their messages are
    delivered: on a connection just made, those are the confirmations of its subscriptions.
    Raises redis' ConnectionError or TimeoutError when the connection is lost, closed, or stops
    answering; it is then closed, unless someone else already replaced it (the next call reads
    the new one)."""
    connection = pubsub.connection
    if connection is None:
        raise RuntimeError("pubsub_read before anything was subscribed")
    if not connection.is_connected:
        await connection.connect()  # redis-py's on_connect callback resubscribes
    parser = connection._parser
    if not isinstance(parser, _AsyncHiredisParser) or connection.protocol not in (2, "2"):
        await _read_one(pubsub, deliver, alive)
        return
    stream = parser._stream
    try:
        await _read_bulk(pubsub, parser, deliver, alive)
    except Exception:
        if parser._stream is stream:  # nobody reconnected it meanwhile
            await connection.disconnect(nowait=True)
        raise


async def _read_bulk(
    pubsub: PubSub, parser: _AsyncHiredisParser, deliver: Deliver, alive: Callable[[], None]
) -> None:
    connection = pubsub.connection
    assert connection is not None
    reader, stream, size = parser._reader, parser._stream, parser._read_size
    assert reader is not None and stream is not None
    gets = reader.gets
    loop = asyncio.get_running_loop()
    interval = connection.health_check_interval
    grace = connection.socket_timeout or interval  # how long a PING may go unanswered
    pinged, first = False, True
    while True:
        wake = None
        if interval:
            now, due = loop.time(), connection.next_health_check
            if now < due:
                wake = due
            elif now < due + grace:
                if not pinged:
                    await connection.send_command(
                        "PING", pubsub.HEALTH_CHECK_MESSAGE, check_health=False
                    )
                    pinged = True
                wake = due + grace
            else:
                raise RedisTimeoutError(f"no answer to a health check within {grace} s")
        timer = asyncio.timeout_at(wake)
        try:
            async with timer:
                while True:
                    data = await stream.read(size)
                    if not data:
                        raise RedisConnectionError("Connection closed by server.")
                    if interval:
                        connection.next_health_check = loop.time() + interval
                        pinged = False
                    if first:
                        first = False
                        alive()
                    reader.feed(data)
                    # The hot loop: everything this read completed, no await per message.
                    while (reply := gets()) is not NOT_ENOUGH_DATA:
                        if type(reply) is list and len(reply) == 3 and reply[0] == b"message":
                            deliver(reply[1], reply[2])
                        else:
                            await _other_reply(pubsub, reply, deliver)
        except TimeoutError:
            if not timer.expired():
                raise
        # Quiet for a whole interval: the top of the loop pings, or gives up.


async def _other_reply(pubsub: PubSub, reply: Any, deliver: Deliver) -> None:
    """A reply that is not a plain message, handled as redis-py's get_message would."""
    if isinstance(reply, (RedisConnectionError, ReadOnlyError)):
        raise reply  # e.g. LOADING, or a sentinel's master demoted: reconnect
    if isinstance(reply, Exception):
        logger.warning("pub/sub connection answered an error: %r", reply)
        return
    message = await pubsub.handle_message(reply, ignore_subscribe_messages=True)
    if message is not None and message["type"] in _PUBLISHED:
        deliver(message["channel"], message["data"])


async def _read_one(pubsub: PubSub, deliver: Deliver, alive: Callable[[], None]) -> None:
    """redis-py's public way, one message per call (another parser, or RESP3)."""
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
    alive()
    if message is not None and message["type"] in _PUBLISHED:
        deliver(message["channel"], message["data"])
