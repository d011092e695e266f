"""`Idempotency-Key` on POSTs that create messages: a repeat returns the first result, a
concurrent duplicate gets 409.

Per caller (API key, else user) and key: an atomic `cache.add` takes a short lock while the
first request runs; its successful result is then stored for API_IDEMPOTENCY_TTL seconds.
A repeat finds the stored result (and gets it back with `Idempotent-Replayed: true`); a
repeat while the first still runs cannot take the lock (409); a repeat with a different body
is refused (422) rather than silently answered with the other request's result. Errors are
not stored: a request refused for a rate limit may be retried with the same key.

The cache is Redis in production, so this holds across replicas. The lock expires on its own
if the process holding it dies (API_IDEMPOTENCY_LOCK_SECONDS). With Redis unreachable the
request runs unguarded rather than failing (a send does not need the cache,
docs/operations.md): the key's derived client_id still makes the database answer a repeat
with the first message; only the replay of the exact response and the 409/422 checks wait
for Redis.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# Visible ASCII, inner spaces allowed (HTTP trims the ends anyway); the schema says the same.
KEY_PATTERN = r"^[\x21-\x7e]([\x20-\x7e]{0,253}[\x21-\x7e])?$"


@dataclass(frozen=True)
class Outcome:
    """What a request answered: replayed as is for a repeat."""

    status: int
    body: Any
    headers: dict[str, str]


class IdempotencyRefused(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Slot:
    lock_key: str
    result_key: str
    fingerprint: str


def slot_for(*, scope: str, key: str, method: str, path: str, payload: Any) -> Slot:
    """Where one idempotency key's lock and result live; refuses a malformed key."""
    if not re.fullmatch(KEY_PATTERN, key):
        raise IdempotencyRefused(
            400,
            "invalid",
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} visible ASCII characters (inner spaces "
            "allowed).",
        )
    digest = hashlib.sha256(f"{scope}\n{method}\n{path}\n{key}".encode()).hexdigest()
    return Slot(
        lock_key=f"idem:lock:{digest}",
        result_key=f"idem:result:{digest}",
        # What the request asks for, not how its JSON was spelled.
        fingerprint=hashlib.sha256(
            json.dumps(payload, sort_keys=True, default=str).encode()
        ).hexdigest(),
    )


def client_id_for(*, scope: str, key: str) -> str:
    """A message client_id derived from an idempotency key (fits the 64-character column), so
    the database, too, refuses a second message for the same key."""
    return "idem-" + hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()[:48]


def _replay(slot: Slot, stored: dict[str, Any]) -> Outcome:
    if stored["fingerprint"] != slot.fingerprint:
        raise IdempotencyRefused(
            422,
            "idempotency_key_reused",
            f"This {HEADER} was used for a different request; use a new key.",
        )
    headers = {**stored["headers"], "Idempotent-Replayed": "true"}
    return Outcome(status=stored["status"], body=stored["body"], headers=headers)


def _busy() -> IdempotencyRefused:
    return IdempotencyRefused(
        409,
        "idempotency_conflict",
        f"A request with this {HEADER} is still being processed; retry shortly.",
    )


def _stored(slot: Slot, outcome: Outcome) -> dict[str, Any]:
    return {
        "fingerprint": slot.fingerprint,
        "status": outcome.status,
        "body": outcome.body,
        "headers": outcome.headers,
    }


def _unguarded(error: Exception, slot: Slot) -> None:
    logger.warning(
        "idempotency store unreachable (%r); %s runs without it (the database still refuses "
        "a second message for the key)",
        error,
        slot.result_key,
    )


def _after(slot: Slot, outcome: Outcome | None) -> None:
    """Keep a successful outcome for repeats and free the key (best effort: the request ran)."""
    try:
        if outcome is not None and 200 <= outcome.status < 300:
            cache.set(slot.result_key, _stored(slot, outcome), settings.API_IDEMPOTENCY_TTL)
    except Exception as error:
        logger.warning("idempotency store unreachable (%r); %s not kept", error, slot.result_key)
    try:
        cache.delete(slot.lock_key)
    except Exception as error:
        logger.warning("idempotency store unreachable (%r); %s expires on its own", error, slot)


async def _aafter(slot: Slot, outcome: Outcome | None) -> None:
    """_after for async views."""
    try:
        if outcome is not None and 200 <= outcome.status < 300:
            await cache.aset(slot.result_key, _stored(slot, outcome), settings.API_IDEMPOTENCY_TTL)
    except Exception as error:
        logger.warning("idempotency store unreachable (%r); %s not kept", error, slot.result_key)
    try:
        await cache.adelete(slot.lock_key)
    except Exception as error:
        logger.warning("idempotency store unreachable (%r); %s expires on its own", error, slot)


def run_once(slot: Slot, run: Callable[[], Outcome]) -> Outcome:
    """Run `run` once per slot (sync views)."""
    try:
        stored = cache.get(slot.result_key)
        locked = stored is None and cache.add(
            slot.lock_key, 1, settings.API_IDEMPOTENCY_LOCK_SECONDS
        )
        if locked:  # the first request may have finished between the look and the lock
            stored = cache.get(slot.result_key)
    except Exception as error:
        _unguarded(error, slot)
        return run()
    if stored is None and not locked:
        raise _busy()
    outcome = None
    try:
        if stored is not None:
            return _replay(slot, stored)
        outcome = run()
        return outcome
    finally:
        if locked:
            _after(slot, outcome)


async def arun_once(slot: Slot, run: Callable[[], Awaitable[Outcome]]) -> Outcome:
    """run_once for async views."""
    try:
        stored = await cache.aget(slot.result_key)
        locked = stored is None and await cache.aadd(
            slot.lock_key, 1, settings.API_IDEMPOTENCY_LOCK_SECONDS
        )
        if locked:
            stored = await cache.aget(slot.result_key)
    except Exception as error:
        _unguarded(error, slot)
        return await run()
    if stored is None and not locked:
        raise _busy()
    outcome = None
    try:
        if stored is not None:
            return _replay(slot, stored)
        outcome = await run()
        return outcome
    finally:
        if locked:
            await _aafter(slot, outcome)
