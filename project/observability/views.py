"""GET /metrics (Prometheus), /livez and /readyz (orchestrator probes).

- /livez answers 200 while the process serves requests: it reads nothing, so a provider,
  PostgreSQL or Redis outage never gets a replica restarted (a restart would not fix them).
- /readyz answers 200 when this replica reaches PostgreSQL and, in production mode (REDIS_URL
  set), Redis; else 503 with the failing checks, so the load balancer stops sending new sockets
  here until they come back. Providers are not checked: /llm/health reports them.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from project.observability.access import scrape_allowed
from project.observability.exposition import metrics_payload

logger = logging.getLogger(__name__)


@require_GET
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    allowed = scrape_allowed(
        authorization=request.headers.get("Authorization", ""),
        peer=request.META.get("REMOTE_ADDR", ""),
        forwarded="X-Forwarded-For" in request.headers,
    )
    if allowed is None:
        return HttpResponse("Not found.\n", status=404, content_type="text/plain")
    if not allowed:
        return HttpResponse("Forbidden.\n", status=403, content_type="text/plain")
    payload, content_type = metrics_payload(shared=True)
    return HttpResponse(payload, content_type=content_type)


@require_GET
@never_cache
def livez(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "live"})


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _redis() -> None:
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2, retry_on_timeout=False
    )
    try:
        client.ping()
    finally:
        client.close()


@require_GET
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _database}
    if settings.REDIS_URL:
        checks["redis"] = _redis
    results: dict[str, str] = {}
    for name, check in checks.items():
        began = time.monotonic()
        try:
            check()
        except Exception as exc:
            logger.warning("readiness: %s unreachable: %s", name, exc)
            results[name] = "down"
        else:
            results[name] = f"ok ({(time.monotonic() - began) * 1000:.0f} ms)"
    ready = all(value != "down" for value in results.values())
    return JsonResponse(
        {"status": "ready" if ready else "not ready", "checks": results},
        status=200 if ready else 503,
    )
