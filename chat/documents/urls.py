from __future__ import annotations

from django.urls import path

from chat.documents import views

app_name = "documents"

urlpatterns = [
    path("<int:document_id>/", views.document_detail, name="document"),
    path("<int:document_id>/file", views.document_file, name="file"),
]
