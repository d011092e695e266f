"""Celery's side: correlation ids and trace context in task headers, queue wait and run time
per queue, and a worker's own metrics port.

- before_task_publish (the publishing process, e.g. a Daphne replica): the current request id
  and trace context, and the publish time, go into the message headers.
- task_prerun / task_postrun (the worker thread or pool process running it): they come back
  as the task's log context and parent span; wait and run time are observed per queue.
- worker_init: with METRICS_PORT set, the worker's main process serves /metrics on that port
  (the same access rules as Daphne's /metrics; in multi-process mode it adds up its pool
  processes' files). worker_process_shutdown marks a pool process's live gauges dead.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from celery import signals
from django.conf import settings
from opentelemetry import context as otel_context
from opentelemetry import trace

from core.observability.context import carrier_extract, carrier_inject, tracer
from core.observability.metrics import TASK_RUN, TASK_WAIT
from project.observability.access import scrape_allowed
from project.observability.exposition import metrics_payload

logger = logging.getLogger(__name__)

SENT_AT = "parley_sent_at"
_running: dict[str, tuple[Any, Any, float, str]] = {}  # task id -> (span cm, token, began, queue)
_lock = threading.Lock()


def _before_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is None:
        return
    carrier_inject(headers)
    headers[SENT_AT] = time.time()


def _header(task: Any, name: str) -> Any:
    request = task.request
    value = getattr(request, name, None)
    if value is None and isinstance(getattr(request, "headers", None), dict):
        value = request.headers.get(name)
    return value


def _prerun(task_id: str = "", task: Any = None, **_: Any) -> None:
    if task is None:
        return
    request = task.request
    queue = (getattr(request, "delivery_info", None) or {}).get("routing_key") or "?"
    carrier = {k: v for k in ("traceparent", "tracestate") if (v := _header(task, k))}
    token = otel_context.attach(carrier_extract(carrier))
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        request_id=_header(task, "parley_request_id") or task_id, task_id=task_id
    )
    span_cm = tracer.start_as_current_span(
        f"celery {task.name}", kind=trace.SpanKind.CONSUMER, attributes={"celery.queue": queue}
    )
    span_cm.__enter__()
    sent_at = _header(task, SENT_AT)
    waited = max(time.time() - sent_at, 0.0) if isinstance(sent_at, int | float) else None
    if waited is not None:
        TASK_WAIT.labels(queue, task.name).observe(waited)
    # One line per task, with the ids bound above: it ties the task to the request in the logs.
    logger.info("task %s started from %s (queued %s s)", task.name, queue, waited)
    with _lock:
        _running[task_id] = (span_cm, token, time.perf_counter(), queue)


def _postrun(task_id: str = "", task: Any = None, state: str | None = None, **_: Any) -> None:
    with _lock:
        found = _running.pop(task_id, None)
    if found is None or task is None:
        return
    span_cm, token, began, queue = found
    TASK_RUN.labels(queue, task.name, state or "?").observe(time.perf_counter() - began)
    span_cm.__exit__(None, None, None)
    otel_context.detach(token)
    structlog.contextvars.clear_contextvars()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(WSGIServer):
    daemon_threads = True

    def process_request(self, request: Any, client_address: Any) -> None:
        threading.Thread(target=self._serve, args=(request, client_address), daemon=True).start()

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)


def _metrics_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    allowed = scrape_allowed(
        authorization=environ.get("HTTP_AUTHORIZATION", ""),
        peer=environ.get("REMOTE_ADDR", ""),
        forwarded="HTTP_X_FORWARDED_FOR" in environ,
    )
    if environ.get("PATH_INFO") not in ("/metrics", "/") or allowed is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not found.\n"]
    if not allowed:
        start_response("403 Forbidden", [("Content-Type", "text/plain")])
        return [b"Forbidden.\n"]
    payload, content_type = metrics_payload(shared=False)
    start_response("200 OK", [("Content-Type", content_type)])
    return [payload]


def metrics_server_start(port: int, address: str = "0.0.0.0") -> WSGIServer:  # noqa: S104
    server = make_server(
        address, port, _metrics_app, server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server


_server: WSGIServer | None = None


def _worker_init(**_: Any) -> None:
    """The first of worker_init and worker_ready (whichever this app's setup did not miss)."""
    global _server
    port = settings.METRICS_PORT
    with _lock:
        if port and _server is None:
            _server = metrics_server_start(port, settings.METRICS_ADDRESS)
            logger.info("metrics on port %s", port)


def _process_shutdown(pid: int | None = None, **_: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())


def signals_connect() -> None:
    signals.before_task_publish.connect(_before_publish, weak=False)
    signals.task_prerun.connect(_prerun, weak=False)
    signals.task_postrun.connect(_postrun, weak=False)
    signals.worker_init.connect(_worker_init, weak=False)
    signals.worker_ready.connect(_worker_init, weak=False)
    signals.worker_process_shutdown.connect(_process_shutdown, weak=False)
