"""The process side of observability: /metrics, /livez and /readyz (views.py), the request
middleware (ids, spans, latency), scrape-time collectors of shared state, the Celery wiring
(task headers, a worker's own metrics port) and the tracer setup. docs/operations.md."""
