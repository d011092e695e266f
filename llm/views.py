"""GET /llm/health: every deployment's breaker state, last error and latency, as JSON."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from llm.catalog import all_deployments
from llm.health import deployment_health, overall


def _allowed(request: HttpRequest) -> bool:
    """Staff sessions, or a probe sending LLM_HEALTH_TOKEN: deployment names, breaker states
    and error reasons are not for everyone (anonymous callers get 401 when no token is set)."""
    if request.user.is_authenticated and request.user.is_staff:
        return True
    token = settings.LLM_HEALTH_TOKEN
    sent = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return bool(token) and bool(sent) and hmac.compare_digest(sent, token)


@require_GET
@never_cache
def health(request: HttpRequest) -> JsonResponse:
    """For monitoring and probes: 200 while some deployment can take traffic, else 503.

    Provider keys and URLs are never shown; errors are Parley's own words, not the vendor's.
    """
    if not _allowed(request):
        return JsonResponse({"detail": "Authentication required."}, status=401)
    healths = [deployment_health(d) for d in all_deployments()]
    status = overall(healths)
    return JsonResponse(
        {"status": status, "deployments": [h.as_json() for h in healths]},
        status=503 if status == "down" else 200,
    )
