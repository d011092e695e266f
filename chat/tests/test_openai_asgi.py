"""/v1/ has its own Django handler and middleware, on the event loop (chat/openai_compat/asgi.py):
its responses carry the same status and headers as through the pages' full chain."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import Client

from chat.openai_compat.asgi import API_MIDDLEWARE, PAGE_ONLY_MIDDLEWARE, ApiHandler
from project.asgi import application, django_asgi_app

pytestmark = pytest.mark.django_db(transaction=True)

ALLOWED = "https://app.example.com"
# Values that differ between any two requests; their presence is compared, not their value.
PER_REQUEST = {"x-request-id", "x-parley-conversation", "x-parley-message", "content-length"}


@pytest.fixture(autouse=True)
def cors(settings) -> None:
    settings.CORS_ALLOWED_ORIGINS = [ALLOWED]


@pytest.fixture
async def both(api_key) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Clients of the served application (/v1/ routed to ApiHandler) and of the pages' handler
    alone (every /v1/ request through settings.MIDDLEWARE, as before)."""
    headers = {"Authorization": f"Bearer {api_key.raw}"}
    clients = [
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
            base_url="http://127.0.0.1:8000",
            headers=headers,
            timeout=60,
        )
        for app in (application, django_asgi_app)
    ]
    async with clients[0], clients[1]:
        yield clients[0], clients[1]


def shape(response: httpx.Response) -> tuple[int, dict[str, Any]]:
    headers: dict[str, Any] = {
        name: (True if name in PER_REQUEST else value) for name, value in response.headers.items()
    }
    # The pages' chain reads the session (the two-factor gate asks who is signed in), so it
    # said `Vary: Cookie` on /v1/ too; /v1/ answers by API key alone. Every other Vary stays.
    vary = {part.strip().lower() for part in headers.pop("vary", "").split(",")} - {"cookie", ""}
    if vary:
        headers["vary"] = sorted(vary)
    return response.status_code, headers


REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/v1/models", {}),
    ("GET", "/v1/models/simulated", {}),
    ("GET", "/v1/models", {"headers": {"Authorization": "Bearer pk_nope_nope"}}),
    ("GET", "/v1/models", {"headers": {"Origin": ALLOWED}}),
    ("GET", "/v1/nothing-here", {}),
    ("PUT", "/v1/chat/completions", {}),
    (
        "POST",
        "/v1/chat/completions",
        {"json": {"model": "simulated", "messages": [{"role": "user", "content": "Hi"}]}},
    ),
    (
        "POST",
        "/v1/chat/completions",
        {
            "json": {
                "model": "simulated",
                "messages": [{"role": "user", "content": "Hi"}],
                "stream": True,
            }
        },
    ),
    ("POST", "/v1/chat/completions", {"content": b"{not json"}),
    (
        "OPTIONS",
        "/v1/chat/completions",
        {"headers": {"Origin": ALLOWED, "Access-Control-Request-Method": "POST"}},
    ),
    (
        "OPTIONS",
        "/v1/chat/completions",
        {"headers": {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}},
    ),
]


@pytest.mark.parametrize(("method", "path", "options"), REQUESTS)
async def test_v1_answers_with_the_same_status_and_headers_as_through_the_pages_chain(
    both, method, path, options
):
    served, pages = both
    ours = await served.request(method, path, **options)
    theirs = await pages.request(method, path, **options)
    assert shape(ours) == shape(theirs)
    assert "x-request-id" in ours.headers  # observability's, on every response


async def test_a_sent_request_id_comes_back_from_v1(both):
    served, _ = both
    response = await served.get("/v1/models", headers={"X-Request-ID": "trace-me-123"})
    assert response.headers["x-request-id"] == "trace-me-123"


async def test_v1_ignores_a_browser_session_cookie(both, client: Client, owner) -> None:
    """A key decides who calls /v1/, never a cookie: a signed-in browser's session is not read
    (no Vary: Cookie, no session touched)."""
    served, _ = both
    await sync_to_async(client.force_login)(owner)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    response = await served.get(
        "/v1/models", headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"}
    )
    assert response.status_code == 200 and "cookie" not in response.headers.get("vary", "").lower()


def test_v1s_middleware_is_the_projects_without_what_only_pages_use() -> None:
    assert [p for p in settings.MIDDLEWARE if p not in PAGE_ONLY_MIDDLEWARE] == API_MIDDLEWARE


def test_no_middleware_of_v1_hops_to_a_sync_thread() -> None:
    """Every layer of the chain is a coroutine function: nothing adapts it with sync_to_async."""
    from asgiref.sync import SyncToAsync, iscoroutinefunction

    handler = ApiHandler()
    layer: Any = handler._middleware_chain
    seen = 0
    while layer is not None:
        assert iscoroutinefunction(layer) and not isinstance(layer, SyncToAsync), layer
        inner = getattr(layer, "__wrapped__", None) or getattr(layer, "get_response", None)
        layer, seen = inner, seen + 1
    assert seen >= len(API_MIDDLEWARE)
