"""Promises of README.md, docs/protocol.md, docs/api.md and docs/operations.md that the other
acceptance files (test_protocol_promises.py, test_api_promises.py, test_tenant_promises.py,
test_refusal_promises.py, test_faults.py, test_openai_sdk.py) leave unchecked, checked as a
client would check them: on the production topology (nginx → two Daphne replicas → Redis ← a
Celery worker, PostgreSQL) with a real OpenAI-compatible upstream (tests/fault_server.py),
through nginx, with a program's API key (websockets, httpx, the official `openai` SDK) or a
browser's session. Faults (the broker, Redis, a replica going away) are in
test_docs_faults.py.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from websockets.asyncio.client import ClientConnection

from tests.fault_server import Endless, Reply
from tests.harness.processes import manage
from tests.harness.sockets import barrier, hear_reply, recv_frame, sign_in_cookie
from tests.harness.topology import START_TIMEOUT, production_topology
from tests.integration.test_api_promises import final_message, post_message
from tests.integration.test_protocol_promises import (
    ANSWERS,
    Site,
    frame_error,
    send_frame,
    topology_with_upstream,
)

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"  # test_protocol_promises.py's accounts
SYSTEM_PROMPT = "You are Parley, under acceptance."
HEALTH_TOKEN = "health-" + uuid.uuid4().hex
# Aliases of this file's own, each on its own route of the upstream (its own deployment).
ENDLESS = "doc-endless"
VERSIONS = "doc-versions"
DOC_ALIASES = (ENDLESS, VERSIONS, "doc-length", "doc-format")

MAKE_ALIASES = """
from llm.models import Deployment, Provider
for name in {aliases!r}:
    provider = Provider.objects.create(
        name=f"upstream-{{name}}", kind="openai-compatible", base_url={base!r} + name + "/v1",
        first_token_timeout=60, inter_token_timeout=60,
    )
    Deployment.objects.create(provider=provider, alias=name, model="fault-model")
