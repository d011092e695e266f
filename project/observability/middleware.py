"""Every HTTP request: a request id (the client's X-Request-ID when sane, else ours) bound to
its logs and returned as `x-request-id`, a server span, and its latency by route pattern."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase
from opentelemetry import trace

from core.observability.context import REQUEST_ID_HEADER, request_id_new, tracer
from core.observability.metrics import HTTP_REQUESTS

# Probes and scrapes are not traffic: no spans, no latency samples, no log context churn.
_QUIET = frozenset({"/metrics", "/livez", "/readyz", "/healthz"})


def _route(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "unmatched"
    return "/" + str(match.route) if match.route else (match.view_name or "unmatched")


class RequestObservabilityMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        if request.path in _QUIET:
            return self.get_response(request)
        with self._observe(request) as finish:
            return finish(self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        if request.path in _QUIET:
            return await self.get_response(request)  # type: ignore[no-any-return]
        with self._observe(request) as finish:
            return finish(await self.get_response(request))

    def _observe(self, request: HttpRequest) -> _Observation:
        return _Observation(request)


class _Observation:
    def __init__(self, request: HttpRequest) -> None:
        self.request = request
        self.request_id = request_id_new(request.headers.get(REQUEST_ID_HEADER))
        self.began = time.perf_counter()

    def __enter__(self) -> Callable[[HttpResponseBase], HttpResponseBase]:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=self.request_id)
        self.span_cm = tracer.start_as_current_span(
            f"HTTP {self.request.method}",
            kind=trace.SpanKind.SERVER,
            attributes={
                "http.request.method": self.request.method or "",
                "parley.request_id": self.request_id,
            },
        )
        self.span = self.span_cm.__enter__()
        return self.finish

    def finish(self, response: HttpResponseBase) -> HttpResponseBase:
        route = _route(self.request)
        response[REQUEST_ID_HEADER] = self.request_id
        self.span.update_name(f"HTTP {self.request.method} {route}")
        self.span.set_attribute("http.route", route)
        self.span.set_attribute("http.response.status_code", response.status_code)
        HTTP_REQUESTS.labels(route, self.request.method or "", str(response.status_code)).observe(
            time.perf_counter() - self.began
        )
        return response

    def __exit__(self, *exc: Any) -> None:
        self.span_cm.__exit__(*exc)
