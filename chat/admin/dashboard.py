"""The operators' dashboard (/admin/dashboard/): the business at a glance.

Staff only (the admin's own login), scoped like every admin page: a superuser sees every
organisation, an operator or admin of organisations only theirs (accounts/admin_scoping.py).
Usage figures (messages, tokens, cost, failures, time to first token) come from the usage
ledger alone (accounts/usage.py), so they equal the usage report and the counters and keep
deleted conversations; cache savings from the reply cache's day statistics; live streams and
the failed replies' errors from the replies themselves (chat/replies/activity.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.safestring import SafeString

from accounts.admin_scoping import _is_superuser, admin_roles
from accounts.models import Organisation
from accounts.usage import (
    COST_PLACES,
    UsageTotals,
    ledger_scoped,
    percentile,
    usage_by_day,
    usage_by_organisation_model,
    usage_totals,
)
from chat.admin import charts
from chat.replies.activity import replies_failed, replies_live
from llm.cache_models import CacheStat

PERIODS = [(7, "7 days"), (14, "14 days"), (30, "30 days"), (90, "90 days")]
LIST_LIMIT = 50


class DashboardFilter(forms.Form):
    days = forms.TypedChoiceField(choices=PERIODS, coerce=int, initial=14, required=False)
    organisation = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)

    def __init__(self, *args: Any, organisations: list[Organisation], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["organisation"]
        assert isinstance(field, forms.TypedChoiceField)
        field.choices = [("", "All my organisations"), *((o.pk, str(o)) for o in organisations)]


@dataclass(frozen=True)
class CacheSavings:
    hits: int = 0
    saved_tokens: int = 0
    saved_cost: Decimal = Decimal(0)


def dashboard_scope(request: HttpRequest) -> set[int] | None:
    """The organisations the dashboard may show: None (all) for a superuser, else those the
    user operates; nobody else gets the page."""
    if _is_superuser(request):
        return None
    operated = set(admin_roles(request))
    if not (request.user.is_staff and operated):
        raise PermissionDenied("The dashboard is for operators of an organisation.")
    return operated


def cache_savings_by_day(
    *, organisation_ids: set[int] | None, since: date, until: date
) -> dict[date, CacheSavings]:
    stats = CacheStat.objects.filter(day__gte=since, day__lte=until)
    if organisation_ids is not None:
        stats = stats.filter(organisation_id__in=organisation_ids)
    rows = stats.values("day").annotate(
        exact=Sum("exact_hits"),
        semantic=Sum("semantic_hits"),
        tokens=Sum("saved_tokens"),
        cost=Sum("saved_cost"),
    )
    return {
        row["day"]: CacheSavings(
            hits=(row["exact"] or 0) + (row["semantic"] or 0),
            saved_tokens=row["tokens"] or 0,
            saved_cost=row["cost"] or Decimal(0),
        )
        for row in rows
    }


def _days(since: date, until: date) -> list[date]:
    return [since + timedelta(days=n) for n in range((until - since).days + 1)]


def dashboard(request: HttpRequest) -> HttpResponse:
    scope = dashboard_scope(request)
    organisations = list(
        Organisation.objects.order_by("name", "pk")
        if scope is None
        else Organisation.objects.filter(pk__in=scope).order_by("name", "pk")
    )
    form = DashboardFilter(request.GET or None, organisations=organisations)
    chosen = form.cleaned_data if form.is_valid() else {}
    days = chosen.get("days") or 14
    organisation_ids = scope
    if chosen.get("organisation") is not None:
        organisation_ids = {chosen["organisation"]}
    until = timezone.now().date()
    since = until - timedelta(days=days - 1)

    rows = ledger_scoped(organisation_ids=organisation_ids, since=since, until=until)
    totals = usage_totals(rows)
    by_day = usage_by_day(rows)
    by_model = usage_by_organisation_model(rows)
    savings = cache_savings_by_day(organisation_ids=organisation_ids, since=since, until=until)
    first_tokens = [
        ms
        for ms in rows.filter(first_token_ms__isnull=False).values_list("first_token_ms", flat=True)
        if ms is not None
    ]
    live = replies_live(organisation_ids=organisation_ids)
    failed = replies_failed(organisation_ids=organisation_ids, since=since, until=until)

    day_list = _days(since, until)
    labels = [d.strftime("%m-%d") for d in day_list]
    empty = UsageTotals()

    def series(pick: Any) -> list[float]:
        return [float(pick(by_day.totals.get(d, empty))) for d in day_list]

    cache_total = CacheSavings(
        hits=sum(s.hits for s in savings.values()),
        saved_tokens=sum(s.saved_tokens for s in savings.values()),
        saved_cost=sum((s.saved_cost for s in savings.values()), start=Decimal(0)).quantize(
            COST_PLACES
        ),
    )
    day_charts: list[tuple[str, SafeString]] = [
        (
            "Messages (replies) per day",
            charts.bar_chart(
                title="Replies per day", labels=labels, values=series(lambda t: t.replies)
            ),
        ),
        (
            "Tokens per day",
            charts.bar_chart(
                title="Tokens charged per day", labels=labels, values=series(lambda t: t.tokens)
            ),
        ),
        (
            "Cost per day",
            charts.bar_chart(
                title="Cost per day",
                labels=labels,
                values=series(lambda t: t.cost),
                fmt=charts.money,
            ),
        ),
        (
            "Time to first token per day",
            charts.line_chart(
                title="Time to first token per day, p50 and p95",
                labels=labels,
                lines=[
                    charts.Line("p50", [by_day.first_token_p50.get(d) for d in day_list], "line-a"),
                    charts.Line("p95", [by_day.first_token_p95.get(d) for d in day_list], "line-b"),
                ],
                fmt=charts.milliseconds,
            ),
        ),
        (
            "Failed replies per day",
            charts.bar_chart(
                title="Failed replies per day", labels=labels, values=series(lambda t: t.failed)
            ),
        ),
        (
            "Cache savings per day",
            charts.bar_chart(
                title="Cost saved by the reply cache per day",
                labels=labels,
                values=[float(savings.get(d, CacheSavings()).saved_cost) for d in day_list],
                fmt=charts.money,
            ),
        ),
    ]
    model_labels = [f"{org} · {model}" for org, model in by_model.totals]
    model_totals = list(by_model.totals.values())
    model_charts = [
        (
            "Tokens per organisation and model",
            charts.hbar_chart(
                title="Tokens per organisation and model",
                labels=model_labels,
                values=[t.tokens for t in model_totals],
            ),
        ),
        (
            "Cost per organisation and model",
            charts.hbar_chart(
                title="Cost per organisation and model",
                labels=model_labels,
                values=[float(t.cost) for t in model_totals],
                fmt=charts.money,
            ),
        ),
    ]
    model_rows = [
        {
            "organisation": key[0],
            "model": key[1],
            "totals": value,
            "p50": by_model.first_token_p50.get(key),
            "p95": by_model.first_token_p95.get(key),
        }
        for key, value in by_model.totals.items()
    ]
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "form": form,
        "since": since,
        "until": until,
        "scope_names": [str(o) for o in organisations],
        "organisations": organisations,
        "totals": totals,
        "first_token_p50": percentile(first_tokens, 0.50),
        "first_token_p95": percentile(first_tokens, 0.95),
        "cache": cache_total,
        "day_charts": day_charts,
        "model_charts": model_charts,
        "model_rows": model_rows,
        "live_count": live.count(),
        "live": list(live[:LIST_LIMIT]),
        "failed_count": failed.count(),
        "failed": list(failed[:LIST_LIMIT]),
    }
    return TemplateResponse(request, "admin/chat/dashboard.html", context)
