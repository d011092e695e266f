from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from accounts.admin_scoping import OrganisationScopedAdmin, ReadOnlyScopedAdmin, _is_superuser
from accounts.usage import UsageTotals, usage_daily
from chat.models import Conversation, Message, UsageReport


class MessageInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Message
    fields = ("role", "status", "content", "provider", "model", "completion_tokens", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_view_permission(self, request: object, obj: object = None) -> bool:
        return True  # whoever may see the conversation (ConversationAdmin decides) sees these


@admin.register(Conversation)
class ConversationAdmin(OrganisationScopedAdmin):
    # Operators of an organisation read its conversations here (only here); they edit nothing.
    list_display = ("id", "title", "owner", "organisation", "created_at", "updated_at")
    list_select_related = ("owner", "organisation")
    search_fields = ("title", "owner__username", "messages__content")
    list_filter = ("created_at",)
    date_hierarchy = "created_at"
    raw_id_fields = ("owner", "organisation")
    inlines = [MessageInline]


class SetValuesFilter(admin.AllValuesFieldListFilter):
    """A column's values to filter on, without the empty one (a link with no name)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lookup_choices = self.lookup_choices.exclude(**{self.field_path: ""})


@admin.register(Message)
class MessageAdmin(OrganisationScopedAdmin):
    organisation_field = "conversation__organisation"
    # Trimmed to fit 1366 px; the error is a column, so failed replies read without opening
    # each (filter on status "failed").
    list_display = (
        "id",
        "conversation_title",
        "status",
        "model",
        "error",
        "tokens",
        "cost",
        "first_token_ms",
        "created_at",
    )
    list_filter = (
        "status",
        "role",
        ("error_code", SetValuesFilter),
        ("provider", SetValuesFilter),
        ("model", SetValuesFilter),
        "created_at",
    )
    search_fields = (
        "content",
        "conversation__title",
        "author__username",
        "client_id",
        "error_message",
    )
    list_select_related = ("conversation",)
    raw_id_fields = ("conversation", "author", "reply_to")
    readonly_fields = (
        "created_at",
        "started_at",
        "first_token_at",
        "finished_at",
        "heartbeat_at",
        "seq",
        "routing",
    )
    date_hierarchy = "created_at"

    class Media:
        css = {"all": ("parley_admin/admin.css",)}

    @admin.display(description="conversation", ordering="conversation__title")
    def conversation_title(self, message: Message) -> str:
        title = message.conversation.title
        return title if len(title) <= 30 else title[:29] + "…"

    @admin.display(description="tokens")
    def tokens(self, message: Message) -> str:
        if message.prompt_tokens is None and message.completion_tokens is None:
            return "—"
        return f"{message.prompt_tokens or 0} + {message.completion_tokens or 0}"

    @admin.display(description="error", ordering="error_code")
    def error(self, message: Message) -> str:
        if not message.error_code:
            return ""
        detail = message.error_message
        detail = detail if len(detail) <= 160 else detail[:159] + "…"
        return f"{message.error_code}: {detail}" if detail else message.error_code


class UsageFilter(forms.Form):
    user = forms.CharField(required=False, label="User contains")
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))


@admin.register(UsageReport)
class UsageReportAdmin(ReadOnlyScopedAdmin):
    """Read-only: charged tokens and cost per day, organisation and user, from the usage
    ledger (accounts/usage.py), scoped to the operator's organisations."""

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            return HttpResponse(status=403)
        form = UsageFilter(request.GET or None)
        filters = form.cleaned_data if form.is_valid() else {}
        rows = usage_daily(
            organisation_ids=None if _is_superuser(request) else self.organisation_ids(request),
            since=filters.get("since"),
            until=filters.get("until"),
            username=filters.get("user") or "",
        )
        context = {
            **self.admin_site.each_context(request),
            "title": "Usage per user and day",
            "opts": self.model._meta,
            "form": form,
            "rows": rows,
            "totals": UsageTotals(
                replies=sum(r.totals.replies for r in rows),
                in_flight=sum(r.totals.in_flight for r in rows),
                prompt_tokens=sum(r.totals.prompt_tokens for r in rows),
                completion_tokens=sum(r.totals.completion_tokens for r in rows),
                tokens=sum(r.totals.tokens for r in rows),
                cost=sum((r.totals.cost for r in rows), start=Decimal(0)),
                estimated=sum(r.totals.estimated for r in rows),
            ),
        }
        return TemplateResponse(request, "admin/chat/usage_report.html", context)


# The admin's front page links the dashboard, the usage report and provider health.
admin.site.index_template = "admin/parley_index.html"

from chat.documents import admin as _documents_admin  # noqa: E402, F401 - registers it
