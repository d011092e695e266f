"""The tracer provider: OTLP over HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set, else none
(OpenTelemetry's API then makes non-recording spans and nothing leaves the process).

The exporter reads the standard OTEL_* variables itself (endpoint, headers, timeout);
OTEL_SERVICE_NAME names the process kind (parley-web, parley-worker: deploy/k8s sets it).
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_installed = False


def tracing_setup(processor: SpanProcessor | None = None) -> bool:
    """Install the provider once per process; True if tracing is on. A test passes its own
    `processor` (an in-memory exporter's)."""
    global _installed
    if _installed:
        return True
    if processor is None:
        if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            return False
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter())
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "parley")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _installed = True
    return True
