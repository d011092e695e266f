"""Request middleware of accounts: the active organisation, the two-factor gate, and 429s."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.functional import SimpleLazyObject
from django_ratelimit.exceptions import Ratelimited

from accounts.models import Organisation, User
from accounts.selectors import ACTIVE_ORGANISATION_SESSION_KEY, organisation_active
from accounts.two_factor import two_factor_required

# Without a Retry-After from the limiter (django-ratelimit's own decorator), say a minute.
DEFAULT_RETRY_AFTER = 60


class RateLimitedMiddleware:
    """Turn django-ratelimit's Ratelimited (a PermissionDenied, so 403) into 429 + Retry-After.

    Async-capable (it only has process_exception), so an async chain (/v1/,
    chat/openai_compat/asgi.py) does not hop to a thread for it."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        return self.get_response(request)  # a coroutine when the chain is async

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, Ratelimited):
            return None
        retry_after = int(getattr(exception, "retry_after", DEFAULT_RETRY_AFTER))
        response = HttpResponse(
            f"Too many requests. Try again in {retry_after} seconds.\n",
            status=429,
            content_type="text/plain; charset=utf-8",
        )
        response["Retry-After"] = str(retry_after)
        return response


def active_organisation(request: HttpRequest) -> Organisation:
    """The signed-in user's organisation for this request (the session's choice, checked)."""
    user = request.user
    assert isinstance(user, User)
    return organisation_active(
        user=user, requested_id=request.session.get(ACTIVE_ORGANISATION_SESSION_KEY)
    )


class ActiveOrganisationMiddleware:
    """request.organisation, resolved on first use."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated:
            request.organisation = SimpleLazyObject(lambda: active_organisation(request))  # type: ignore[attr-defined]
        return self.get_response(request)


TWO_FACTOR_FIRST = "Verify with your authenticator app first."
REST_PREFIX = "/api/v1/"

# Pages a signed-in but unverified user must still reach.
TWO_FACTOR_EXEMPT = frozenset(
    {
        "accounts:login",
        "accounts:logout",
        "accounts:signup",
        "accounts:two_factor",
        "admin:logout",
        "healthz",
    }
)


class TwoFactorMiddleware:
    """Users who turned two-factor on, and members of an organisation that requires it, verify
    with their authenticator before anything else (setting it up first if they have none).
    Install after django_otp's OTPMiddleware."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view: Any, args: Any, kwargs: Any
    ) -> HttpResponse | None:
        user = request.user
        if not user.is_authenticated or not isinstance(user, User):
            return None
        match = request.resolver_match
        if match is not None and match.view_name in TWO_FACTOR_EXEMPT:
            return None
        if user.is_verified() or not two_factor_required(user=user):  # type: ignore[attr-defined]
            return None
        if request.path.startswith(REST_PREFIX):
            # The REST API's one error shape (docs/api.md), for every method: a program or the
            # page's script gets an answer it can read, not a redirect to a page.
            return JsonResponse(
                {"error": {"code": "permission_denied", "detail": TWO_FACTOR_FIRST}}, status=403
            )
        if request.method in ("GET", "HEAD"):
            target = reverse("accounts:two_factor")
            return redirect(f"{target}?{urlencode({'next': request.get_full_path()})}")
        return HttpResponseForbidden(TWO_FACTOR_FIRST)
