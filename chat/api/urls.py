"""/api/v1/ (chat's part; accounts' ws-ticket is in accounts/api_urls.py, documents' in
chat/documents/api_urls.py). Each view lives in the module of its resource: chat/api/views/."""

from __future__ import annotations

from django.urls import path, re_path

from chat.api.views import base, conversations, messages, models, stream, usage

app_name = "chat_api"


urlpatterns = [
    path(
        "conversations",
        base.operations(conversations.ConversationListApi, conversations.ConversationCreateApi),
        name="conversations",
    ),
    path(
        "conversations/<int:conversation_id>",
        base.operations(
            conversations.ConversationDetailApi,
            conversations.ConversationRenameApi,
            conversations.ConversationDeleteApi,
        ),
        name="conversation",
    ),
    path(
        "conversations/<int:conversation_id>/export/json",
        conversations.ConversationExportJsonApi.as_view(),
        name="conversation-export-json",
    ),
    path(
        "conversations/<int:conversation_id>/export/markdown",
        conversations.ConversationExportMarkdownApi.as_view(),
        name="conversation-export-markdown",
    ),
    path(
        "conversations/<int:conversation_id>/messages",
        base.operations(messages.MessageListApi, messages.MessageSendApi),
        name="messages",
    ),
    path("messages/<int:message_id>", messages.MessageDetailApi.as_view(), name="message-detail"),
    path(
        "messages/<int:message_id>/regenerate",
        messages.MessageRegenerateApi.as_view(),
        name="message-regenerate",
    ),
    path("messages/<int:message_id>/edit", messages.MessageEditApi.as_view(), name="message-edit"),
    path(
        "messages/<int:message_id>/cancel", messages.ReplyCancelApi.as_view(), name="reply-cancel"
    ),
    path(
        "messages/<int:message_id>/stream", stream.MessageStreamApi.as_view(), name="message-stream"
    ),
    path("models", models.ModelListApi.as_view(), name="models"),
    path("usage", usage.UsageApi.as_view(), name="usage"),
    path("usage/organisation", usage.OrganisationUsageApi.as_view(), name="usage-organisation"),
    # Last: answers the rest of /api/v1/ in the API's error shape (accounts' paths come first).
    re_path(r"^(?P<rest>[\s\S]*)$", base.not_found, name="not-found"),
]
