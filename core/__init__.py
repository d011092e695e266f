"""What every app shares and nothing else: the one error vocabulary (core/errors.py) and the
observability seams (core/observability/: metric definitions, correlation ids, log format)."""
