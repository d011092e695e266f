"""The reply cache in the admin: entries (with purges), hit rate and savings per day, the
replies served from the cache, and each organisation's cache policy.

Operators (and organisation admins) see and purge their own organisations' entries; purging
everything is for superusers. Every removal goes through entries_purge, so the Redis keys
go with the rows.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.db.models import OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from accounts.admin_scoping import (
    OPERATOR_ROLES,
    OrganisationListFilter,
    OrganisationScopedAdmin,
    ReadOnlyScopedAdmin,
)
from accounts.models import Membership
from llm.cache.entries import entries_purge
from llm.cache_models import CacheEntry, CacheHit, CachePolicy, CacheStat

SUMMARY_DAYS = 7


def _rate(hits: int, lookups: int) -> str:
    return f"{hits / lookups:.0%}" if lookups else "—"


@admin.register(CacheEntry)
class CacheEntryAdmin(OrganisationScopedAdmin):
    delete_roles = OPERATOR_ROLES
    list_display = (
        "short_question",
        "organisation",
        "kind",
        "hits",
        "saved_cost",
        "semantic",
        "model",
        "last_used_at",
        "expires_at",
    )
    list_filter = ("kind", ("organisation", OrganisationListFilter), "alias")
    list_select_related = ("organisation",)
    search_fields = ("question", "answer", "namespace")
    readonly_fields = [f.name for f in CacheEntry._meta.fields if f.name != "embedding"]
    actions = ["purge_organisations"]
    change_list_template = "admin/llm/cacheentry/change_list.html"

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False  # entries come from replies and cache_warm

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="question")
    def short_question(self, entry: CacheEntry) -> str:
        return entry.question if len(entry.question) <= 80 else entry.question[:79] + "…"

    @admin.display(description="semantic", boolean=True)
    def semantic(self, entry: CacheEntry) -> bool:
        return bool(entry.scope)

    def delete_model(self, request: HttpRequest, obj: CacheEntry) -> None:
        entries_purge(entries=CacheEntry.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[CacheEntry]) -> None:
        entries_purge(entries=queryset)

    @admin.action(description="Purge the whole cache of the selected entries' organisations")
    def purge_organisations(self, request: HttpRequest, queryset: QuerySet[CacheEntry]) -> None:
        if not self.has_delete_permission(request):
            self.message_user(request, "You may not purge entries.", messages.ERROR)
            return
        removed = 0
        for namespace in set(queryset.values_list("namespace", flat=True)):
            scoped = self.get_queryset(request).filter(namespace=namespace)
            removed += entries_purge(entries=scoped)
        self.message_user(request, f"Removed {removed} cache entries.", messages.SUCCESS)

    def get_urls(self) -> list[URLPattern]:
        purge_all = path(
            "purge-all/",
            self.admin_site.admin_view(self.purge_all_view),
            name="llm_cacheentry_purge_all",
        )
        return [purge_all, *super().get_urls()]

    def purge_all_view(self, request: HttpRequest) -> HttpResponse:
        """Superusers only: every organisation's entries, after a confirmation."""
        if not (request.user.is_active and request.user.is_superuser):
            return HttpResponse(status=403)
        if request.method == "POST":
            removed = entries_purge(everything=True)
            self.message_user(request, f"Removed all {removed} cache entries.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:llm_cacheentry_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Purge the whole reply cache?",
            "opts": self.model._meta,
            "count": CacheEntry.objects.count(),
        }
        return TemplateResponse(request, "admin/llm/cacheentry/purge_all.html", context)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return super().changelist_view(
            request, {**(extra_context or {}), "cache_summary": self.summary(request)}
        )

    def summary(self, request: HttpRequest) -> dict[str, Any]:
        """Entries, hit rate and savings over the last days, within what this user sees."""
        entries = self.get_queryset(request)
        stats = CacheStat.objects.filter(day__gte=timezone.now().date() - timedelta(days=6))
        if not (request.user.is_active and request.user.is_superuser):
            stats = stats.filter(organisation_id__in=self.organisation_ids(request))
        totals = stats.aggregate(
            lookups=Sum("lookups"),
            exact=Sum("exact_hits"),
            semantic=Sum("semantic_hits"),
            saved=Sum("saved_cost"),
            tokens=Sum("saved_tokens"),
        )
        lookups = totals["lookups"] or 0
        hits = (totals["exact"] or 0) + (totals["semantic"] or 0)
        return {
            "days": SUMMARY_DAYS,
            "entries": entries.count(),
            "lookups": lookups,
            "hits": hits,
            "exact_hits": totals["exact"] or 0,
            "semantic_hits": totals["semantic"] or 0,
            "hit_rate": _rate(hits, lookups),
            "saved_cost": totals["saved"] or Decimal(0),
            "saved_tokens": totals["tokens"] or 0,
            "can_purge_all": bool(request.user.is_active and request.user.is_superuser),
        }


