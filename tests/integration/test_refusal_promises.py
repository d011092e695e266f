"""The send rate limit as docs/protocol.md and docs/api.md promise it, on the production topology
(nginx → two Daphne replicas → Redis ← a Celery worker, PostgreSQL, a real OpenAI-compatible
upstream): one counter for the socket, REST and /v1 (counted in Redis across replicas), and a
send past it is refused on each edge in that edge's shape — the socket's `rate_limited` frame
with `retry_after`, REST's 429 with a `Retry-After` header and `retry_after` field, OpenAI's 429
`rate_limit_exceeded` with `Retry-After` — with nothing saved and nothing asked of the model
provider (a /v1 reply's provider call begins only once its request has passed the limit,
docs/api.md "Where it is generated"). A /v1 request its budget refuses (429
`insufficient_quota`) does not reach the provider either: the call begins only once the
budget can no longer refuse it.

The topology is test_protocol_promises.py's with the send limit at three an hour per user, so
the window cannot end during the module.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.harness.sockets import hear_reply, recv_frame
from tests.integration.test_api_promises import final_message
from tests.integration.test_protocol_promises import ANSWERS, Site, topology_with_upstream
from tests.integration.test_tenant_promises import SPEND_BUDGET, operate, rest_send, tenant

pytestmark = pytest.mark.integration

SENDS_PER_HOUR = 3


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    env = {"WS_RATE_SENDS_PER_USER": f"{SENDS_PER_HOUR}/h"}
    with topology_with_upstream("refusal-promises", extra_env=env) as running:
        yield running


@pytest.fixture(scope="module")
def conversation(site: Site) -> int:
    """The owner's conversation, after the owner used up the hour's sends: one on the socket,
    the rest through REST (the counter they share)."""

    async def send_on_the_socket() -> int:
        ws = await site.socket()
        try:
            frame = {"type": "send", "conversation": None, "text": "One", "model": ANSWERS}
            await ws.send(json.dumps({**frame, "client_id": uuid.uuid4().hex}))
            heard = await hear_reply(ws, timeout=60)
        finally:
            await ws.close()
        assert heard.frames[0]["type"] == "ack", heard.frames
        return int(heard.frames[0]["conversation"])

    conversation = asyncio.run(send_on_the_socket())
    with site.http() as http:
        for n in range(SENDS_PER_HOUR - 1):
            sent = http.post(
                f"/api/v1/conversations/{conversation}/messages",
                json={"text": f"REST {n}", "model": ANSWERS},
            )
            assert sent.status_code == 201, sent.text
    return conversation


def message_count(http: httpx.Client, conversation: int) -> int:
    listed = http.get(f"/api/v1/conversations/{conversation}/messages", params={"page_size": 100})
    assert listed.status_code == 200, listed.text
    return int(listed.json()["count"])


def retry_after_header(response: httpx.Response) -> int:
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 3600, response.headers
    return retry_after


def test_a_rest_send_past_the_limit_is_a_429_with_retry_after_and_saves_nothing(
    site: Site, conversation: int
) -> None:
    with site.http() as http:
        before = message_count(http, conversation)
        refused = http.post(
            f"/api/v1/conversations/{conversation}/messages",
            json={"text": "One too many", "model": ANSWERS, "client_id": uuid.uuid4().hex},
        )
        assert refused.status_code == 429, refused.text
        error = refused.json()["error"]
        assert error["code"] == "rate_limited"
        assert error["retry_after"] == retry_after_header(refused)
        assert message_count(http, conversation) == before


@pytest.mark.parametrize("stream", [False, True])
def test_a_completion_past_the_limit_is_a_429_rate_limit_exceeded_and_never_reaches_the_upstream(
    site: Site, conversation: int, stream: bool
) -> None:
    asked = site.upstream.count()
    with site.http() as http:
        refused = http.post(
            "/v1/chat/completions",
            json={
                "model": ANSWERS,
                "messages": [{"role": "user", "content": "One too many"}],
                "stream": stream,
            },
        )
    assert refused.status_code == 429, refused.text
    retry_after_header(refused)
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded"), error
    assert site.upstream.count() == asked, "a refused request must not reach the model provider"


async def test_a_socket_send_past_the_limit_is_a_rate_limited_error_and_the_socket_stays_open(
    site: Site, conversation: int
) -> None:
    ws = await site.socket()
    try:
        frame = {"type": "send", "conversation": conversation, "text": "One too many"}
        await ws.send(json.dumps({**frame, "model": ANSWERS, "client_id": uuid.uuid4().hex}))
        error = await recv_frame(ws, 30)
        await ws.send(json.dumps({"type": "ping"}))
        pong = await recv_frame(ws, 30)
    finally:
        await ws.close()
    assert error["type"] == "error", error
    assert (error["code"], error["retryable"], error["message"]) == ("rate_limited", True, None)
    assert 1 <= error["retry_after"] <= 3600, error
    assert pong == {"type": "pong"}
    with site.http() as http:
        assert message_count(http, conversation) == 2 * SENDS_PER_HOUR  # each send and its reply


@pytest.mark.parametrize("stream", [False, True])
def test_a_completion_its_budget_refuses_never_reaches_the_upstream(
    site: Site, stream: bool
) -> None:
    budgeted = tenant(site)
    with site.http(budgeted.key) as http:
        _, first = rest_send(http)
        assert first.status_code == 201, first.text
        assert final_message(http, first.json()["reply"])["status"] == "complete"
        operate(site, SPEND_BUDGET, organisation=budgeted.organisation)
        asked = site.upstream.count()
        refused = http.post(
            "/v1/chat/completions",
            json={
                "model": ANSWERS,
                "messages": [{"role": "user", "content": "x"}],
                "stream": stream,
            },
        )
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert site.upstream.count() == asked, "a refused request must not reach the model provider"
