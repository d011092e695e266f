"""Observability every app may use: metric definitions (metrics.py), correlation ids and trace
context (context.py), log configuration (logs.py). Plain values in, nothing app-specific: the
endpoints, collectors and Celery wiring live in project/observability/ (docs/operations.md)."""
