"""docs/api.md's bad-input promises for the REST API and the OpenAI-compatible endpoint, through
nginx on the production topology (two Daphne replicas, Redis, a Celery worker, PostgreSQL):
every refusal is the one error shape with the documented status and field, and nothing is saved
by a refused request — the conversation holds exactly the messages it held before.

test_api_promises.py has unknown fields, malformed JSON and pages; test_docs_promises.py the
rename, usage days and Idempotency-Key spaces, and /v1's unsupported features. Here: a send's
every bounded field, edits, origins, Idempotency-Keys that are not 1–255 visible ASCII
characters, and /v1 requests out of bounds (missing model, messages that cannot be answered,
images, every bounded generation parameter), none of which reaches the upstream.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.test_protocol_promises import ANSWERS, Site, topology_with_upstream

pytestmark = pytest.mark.integration

MAX_TOKENS = 512  # LLM_MAX_TOKENS' default
MAX_CHARS = 16000  # CHAT_MAX_MESSAGE_CHARS' default


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with topology_with_upstream("acceptance-input") as running:
        with running.topo.logs_on_failure():
            yield running


@pytest.fixture
def http(site: Site) -> Iterator[httpx.Client]:
    with site.http() as client:
        yield client


@pytest.fixture
def chat(http: httpx.Client) -> int:
    made = http.post("/api/v1/conversations", json={"title": "bad input"})
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


def messages_of(http: httpx.Client, chat: int) -> list[dict[str, Any]]:
    listed = http.get(f"/api/v1/conversations/{chat}/messages")
    assert listed.status_code == 200, listed.text
    return list(listed.json()["results"])


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["detail"], error
    return dict(error)


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("text", {"text": ""}),
        ("text", {"text": "x" * (MAX_CHARS + 1)}),
        ("text", {"text": 5}),
        ("max_tokens", {"text": "hi", "max_tokens": 0}),
        ("max_tokens", {"text": "hi", "max_tokens": MAX_TOKENS + 1}),
        ("max_tokens", {"text": "hi", "max_tokens": "many"}),
        ("temperature", {"text": "hi", "temperature": 2.5}),
        ("temperature", {"text": "hi", "temperature": -0.1}),
        ("client_id", {"text": "hi", "client_id": "c" * 65}),
        ("client_id", {"text": "hi", "client_id": ""}),
    ],
)
def test_a_send_past_a_documented_bound_is_a_400_naming_it_and_saves_nothing(
    http: httpx.Client, chat: int, field: str, body: dict[str, Any]
) -> None:
    """api.md: `POST conversations/<id>/messages` `{text, client_id?, model?, max_tokens?,
    temperature?}`: `max_tokens` 1 to `LLM_MAX_TOKENS`, `temperature` 0–2; bad input is a 400
    `invalid` with `fields`; protocol.md bounds `text` and `client_id` the same way."""
    answer = http.post(f"/api/v1/conversations/{chat}/messages", json=body)
    error = refused(answer, 400, "invalid")
    assert field in error["fields"], error
    assert messages_of(http, chat) == []


def test_a_model_naming_no_alias_is_a_404_whose_fields_say_so(
    http: httpx.Client, chat: int
) -> None:
    """api.md: "`model` naming no alias is a 404 `not_found` (its `fields.model` says so)"."""
    answer = http.post(
        f"/api/v1/conversations/{chat}/messages", json={"text": "hi", "model": "no-such-model"}
    )
    error = refused(answer, 404, "not_found")
    assert "model" in error["fields"], error
    assert messages_of(http, chat) == []


def test_a_send_into_a_conversation_that_is_not_yours_is_a_404(site: Site, chat: int) -> None:
    with site.http(site.outsider_key) as outsider:
        answer = outsider.post(f"/api/v1/conversations/{chat}/messages", json={"text": "hi"})
        refused(answer, 404, "not_found")
    with site.http() as owner:
        assert messages_of(owner, chat) == []


def test_an_edit_with_bad_text_is_a_400_and_keeps_the_message(
    http: httpx.Client, chat: int
) -> None:
    """api.md: `POST messages/<id>/edit` `{text, client_id?}`: text bounded as a send's; a
    refused edit supersedes nothing."""
    sent = http.post(
        f"/api/v1/conversations/{chat}/messages",
        json={"text": "original", "model": ANSWERS, "client_id": uuid.uuid4().hex},
    )
    assert sent.status_code == 201, sent.text
    message = sent.json()["message"]
    for body in ({"text": ""}, {"text": "x" * (MAX_CHARS + 1)}, {"txt": "typo"}):
        refused(http.post(f"/api/v1/messages/{message}/edit", json=body), 400, "invalid")
    kept = [m for m in messages_of(http, chat) if m["role"] == "user"]
    assert [(m["id"], m["content"]) for m in kept] == [(message, "original")], kept


def test_an_unknown_origin_is_a_400_naming_origin(http: httpx.Client) -> None:
    """api.md: `origin` (repeatable: `page`, `websocket`, `rest`, `openai`)."""
    error = refused(http.get("/api/v1/conversations", params={"origin": "fax"}), 400, "invalid")
    assert "origin" in error["fields"], error


@pytest.mark.parametrize("key", ["é-key", "tab\tkey", "x" * 256, ""])
def test_an_idempotency_key_that_is_not_1_to_255_visible_ascii_is_a_400(
    http: httpx.Client, chat: int, key: str
) -> None:
    """api.md: "a key is 1–255 visible ASCII characters (inner spaces allowed), else 400
    `invalid`"; the refused send saves nothing."""
    answer = http.post(
        f"/api/v1/conversations/{chat}/messages",
        json={"text": "hi", "model": ANSWERS},
        headers={b"Idempotency-Key": key.encode()},
    )
    refused(answer, 400, "invalid")
    assert messages_of(http, chat) == []