"""


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    env = {"LLM_SYSTEM_PROMPT": SYSTEM_PROMPT, "LLM_HEALTH_TOKEN": HEALTH_TOKEN}
    with topology_with_upstream("docs-promises", env) as running:
        base = running.upstream.base_url("x").removesuffix("x/v1")
        code = MAKE_ALIASES.format(aliases=DOC_ALIASES, base=base)
        manage("shell", "-c", code, env=running.topo.env, timeout=START_TIMEOUT)
        with running.topo.logs_on_failure():
            yield running


@pytest.fixture
def http(site: Site) -> Iterator[httpx.Client]:
    with site.http() as client:
        yield client


@pytest.fixture
def sdk(site: Site) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{site.topo.base}/v1", api_key=site.key, max_retries=0)


@pytest.fixture
def browser(site: Site) -> Iterator[httpx.Client]:
    """The owner signed in like a browser: session cookie, CSRF token, same origin."""
    cookie = sign_in_cookie(site.topo.base, "promise-owner", PASSWORD)
    token = dict(part.split("=", 1) for part in cookie.split("; "))["csrftoken"]
    headers = {"Cookie": cookie, "X-CSRFToken": token, "Origin": site.topo.base}
    with httpx.Client(base_url=site.topo.base, headers=headers, timeout=60) as client:
        yield client


async def first_delta(ws: ClientConnection, reply: int | None = None) -> dict[str, Any]:
    """Frames until the first delta (of `reply`, or of the reply an `ack` names)."""
    while True:
        frame = await recv_frame(ws, 60)
        if frame["type"] == "ack" and reply is None:
            reply = frame["reply"]
        elif frame["type"] == "delta" and frame["message"] == reply:
            return frame
        elif frame["type"] == "error":
            raise AssertionError(frame)


# --- docs/protocol.md ---------------------------------------------------------------------------


async def test_a_cancel_frame_ends_the_reply_cancelled_and_keeps_the_text_shown(
    site: Site,
) -> None:
    """`cancel`: "stop that reply; the partial text is kept"; `done` says `cancelled` twice
    (status and finish_reason) and its seq is where the text the socket holds ends."""
    site.upstream.default(ENDLESS, Endless(text="and on ", chunk_delay=0.05))
    ws = await site.socket()
    try:
        await ws.send(json.dumps(send_frame("Go on", model=ENDLESS)))
        delta = await first_delta(ws)
        reply = delta["message"]
        await ws.send(json.dumps({"type": "cancel", "message": reply}))
        heard = await hear_reply(ws, reply, timeout=60)
    finally:
        await ws.close()
    done = heard.final
    assert done is not None and done["type"] == "done", heard.frames
    assert (done["status"], done["finish_reason"]) == ("cancelled", "cancelled"), done
    held = delta["text"] + heard.text
    assert done["seq"] == len(held)
    with site.http() as http:
        saved = http.get(f"/api/v1/messages/{reply}").json()
    assert (saved["status"], saved["content"]) == ("cancelled", held)


async def test_regenerate_of_a_reply_still_running_is_a_bad_frame(site: Site) -> None:
    site.upstream.default(ENDLESS, Endless(text="and on ", chunk_delay=0.05))
    ws = await site.socket()
    try:
        await ws.send(json.dumps(send_frame("Go on", model=ENDLESS)))
        reply = (await first_delta(ws))["message"]
        error = await frame_error(ws, {"type": "regenerate", "message": reply})
        await ws.send(json.dumps({"type": "cancel", "message": reply}))
        await hear_reply(ws, reply, timeout=60)
    finally:
        await ws.close()
    assert (error["code"], error["retryable"], error["message"]) == ("bad_frame", False, None)


async def test_a_resume_also_subscribes_the_socket_to_the_replys_conversation(
    site: Site,
) -> None:
    """A second socket that only resumed a reply hears the next send in that conversation."""
    site.upstream.script("up", Reply(text="First answer."), Reply(text="Second answer."))
    sender = await site.socket()
    follower = await site.socket()
    try:
        await sender.send(json.dumps(send_frame("First")))
        first = await hear_reply(sender, timeout=60)
        await follower.send(
            json.dumps({"type": "resume", "message": first.reply, "after_seq": len(first.text)})
        )
        resumed = await hear_reply(follower, first.reply, timeout=30)
        assert resumed.final is not None and resumed.final["type"] == "done"
        await barrier(follower)
        frame = {**send_frame("Second"), "conversation": first.conversation}
        await sender.send(json.dumps(frame))
        second = await hear_reply(sender, timeout=60)
        heard = await hear_reply(follower, second.reply, timeout=60)
    finally:
        await sender.close()
        await follower.close()
    added = [f for f in heard.frames if f["type"] == "message"]
    assert {f["role"] for f in added} == {"user", "assistant"}, heard.frames
    assert heard.text == "Second answer." and heard.final is not None


async def test_a_send_or_an_edit_into_another_persons_conversation_is_not_found(
    site: Site,
) -> None:
    ws = await site.socket()
    try:
        await ws.send(json.dumps(send_frame("Mine alone")))
        mine = await hear_reply(ws, timeout=60)
    finally:
        await ws.close()
    user_message = mine.frames[0]["message"]
    ws = await site.socket(site.outsider_key)
    try:
        for frame in (
            {**send_frame("Let me in"), "conversation": mine.conversation},
            {"type": "edit", "message": user_message, "text": "Mine now", "client_id": "x1"},
        ):
            error = await frame_error(ws, frame)
            assert (error["code"], error["message"]) == ("not_found", None), (frame, error)
        await barrier(ws)
    finally:
        await ws.close()


# --- docs/api.md: REST --------------------------------------------------------------------------


def test_exports_are_downloads_of_the_current_versions_and_search_skips_superseded_text(
    site: Site, http: httpx.Client
) -> None:
    """ "Conversation reads (… exports, prompts) show only the current versions"; `search`
    leaves superseded messages out; an export is a download."""
    old = f"zebra-{uuid.uuid4().hex[:8]}"
    site.upstream.script("up", Reply(text=f"First: {old}."))
    sent = post_message(http, "Name an animal")
    final_message(http, sent["reply"])
    again = http.post(f"/api/v1/messages/{sent['reply']}/regenerate", json={})
    assert again.status_code == 201, again.text
    new = final_message(http, again.json()["reply"])
    conversation = f"/api/v1/conversations/{sent['conversation']}"
    for kind, extension in (("json", "json"), ("markdown", "md")):
        exported = http.get(f"{conversation}/export/{kind}")
        assert exported.status_code == 200, exported.text
        assert exported.headers["content-disposition"].startswith("attachment;"), kind
        assert exported.headers["content-disposition"].endswith(f'.{extension}"'), kind
        assert old not in exported.text, (kind, exported.text)
        assert new["content"].splitlines()[0] in exported.text, (kind, exported.text)
    found = http.get("/api/v1/conversations", params={"search": old}).json()
    assert found["count"] == 0, found
    assert http.get(f"/api/v1/messages/{sent['reply']}").json()["content"] == f"First: {old}."


@pytest.mark.parametrize("action", ["regenerate", "edit"])
def test_a_regenerated_or_edited_answer_comes_from_the_model_the_user_asked(
    site: Site, http: httpx.Client, action: str
) -> None:
    site.upstream.default(VERSIONS, Reply(text="From the model asked."))
    sent = post_message(http, "Which model?", model=VERSIONS)
    first = final_message(http, sent["reply"])
    if action == "regenerate":
        again = http.post(f"/api/v1/messages/{sent['reply']}/regenerate", json={})
    else:
        again = http.post(f"/api/v1/messages/{sent['message']}/edit", json={"text": "Which?"})
    assert again.status_code == 201, again.text
    second = final_message(http, again.json()["reply"])
    assert (second["provider"], second["model"]) == (first["provider"], first["model"]), second
    assert second["content"] == "From the model asked."


def test_deleting_a_conversation_stops_its_running_reply_and_its_usage_stays_counted(
    site: Site, http: httpx.Client
) -> None:
    site.upstream.default(ENDLESS, Endless(text="and on ", chunk_delay=0.05))
    released = len(site.upstream.closed(ENDLESS))
    conversation = http.post("/api/v1/conversations", json={}).json()["id"]
    sent = http.post(
        f"/api/v1/conversations/{conversation}/messages", json={"text": "x", "model": ENDLESS}
    ).json()
    deadline = time.monotonic() + 60
    while not http.get(sent["reply_url"]).json()["content"]:
        assert time.monotonic() < deadline, "the reply never streamed"
        time.sleep(0.1)
    before = http.get("/api/v1/usage", params={"days": 1}).json()["today"]
    assert before["requests"] >= 1 and before["tokens"] > 0, before
    assert http.delete(f"/api/v1/conversations/{conversation}").status_code == 204
    assert http.get(sent["reply_url"]).status_code == 404
    while len(site.upstream.closed(ENDLESS)) <= released:
        assert time.monotonic() < deadline + 60, "the upstream call was never let go"
        time.sleep(0.05)
    after = http.get("/api/v1/usage", params={"days": 1}).json()["today"]
    assert after["requests"] >= before["requests"], (before, after)
    assert after["tokens"] > 0, after


def test_a_rename_without_a_title_changes_nothing_and_a_title_must_be_a_string(
    http: httpx.Client,
) -> None:
    made = http.post("/api/v1/conversations", json={"title": "Kept"}).json()
    path = f"/api/v1/conversations/{made['id']}"
    unchanged = http.patch(path, json={})
    assert unchanged.status_code == 200 and unchanged.json()["title"] == "Kept", unchanged.text
    for bad in ({"title": 0}, {"title": "x", "colour": "red"}):
        refused = http.patch(path, json=bad)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["code"] == "invalid" and set(bad) - {"title"} <= set(error["fields"]), bad
    assert http.get(path).json()["title"] == "Kept"


def test_usage_takes_1_to_92_days_and_answers_today_month_days_and_budgets(
    http: httpx.Client,
) -> None:
    for days in ("0", "93", "seven", ""):
        refused = http.get("/api/v1/usage", params={"days": days})
        assert refused.status_code == 400, (days, refused.text)
        assert refused.json()["error"]["code"] == "invalid"
    usage = http.get("/api/v1/usage", params={"days": 92})
    assert usage.status_code == 200, usage.text
    body = usage.json()
    assert {"today", "month", "days", "budgets"} <= set(body), body
    assert len(body["days"]) == 92
    assert len(http.get("/api/v1/usage").json()["days"]) == 7  # the default


def test_a_key_revokes_only_itself_and_another_persons_key_is_not_found(
    site: Site, browser: httpx.Client
) -> None:
    made = [browser.post("/api/v1/keys", json={"name": f"k{n}"}).json() for n in range(2)]
    assert all(key["key"].startswith("pk_") for key in made), made
    with site.http(made[0]["key"]) as program, site.http(site.outsider_key) as outsider:
        other = program.delete(f"/api/v1/keys/{made[1]['id']}")
        assert other.status_code == 403, other.text
        assert other.json()["error"]["code"] == "permission_denied"
        foreign = outsider.delete(f"/api/v1/keys/{made[1]['id']}")
        assert foreign.status_code == 404, foreign.text
        listed = program.get("/api/v1/keys").json()
        assert {key["id"] for key in listed} >= {made[0]["id"], made[1]["id"]}
        assert all("key" not in key for key in listed)
    assert browser.delete(f"/api/v1/keys/{made[1]['id']}").status_code == 204
    with site.http(made[1]["key"]) as revoked:
        refused = revoked.get("/api/v1/conversations")
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["code"] == "authentication_failed"


def test_an_idempotency_key_may_hold_inner_spaces_and_a_refusal_is_not_stored(
    http: httpx.Client,
) -> None:
    """ "a key is 1–255 visible ASCII characters (inner spaces allowed)"; "Errors are not
    stored": the same key after a refused request runs the corrected one."""
    conversation = http.post("/api/v1/conversations", json={}).json()["id"]
    path = f"/api/v1/conversations/{conversation}/messages"
    key = {"Idempotency-Key": f"order 66 {uuid.uuid4().hex}"}
    refused = http.post(path, json={"text": "x", "model": ANSWERS, "max_tokens": 0}, headers=key)
    assert refused.status_code == 400, refused.text
    first = http.post(path, json={"text": "x", "model": ANSWERS}, headers=key)
    assert first.status_code == 201, first.text
    again = http.post(path, json={"text": "x", "model": ANSWERS}, headers=key)
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["idempotent-replayed"] == "true"


