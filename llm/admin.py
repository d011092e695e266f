"""Operators configure providers and deployments here and watch their health (usage per user
and day is chat's page, chat/admin.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from llm.breaker import CircuitBreaker, State
from llm.catalog import settings_deployments
from llm.health import Health, deployment_health, key_health
from llm.models import Deployment, FallbackChain, Provider

# Wide change lists scroll inside the page instead of being cut (chat/static/parley_admin/).
WIDE_LIST_CSS = {"all": ("parley_admin/admin.css",)}


class ProviderForm(forms.ModelForm):  # type: ignore[type-arg]
    base_url = forms.URLField(
        label="Base URL",
        required=False,
        assume_scheme="https",
        help_text=Provider._meta.get_field("base_url").help_text,
    )
    # Write-only: rendered empty every time, so a stored key never leaves the server again.
    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Stored encrypted and never shown again. Leave empty to keep the stored key.",
    )
    clear_api_key = forms.BooleanField(label="Remove the stored key", required=False)

    class Meta:
        model = Provider
        fields = (
            "name",
            "kind",
            "base_url",
            "api_key",
            "clear_api_key",
            "api_key_env",
            "connect_timeout",
            "first_token_timeout",
            "inter_token_timeout",
            "options",
            "enabled",
        )
        # The name is a slug: say so before the form refuses "House upstream".
        help_texts = {"name": "Letters, digits, hyphens and underscores, e.g. vllm-eu."}

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("api_key") and data.get("api_key_env"):
            raise forms.ValidationError(
                "Either store a key or name an environment variable, not both."
            )
        return data

    def save(self, commit: bool = True) -> Provider:
        provider: Provider = super().save(commit=False)
        key = self.cleaned_data.get("api_key") or ""
        if key:
            provider.api_key_set(key)
        elif self.cleaned_data.get("clear_api_key") or provider.api_key_env:
            provider.api_key_set("")
        if commit:
            provider.save()
        return provider


class DeploymentInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Deployment
    fields = (
        "alias",
        "model",
        "weight",
        "priority",
        "rpm_limit",
        "tpm_limit",
        "context_window",
        "enabled",
    )
    extra = 0
    show_change_link = True


@dataclass(frozen=True)
class SettingsProvider:
    """A provider the environment configures, as its read-only row on the provider list."""

    health: Health
    base_url: str
    in_use: bool  # False: admin rows serve its alias (llm/catalog.py), so this one is idle


def settings_providers() -> list[SettingsProvider]:
    taken = set(Deployment.objects.values_list("alias", flat=True))
    return [
        SettingsProvider(
            health=deployment_health(deployment),
            base_url=deployment.base_url or "",
            in_use=alias not in taken,
        )
        for alias, deployment in sorted(settings_deployments().items())
    ]


def breaker_summary(keys: list[str]) -> str:
    """ "closed" when every breaker is; else how many are open or half-open."""
    states = [key_health(key)[0].state for key in keys]
    if not states:
        return "—"
    counts = {state: states.count(state) for state in dict.fromkeys(states)}
    if set(counts) == {State.CLOSED}:
        return "closed"
    return ", ".join(f"{n} {state}" for state, n in counts.items())


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Admin-made providers, and below them (read-only) the ones the environment configures:
    both serve traffic, each with its breaker state and last error."""

    form = ProviderForm
    list_display = ("name", "kind", "base_url", "key", "deployment_count", "breakers", "enabled")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "base_url", "deployments__alias", "deployments__model")
    readonly_fields = ("key",)
    inlines = [DeploymentInline]
    change_list_template = "admin/llm/provider/change_list.html"

    class Media:
        css = WIDE_LIST_CSS

    @admin.display(description="API key")
    def key(self, provider: Provider) -> str:
        return provider.key_source

    @admin.display(description="deployments")
    def deployment_count(self, provider: Provider) -> int:
        return provider.deployments.count()

    @admin.display(description="breakers")
    def breakers(self, provider: Provider) -> str:
        return breaker_summary([d.key for d in provider.deployments.all()])

    def get_queryset(self, request: HttpRequest) -> QuerySet[Provider]:
        return super().get_queryset(request).prefetch_related("deployments")

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> Any:
        extra = {"settings_providers": settings_providers(), **(extra_context or {})}
        return super().changelist_view(request, extra)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "—"
    return timezone.localtime(datetime.fromtimestamp(timestamp, tz=UTC)).strftime(
        "%Y-%m-%d %H:%M:%S"
    )


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    # Trimmed to fit 1366 px: breaker and failures share a column.
    list_display = (
        "alias",
        "provider",
        "model",
        "weight",
        "priority",
        "enabled",
        "breaker",
        "first_token_ms",
        "last_error",
    )
    list_display_links = ("alias",)
    list_editable = ("weight", "priority", "enabled")
    list_filter = ("alias", "provider__kind", "provider", "enabled", "priority")
    list_select_related = ("provider",)
    search_fields = ("alias", "model", "provider__name")
    readonly_fields = ("health",)
    actions = ["reset_breakers"]
    fieldsets = (
        (None, {"fields": ("provider", "alias", "model", "context_window", "enabled")}),
        ("Routing", {"fields": ("weight", "priority", "rpm_limit", "tpm_limit")}),
        ("Prices (per 1M tokens)", {"fields": ("input_price", "output_price")}),
        ("Health", {"fields": ("health",)}),
    )

    class Media:
        css = WIDE_LIST_CSS

    @admin.display(description="breaker (failures in a row)")
    def breaker(self, deployment: Deployment) -> str:
        status, _ = key_health(deployment.key)
        state = str(status.state)
        if status.state == State.OPEN and status.retry_in is not None:
            state = f"open ({status.retry_in:.0f} s)"
        return f"{state} ({status.consecutive_failures})"

    @admin.display(description="last first token (ms)")
    def first_token_ms(self, deployment: Deployment) -> str:
        value = key_health(deployment.key)[1].get("last_first_token_ms")
        return "—" if value is None else str(value)

    @admin.display(description="last error")
    def last_error(self, deployment: Deployment) -> str:
        record = key_health(deployment.key)[1]
        if not record.get("last_error_at"):
            return "—"
        return f"{record.get('last_error_reason')} at {_when(record.get('last_error_at'))}"

    @admin.display(description="health")
    def health(self, deployment: Deployment) -> str:
        if deployment.pk is None:
            return "—"
        status, record = key_health(deployment.key)
        return (
            f"breaker {status.state}, {status.consecutive_failures} failures in a row; "
            f"last answer {_when(record.get('last_ok_at'))} "
            f"(first token {record.get('last_first_token_ms', '—')} ms); "
            f"last error {_when(record.get('last_error_at'))}: {record.get('last_error', '—')}"
        )

    @admin.action(description="Close the circuit breaker of the selected deployments")
    def reset_breakers(self, request: HttpRequest, queryset: QuerySet[Deployment]) -> None:
        for deployment in queryset:
            CircuitBreaker(deployment.key).reset()
        self.message_user(request, f"Reset {queryset.count()} breaker(s).", messages.SUCCESS)


@admin.register(FallbackChain)
class FallbackChainAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("alias", "fallbacks")
    search_fields = ("alias", "fallbacks")


import llm.admin_cache  # noqa: E402 - registers the reply cache admin
import llm.admin_tenants  # noqa: E402, F401 - the models an organisation may use
