"""Rate limits for WebSocket frames and message sends, per user and per organisation, shared
by every replica.

With REDIS_URL set, counters live in Redis: one Lua script increments the counters a frame
touches and sets each counter's expiry on its first hit, atomically, so replicas A and B count
into the same windows. A window starts at the first hit and lasts the rate's period; the
answer says how long until it ends (`retry_after`). Without Redis (embedded mode, one process)
the Django cache holds the same counters.

Counters are charged narrowest first (the user's, then the organisation's), and a frame over
one counter's limit is not charged to the counters after it: frames refused by a member's own
limit never use up the organisation's, so one member flooding cannot lock their colleagues out.

If Redis cannot be reached, frames are let through (logged): a limiter outage must not take
the chat down, and budgets (accounts/quotas.py) still bound spend from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
import weakref
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

from core.errors import ParleyError
from core.observability import metrics

logger = logging.getLogger(__name__)

KEY_PREFIX = "parley:rl"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")

# KEYS: counters, narrowest first; ARGV: each counter's window in ms, then each one's limit.
# Returns count, ms left for each counter charged: it stops after the first one over its limit.
_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    redis.call('PEXPIRE', key, ARGV[i])
    ttl = tonumber(ARGV[i])
  end
  out[#out + 1] = n
  out[#out + 1] = ttl
  if n > tonumber(ARGV[#KEYS + i]) then
    break
  end
end
return out
"""


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


# One client per event loop: redis.asyncio connections belong to the loop that made them.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


def _client() -> Any:
    import redis.asyncio

    loop = asyncio.get_running_loop()
    client: Any = _clients.get(loop)
    if client is None:
        # A blocking pool: redis-py's default asyncio pool holds one lock while it connects
        # and checks a connection, so every frame of the process took its turn through that
        # lock, one hand-over per pass of a busy event loop: in a reconnect storm a socket's
        # first `pong` came ~7 s after its handshake, all of them together (docs/benchmarks.md,
        # "The reconnect storm"). This one checks connections outside its lock.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            settings.REDIS_URL, max_connections=64, timeout=5, socket_timeout=2
        )
        client = redis.asyncio.Redis(connection_pool=pool)
        client.parley_script = client.register_script(_SCRIPT)
        _clients[loop] = client
    return client


async def _hit_redis(checks: list[Check]) -> list[tuple[int, float]]:
    client = _client()
    raw = await client.parley_script(
        keys=[c.key for c in checks],
        args=[c.rate.seconds * 1000 for c in checks] + [c.rate.count for c in checks],
    )
    return [(int(raw[i]), int(raw[i + 1]) / 1000) for i in range(0, len(raw), 2)]


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


def _unavailable_note() -> None:
    """Called in the `except` of a failed check: warn at most once per interval."""
    now = clock()
    if now - _unavailable["warned"] < UNAVAILABLE_WARN_EVERY:
        _unavailable["since"] += 1
        return
    logger.warning(
        "rate limiter unavailable; letting frames through (%d more since the last warning)",
        _unavailable["since"],
        exc_info=True,
    )
    _unavailable["warned"], _unavailable["since"] = now, 0


async def limits_hit(checks: list[Check], *, what: str) -> None:
    """Count one hit on each check in order (narrowest first) until one is past its rate;
    raise RateLimitExceeded if one is. The checks after it are not charged."""
    try:
        if settings.REDIS_URL:
            results = await _hit_redis(checks)
        else:
            results = _hit_cache(checks)
    except Exception:
        _unavailable_note()
        return
    over = [
        (left, check.what or what)
        for (count, left), check in zip(results, checks, strict=False)
        if count > check.rate.count
    ]
    if over:
        waits = [left for left, _ in over]
        raise RateLimitExceeded(retry_after=max(1, math.ceil(max(waits))), what=over[0][1])


def _checks(kind: str, *, user_id: int, organisation_id: int | None) -> list[Check]:
    """The user's counter, then the organisation's (the order limits_hit charges them)."""
    per_user = rate_parse(getattr(settings, f"WS_RATE_{kind}_PER_USER"))
    per_org = rate_parse(getattr(settings, f"WS_RATE_{kind}_PER_ORG"))
    what = "frames" if kind == "FRAMES" else "messages"
    checks = [Check(f"{KEY_PREFIX}:{kind.lower()}:user:{user_id}", per_user, what)]
    if organisation_id is not None:
        checks.append(Check(f"{KEY_PREFIX}:{kind.lower()}:org:{organisation_id}", per_org, what))
    return checks


async def frame_check(*, user_id: int, organisation_id: int | None, send: bool = False) -> None:
    """Every frame a socket receives, whatever it is (malformed ones too). `send`: the frame
    starts a generation (send, edit, regenerate) and counts as a send too, in the same round
    trip; its send counters are charged only if its frame counters let it through."""
    checks = _checks("FRAMES", user_id=user_id, organisation_id=organisation_id)
    if send:
        checks += _checks("SENDS", user_id=user_id, organisation_id=organisation_id)
    await limits_hit(checks, what="frames")


async def send_check(*, user_id: int, organisation_id: int | None) -> None:
    """Frames that start a generation: send, edit, regenerate."""
    await limits_hit(
        _checks("SENDS", user_id=user_id, organisation_id=organisation_id), what="messages"
    )