def test_a_message_reads_with_the_documented_fields(site: Site, http: httpx.Client) -> None:
    site.upstream.script("up", Reply(text="Fields, all of them."))
    sent = post_message(http, "Fields")
    reply = final_message(http, sent["reply"])
    assert {"status", "content", "usage", "cost", "error", "citations"} <= set(reply), reply
    assert (reply["status"], reply["content"], reply["error"]) == (
        "complete",
        "Fields, all of them.",
        None,
    )
    assert reply["citations"] == []
    assert reply["usage"]["completion_tokens"] > 0, reply
    assert reply["cost"] is None or isinstance(reply["cost"], str), reply


# --- docs/api.md: the OpenAI-compatible endpoints --------------------------------------------


def test_system_and_developer_messages_reach_the_model_after_parleys_prompt(
    site: Site, sdk: openai.OpenAI
) -> None:
    """ "joined, in order, as the conversation's own system prompt, sent as one system message
    after Parley's LLM_SYSTEM_PROMPT (blank line between)"."""
    site.upstream.script("up", Reply(text="Understood."))
    sdk.chat.completions.create(
        model=ANSWERS,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": "What now?"},
        ],
    )
    sent = site.upstream.requests("up")[-1].body["messages"]
    systems = [m for m in sent if m["role"] == "system"]
    assert systems == [
        {"role": "system", "content": f"{SYSTEM_PROMPT}\n\nBe brief.\n\nAnswer in English."}
    ], sent
    assert sent[0]["role"] == "system"
    assert [m["content"] for m in sent[1:]] == ["Hi", "Hello.", "What now?"], sent


