"""/api/v1/ (chat's part; accounts' ws-ticket is in accounts/api_urls.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from django.urls import path, re_path

from chat.api import actions, views

app_name = "chat_api"


def operations(*classes: type[views.ApiView]) -> Callable[..., Any]:
    """One URL serving several operations, each its own view class with one HTTP method:
    the classes are combined so their methods sit side by side (and the schema sees each
    method's own annotations)."""
    name = "".join(c.__name__ for c in classes)
    combined = cast(type[views.ApiView], type(name, classes, {"__doc__": classes[0].__doc__}))
    return combined.as_view()


urlpatterns = [
    path(
        "conversations",
        operations(views.ConversationListApi, views.ConversationCreateApi),
        name="conversations",
    ),
    path(
        "conversations/<int:conversation_id>",
        operations(
            views.ConversationDetailApi, views.ConversationRenameApi, views.ConversationDeleteApi
        ),
        name="conversation",
    ),
    path(
        "conversations/<int:conversation_id>/export/json",
        views.ConversationExportJsonApi.as_view(),
        name="conversation-export-json",
    ),
    path(
        "conversations/<int:conversation_id>/export/markdown",
        views.ConversationExportMarkdownApi.as_view(),
        name="conversation-export-markdown",
    ),
    path(
        "conversations/<int:conversation_id>/messages",
        operations(views.MessageListApi, views.MessageSendApi),
        name="messages",
    ),
    path("messages/<int:message_id>", views.MessageDetailApi.as_view(), name="message-detail"),
    path(
        "messages/<int:message_id>/regenerate",
        actions.MessageRegenerateApi.as_view(),
        name="message-regenerate",
    ),
    path("messages/<int:message_id>/edit", actions.MessageEditApi.as_view(), name="message-edit"),
    path("messages/<int:message_id>/cancel", views.ReplyCancelApi.as_view(), name="reply-cancel"),
    path(
        "messages/<int:message_id>/stream", views.MessageStreamApi.as_view(), name="message-stream"
    ),
    path("models", views.ModelListApi.as_view(), name="models"),
    path("usage", views.UsageApi.as_view(), name="usage"),
    path("usage/organisation", views.OrganisationUsageApi.as_view(), name="usage-organisation"),
    # Last: answers the rest of /api/v1/ in the API's error shape (accounts' paths come first).
    re_path(r"^(?P<rest>[\s\S]*)$", views.not_found, name="not-found"),
]
