"""The tenant promises of docs/protocol.md, docs/api.md and docs/admin.md, checked as an
acceptance tester would, on the production topology of test_protocol_promises.py (nginx → two
Daphne replicas → Redis ← a Celery worker, PostgreSQL, tests/fault_server.py upstream):

- a spent budget refuses the next reply with `quota_exceeded` and `resets_at` on the socket, the
  REST API and /v1, in each edge's documented status and shape, and saves nothing;
- a model outside an organisation's allow-list is `model_not_allowed` (403) on all three, and
  the model lists hide it;
- CORS answers for CORS_ALLOWED_ORIGINS on /v1 and /api/v1 only, through nginx.

Operators set budgets and allow-lists as rows (what the admin saves), each organisation a
fresh one of its own so the module's other tests never meet its limits. The ticket lifetime is
checked in-process, under a controlled clock.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient

from accounts.services import api_key_create
from project.asgi import application
from tests.harness.processes import manage
from tests.harness.sockets import hear_reply, recv_frame
from tests.harness.topology import START_TIMEOUT
from tests.integration.test_api_promises import final_message
from tests.integration.test_protocol_promises import (
    ANSWERS,
    Site,
    send_frame,
    topology_with_upstream,
)

pytestmark = pytest.mark.integration

ALLOWED_ORIGIN = "https://app.example.com"
OTHER_ORIGIN = "https://evil.example.net"
OUTSIDE_THE_LIST = "slow"  # an alias the site serves (FAULT_ALIASES), not on the allow-list

TENANT = """
from accounts.services import account_create, api_key_create
user = account_create(username={username!r}, password="correct horse battery staple")
organisation = user.personal_organisation
print(organisation.pk, api_key_create(user=user, organisation=organisation, name="tenant").raw)
"""

# What an operator saves in the admin: the organisation's daily budget, set to what it has
# spent today, so that the next reply would pass it.
SPEND_BUDGET = """
from accounts.models import Budget, UsageCounter
from accounts.quotas import period_start
from django.utils import timezone
today = timezone.now().date()
spent = UsageCounter.objects.get(
    organisation_id={organisation}, user=None, period="day", start=period_start("day", today)
).tokens
assert spent > 0, spent
Budget.objects.create(organisation_id={organisation}, period="day", max_tokens=spent)
"""

ALLOW_ONLY = """
from accounts.models import Organisation
organisation = Organisation.objects.get(pk={organisation})
organisation.allowed_models = {aliases!r}
organisation.save()
"""


@dataclass
class Tenant:
    organisation: int
    key: str


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    env = {"CORS_ALLOWED_ORIGINS": ALLOWED_ORIGIN}
    with topology_with_upstream("tenant-promises", extra_env=env) as running:
        yield running


def tenant(site: Site, operator_code: str = "", **fields: Any) -> Tenant:
    """A new user with their own organisation and API key; `operator_code` then runs as the
    operator's change to that organisation."""
    printed = manage(
        "shell",
        "-c",
        TENANT.format(username=f"tenant-{uuid.uuid4().hex[:12]}"),
        env=site.topo.env,
        timeout=START_TIMEOUT,
    )
    organisation, key = printed.strip().splitlines()[-1].split()
    made = Tenant(int(organisation), key)
    if operator_code:
        operate(site, operator_code, organisation=made.organisation, **fields)
    return made


def operate(site: Site, code: str, **fields: Any) -> None:
    manage("shell", "-c", code.format(**fields), env=site.topo.env, timeout=START_TIMEOUT)


def rest_send(http: httpx.Client, model: str = ANSWERS) -> tuple[int, httpx.Response]:
    """A conversation, and a send into it: (the conversation's id, the send's response)."""
    conversation = http.post("/api/v1/conversations", json={"title": "tenant"})
    assert conversation.status_code == 201, conversation.text
    conversation_id = conversation.json()["id"]
    sent = http.post(
        f"/api/v1/conversations/{conversation_id}/messages",
        json={"text": "Hello", "model": model},
    )
    return conversation_id, sent


def completion(site: Site, key: str, model: str = ANSWERS) -> httpx.Response:
    return httpx.post(
        f"{site.topo.base}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "Hello"}]},
        timeout=60,
    )


async def socket_error(site: Site, key: str, model: str = ANSWERS) -> dict[str, Any]:
    """A program's socket sends one message; the frame it is answered with."""
    ws = await site.socket(key)
    try:
        await ws.send(json.dumps(send_frame("Hello", model=model)))
        return await recv_frame(ws, 60)
    finally:
        await ws.close()