def test_max_completion_tokens_wins_and_reaches_the_upstream_as_max_tokens(
    site: Site, sdk: openai.OpenAI
) -> None:
    site.upstream.script("up", Reply(text="one two three four five", chunk_chars=4))
    completion = sdk.chat.completions.create(
        model=ANSWERS,
        messages=[{"role": "user", "content": "Count"}],
        max_tokens=5,
        max_completion_tokens=2,
    )
    body = site.upstream.requests("up")[-1].body
    assert body["max_tokens"] == 2 and "max_completion_tokens" not in body, body
    assert completion.choices[0].finish_reason == "length"


def test_an_upstream_stopping_at_its_own_length_limit_says_length(
    site: Site, http: httpx.Client, sdk: openai.OpenAI
) -> None:
    """No max_tokens in the request: the provider stopped at LLM_MAX_TOKENS and said
    `length`; the reply is `incomplete`, streamed or not."""
    site.upstream.default("doc-length", Reply(text="Cut by the upstream", finish_reason="length"))
    completion = sdk.chat.completions.create(
        model="doc-length", messages=[{"role": "user", "content": "Long"}]
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "Cut by the upstream"
    chunks = list(
        sdk.chat.completions.create(
            model="doc-length", messages=[{"role": "user", "content": "Long"}], stream=True
        )
    )
    assert chunks[-1].choices[0].finish_reason == "length"
    raw = sdk.chat.completions.with_raw_response.create(
        model="doc-length", messages=[{"role": "user", "content": "Long"}]
    )
    reply = int(raw.headers["x-parley-message"])
    assert http.get(f"/api/v1/messages/{reply}").json()["status"] == "incomplete"


def test_response_format_is_passed_to_an_openai_compatible_upstream(
    site: Site, sdk: openai.OpenAI
) -> None:
    site.upstream.default("doc-format", Reply(text='{"ok": true}'))
    sdk.chat.completions.create(
        model="doc-format",
        messages=[{"role": "user", "content": "JSON please"}],
        response_format={"type": "json_object"},
    )
    assert site.upstream.requests("doc-format")[-1].body["response_format"] == {
        "type": "json_object"
    }


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"frobnicate": 1}, "frobnicate"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),  # without `stream`
    ],
)
def test_what_parley_cannot_do_is_a_400_naming_it_and_never_reaches_the_model(
    site: Site, http: httpx.Client, extra: dict[str, Any], param: str
) -> None:
    asked = site.upstream.count()
    body = {"model": ANSWERS, "messages": [{"role": "user", "content": "x"}], **extra}
    refused = http.post("/v1/chat/completions", json=body)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param), error
    if param == "frobnicate":
        assert error["message"].startswith("Unrecognized request argument"), error
    assert "x-parley-message" not in refused.headers
    assert site.upstream.count() == asked


