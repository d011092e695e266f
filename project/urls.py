from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from chat.admin.dashboard import dashboard
from chat.api.docs import api_docs
from chat.views import healthz
from project.observability import views as observability

urlpatterns = [
    # The operators' dashboard (before the admin's own catch-all URLs).
    path("admin/dashboard/", admin.site.admin_view(dashboard), name="admin-dashboard"),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("api/v1/", include("accounts.api_urls")),
    path("api/v1/", include("chat.documents.api_urls")),  # before chat.api's catch-all 404
    path("api/v1/", include("chat.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", api_docs, name="api-docs"),
    path("v1/", include("chat.openai_compat.urls")),
    path("healthz", healthz, name="healthz"),
    path("livez", observability.livez, name="livez"),
    path("readyz", observability.readyz, name="readyz"),
    path("metrics", observability.metrics, name="metrics"),
    path("llm/", include("llm.urls")),
    path("documents/", include("chat.documents.urls")),
    path("", include("chat.urls")),
]
