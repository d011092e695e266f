"""Fixtures of the observability tests: an in-memory span exporter (a tracer provider can be
set only once per process, so it stays installed, recording only while a test asks for spans),
and a private Redis a test may stop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from chat.tests.conftest import redis_server  # noqa: F401 - a private Redis a test may stop
from project.observability.tracing import tracing_setup

_exporter = InMemorySpanExporter()


class _WhileAsked(SpanProcessor):
    """Exports to memory only while a test holds the `spans` fixture."""

    def __init__(self) -> None:
        self.inner = SimpleSpanProcessor(_exporter)
        self.on = False

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.on:
            self.inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.on:
            self.inner.on_end(span)


_processor = _WhileAsked()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    assert tracing_setup(_processor)
    _exporter.clear()
    _processor.on = True
    try:
        yield _exporter
    finally:
        _processor.on = False
        _exporter.clear()
