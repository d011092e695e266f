from __future__ import annotations

from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "project.observability"
    label = "observability"

    def ready(self) -> None:
        # Connects Celery's signals (harmless in a process that runs no Celery worker) and
        # installs the tracer provider when OTLP export is configured.
        from project.observability import celery, exposition, tracing

        exposition.multiprocess_tidy()
        tracing.tracing_setup()
        celery.signals_connect()