def message_count(http: httpx.Client, conversation: int) -> int:
    listed = http.get(f"/api/v1/conversations/{conversation}/messages")
    assert listed.status_code == 200, listed.text
    body = listed.json()
    return len(body["results"] if isinstance(body, dict) else body)


def conversations_from(http: httpx.Client, *origins: str) -> list[dict[str, Any]]:
    """The caller's conversations the socket (`websocket`) or /v1 (`openai`) recorded."""
    listed = http.get("/api/v1/conversations", params={"origin": list(origins)})
    assert listed.status_code == 200, listed.text
    return list(listed.json()["results"])


# --- quota_exceeded ------------------------------------------------------------------------------


def tomorrow_utc() -> datetime:
    today = datetime.now(UTC).date()
    return datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=UTC)


def assert_resets_tomorrow(resets_at: str, retry_after: Any) -> None:
    assert datetime.fromisoformat(resets_at) == tomorrow_utc(), resets_at
    assert isinstance(retry_after, int) and 1 <= retry_after <= 24 * 3600, retry_after


async def test_a_spent_budget_refuses_the_next_reply_on_every_edge_with_resets_at(
    site: Site,
) -> None:
    budgeted = tenant(site)
    with site.http(budgeted.key) as http:
        _, first = rest_send(http)
        assert first.status_code == 201, first.text
        assert final_message(http, first.json()["reply"])["status"] == "complete"
        operate(site, SPEND_BUDGET, organisation=budgeted.organisation)

        # The socket: an error frame about the send (no message), not retryable.
        refused = await socket_error(site, budgeted.key)
        assert refused["type"] == "error" and refused["code"] == "quota_exceeded", refused
        assert refused["retryable"] is False and refused["message"] is None
        assert_resets_tomorrow(refused["resets_at"], refused["retry_after"])

        # REST: 429, the one error shape with both fields, Retry-After; nothing saved.
        conversation, sent = rest_send(http)
        assert sent.status_code == 429, sent.text
        error = sent.json()["error"]
        assert error["code"] == "quota_exceeded" and error["detail"], error
        assert_resets_tomorrow(error["resets_at"], error["retry_after"])
        assert int(sent.headers["retry-after"]) == error["retry_after"]
        assert message_count(http, conversation) == 0

    # /v1: 429 insufficient_quota in OpenAI's shape, with Retry-After.
    answer = completion(site, budgeted.key)
    assert answer.status_code == 429, answer.text
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota"), error
    assert set(error) == {"message", "type", "param", "code"}
    assert 1 <= int(answer.headers["retry-after"]) <= 24 * 3600
    with site.http(budgeted.key) as http:
        assert conversations_from(http, "websocket", "openai") == []  # nothing was saved


# --- model_not_allowed ---------------------------------------------------------------------------


async def test_a_model_outside_the_allow_list_is_refused_everywhere_and_hidden(
    site: Site,
) -> None:
    restricted = tenant(site, ALLOW_ONLY, aliases=[ANSWERS])

    refused = await socket_error(site, restricted.key, model=OUTSIDE_THE_LIST)
    assert refused["type"] == "error" and refused["code"] == "model_not_allowed", refused
    assert refused["retryable"] is False and refused["message"] is None

    with site.http(restricted.key) as http:
        conversation, sent = rest_send(http, model=OUTSIDE_THE_LIST)
        assert sent.status_code == 403, sent.text
        assert sent.json()["error"]["code"] == "model_not_allowed"
        assert message_count(http, conversation) == 0
        listed = [m["id"] for m in http.get("/api/v1/models").json()]
        assert ANSWERS in listed and OUTSIDE_THE_LIST not in listed, listed

    answer = completion(site, restricted.key, model=OUTSIDE_THE_LIST)
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["type"] == "permission_error"
    assert answer.json()["error"]["code"] == "model_not_allowed"
    bearer = {"Authorization": f"Bearer {restricted.key}"}
    models = httpx.get(f"{site.topo.base}/v1/models", headers=bearer).json()["data"]
    assert ANSWERS in {m["id"] for m in models}
    assert OUTSIDE_THE_LIST not in {m["id"] for m in models}
    # Its own page answers as for a model that does not exist, as OpenAI does.
    hidden = httpx.get(f"{site.topo.base}/v1/models/{OUTSIDE_THE_LIST}", headers=bearer)
    assert hidden.status_code == 404, hidden.text
    assert hidden.json()["error"]["code"] == "model_not_found"
    with site.http(restricted.key) as http:
        assert conversations_from(http, "websocket", "openai") == []  # nothing was saved

    # The allowed model still answers, on the socket as elsewhere.
    ws = await site.socket(restricted.key)
    try:
        await ws.send(json.dumps(send_frame("Hello")))
        heard = await hear_reply(ws, timeout=60)
    finally:
        await ws.close()
    assert heard.final is not None and heard.final["status"] == "complete", heard.final


