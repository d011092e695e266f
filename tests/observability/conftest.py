"""Fixtures of the observability tests: an in-memory span exporter installed once per test
process (a tracer provider can be set only once), and a private Redis a test may stop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from chat.tests.conftest import redis_server  # noqa: F401 - a private Redis a test may stop
from project.observability.tracing import tracing_setup

_exporter = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    assert tracing_setup(SimpleSpanProcessor(_exporter))
    _exporter.clear()
    yield _exporter
    _exporter.clear()
