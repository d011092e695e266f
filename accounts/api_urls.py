from __future__ import annotations

from django.urls import path

from accounts.api import WsTicketView

app_name = "api"

urlpatterns = [path("ws-ticket", WsTicketView.as_view(), name="ws-ticket")]
