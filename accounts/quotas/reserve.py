"""A reply's worst case reserved before the provider call, in the caller's transaction."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import UsageLedger
from accounts.quotas.budgets import (
    QuotaExceeded,
    TokenPrices,
    _today,
    budgets_applying,
    cost_bound,
    period_reset,
)
from accounts.quotas.counters import _COST_PLACES, _counters_charge
from core.rows import row_insert


def quota_reserve(
    *,
    user_id: int,
    organisation_id: int,
    prompt_tokens: int,
    max_tokens: int | None = None,
    prices: TokenPrices | None = None,
    now: datetime | None = None,
    ledger_saved: bool = True,
) -> UsageLedger:
    """Charge a reply's worst case (prompt + max_tokens, and their cost at `prices`) against
    every budget that applies, or raise QuotaExceeded and charge nothing. Returns the ledger
    row (state `reserved`); attach the reply to it with `reservation_attach` once the reply
    row exists. With `ledger_saved=False` the row is saved by `reservation_attach`, message
    and all, in one INSERT (a send's hot path): the caller must attach it in the same
    transaction.

    The counters are charged first and checked after, in one statement that holds their locks
    until the commit: a refusal raises, and the caller's transaction, rolled back, takes the
    charge back with it (nothing may be saved then anyway)."""
    now = now or timezone.now()
    day = _today(now)
    completion = settings.LLM_MAX_TOKENS if max_tokens is None else max_tokens
    worst_tokens = prompt_tokens + completion
    worst_cost = cost_bound(prompt_tokens=prompt_tokens, max_tokens=completion, prices=prices)
    rules = budgets_applying(user_id=user_id, organisation_id=organisation_id)
    entry = UsageLedger(
        organisation_id=organisation_id,
        user_id=user_id,
        reserved_prompt_tokens=prompt_tokens,
        reserved_tokens=worst_tokens,
        reserved_cost=worst_cost,
        created_at=now,
    )
    # No savepoint: a refusal aborts the caller's transaction anyway (nothing may be saved).
    with transaction.atomic(savepoint=False):
        counters = _counters_charge(
            organisation_id=organisation_id,
            user_id=user_id,
            day=day,
            tokens=worst_tokens,
            cost=worst_cost,
            requests=1,
        )
        for rule in rules:
            tokens, cost = counters[(rule.user_id, rule.period)]
            before = (cost - worst_cost).quantize(_COST_PLACES)  # the charge is stored rounded
            over_tokens = rule.max_tokens is not None and tokens > rule.max_tokens
            over_cost = rule.max_cost is not None and (
                before >= rule.max_cost or cost > rule.max_cost
            )
            if over_tokens or over_cost:
                raise QuotaExceeded(rule=rule, resets_at=period_reset(rule.period, day), now=now)
        if ledger_saved:
            row_insert(entry)
        return entry


def reservation_attach(*, reservation: UsageLedger, message_id: int) -> None:
    """Attach the reply to its reservation's ledger row; a row reserved with
    `ledger_saved=False` is written now, in one hand-written INSERT (core/rows.py: the ORM's
    cost more CPU than the database spends on it)."""
    if reservation.pk is None:
        reservation.message_id = message_id
        row_insert(reservation)
        return
    UsageLedger.objects.filter(pk=reservation.pk).update(message_id=message_id)