def test_bookkeeping_parameters_are_accepted(site: Site, sdk: openai.OpenAI) -> None:
    site.upstream.script("up", Reply(text="Noted."))
    completion = sdk.chat.completions.create(
        model=ANSWERS,
        messages=[{"role": "user", "content": "x"}],
        store=False,
        metadata={"team": "acceptance"},
        parallel_tool_calls=False,
        tool_choice="none",
    )
    assert completion.choices[0].message.content == "Noted."


def test_an_error_answer_has_no_parley_headers_and_a_replay_keeps_them(
    site: Site, http: httpx.Client
) -> None:
    unknown = http.post(
        "/v1/chat/completions",
        json={"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]},
    )
    assert unknown.status_code == 404
    assert "x-parley-conversation" not in unknown.headers
    assert "x-parley-message" not in unknown.headers
    site.upstream.script("up", Reply(text="Twice."))
    body = {"model": ANSWERS, "messages": [{"role": "user", "content": "Replay me"}]}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = http.post("/v1/chat/completions", json=body, headers=key)
    again = http.post("/v1/chat/completions", json=body, headers=key)
    for answer in (first, again):
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-parley-message"] == first.headers["x-parley-message"]
        assert answer.headers["x-parley-conversation"] == first.headers["x-parley-conversation"]


def test_v1_reads_the_api_key_alone_never_the_session(site: Site, browser: httpx.Client) -> None:
    """ "a session cookie sent with a request is not read (no CSRF check, no two-factor gate, no
    `Vary: Cookie`)". A signed-in browser without a key is a 401; with a key it is served."""
    body = {"model": ANSWERS, "messages": [{"role": "user", "content": "x"}]}
    cookie_only = browser.post("/v1/chat/completions", json=body)
    assert cookie_only.status_code == 401, cookie_only.text
    assert cookie_only.json()["error"]["code"] is None  # a missing key, as OpenAI says it
    site.upstream.script("up", Reply(text="Keyed."))
    keyed = browser.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {site.key}"}
    )
    assert keyed.status_code == 200, keyed.text
    for answer in (
        keyed,
        browser.get("/v1/models", headers={"Authorization": f"Bearer {site.key}"}),
    ):
        vary = {v.strip().lower() for v in answer.headers.get("vary", "").split(",")}
        assert "cookie" not in vary, answer.headers


