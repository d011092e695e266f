"""/v1/ served by its own Django handler, with the middleware an API request needs, all of it
on the event loop.

Behind the project's MIDDLEWARE an async view paid for the pages' chain: sessions, CSRF,
authentication, OTP, two-factor, the active organisation and messages, with a hop to a sync
thread and back for each sync middleware (docs/benchmarks.md: 2-5 ms of CPU per request, and
a wait behind other work at each hop). /v1/ authenticates by API key only and its views are
CSRF-exempt, so none of that changes its answers; what does reach a /v1/ response is kept, in
the same order: the request id, span and latency sample, the security headers (HSTS, nosniff,
referrer and cross-origin policies, CSP, X-Frame-Options), CORS, Content-Length, and the 429
for a rate-limited view. Those whose hooks only read the request and set headers run on the
loop instead of hopping (`on_the_loop`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest, HttpResponseBase
from django.utils.deprecation import MiddlewareMixin
from django.utils.module_loading import import_string

ASGIApp = Callable[..., Awaitable[None]]

PREFIX = "/v1/"

# settings.MIDDLEWARE without what only pages use (the order is the same).
API_MIDDLEWARE = [
    "project.observability.middleware.RequestObservabilityMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "project.cors.AllowListCorsMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "accounts.middleware.RateLimitedMiddleware",
]
# Page middleware left out, each for its reason (tests/test_security_settings.py checks that
# the two lists together are settings.MIDDLEWARE).
PAGE_ONLY_MIDDLEWARE = {
    # no cookie is read or set by /v1/: API keys only
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "accounts.middleware.TwoFactorMiddleware",
    "accounts.middleware.ActiveOrganisationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # every /v1/ view is csrf_exempt: a bearer key is not ambient, so there is no CSRF
    "django.middleware.csrf.CsrfViewMiddleware",
}


def on_the_loop(middleware: type[MiddlewareMixin]) -> type[MiddlewareMixin]:
    """`middleware` with its process_request and process_response called on the event loop.

    Only for hooks that do no I/O (read the request, set headers): MiddlewareMixin would run
    each in a sync thread (sync_to_async) to be safe for any hook.
    """

    class OnTheLoop(middleware):  # type: ignore[valid-type,misc]
        async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
            response = None
            if hasattr(self, "process_request"):
                response = self.process_request(request)
            response = response or await self.get_response(request)
            if hasattr(self, "process_response"):
                response = self.process_response(request, response)
            return response  # type: ignore[no-any-return]

    OnTheLoop.__name__ = OnTheLoop.__qualname__ = f"{middleware.__name__}OnTheLoop"
    return OnTheLoop


class ApiHandler(ASGIHandler):
    """Django's ASGI handler with API_MIDDLEWARE, every one of them async."""

    def load_middleware(self, is_async: bool = False) -> None:
        assert is_async, "the /v1/ handler is ASGI only"
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
        handler = convert_exception_to_response(self._get_response_async)  # type: ignore[attr-defined]
        for path in reversed(API_MIDDLEWARE):
            middleware = import_string(path)
            if issubclass(middleware, MiddlewareMixin):
                middleware = on_the_loop(middleware)
            elif not getattr(middleware, "async_capable", False):
                raise TypeError(f"{path} must be async-capable to serve /v1/")
            instance = middleware(handler)
            # Django's own load_middleware, for the async case (process_exception runs in the
            # sync thread there, as here).
            if hasattr(instance, "process_view"):
                self._view_middleware.insert(0, self.adapt_method_mode(True, instance.process_view))
            if hasattr(instance, "process_template_response"):
                self._template_response_middleware.append(
                    self.adapt_method_mode(True, instance.process_template_response)
                )
            if hasattr(instance, "process_exception"):
                self._exception_middleware.append(
                    self.adapt_method_mode(False, instance.process_exception)
                )
            handler = convert_exception_to_response(instance)
        self._middleware_chain = handler


def api_routed(app: ASGIApp) -> ASGIApp:
    """HTTP under /v1/ to ApiHandler, everything else to `app` (the pages' handler)."""
    api = ApiHandler()

    async def route(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX):
            return await api(scope, receive, send)
        return await app(scope, receive, send)

    return route
