from __future__ import annotations

from django.contrib import admin

from accounts.admin_scoping import OrganisationScopedAdmin
from chat.models import Conversation, Message


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
