"""One-time WebSocket tickets: a program trades its session or API key (over HTTPS) for a
ticket it may put in the socket URL, because a ticket is worth nothing after one use or
WS_TICKET_TTL_SECONDS (30 s), unlike the key itself.

Tickets live in the cache (Redis in production, so any replica can redeem what another
issued); only a hash of the ticket is used as the cache key.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from accounts.models import ApiKey, Membership, Organisation, User
from core.errors import ParleyError

TICKET_KEY = "ws-ticket:{digest}"
# What a client asked for a ticket while Redis is unreachable waits before asking again.
UNAVAILABLE_RETRY_AFTER = 5


class TicketsUnavailable(ParleyError):
    """Redis (where tickets live) cannot be reached: no ticket now, and no socket either (a
    socket needs the live feed: 4503). `unavailable`, retryable, HTTP 503 with Retry-After."""

    def __init__(self) -> None:
        super().__init__(
            "unavailable",
            "Sockets cannot be set up right now (the live feed is down); try again in "
            f"{UNAVAILABLE_RETRY_AFTER} s.",
            extra={"retry_after": UNAVAILABLE_RETRY_AFTER},
        )


@dataclass(frozen=True)
class Principal:
    """Who a program's socket acts as, and in which organisation."""

    user: User
    organisation: Organisation
    via: str  # "ticket" or "api_key"
    api_key_id: int | None = None  # the key it came from, directly or through a ticket


def _cache_key(ticket: str) -> str:
    return TICKET_KEY.format(digest=hashlib.sha256(ticket.encode()).hexdigest())


def ws_ticket_issue(*, user: User, organisation: Organisation, api_key: ApiKey | None) -> str:
    ticket = secrets.token_urlsafe(32)
    try:
        cache.set(
            _cache_key(ticket),
            {
                "user": user.pk,
                "organisation": organisation.pk,
                "api_key": api_key.pk if api_key else None,
            },
            timeout=settings.WS_TICKET_TTL_SECONDS,
        )
    except Exception as error:
        raise TicketsUnavailable from error
    return ticket


def ws_ticket_redeem(*, ticket: str) -> Principal | None:
    """The ticket's principal, exactly once; None if unknown, expired or used.

    One-time across replicas: of concurrent redeemers, only the one whose delete removed the
    entry wins (Redis DEL answers 1 to exactly one client; locmem deletes under a lock).
    """
    if not ticket or len(ticket) > 128:
        return None
    key = _cache_key(ticket)
    data = cache.get(key)
    if not data or not cache.delete(key):
        return None
    if data["api_key"] is not None:
        # A ticket bought with a key dies with the key.
        key_row = ApiKey.objects.filter(pk=data["api_key"]).first()
        if key_row is None or not key_row.is_active:
            return None
    membership = (
        Membership.objects.select_related("user", "organisation")
        .filter(user_id=data["user"], organisation_id=data["organisation"])
        .first()
    )
    if membership is None or not membership.user.is_active:
        return None
    return Principal(
        user=membership.user,
        organisation=membership.organisation,
        via="ticket",
        api_key_id=data["api_key"],
    )
