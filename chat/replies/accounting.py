"""What replies used, in chat's terms: one final reply settled against the budgets it reserved
(accounts/quotas.py keeps the ledger and knows nothing of messages), and the usage report per
user and day (the admin's "usage per user and day", chat/admin.py).

Token counts and prices come from llm/accounting.py; a reply stores them on its row
(reply_finish), and these read them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate

from accounts.models import UsageLedger
from accounts.quotas import quota_settle
from chat.models import Message
from llm.accounting import COST_PLACES


def quota_settle_message(*, message: Message) -> UsageLedger | None:
    """Settle a final reply's reservation with what it used (chat/replies/lifecycle.py)."""
    return quota_settle(
        message_id=message.pk,
        started=message.started_at is not None,
        prompt_tokens=message.prompt_tokens,
        completion_tokens=message.completion_tokens,
        content_chars=len(message.content),
        cost=message.cost,
        interrupted=message.error_code == "interrupted",
    )


def ledger_settle_stale() -> int:
    """Settle reservations whose reply is final but that were never settled (the process died
    between finishing the reply and settling). Run by the reaper; returns how many."""
    stale = (
        UsageLedger.objects.filter(
            state=UsageLedger.State.RESERVED, message__status__in=Message.FINAL_STATUSES
        )
        .select_related("message")
        .order_by("pk")[:500]
    )
    settled = 0
    for entry in stale:
        assert entry.message is not None
        settled += quota_settle_message(message=entry.message) is not None
    return settled


@dataclass(frozen=True)
class UsageDay:
    day: date
    user_id: int
    username: str
    replies: int
    prompt_tokens: int
    completion_tokens: int
    estimated: int  # replies whose counts are estimates
    cost: Decimal


def usage_daily(
    *, since: date | None = None, until: date | None = None, username: str = ""
) -> list[UsageDay]:
    """Assistant replies per conversation owner and (UTC) day, newest day first."""
    replies = Message.objects.filter(role=Message.Role.ASSISTANT, status__in=Message.FINAL_STATUSES)
    if since is not None:
        replies = replies.filter(created_at__date__gte=since)
    if until is not None:
        replies = replies.filter(created_at__date__lte=until)
    if username:
        replies = replies.filter(conversation__owner__username__icontains=username)
    rows = (
        replies.annotate(day=TruncDate("created_at"))
        .values("day", "conversation__owner_id", "conversation__owner__username")
        .annotate(
            reply_count=Count("id"),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
            estimated=Count("id", filter=Q(tokens_estimated=True)),
            total_cost=Sum("cost"),
        )
        .order_by("-day", "conversation__owner__username")
    )
    return [
        UsageDay(
            day=row["day"],
            user_id=row["conversation__owner_id"],
            username=row["conversation__owner__username"],
            replies=row["reply_count"],
            prompt_tokens=row["prompt"] or 0,
            completion_tokens=row["completion"] or 0,
            estimated=row["estimated"],
            cost=(row["total_cost"] or Decimal(0)).quantize(COST_PLACES),
        )
        for row in rows
    ]
