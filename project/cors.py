"""CORS for the APIs (/v1 and /api/v1): django-cors-headers with one change, a preflight from
an origin outside CORS_ALLOWED_ORIGINS is answered 403 (with no Access-Control-* headers) rather
than django-cors-headers' empty 200, so a refusal reads as one in logs and to tools; the browser
blocks the request either way."""

from __future__ import annotations

from urllib.parse import urlsplit

from corsheaders.middleware import CorsMiddleware
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase


class AllowListCorsMiddleware(CorsMiddleware):
    def check_preflight(self, request: HttpRequest) -> HttpResponseBase | None:
        response = super().check_preflight(request)
        if response is None:
            return None
        origin = request.headers.get("origin", "")
        try:
            allowed = bool(origin) and self.origin_found_in_white_lists(origin, urlsplit(origin))
        except ValueError:
            allowed = False
        if allowed:
            return response
        detail = f"Origin {origin or '(none)'} may not call this API (CORS_ALLOWED_ORIGINS)."
        # Each API's own error shape (docs/api.md): OpenAI's on /v1/, Parley's on /api/v1/.
        error: dict[str, str | None] = (
            {
                "message": detail,
                "type": "invalid_request_error",
                "param": None,
                "code": "origin_not_allowed",
            }
            if request.path.startswith("/v1/")
            else {"code": "origin_not_allowed", "detail": detail}
        )
        refused = JsonResponse({"error": error}, status=403)
        request._cors_enabled = False  # type: ignore[attr-defined] # no CORS headers on it
        return refused
