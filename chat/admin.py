from __future__ import annotations

from django.contrib import admin

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


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("id", "title", "owner", "created_at", "updated_at")
    list_select_related = ("owner",)
    search_fields = ("title", "owner__username", "messages__content")
    list_filter = ("created_at",)
    date_hierarchy = "created_at"
    raw_id_fields = ("owner",)
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = (
        "id",
        "conversation",
        "role",
        "status",
        "provider",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "first_token_ms",
        "total_ms",
        "created_at",
    )
    list_filter = ("status", "role", "provider", "model", "created_at")
    search_fields = ("content", "conversation__title", "author__username", "client_id")
    list_select_related = ("conversation",)
    raw_id_fields = ("conversation", "author", "reply_to")
    readonly_fields = ("created_at", "started_at", "first_token_at", "finished_at", "seq")
    date_hierarchy = "created_at"