@admin.register(CacheStat)
class CacheStatAdmin(ReadOnlyScopedAdmin):
    list_display = (
        "day",
        "namespace",
        "organisation",
        "lookups",
        "exact_hits",
        "semantic_hits",
        "hit_rate_shown",
        "stores",
        "saved_cost",
        "saved_tokens",
    )
    list_filter = (("organisation", OrganisationListFilter),)
    list_select_related = ("organisation",)
    date_hierarchy = "day"

    @admin.display(description="hit rate")
    def hit_rate_shown(self, stat: CacheStat) -> str:
        return _rate(stat.hits, stat.lookups)


@admin.register(CacheHit)
class CacheHitAdmin(ReadOnlyScopedAdmin):
    list_display = (
        "created_at",
        "message",
        "organisation",
        "kind",
        "similarity",
        "saved_cost",
        "saved_tokens",
        "entry",
    )
    list_filter = ("kind", ("organisation", OrganisationListFilter))
    list_select_related = ("organisation", "entry", "message")
    raw_id_fields = ("message", "entry")


def _recent_sum(field: str) -> Coalesce:
    """The organisation's total of a CacheStat counter over the last SUMMARY_DAYS days."""
    since = timezone.now().date() - timedelta(days=SUMMARY_DAYS - 1)
    per_organisation = (
        CacheStat.objects.filter(organisation_id=OuterRef("organisation_id"), day__gte=since)
        .values("organisation_id")
        .annotate(total=Sum(field))
        .values("total")
    )
    return Coalesce(Subquery(per_organisation), 0)


@admin.register(CachePolicy)
class CachePolicyAdmin(OrganisationScopedAdmin):
    """Per organisation: its cache settings (semantic matching on or off, its threshold...)
    beside how its lookups were answered over the last days, exact vs semantic."""

    change_roles = frozenset({Membership.Role.ADMIN})
    list_display = (
        "organisation",
        "enabled",
        "semantic_enabled",
        "semantic_threshold",
        "lookups_recent",
        "exact_hits_recent",
        "semantic_hits_recent",
        "cache_sampled",
        "semantic_mid_conversation",
        "ttl_seconds",
        "max_entries",
    )
    list_select_related = ("organisation",)
    actions = ["purge_caches"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[CachePolicy]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                lookups_recent=_recent_sum("lookups"),
                exact_recent=_recent_sum("exact_hits"),
                semantic_recent=_recent_sum("semantic_hits"),
            )
        )

    @admin.display(description=f"lookups ({SUMMARY_DAYS} days)", ordering="lookups_recent")
    def lookups_recent(self, policy: Any) -> int:
        return int(policy.lookups_recent)

    @admin.display(description=f"exact hits ({SUMMARY_DAYS} days)", ordering="exact_recent")
    def exact_hits_recent(self, policy: Any) -> int:
        return int(policy.exact_recent)

    @admin.display(description=f"semantic hits ({SUMMARY_DAYS} days)", ordering="semantic_recent")
    def semantic_hits_recent(self, policy: Any) -> int:
        return int(policy.semantic_recent)

    @admin.action(description="Purge the cache of the selected organisations")
    def purge_caches(self, request: HttpRequest, queryset: QuerySet[CachePolicy]) -> None:
        removed = sum(entries_purge(organisation_id=policy.organisation_id) for policy in queryset)
        self.message_user(request, f"Removed {removed} cache entries.", messages.SUCCESS)
