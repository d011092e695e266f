"""/api/v1/ documents and collections (docs/api.md, "Documents")."""

from __future__ import annotations

from django.urls import path

from chat.api.views.base import operations
from chat.documents import api

app_name = "documents_api"

urlpatterns = [
    path("documents", operations(api.DocumentListApi, api.DocumentUploadApi), name="documents"),
    path(
        "documents/<int:document_id>",
        operations(api.DocumentDetailApi, api.DocumentDeleteApi),
        name="document",
    ),
    path("documents/<int:document_id>/file", api.DocumentFileApi.as_view(), name="document-file"),
    path(
        "collections",
        operations(api.CollectionListApi, api.CollectionCreateApi),
        name="collections",
    ),
    path(
        "conversations/<int:conversation_id>/collections",
        api.ConversationCollectionsApi.as_view(),
        name="conversation-collections",
    ),
]
