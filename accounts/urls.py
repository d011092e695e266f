from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import views

app_name = "accounts"

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("signup/", views.signup, name="signup"),
    path("organisation/", views.organisation_switch, name="organisation_switch"),
    path("organisations/", views.organisations, name="organisations"),
    path(
        "organisations/<int:organisation_id>/leave",
        views.organisation_leave,
        name="organisation_leave",
    ),
    path("organisation/invite/", views.organisation_invite, name="organisation_invite"),
    path(
        "invitations/<int:invitation_id>/accept", views.invitation_accept, name="invitation_accept"
    ),
    path(
        "invitations/<int:invitation_id>/decline",
        views.invitation_decline,
        name="invitation_decline",
    ),
    path(
        "invitations/<int:invitation_id>/revoke", views.invitation_revoke, name="invitation_revoke"
    ),
    path("invitations/join/<str:token>", views.invitation_link, name="invitation_link"),
    path("keys/", views.api_keys, name="keys"),
    path("keys/<int:key_id>/revoke", views.api_key_revoke, name="key_revoke"),
    path("2fa/", views.two_factor, name="two_factor"),
    path("2fa/disable", views.two_factor_disable, name="two_factor_disable"),
]
