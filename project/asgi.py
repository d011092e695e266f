"""ASGI entry point: HTTP goes to Django, WebSockets pass auth (and, for browsers, the origin
check) to chat: see accounts/ws_auth.py.

Embedded mode: generation tasks run on this same event loop (see chat/replies/dispatch.py), so the
application remembers the loop it is served on.
"""

from __future__ import annotations

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from accounts.ws_auth import ProgramAuthMiddleware, session_auth_stack  # noqa: E402
from chat.openai_compat.asgi import api_routed  # noqa: E402
from chat.outage import OutageGuard  # noqa: E402
from chat.replies.dispatch import RememberEventLoop  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from project.patches import daphne_patches_apply  # noqa: E402

daphne_patches_apply()

http_app = ASGIStaticFilesHandler(django_asgi_app) if settings.SERVE_STATIC else django_asgi_app

application = RememberEventLoop(
    ProtocolTypeRouter(
        {
            # /v1/: its own middleware, on the loop (chat/openai_compat/asgi.py).
            "http": api_routed(http_app),
            # Programs (one-time ticket or API key) or browsers (origin check + session); a
            # handshake that meets a Redis outage is told so (chat/outage.py).
            "websocket": OutageGuard(
                ProgramAuthMiddleware(
                    AllowedHostsOriginValidator(
                        session_auth_stack(URLRouter(websocket_urlpatterns))
                    ),
                    programs=URLRouter(websocket_urlpatterns),
                )
            ),
        }
    )
)


def loaded_before_serving() -> None:
    """Load now what the first requests would load, so that it is frozen with the rest.

    Django reads the URLconf at the first request, and with it every view, DRF, the API schema
    and /v1/ (which imports the OpenAI SDK: ~520 modules of pydantic models); the cache backend
    and the database pool are made at their first use. Loaded after the freeze, they were
    ~90,000 objects that every full collection walked (~60-130 ms of CPU each; docs/benchmarks.md
    "A send's rows written by hand, and what the collector walks")."""
    from django.core.cache import caches
    from django.db import connections
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018  (imports every URLconf, hence every view)
    caches["default"]  # imports its backend
    getattr(connections["default"], "pool", None)  # PostgreSQL's pool, made (not opened)


loaded_before_serving()
# What is loaded by now lives as long as the process: kept out of the collector's sight, a full
# collection walks only what came after (~190k objects took a full collection 0.2 s of CPU,
# which py-spy found inside sends; docs/benchmarks.md "Send path"). Start-up's own garbage is
# collected first, not frozen for ever.
gc.collect()
gc.freeze()
