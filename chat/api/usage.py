"""Reads of token and cost usage for the API, from accounts' counters (accounts/quotas/counters.py).

Counters hold what is charged: settled usage plus the reserved worst case of replies still
running, so a total can drop a little when those replies finish.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Sum
from django.utils import timezone

from accounts.models import Budget, Organisation, Period, UsageCounter, User
from accounts.quotas import period_start


def _totals(row: UsageCounter | None) -> dict[str, Any]:
    if row is None:
        return {"tokens": 0, "cost": Decimal(0), "requests": 0}
    return {"tokens": row.tokens, "cost": row.cost, "requests": row.requests}


def usage_summary(*, organisation: Organisation, user: User | None, days: int) -> dict[str, Any]:
    """Today, this month and the last `days` days of one member (or, with user=None, of the
    whole organisation), with the budgets that apply."""
    today = timezone.now().date()
    counters = UsageCounter.objects.filter(organisation=organisation)
    counters = (
        counters.filter(user=user) if user is not None else counters.filter(user__isnull=True)
    )
    daily = {
        row.start: row
        for row in counters.filter(period=Period.DAY, start__gt=today - timedelta(days=days))
    }
    month = counters.filter(period=Period.MONTH, start=period_start(Period.MONTH, today)).first()
    budgets = Budget.objects.filter(organisation=organisation)
    budgets = budgets.filter(user=user) | budgets.filter(user__isnull=True) if user else budgets
    return {
        "organisation": organisation.pk,
        "user": user.pk if user is not None else None,
        "today": _totals(daily.get(today)),
        "month": _totals(month),
        "days": [
            {"day": day, **_totals(daily.get(day))}
            for day in (today - timedelta(days=n) for n in range(days))
        ],
        "budgets": [
            {
                "scope": "user" if b.user_id is not None else "organisation",
                "period": b.period,
                "max_tokens": b.max_tokens,
                "max_cost": b.max_cost,
            }
            for b in budgets.order_by("period", "user_id")
        ],
    }


def usage_by_member(*, organisation: Organisation) -> list[dict[str, Any]]:
    """This month's charged usage of each member of an organisation, heaviest first."""
    start = period_start(Period.MONTH, timezone.now().date())
    rows = (
        UsageCounter.objects.filter(
            organisation=organisation, user__isnull=False, period=Period.MONTH, start=start
        )
        .values("user_id", "user__username")
        .annotate(
            total_tokens=Sum("tokens"), total_cost=Sum("cost"), total_requests=Sum("requests")
        )
        .order_by("-total_tokens", "user__username")
    )
    return [
        {
            "user": row["user_id"],
            "username": row["user__username"],
            "tokens": row["total_tokens"] or 0,
            "cost": row["total_cost"] or Decimal(0),
            "requests": row["total_requests"] or 0,
        }
        for row in rows
    ]