# --- CORS, through nginx -------------------------------------------------------------------------

API_PATHS = ("/v1/models", "/api/v1/conversations")


def preflight(site: Site, path: str, origin: str) -> httpx.Response:
    return httpx.options(
        f"{site.topo.base}{path}",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


@pytest.mark.parametrize("path", API_PATHS)
def test_an_allowed_origin_gets_its_preflight_and_its_answer(site: Site, path: str) -> None:
    answer = preflight(site, path, ALLOWED_ORIGIN)
    assert answer.status_code == 200, answer.text
    headers = cors_headers(answer)
    assert headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert headers["access-control-max-age"] == "600"
    assert "POST" in headers["access-control-allow-methods"]
    allowed = {h.strip() for h in headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key", "last-event-id"} <= allowed
    assert {"openai-organization", "openai-project", "x-stainless-os"} <= allowed
    assert "access-control-allow-credentials" not in headers

    actual = httpx.get(
        f"{site.topo.base}{path}",
        headers={"Origin": ALLOWED_ORIGIN, "Authorization": f"Bearer {site.key}"},
    )
    assert actual.status_code == 200, actual.text
    headers = cors_headers(actual)
    assert headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    exposed = {h.strip() for h in headers["access-control-expose-headers"].split(",")}
    assert exposed == {
        "retry-after",
        "idempotent-replayed",
        "x-parley-conversation",
        "x-parley-message",
    }
    assert "access-control-allow-credentials" not in headers


@pytest.mark.parametrize("path", API_PATHS)
def test_another_origin_is_refused_with_no_cors_headers(site: Site, path: str) -> None:
    answer = preflight(site, path, OTHER_ORIGIN)
    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    assert error["code"] == "origin_not_allowed", error
    # In the API's own error shape.
    if path.startswith("/v1/"):
        assert set(error) == {"message", "type", "param", "code"}, error
    else:
        assert set(error) == {"code", "detail"}, error
    assert cors_headers(answer) == {}
    # The request itself is answered (a browser would not read it): without CORS headers.
    actual = httpx.get(
        f"{site.topo.base}{path}",
        headers={"Origin": OTHER_ORIGIN, "Authorization": f"Bearer {site.key}"},
    )
    assert actual.status_code == 200, actual.text
    assert cors_headers(actual) == {}


def test_nothing_but_the_apis_answers_cors(site: Site) -> None:
    for path in ("/", "/healthz", "/accounts/login/"):
        answer = httpx.get(f"{site.topo.base}{path}", headers={"Origin": ALLOWED_ORIGIN})
        assert cors_headers(answer) == {}, path
        assert cors_headers(preflight(site, path, ALLOWED_ORIGIN)) == {}, path


# --- the ticket's lifetime, in-process under a controlled clock ----------------------------------


class Clock:
    """Stands in for `time` in Django's cache backends, where ticket expiry is decided."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr("django.core.cache.backends.base.time", clock)
    monkeypatch.setattr("django.core.cache.backends.locmem.time", clock)
    return clock


async def ticket_opens_a_socket(ticket: str) -> bool:
    communicator = WebsocketCommunicator(
        application, f"/ws/chat/?ticket={ticket}", headers=[(b"host", b"127.0.0.1:8000")]
    )
    connected, _ = await communicator.connect()
    if connected:
        await communicator.disconnect()
    return connected


@pytest.mark.django_db(transaction=True)
async def test_a_ticket_opens_a_socket_for_thirty_seconds_and_once(owner, clock: Clock) -> None:
    key = await sync_to_async(api_key_create)(
        user=owner, organisation=owner.personal_organisation, name="bot"
    )
    bearer = {"Authorization": f"Bearer {key.raw}"}
    answers = [await AsyncClient().post("/api/v1/ws-ticket", headers=bearer) for _ in range(2)]
    assert [a.status_code for a in answers] == [201, 201], answers[0].content
    bought = [a.json() for a in answers]
    assert {b["expires_in"] for b in bought} == {30}
    early, late = (b["ticket"] for b in bought)

    clock.now += 29.9
    assert await ticket_opens_a_socket(early)
    assert not await ticket_opens_a_socket(early)  # one use
    clock.now += 0.2  # 30.1 s after it was bought
    assert not await ticket_opens_a_socket(late)