# --- the OpenAI-compatible endpoint ----------------------------------------------------------

USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [USER]}, "model"),
        ({"model": ANSWERS, "messages": []}, "messages"),
        ({"model": ANSWERS}, "messages"),
        ({"model": ANSWERS, "messages": [USER, {"role": "assistant", "content": "?"}]}, "messages"),
        ({"model": ANSWERS, "messages": [{"role": "narrator", "content": "hi"}]}, "messages"),
        (
            {
                "model": ANSWERS,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
                    }
                ],
            },
            "messages",
        ),
        ({"model": ANSWERS, "messages": [USER], "max_tokens": MAX_TOKENS + 1}, "max_tokens"),
        (
            {"model": ANSWERS, "messages": [USER], "max_completion_tokens": 0},
            "max_completion_tokens",
        ),
        ({"model": ANSWERS, "messages": [USER], "temperature": 2.5}, "temperature"),
        ({"model": ANSWERS, "messages": [USER], "top_p": 1.5}, "top_p"),
        ({"model": ANSWERS, "messages": [USER], "presence_penalty": -3}, "presence_penalty"),
        ({"model": ANSWERS, "messages": [USER], "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
def test_a_completion_request_out_of_bounds_is_a_400_naming_the_param_and_asks_no_model(
    site: Site, http: httpx.Client, body: dict[str, Any], param: str
) -> None:
    """api.md: "Request parameters are honoured end to end or refused with a 400 whose `param`
    names them"; `messages` must end with the user's; images are refused; 400
    `invalid_request_error` in OpenAI's shape, and nothing reaches the upstream."""
    asked = site.upstream.count()
    answer = http.post("/v1/chat/completions", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"], error
    # OpenAI names a part of a field by its path: `messages.[0].role`.
    assert error["param"] == param or error["param"].startswith(f"{param}.["), error
    assert "x-parley-message" not in answer.headers
    assert site.upstream.count() == asked


def test_text_parts_are_taken_as_the_users_text(site: Site, http: httpx.Client) -> None:
    """api.md: "text content as a string or text parts"."""
    parts = [{"type": "text", "text": "first part, "}, {"type": "text", "text": "second part"}]
    answer = http.post(
        "/v1/chat/completions",
        json={"model": ANSWERS, "messages": [{"role": "user", "content": parts}]},
    )
    assert answer.status_code == 200, answer.text
    seen = site.upstream.requests("up")[-1].body["messages"][-1]
    assert seen["role"] == "user", seen
    text = (
        seen["content"]
        if isinstance(seen["content"], str)
        else "".join(part["text"] for part in seen["content"])
    )
    assert "first part" in text and "second part" in text, seen
