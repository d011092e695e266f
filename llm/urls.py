from __future__ import annotations

from django.urls import path

from llm import views

app_name = "llm"

urlpatterns = [
    path("health", views.health, name="health"),
]
