"""Rate limits for WebSocket frames and message sends, per user and per organisation, shared
by every replica.

With REDIS_URL set, counters live in Redis: one Lua script increments the counters a frame
touches and sets each counter's expiry on its first hit, atomically, so replicas A and B count
into the same windows. The frames a process checks while its previous round trip is in flight
go together in one script call (group commit, `_Batcher`), counted in arrival order. A window
starts at the first hit and lasts the rate's period; the answer says how long until it ends
(`retry_after`). Without Redis (embedded mode, one process) the Django cache holds the same
counters.

Counters are charged narrowest first (the user's, then the organisation's), and a frame over
one counter's limit is not charged to the counters after it: frames refused by a member's own
limit never use up the organisation's, so one member flooding cannot lock their colleagues out.

If Redis cannot be reached, frames are let through (logged): a limiter outage must not take
the chat down, and budgets (accounts/quotas/) still bound spend from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import time
import weakref
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from core.errors import ParleyError
from core.observability import metrics

logger = logging.getLogger(__name__)

KEY_PREFIX = "parley:rl"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")

# Many frames' checks in one call, each frame's as one call per frame would have run them, in
# order, and the keys each frame asked to read as well (a send's cached rows: the round trip
# is paid anyway). KEYS: per frame, its counters (narrowest first), then its keys to read.
# ARGV: per frame, its number of counters N, then N windows in ms, then N limits, then its
# number of keys to read M. Returns per frame {count, ms left for each counter charged (it
# stops after the first one over its limit); the M values read (false: none)}.
_SCRIPT = """
local out = {}
local k, a = 0, 1
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  local frame = {}
  for i = 1, n do
    local key = KEYS[k + i]
    local count = redis.call('INCR', key)
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then
      redis.call('PEXPIRE', key, ARGV[a + i])
      ttl = tonumber(ARGV[a + i])
    end
    frame[#frame + 1] = count
    frame[#frame + 1] = ttl
    if count > tonumber(ARGV[a + n + i]) then
      break
    end
  end
  local m = tonumber(ARGV[a + 1 + 2 * n])
  local reads = {}
  for j = 1, m do
    reads[j] = redis.call('GET', KEYS[k + n + j])
  end
  out[#out + 1] = {frame, reads}
  k = k + n + m
  a = a + 2 + 2 * n
end
return out
"""
_SCRIPT_SHA = hashlib.sha1(_SCRIPT.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: int

    def __str__(self) -> str:
        return f"{self.count}/{self.seconds}s"


def rate_parse(text: str) -> Rate:
    """'120/m', '10/5s', '1000/h', '5000/d' (django-ratelimit's notation)."""
    match = _RATE.match(text)
    if match is None:
        raise ImproperlyConfigured(f"rate {text!r}: use COUNT/PERIOD such as 120/m or 10/5s")
    count, multiplier, unit = match.groups()
    return Rate(int(count), int(multiplier or 1) * _UNITS[unit])


class RateLimitExceeded(ParleyError):
    """Too many frames or sends in a window (`rate_limited`); `retry_after` says when it ends."""

    def __init__(self, *, retry_after: int, what: str) -> None:
        super().__init__(
            "rate_limited",
            f"Too many {what}; try again in {retry_after} s.",
            extra={"retry_after": retry_after},
        )
        self.retry_after = retry_after
        metrics.REFUSALS.labels("rate_limited", what).inc()


@dataclass(frozen=True)
class Check:
    key: str
    rate: Rate
    what: str = "frames"  # what a refusal says there were too many of


Results = list[tuple[int, float]]  # per counter charged: its count, seconds left in its window
Reads = list[bytes | None]  # the values of the keys a frame asked to read, in order

# The most frames one script call carries: a script holds Redis for every other client while it
# runs (~3.4 ms for 500 frames of two counters here), so a storm's backlog leaves in several
# calls, one after the other.
BATCH_MAX = 500
# The name the limiter's connections have in Redis (CLIENT LIST).
CLIENT_NAME = "parley-limiter"


class _Batcher:
    """One event loop's limiter client (redis.asyncio connections belong to the loop that made
    them). Group commit, as chat/layers.py publishes: the frames checked while a round trip is
    in flight leave together in the next one, one script call; a frame alone goes at once. One
    call in flight per loop, so one connection of its own, held: no pool to wait for, and a
    round trip costs the loop two or three passes, not redis-py's ~6 for a command through a
    pool (checked for pending data, locked, released), which on a storm's slow loop are most
    of a frame's wait.

    It lives as long as its loop and no longer (see `_batcher`): Daphne has one loop for the
    process's life, but code run through async_to_sync (management commands, Celery tasks,
    tests) gets a new loop each time, and a client kept per loop for ever was a connection
    left open per call."""

    def __init__(self, url: str) -> None:
        import redis.asyncio

        self.url = url
        pool = redis.asyncio.ConnectionPool.from_url(
            url, socket_timeout=2, socket_connect_timeout=2, client_name=CLIENT_NAME
        )
        self.connection = pool.make_connection()  # (re)connects on its next send
        self.outbox: list[
            tuple[tuple[list[Check], list[str]], asyncio.Future[tuple[Results, Reads] | None]]
        ] = []
        self.sender: asyncio.Task[None] | None = None
        self.watch: AsyncGenerator[None, None] | None = None

    async def hit(self, checks: list[Check], reads: list[str]) -> tuple[Results, Reads] | None:
        """The frame's results and the values of `reads` (raw keys), or None if its batch's
        round trip failed (noted, let through)."""
        if self.watch is None:  # this loop's first frame
            self.watch = _until_loop_shutdown(self)
            await anext(self.watch)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Results, Reads] | None] = loop.create_future()
        self.outbox.append(((checks, reads), future))
        if self.sender is None or self.sender.done():
            self.sender = loop.create_task(self._send())
        return await future

    async def _send(self) -> None:
        while self.outbox:
            batch, self.outbox = self.outbox[:BATCH_MAX], self.outbox[BATCH_MAX:]
            results: list[tuple[Results, Reads] | None]
            try:
                results = list(await _round_trip(self, [frame for frame, _ in batch]))
            except Exception:
                # Every frame of the batch is let through; one warning per interval for all.
                _unavailable_note(frames=len(batch))
                results = [None] * len(batch)
            except BaseException:  # this sender was cancelled (loop closing): nobody waits on
                for _, future in batch + self.outbox:
                    future.cancel()
                self.outbox = []
                raise
            for (_, future), result in zip(batch, results, strict=True):
                # A caller cancelled meanwhile (its socket closed) was counted all the same,
                # as its frame did arrive; its answer goes nowhere.
                if not future.done():
                    future.set_result(result)

    async def call(self, keys: list[str], args: list[int]) -> Any:
        """The script over these keys and arguments, packed by hiredis (in C: redis-py's
        asyncio client packs in Python, ~1.5 us an argument, seven a frame). On an error
        redis-py drops the connection itself, so a half-read reply never answers the next."""
        # (hiredis' stub says a tuple of one element)
        pack: Any = hiredis.pack_command
        command = pack(("EVALSHA", _SCRIPT_SHA, len(keys), *keys, *args))
        try:
            return await self._command(command)
        except NoScriptError:  # a restarted (or flushed) Redis forgot the script
            await self._command(pack(("SCRIPT", "LOAD", _SCRIPT)))
            return await self._command(command)

    async def _command(self, command: bytes) -> Any:
        held = self.connection.is_connected
        try:
            await self.connection.send_packed_command(command, check_health=False)
            return await self.connection.read_response()
        except RedisConnectionError:
            if not held:
                raise
        # A connection held across a restart of Redis is found closed only now (a pool checks
        # before lending one, a loop pass each time): once more, on a new one. The command
        # had not reached a Redis that is still there, so nothing is counted twice.
        await self.connection.send_packed_command(command, check_health=False)
        return await self.connection.read_response()


# Each loop's _Batcher is an attribute of the loop itself, so nothing else holds it: a loop
# dropped without being shut down is collected with its client (whose connection holds the loop,
# so a dictionary keyed by the loop, even a weak one, kept both for ever), and its transport
# closes the socket then. A loop that takes no attribute (uvloop) is noted in `_pinned` instead,
# until it shuts down.
_SLOT = "_parley_rate_limiter"
_pinned: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batcher] = (
    weakref.WeakKeyDictionary()
)


def _batcher() -> _Batcher:
    loop = asyncio.get_running_loop()
    batcher: _Batcher | None = getattr(loop, _SLOT, None) or _pinned.get(loop)
    if batcher is None or batcher.url != settings.REDIS_URL:
        batcher = _Batcher(settings.REDIS_URL)
        try:
            setattr(loop, _SLOT, batcher)
        except AttributeError:
            _pinned[loop] = batcher
    return batcher


async def _until_loop_shutdown(batcher: _Batcher) -> AsyncGenerator[None, None]:
    """Parked for the loop's life. A loop shutting down closes the async generators it saw
    (shutdown_asyncgens: asyncio.run, asyncio.Runner and async_to_sync do it before closing
    the loop), which forgets the loop's client and closes its connection from the loop itself.
    (A replaced client, REDIS_URL changed, is closed the same way when the loop shuts down.)"""
    try:
        yield
    finally:
        loop = asyncio.get_running_loop()
        if getattr(loop, _SLOT, None) is batcher:
            delattr(loop, _SLOT)
        if _pinned.get(loop) is batcher:
            del _pinned[loop]
        await batcher.connection.disconnect()


async def _round_trip(
    batcher: _Batcher, frames: list[tuple[list[Check], list[str]]]
) -> list[tuple[Results, Reads]]:
    """One script call for many frames' checks (and reads), in order."""
    keys: list[str] = []
    args: list[int] = []
    for checks, reads in frames:
        keys += [c.key for c in checks] + reads
        args += [len(checks), *(c.rate.seconds * 1000 for c in checks)]
        args += [c.rate.count for c in checks] + [len(reads)]
    raw = await batcher.call(keys, args)
    return [
        ([(int(f[i]), int(f[i + 1]) / 1000) for i in range(0, len(f), 2)], list(read))
        for f, read in raw
    ]


async def _hit_redis(checks: list[Check], reads: list[str]) -> tuple[Results, Reads] | None:
    return await _batcher().hit(checks, reads)


def _hit_cache(checks: list[Check]) -> list[tuple[int, float]]:
    now = time.time()
    out = []
    for check in checks:
        cache.add(f"{check.key}:until", now + check.rate.seconds, check.rate.seconds)
        cache.add(check.key, 0, check.rate.seconds)
        try:
            count = cache.incr(check.key)
        except ValueError:  # expired between add and incr
            cache.set(check.key, 1, check.rate.seconds)
            count = 1
        until = cache.get(f"{check.key}:until") or now + check.rate.seconds
        out.append((count, max(0.0, until - now)))
        if count > check.rate.count:
            break  # as the script does: the wider counters are not charged
    return out


# While the store is down every frame fails the same way: one warning with its traceback per
# interval, saying how many frames went through meanwhile, not thousands a second in a storm.
UNAVAILABLE_WARN_EVERY = 10.0  # seconds
clock = time.monotonic
_unavailable = {"warned": -math.inf, "since": 0}


def _unavailable_note(frames: int = 1) -> None:
    """Called in the `except` of a failed check (of `frames` frames, one round trip): warn at
    most once per interval."""
    now = clock()
    if now - _unavailable["warned"] < UNAVAILABLE_WARN_EVERY:
        _unavailable["since"] += frames
        return
    logger.warning(
        "rate limiter unavailable; letting frames through (%d more since the last warning)",
        _unavailable["since"],
        exc_info=True,
    )
    _unavailable["warned"], _unavailable["since"] = now, frames - 1


async def limits_hit(checks: list[Check], *, what: str, read: Sequence[str] = ()) -> Reads | None:
    """Count one hit on each check in order (narrowest first) until one is past its rate;
    raise RateLimitExceeded if one is. The checks after it are not charged. `read`: raw Redis
    keys whose values come back in the same round trip (None: not read, without Redis or
    while it cannot be reached)."""
    reads: Reads | None = None
    try:
        if settings.REDIS_URL:
            batched = await _hit_redis(checks, list(read))
            if batched is None:  # its batch's round trip failed: noted, let through
                return None
            results, reads = batched
        else:
            results = _hit_cache(checks)
    except Exception:
        _unavailable_note()
        return None
    over = [
        (left, check.what or what)
        for (count, left), check in zip(results, checks, strict=False)
        if count > check.rate.count
    ]
    if over:
        waits = [left for left, _ in over]
        raise RateLimitExceeded(retry_after=max(1, math.ceil(max(waits))), what=over[0][1])
    return reads


def _checks(kind: str, *, user_id: int, organisation_id: int | None) -> list[Check]:
    """The user's counter, then the organisation's (the order limits_hit charges them)."""
    per_user = rate_parse(getattr(settings, f"WS_RATE_{kind}_PER_USER"))
    per_org = rate_parse(getattr(settings, f"WS_RATE_{kind}_PER_ORG"))
    what = "frames" if kind == "FRAMES" else "messages"
    checks = [Check(f"{KEY_PREFIX}:{kind.lower()}:user:{user_id}", per_user, what)]
    if organisation_id is not None:
        checks.append(Check(f"{KEY_PREFIX}:{kind.lower()}:org:{organisation_id}", per_org, what))
    return checks


async def frame_check(
    *, user_id: int, organisation_id: int | None, send: bool = False, read: Sequence[str] = ()
) -> Reads | None:
    """Every frame a socket receives, whatever it is (malformed ones too). `send`: the frame
    starts a generation (send, edit, regenerate) and counts as a send too, in the same round
    trip; its send counters are charged only if its frame counters let it through. `read`:
    raw Redis keys read in that round trip too, their values returned (see limits_hit)."""
    checks = _checks("FRAMES", user_id=user_id, organisation_id=organisation_id)
    if send:
        checks += _checks("SENDS", user_id=user_id, organisation_id=organisation_id)
    return await limits_hit(checks, what="frames", read=read)


async def send_check(*, user_id: int, organisation_id: int | None) -> None:
    """Frames that start a generation: send, edit, regenerate."""
    await limits_hit(
        _checks("SENDS", user_id=user_id, organisation_id=organisation_id), what="messages"
    )
