"""Budget rules, periods and worst-case estimates: what a reservation is checked against."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal

from django.conf import settings

from accounts.models import Budget, Period
from core.cache import cached_forget, cached_read
from core.errors import ParleyError
from core.observability import metrics

BUDGETS_CACHE_KEY = "quota:budgets:{organisation_id}"
BUDGETS_CACHE_SECONDS = 300
PERIOD_ADJECTIVE = {"day": "daily", "month": "monthly"}
MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class TokenPrices:
    """The most a reply may pay per million prompt and completion tokens (the highest prices
    among the deployments that may answer it)."""

    input_per_million: Decimal = Decimal(0)
    output_per_million: Decimal = Decimal(0)


@dataclass(frozen=True)
class BudgetRule:
    user_id: int | None
    period: str
    max_tokens: int | None
    max_cost: Decimal | None


class QuotaExceeded(ParleyError):
    """Over a budget: not retryable until the period resets (`resets_at`, `retry_after`)."""

    def __init__(self, *, rule: BudgetRule, resets_at: datetime, now: datetime) -> None:
        whose = "your" if rule.user_id is not None else "your organisation's"
        super().__init__(
            "quota_exceeded",
            f"This would pass {whose} {PERIOD_ADJECTIVE[rule.period]} budget. "
            f"It resets at {resets_at:%Y-%m-%d %H:%M} UTC.",
            extra={
                "resets_at": resets_at.isoformat(),
                "retry_after": max(1, math.ceil((resets_at - now).total_seconds())),
            },
        )
        self.rule = rule
        self.resets_at = resets_at
        metrics.REFUSALS.labels("quota_exceeded", rule.period).inc()


# --- periods -----------------------------------------------------------------------------


def period_start(period: str, day: date) -> date:
    return day if period == Period.DAY else day.replace(day=1)


def period_reset(period: str, day: date) -> datetime:
    """When the period holding `day` ends (UTC midnight)."""
    if period == Period.DAY:
        nxt = date.fromordinal(day.toordinal() + 1)
    else:
        nxt = date(day.year + (day.month == 12), day.month % 12 + 1, 1)
    return datetime.combine(nxt, time.min, tzinfo=UTC)


def _today(now: datetime) -> date:
    return now.astimezone(UTC).date()


# --- budget rules ------------------------------------------------------------------------


def budgets_for(*, organisation_id: int) -> list[BudgetRule]:
    """An organisation's budget rules, from the cache when it has them (and can be reached)."""
    return cached_read(
        BUDGETS_CACHE_KEY.format(organisation_id=organisation_id),
        lambda: [
            BudgetRule(b.user_id, b.period, b.max_tokens, b.max_cost)
            for b in Budget.objects.filter(organisation_id=organisation_id)
        ],
        timeout=BUDGETS_CACHE_SECONDS,
    )


def budgets_applying(
    *, user_id: int, organisation_id: int, cached: list[BudgetRule] | None = None
) -> list[BudgetRule]:
    """The budget rules a reservation of this user's is checked against (`cached`: the
    organisation's, as the cache held them a moment ago)."""
    rules = budgets_for(organisation_id=organisation_id) if cached is None else cached
    return [r for r in rules if r.user_id is None or r.user_id == user_id]


def budget_applies(*, user_id: int, organisation_id: int) -> bool:
    """Whether a reservation of this user's may be refused (quota_reserve): only a budget rule
    refuses one."""
    return bool(budgets_applying(user_id=user_id, organisation_id=organisation_id))


def budgets_forget(*, organisation_id: int) -> None:
    """Called when a budget is saved or deleted (accounts.signals)."""
    cached_forget(BUDGETS_CACHE_KEY.format(organisation_id=organisation_id))


# --- estimates ---------------------------------------------------------------------------


def tokens_estimate(chars: int) -> int:
    """A deliberately high token count for text: ~3 characters a token (English is ~4)."""
    return math.ceil(chars / 3)


def cost_of(tokens: int) -> Decimal:
    return Decimal(tokens) * settings.QUOTA_COST_PER_TOKEN


def cost_bound(*, prompt_tokens: int, max_tokens: int, prices: TokenPrices | None) -> Decimal:
    """The most a reply can cost: at QUOTA_COST_PER_TOKEN, or at the deployments' own prices
    if those come to more."""
    flat = cost_of(prompt_tokens + max_tokens)
    if prices is None:
        return flat
    priced = (
        Decimal(prompt_tokens) * prices.input_per_million
        + Decimal(max_tokens) * prices.output_per_million
    ) / MILLION
    return max(flat, priced)
