from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from accounts.admin_scoping import OrganisationScopedAdmin
from chat.models import Conversation, Message, UsageReport
from chat.replies.accounting import usage_daily


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


@admin.register(Message)
class MessageAdmin(OrganisationScopedAdmin):
    organisation_field = "conversation__organisation"
    list_display = (
        "id",
        "conversation",
        "role",
        "status",
        "provider",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "first_token_ms",
        "total_ms",
        "created_at",
    )
    list_filter = ("status", "role", "provider", "model", "created_at")
    search_fields = ("content", "conversation__title", "author__username", "client_id")
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


class UsageFilter(forms.Form):
    user = forms.CharField(required=False, label="User contains")
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))


@admin.register(UsageReport)
class UsageReportAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only: tokens and cost per user and day, summed from the messages themselves."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            return HttpResponse(status=403)
        form = UsageFilter(request.GET or None)
        filters = form.cleaned_data if form.is_valid() else {}
        rows = usage_daily(
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
            "totals": {
                "replies": sum(r.replies for r in rows),
                "prompt_tokens": sum(r.prompt_tokens for r in rows),
                "completion_tokens": sum(r.completion_tokens for r in rows),
                "cost": sum((r.cost for r in rows), start=0),
            },
        }
        return TemplateResponse(request, "admin/chat/usage_report.html", context)


from chat.documents import admin as _documents_admin  # noqa: E402, F401 - registers it
