from __future__ import annotations

from django.urls import path

from chat import views

app_name = "chat"

urlpatterns = [
    path("", views.home, name="home"),
    path("c/new", views.conversation_new, name="new"),
    path("c/<int:conversation_id>/", views.conversation_detail, name="conversation"),
    path("c/<int:conversation_id>/rename", views.conversation_rename, name="rename"),
    path("c/<int:conversation_id>/pin", views.conversation_pin, name="pin"),
    path("c/<int:conversation_id>/delete", views.conversation_delete, name="delete"),
    path(
        "c/<int:conversation_id>/instructions",
        views.conversation_instructions,
        name="instructions",
    ),
    path("help/api/", views.api_help, name="api_help"),
]
