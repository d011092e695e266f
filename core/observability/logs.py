"""Log configuration: plain text by default (`make run`), one JSON object per line with
LOG_FORMAT=json.

Parley logs through the standard library (`logging.getLogger(__name__)`); in JSON mode
structlog's ProcessorFormatter renders every record, Django's and Celery's included, with the
correlation ids bound in the current context (request_id, message_id: core/observability/
context.py) and the current trace and span ids, so a log line finds its trace.
"""

from __future__ import annotations

from typing import Any

import structlog
from opentelemetry import trace


def _trace_ids(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        event["trace_id"] = format(span.trace_id, "032x")
        event["span_id"] = format(span.span_id, "016x")
    return event


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """The LOGGING setting for `log_format` "plain" or "json"."""
    if log_format not in ("plain", "json"):
        raise ValueError(f"LOG_FORMAT={log_format!r}: use plain or json")
    formatters: dict[str, Any] = {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": structlog.stdlib.ProcessorFormatter,
            "processors": [
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
            "foreign_pre_chain": [
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _trace_ids,
                structlog.stdlib.ExtraAdder(),
                structlog.processors.format_exc_info,
            ],
        },
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": formatters,
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": log_format}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"django.channels.server": {"level": "WARNING"}},
    }
