"""Correlation ids and trace context that follow one message across processes.

A request id is born at the edge (an HTTP request's X-Request-ID, else a new one; one per
WebSocket frame), lives in contextvars (structlog's, so every log line of that work carries it,
project/observability/logs.py) and travels with the work: into a Celery task's headers
(project/observability/celery.py), into an in-process generation (`handoff`/`pickup`), and back
to HTTP clients as `x-request-id`. The OpenTelemetry context travels the same way, so a socket
frame, the service, the task and the provider call make one trace. With no tracer provider
configured (the default), OpenTelemetry's API hands out non-recording spans: tracing costs
nothing but the calls.
"""

from __future__ import annotations

import functools
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import structlog
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

REQUEST_ID_HEADER = "x-request-id"
# What we accept from a client as its own request id; anything else is replaced by ours.
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

tracer = trace.get_tracer("parley")

P = ParamSpec("P")
R = TypeVar("R")


def request_id_new(offered: str | None = None) -> str:
    """The client's id when it is a sane token, else a fresh one."""
    if offered and _CLIENT_ID.fullmatch(offered):
        return offered
    return secrets.token_hex(8)


def request_id() -> str | None:
    value = structlog.contextvars.get_contextvars().get("request_id")
    return str(value) if value is not None else None


def bind(**values: Any) -> None:
    """Add values to every log line of the current context (a task, a frame's handling)."""
    structlog.contextvars.bind_contextvars(**values)


def traced(
    name: str, *, bind_kwargs: tuple[str, ...] = (), new_request: bool = False
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Run a coroutine function in a span named `name`.

    `bind_kwargs` names keyword arguments to put on the span and the log context (e.g.
    message_id). `new_request` gives each call its own request id (a WebSocket frame: the
    socket's handler task lives as long as the socket). A call with a handed-off context
    (`handoff`) continues that trace.
    """

    def decorate(func: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(func)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            values = {key: kwargs[key] for key in bind_kwargs if key in kwargs}
            parent = None
            if "message_id" in values:
                parent, carried_id = pickup(values["message_id"])
                if carried_id:
                    values["request_id"] = carried_id
            if new_request:
                values["request_id"] = request_id_new()
            if values:
                bind(**values)
            with tracer.start_as_current_span(name, context=parent) as span:
                for key, value in values.items():
                    span.set_attribute(f"parley.{key}", str(value))
                return await func(*args, **kwargs)

        return wrapper

    return decorate


def traced_sync(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run a plain function (a service) in a span named `name`, a child of the caller's."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with tracer.start_as_current_span(name):
                return func(*args, **kwargs)

        return wrapper

    return decorate


# --- across a process boundary: a carrier of strings (Celery headers) ----------------------


def carrier_inject(carrier: dict[str, Any]) -> None:
    """Put the current trace context and request id into `carrier` (a task's headers)."""
    propagate.inject(carrier)
    if (current := request_id()) is not None:
        carrier["parley_request_id"] = current


def carrier_extract(carrier: dict[str, Any]) -> otel_context.Context:
    return propagate.extract(carrier)


# --- across an event loop boundary in one process: in-process generation ------------------
# Embedded mode starts a reply's generation on the server's loop in a fresh contextvars
# context (chat/replies/dispatch.py); the dispatcher hands its context over by message id.
_handoffs: OrderedDict[int, tuple[otel_context.Context, str | None]] = OrderedDict()
_handoffs_lock = threading.Lock()
_HANDOFFS_MAX = 10_000  # a reply that is never generated must not leak its entry forever


def handoff(message_id: int) -> None:
    """Leave the current trace context and request id for the generation of `message_id`."""
    with _handoffs_lock:
        _handoffs[message_id] = (otel_context.get_current(), request_id())
        while len(_handoffs) > _HANDOFFS_MAX:
            _handoffs.popitem(last=False)


def pickup(message_id: Any) -> tuple[otel_context.Context | None, str | None]:
    """The context handed over for `message_id` in this process, if any (once)."""
    with _handoffs_lock:
        found = _handoffs.pop(message_id, None)
    return found if found is not None else (None, None)
