from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path
from django.utils.decorators import method_decorator
from django_ratelimit.decorators import ratelimit

from accounts import views

app_name = "accounts"

_login = method_decorator(ratelimit(key="ip", rate="20/m", method="POST", block=True), name="post")

urlpatterns = [
    path(
        "login/",
        _login(auth_views.LoginView).as_view(
            template_name="accounts/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("signup/", views.signup, name="signup"),
]
