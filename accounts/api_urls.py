from __future__ import annotations

from django.urls import path

from accounts.api import ApiKeyListCreateView, ApiKeyRevokeView, WsTicketView

app_name = "api"

urlpatterns = [
    path("ws-ticket", WsTicketView.as_view(), name="ws-ticket"),
    path("keys", ApiKeyListCreateView.as_view(), name="keys"),
    path("keys/<int:key_id>", ApiKeyRevokeView.as_view(), name="key"),
]
