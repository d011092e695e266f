"""Parley's REST API (docs/api.md): DRF views, one per operation, under /api/v1/."""
