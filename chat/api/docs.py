"""The interactive API docs page (Swagger UI from drf-spectacular-sidecar's static files)."""

from __future__ import annotations

from csp.decorators import csp_update
from drf_spectacular.views import SpectacularSwaggerSplitView

# The split view serves its start-up script as a file (script-src 'self' holds). Swagger UI
# styles its page with an inline <style> block and inline style attributes, so this one page
# allows inline styles; scripts stay 'self' only.
api_docs = csp_update({"style-src": ["'unsafe-inline'"]})(
    SpectacularSwaggerSplitView.as_view(url_name="api-schema")
)
