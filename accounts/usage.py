"""Reads of usage from the ledger alone: the report per user and day, the operators' dashboard
figures and the monthly export.

One source for every figure: a ledger row is charged what UsageCounter holds for it (the
reserved worst case while its reply runs, what it used once settled, nothing once released),
and it outlives its message (a deleted conversation keeps its spend), so the counters, the
report, the dashboard and the export agree by construction. Scoped by organisation ids
(None: every organisation, for superusers).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Protocol

from django.db.models import Case, Count, F, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Coalesce, TruncDate

from accounts.models import Organisation, UsageLedger

COST_PLACES = Decimal("0.00000001")
RESERVED = UsageLedger.State.RESERVED
RELEASED = UsageLedger.State.RELEASED

# What a row is charged: its worst case while reserved, what it used after.
CHARGED_TOKENS = Case(When(state=RESERVED, then=F("reserved_tokens")), default=F("used_tokens"))
CHARGED_COST = Case(When(state=RESERVED, then=F("reserved_cost")), default=F("cost"))
ZERO_COST = Value(Decimal(0))


def ledger_scoped(
    *,
    organisation_ids: Collection[int] | None,
    since: date | None = None,
    until: date | None = None,
) -> QuerySet[UsageLedger]:
    """Ledger rows of these organisations (None: all) created between two UTC days, inclusive."""
    rows = UsageLedger.objects.all()
    if organisation_ids is not None:
        rows = rows.filter(organisation_id__in=list(organisation_ids))
    if since is not None:
        rows = rows.filter(created_at__date__gte=since)
    if until is not None:
        rows = rows.filter(created_at__date__lte=until)
    return rows


def _sums() -> dict[str, Any]:
    return {
        "replies": Count("id", filter=~Q(state=RELEASED)),
        "in_flight": Count("id", filter=Q(state=RESERVED)),
        "prompt": Coalesce(Sum("prompt_tokens"), 0),
        "completion": Coalesce(Sum("completion_tokens"), 0),
        "tokens": Coalesce(Sum(CHARGED_TOKENS), 0),
        "charged_cost": Coalesce(Sum(CHARGED_COST), ZERO_COST),
        "failed": Count("id", filter=Q(outcome="failed")),
        "estimated": Count("id", filter=Q(tokens_estimated=True, state=UsageLedger.State.SETTLED)),
    }


def _cost(value: Decimal | None) -> Decimal:
    return (value or Decimal(0)).quantize(COST_PLACES)


@dataclass(frozen=True)
class UsageTotals:
    replies: int = 0  # every reply charged (reserved or settled), as the counters' requests
    in_flight: int = 0  # still reserved: charged their worst case until they settle
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens: int = 0  # charged, = the counters' tokens
    cost: Decimal = Decimal(0)
    failed: int = 0
    estimated: int = 0

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> UsageTotals:
        return cls(
            replies=row["replies"],
            in_flight=row["in_flight"],
            prompt_tokens=row["prompt"],
            completion_tokens=row["completion"],
            tokens=row["tokens"],
            cost=_cost(row["charged_cost"]),
            failed=row["failed"],
            estimated=row["estimated"],
        )


def usage_totals(rows: QuerySet[UsageLedger]) -> UsageTotals:
    return UsageTotals.from_row(rows.aggregate(**_sums()))


@dataclass(frozen=True)
class UsageDay:
    day: date
    organisation_id: int
    organisation: str
    user_id: int | None
    username: str
    totals: UsageTotals


def usage_daily(
    *,
    organisation_ids: Collection[int] | None = None,
    since: date | None = None,
    until: date | None = None,
    username: str = "",
) -> list[UsageDay]:
    """Charged usage per (UTC) day, organisation and user, newest day first: the same figures
    as the day counters (UsageCounter), deleted conversations included."""
    rows = ledger_scoped(organisation_ids=organisation_ids, since=since, until=until)
    if username:
        rows = rows.filter(user__username__icontains=username)
    grouped = (
        rows.annotate(day=TruncDate("created_at"))
        .values("day", "organisation_id", "organisation__name", "user_id", "user__username")
        .annotate(**_sums())
        .order_by("-day", "organisation__name", "user__username")
    )
    return [
        UsageDay(
            day=row["day"],
            organisation_id=row["organisation_id"],
            organisation=row["organisation__name"],
            user_id=row["user_id"],
            username=row["user__username"] or "(deleted user)",
            totals=UsageTotals.from_row(row),
        )
        for row in grouped
        if row["replies"] or row["tokens"]
    ]


# --- the dashboard's series --------------------------------------------------------------


def percentile(values: list[int], fraction: float) -> int | None:
    """The nearest-rank percentile of `values` (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass
class UsageSeries:
    """Figures per key (a day, or an organisation/model pair)."""

    totals: dict[Any, UsageTotals] = field(default_factory=dict)
    first_token_p50: dict[Any, int | None] = field(default_factory=dict)
    first_token_p95: dict[Any, int | None] = field(default_factory=dict)


def _first_token_percentiles(
    rows: QuerySet[UsageLedger], keys: tuple[str, ...], series: UsageSeries, key_of: Any
) -> None:
    samples: dict[Any, list[int]] = defaultdict(list)
    timed = rows.filter(first_token_ms__isnull=False).values_list(*keys, "first_token_ms")
    for *key_parts, first_token_ms in timed:
        samples[key_of(key_parts)].append(first_token_ms)
    for key in series.totals:
        series.first_token_p50[key] = percentile(samples.get(key, []), 0.50)
        series.first_token_p95[key] = percentile(samples.get(key, []), 0.95)


def usage_by_day(rows: QuerySet[UsageLedger]) -> UsageSeries:
    """Per UTC day, oldest first."""
    series = UsageSeries()
    with_day = rows.annotate(day=TruncDate("created_at"))
    for row in with_day.values("day").annotate(**_sums()).order_by("day"):
        series.totals[row["day"]] = UsageTotals.from_row(row)
    _first_token_percentiles(with_day, ("day",), series, lambda parts: parts[0])
    return series


def usage_by_organisation_model(rows: QuerySet[UsageLedger]) -> UsageSeries:
    """Per (organisation name, model), most tokens first. A reply still running or released
    before it ran has no model yet: "(pending)"."""
    series = UsageSeries()
    grouped = rows.values("organisation__name", "model").annotate(**_sums()).order_by("-tokens")
    for row in grouped:
        key = (row["organisation__name"], row["model"] or "(pending)")
        series.totals[key] = UsageTotals.from_row(row)
    _first_token_percentiles(
        rows,
        ("organisation__name", "model"),
        series,
        lambda parts: (parts[0], parts[1] or "(pending)"),
    )
    return series


# --- the monthly export ------------------------------------------------------------------


@dataclass(frozen=True)
class ExportRow:
    day: date
    username: str
    model: str
    totals: UsageTotals


def usage_month_rows(*, organisation_id: int, month: date) -> Iterable[ExportRow]:
    """One organisation's charged usage in the calendar month holding `month`, per day, user
    and model (the monthly export)."""
    first = month.replace(day=1)
    after = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    rows = UsageLedger.objects.filter(
        organisation_id=organisation_id, created_at__date__gte=first, created_at__date__lt=after
    )
    grouped = (
        rows.annotate(day=TruncDate("created_at"))
        .values("day", "user__username", "model")
        .annotate(**_sums())
        .order_by("day", "user__username", "model")
    )
    for row in grouped:
        if row["replies"] or row["tokens"]:
            yield ExportRow(
                day=row["day"],
                username=row["user__username"] or "(deleted user)",
                model=row["model"] or "(pending)",
                totals=UsageTotals.from_row(row),
            )


class Writable(Protocol):
    def write(self, text: str, /) -> Any: ...


EXPORT_COLUMNS = (
    "organisation",
    "day",
    "user",
    "model",
    "messages",
    "prompt_tokens",
    "completion_tokens",
    "tokens",
    "cost",
)


def month_parse(text: str) -> date:
    """ "2026-03" → the first day of that month; ValueError otherwise."""
    year, _, month = text.partition("-")
    if len(year) != 4 or len(month) != 2:
        raise ValueError(f"{text!r}: use YYYY-MM")
    return date(int(year), int(month), 1)


def usage_month_csv(*, organisations: Sequence[Organisation], month: date, out: Writable) -> None:
    """The monthly usage export: one CSV row per organisation, day, user and model, with the
    charged tokens and cost (what the counters and budgets hold; messages are replies)."""
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    for organisation in organisations:
        for row in usage_month_rows(organisation_id=organisation.pk, month=month):
            writer.writerow(
                [
                    organisation.slug,
                    row.day.isoformat(),
                    row.username,
                    row.model,
                    row.totals.replies,
                    row.totals.prompt_tokens,
                    row.totals.completion_tokens,
                    row.totals.tokens,
                    f"{row.totals.cost:.8f}",
                ]
            )
