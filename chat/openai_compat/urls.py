"""/v1/: the OpenAI-compatible surface."""

from __future__ import annotations

from django.urls import path, re_path

from chat.openai_compat import embeddings, views

app_name = "openai"

urlpatterns = [
    path("chat/completions", views.chat_completions, name="chat-completions"),
    path("embeddings", embeddings.embeddings, name="embeddings"),
    path("models", views.models, name="models"),
    path("models/<path:model>", views.model_detail, name="model"),
    re_path(r"^(?P<rest>[\s\S]*)$", views.unknown, name="unknown"),
]