def test_a_stream_without_include_usage_carries_no_usage(site: Site, http: httpx.Client) -> None:
    site.upstream.script("up", Reply(text="No usage here."))
    body = {"model": ANSWERS, "messages": [{"role": "user", "content": "x"}], "stream": True}
    answer = http.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    lines = [line for line in answer.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all("usage" not in chunk for chunk in chunks), chunks
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_a_model_id_the_organisation_cannot_use_is_404_model_not_found(
    sdk: openai.OpenAI,
) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        sdk.models.retrieve("no-such-model")
    assert unknown.value.code == "model_not_found"
    assert sdk.models.retrieve("default").id == "default"


# --- docs/operations.md and README.md ----------------------------------------------------------


def test_the_probes_answer_in_their_documented_shapes_through_nginx(site: Site) -> None:
    base = site.topo.base
    live = httpx.get(f"{base}/livez", timeout=30)
    assert (live.status_code, live.json()) == (200, {"status": "live"})
    ready = httpx.get(f"{base}/readyz", timeout=30)
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    checks = ready.json()["checks"]
    assert set(checks) == {"database", "redis"}, checks
    assert all(re.fullmatch(r"ok \(\d+ ms\)", value) for value in checks.values()), checks
    assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200
    assert httpx.get(f"{base}/metrics", timeout=30).status_code == 404  # not configured


def test_llm_health_is_for_staff_or_its_token(site: Site, browser: httpx.Client) -> None:
    base = site.topo.base
    assert httpx.get(f"{base}/llm/health", timeout=30).status_code == 401
    wrong = httpx.get(f"{base}/llm/health", headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401
    assert browser.get("/llm/health").status_code == 401  # signed in, but not staff
    health = httpx.get(
        f"{base}/llm/health", headers={"Authorization": f"Bearer {HEALTH_TOKEN}"}, timeout=30
    )
    assert health.status_code == 200, health.text
    body = health.json()
    assert body["status"] and body["deployments"], body
    assert site.upstream.base_url("up") not in health.text  # URLs are never shown


def test_the_schema_and_its_interactive_docs_are_served_through_nginx(site: Site) -> None:
    """ "a running Parley serves it at /api/schema/ and as interactive docs (Swagger UI, served
    from Parley's own static files) at /api/docs/": with nginx serving /static/, as in
    production, every script and stylesheet the page names loads."""
    with httpx.Client(base_url=site.topo.base, timeout=30) as client:
        schema = client.get("/api/schema/")
        assert schema.status_code == 200, schema.text[:300]
        assert "openapi:" in schema.text and "/api/v1/conversations" in schema.text
        page = client.get("/api/docs/")
        assert page.status_code == 200, page.text[:300]
        assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
        assert any("swagger" in asset for asset in assets), page.text
        for asset in assets:
            assert client.get(asset).status_code == 200, asset


def test_sign_up_is_where_the_readme_says(site: Site) -> None:
    page = httpx.get(f"{site.topo.base}/accounts/signup/", timeout=30)
    assert page.status_code == 200 and "<form" in page.text


def test_a_replicas_own_413_carries_the_request_id(site: Site) -> None:
    """docs/api.md: every response Parley answers carries `x-request-id`, its refusals too
    (nginx's own 413, before any replica, carries it too: tests/deploy/test_nginx.py)."""
    direct = f"http://127.0.0.1:{site.topo.daphne_ports[0]}"
    big = b'{"title": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    for path in ("/api/v1/conversations", "/v1/chat/completions"):
        refused = httpx.post(
            f"{direct}{path}",
            content=big,
            headers={
                "Authorization": f"Bearer {site.key}",
                "Content-Type": "application/json",
                "X-Request-ID": "too-big.1",
            },
            timeout=60,
        )
        assert refused.status_code == 413, (path, refused.text[:200])
        assert refused.headers["x-request-id"] == "too-big.1", path


@pytest.mark.timeout(420)
def test_behind_a_tls_proxy_the_probes_answer_plain_http_and_the_rest_redirects() -> None:
    """README: `BEHIND_TLS_PROXY` trusts X-Forwarded-Proto, redirects to HTTPS and sends HSTS;
    docs/operations.md: "The probes and /metrics are exempt from the HTTPS redirect" (kubelets
    and Prometheus call pods over plain HTTP). One replica of the image's Daphne, called as
    a kubelet calls it and as the TLS proxy forwards a client."""
    with production_topology(
        replicas=1, worker=False, nginx=False, env={"BEHIND_TLS_PROXY": "true"}, name="docs-tls"
    ) as topo:
        with httpx.Client(base_url=topo.base, timeout=30) as kubelet:
            for path, status in (("/livez", 200), ("/readyz", 200), ("/healthz", 200)):
                assert kubelet.get(path).status_code == status, path
            assert kubelet.get("/metrics").status_code == 404  # exempt, and not configured
            plain = kubelet.get("/api/v1/models")
            assert plain.status_code == 301, plain.text
            assert plain.headers["location"].startswith("https://")
            proxied = kubelet.get("/api/v1/models", headers={"X-Forwarded-Proto": "https"})
            assert proxied.status_code == 401, proxied.text  # served (no key), not redirected
            assert "max-age=" in proxied.headers["strict-transport-security"]
