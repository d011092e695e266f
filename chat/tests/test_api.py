"""The REST API (/api/v1/): conversations, messages, models, usage; auth, tenancy, errors,
idempotency. Streams are in test_api_stream.py, the OpenAI endpoints in test_api_openai.py."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from django.core.cache import cache
from django.test import Client

from accounts.models import Budget, Membership
from accounts.services import api_key_create, api_key_revoke, membership_set
from chat import services
from chat.api import idempotency
from chat.api.errors import api_exception_handler
from chat.errors import ChatError
from chat.models import Conversation, Message
from chat.tests.conftest import API, bearer
from llm.providers.simulated import simulated_reply


@pytest.fixture
def chat(owner, organisation) -> Conversation:
    conversation = services.conversation_create(
        owner=owner, title="Trip to Lisbon", organisation=organisation
    )
    Message.objects.create(
        conversation=conversation,
        role=Message.Role.USER,
        author=owner,
        content="Where should I eat pastéis de nata?",
        status=Message.Status.COMPLETE,
        seq=35,
    )
    Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        content="Try **Manteigaria** in Chiado.",
        status=Message.Status.COMPLETE,
        seq=30,
        model="simulated",
    )
    return conversation


def wait_final(api: Client, reply_id: int, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.get(f"{API}/messages/{reply_id}").json()
        if body["status"] in ("complete", "failed", "cancelled"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"reply {reply_id} not final within {timeout}s")


# --- auth and tenancy ---------------------------------------------------------------------


def test_an_api_key_reaches_only_its_organisation(api, owner, chat):
    services.conversation_create(owner=owner, title="Personal notes")  # personal organisation
    body = api.get(f"{API}/conversations").json()
    assert [c["title"] for c in body["results"]] == ["Trip to Lisbon"]
    personal = Conversation.objects.get(title="Personal notes")
    response = api.get(f"{API}/conversations/{personal.pk}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_session_reaches_all_of_the_users_organisations(client, owner, chat):
    services.conversation_create(owner=owner, title="Personal notes")
    client.force_login(owner)
    titles = {c["title"] for c in client.get(f"{API}/conversations").json()["results"]}
    assert titles == {"Trip to Lisbon", "Personal notes"}


@pytest.mark.parametrize(
    "method,path",
    [
        ("get", "/conversations/{c}"),
        ("patch", "/conversations/{c}"),
        ("delete", "/conversations/{c}"),
        ("get", "/conversations/{c}/messages"),
        ("post", "/conversations/{c}/messages"),
        ("get", "/conversations/{c}/export/json"),
        ("get", "/conversations/{c}/export/markdown"),
        ("get", "/messages/{m}"),
        ("post", "/messages/{m}/cancel"),
        ("get", "/messages/{m}/stream"),
    ],
)
def test_outsider_cannot_reach_a_conversation(outsider, outsider_key, chat, method, path):
    reply = chat.messages.get(role="assistant")
    url = API + path.format(c=chat.pk, m=reply.pk)
    client = Client(**bearer(outsider_key.raw))
    response = getattr(client, method)(
        url, data={"title": "x", "text": "x"}, content_type="application/json"
    )
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "not_found", "detail": response.json()["error"]["detail"]}
    }
    assert Conversation.objects.filter(pk=chat.pk, title="Trip to Lisbon").exists()
    assert chat.messages.count() == 2


@pytest.fixture
def outsider_key(outsider, other_organisation):
    return api_key_create(user=outsider, organisation=other_organisation, name="outsider")


def test_a_member_cannot_read_the_owners_conversation_in_their_shared_organisation(
    member, organisation, chat
):
    key = api_key_create(user=member, organisation=organisation, name="member")
    response = Client(**bearer(key.raw)).get(f"{API}/conversations/{chat.pk}")
    assert response.status_code == 404


def test_no_credentials_is_401_with_a_bearer_challenge(client):
    response = client.get(f"{API}/conversations")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "not_authenticated"


def test_a_revoked_key_is_refused(api, api_key, owner):
    assert api.get(f"{API}/conversations").status_code == 200
    api_key_revoke(key=api_key.key, by=owner)
    response = api.get(f"{API}/conversations")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_a_session_needs_csrf_for_unsafe_methods(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    refused = client.post(f"{API}/conversations", {"title": "x"}, content_type="application/json")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    assert "CSRF" in refused.json()["error"]["detail"]
    client.get("/")  # the chat page sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    created = client.post(
        f"{API}/conversations",
        {"title": "With CSRF"},
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert created.status_code == 201
    # Reads need no token; an API key needs none at all (no cookie, no CSRF).
    assert client.get(f"{API}/conversations").status_code == 200


def test_an_api_key_needs_no_csrf(api_key):
    client = Client(enforce_csrf_checks=True, **bearer(api_key.raw))
    response = client.post(f"{API}/conversations", {}, content_type="application/json")
    assert response.status_code == 201


# --- conversations ------------------------------------------------------------------------


def test_conversations_are_paginated(api, owner, organisation):
    for n in range(25):
        services.conversation_create(owner=owner, title=f"Chat {n:02}", organisation=organisation)
    first = api.get(f"{API}/conversations", {"page_size": 10}).json()
    assert first["count"] == 25 and len(first["results"]) == 10
    assert first["results"][0]["title"] == "Chat 24"  # most recently active first
    assert first["previous"] is None and "page=2" in first["next"]
    last = api.get(f"{API}/conversations", {"page_size": 10, "page": 3}).json()
    assert len(last["results"]) == 5 and last["next"] is None
    seen = {
        c["id"]
        for p in (1, 2, 3)
        for c in api.get(f"{API}/conversations", {"page_size": 10, "page": p}).json()["results"]
    }
    assert len(seen) == 25
    beyond = api.get(f"{API}/conversations", {"page": 9})
    assert beyond.status_code == 404 and beyond.json()["error"]["code"] == "not_found"


def test_search_looks_in_titles_and_message_text(api, owner, organisation, chat):
    other = services.conversation_create(owner=owner, title="Cooking", organisation=organisation)
    Message.objects.create(
        conversation=other,
        role="user",
        author=owner,
        content="A recipe with NATA cream",
        status="complete",
        seq=24,
    )
    services.conversation_create(owner=owner, title="Unrelated", organisation=organisation)

    def titles(search: str) -> set[str]:
        return {
            c["title"]
            for c in api.get(f"{API}/conversations", {"search": search}).json()["results"]
        }

    assert titles("nata") == {"Trip to Lisbon", "Cooking"}  # message text, any case
    assert titles("lisbon") == {"Trip to Lisbon"}  # title
    assert titles("manteigaria") == {"Trip to Lisbon"}  # the assistant's text
    assert titles("nothing like it") == set()


def test_search_leaves_out_superseded_text(api, chat):
    chat.messages.filter(role="assistant").update(superseded=True)
    assert api.get(f"{API}/conversations", {"search": "manteigaria"}).json()["count"] == 0


def test_create_rename_and_delete(api, organisation):
    created = api.post(f"{API}/conversations", {"title": "Draft"}, content_type="application/json")
    assert created.status_code == 201
    body = created.json()
    assert body["title"] == "Draft" and body["organisation"] == organisation.pk
    url = f"{API}/conversations/{body['id']}"
    renamed = api.patch(url, {"title": "  Final   title "}, content_type="application/json")
    assert renamed.status_code == 200 and renamed.json()["title"] == "Final title"
    assert api.get(url).json()["title"] == "Final title"
    assert api.delete(url).status_code == 204
    assert api.get(url).status_code == 404
    assert not Conversation.objects.filter(pk=body["id"]).exists()


def test_validation_errors_name_the_field(api, chat):
    response = api.patch(
        f"{API}/conversations/{chat.pk}", {"title": ""}, content_type="application/json"
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and "title" in error["fields"]
    blank = api.patch(
        f"{API}/conversations/{chat.pk}", {"title": "   "}, content_type="application/json"
    )
    assert blank.status_code == 400


def test_malformed_json_is_a_400(api):
    response = api.post(f"{API}/conversations", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_delete_removes_messages(api, chat):
    assert api.delete(f"{API}/conversations/{chat.pk}").status_code == 204
    assert not Message.objects.filter(conversation_id=chat.pk).exists()


def test_export_as_json(api, chat):
    response = api.get(f"{API}/conversations/{chat.pk}/export/json")
    assert response.status_code == 200
    assert f'filename="conversation-{chat.pk}.json"' in response["Content-Disposition"]
    body = response.json()
    assert body["conversation"]["title"] == "Trip to Lisbon"
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]
    assert body["messages"][1]["content"] == "Try **Manteigaria** in Chiado."
    assert body["messages"][1]["usage"] == {
        "prompt_tokens": None,
        "completion_tokens": None,
        "estimated": False,
    }


def test_export_as_markdown(api, chat):
    response = api.get(f"{API}/conversations/{chat.pk}/export/markdown")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/markdown")
    text = response.content.decode()
    assert text.startswith("# Trip to Lisbon\n")
    assert "## You\n\nWhere should I eat pastéis de nata?" in text
    assert "## Parley (simulated)\n\nTry **Manteigaria** in Chiado." in text
    # An explicit Accept for Markdown negotiates too; an error is JSON whatever was asked.
    assert (
        api.get(
            f"{API}/conversations/{chat.pk}/export/markdown", HTTP_ACCEPT="text/markdown"
        ).status_code
        == 200
    )
    missing = api.get(f"{API}/conversations/999999/export/markdown", HTTP_ACCEPT="text/markdown")
    assert missing.status_code == 404 and missing["Content-Type"] == "application/json"


# --- messages -----------------------------------------------------------------------------


def test_messages_are_listed_oldest_first_without_superseded_ones(api, chat):
    chat.messages.filter(role="assistant").update(superseded=True)
    body = api.get(f"{API}/conversations/{chat.pk}/messages").json()
    assert body["count"] == 1 and body["results"][0]["role"] == "user"


@pytest.mark.django_db(transaction=True)
def test_posting_a_message_returns_ids_and_the_reply_is_generated(api, chat):
    response = api.post(
        f"{API}/conversations/{chat.pk}/messages",
        {"text": "And coffee?"},
        content_type="application/json",
    )
    assert response.status_code == 201
    body = response.json()
    assert body["conversation"] == chat.pk and body["created"] is True
    assert body["stream_url"] == f"{API}/messages/{body['reply']}/stream"
    assert response["Location"] == body["reply_url"] == f"{API}/messages/{body['reply']}"
    user_message = Message.objects.get(pk=body["message"])
    assert user_message.content == "And coffee?" and user_message.reply_to_id is None
    reply = wait_final(api, body["reply"])
    assert reply["status"] == "complete" and reply["content"] == simulated_reply("And coffee?")
    assert reply["usage"]["completion_tokens"] > 0 and reply["provider"] == "simulated"


@pytest.mark.django_db(transaction=True)
def test_a_repeated_client_id_starts_no_second_reply(api, chat):
    url = f"{API}/conversations/{chat.pk}/messages"
    first = api.post(url, {"text": "Hi", "client_id": "c-1"}, content_type="application/json")
    second = api.post(url, {"text": "Hi", "client_id": "c-1"}, content_type="application/json")
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["reply"] == first.json()["reply"] and second.json()["created"] is False
    wait_final(api, first.json()["reply"])
    assert chat.messages.filter(role="assistant").count() == 2  # the fixture's and one new


@pytest.mark.django_db(transaction=True)
def test_an_idempotency_key_repeat_returns_the_original_result(api, chat):
    url = f"{API}/conversations/{chat.pk}/messages"
    headers = {"HTTP_IDEMPOTENCY_KEY": "order-42"}
    first = api.post(url, {"text": "Once"}, content_type="application/json", **headers)
    again = api.post(url, {"text": "Once"}, content_type="application/json", **headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true" and not first.has_header("Idempotent-Replayed")
    wait_final(api, first.json()["reply"])
    assert Message.objects.filter(content="Once").count() == 1
    # Even once the stored result is gone, the key's client_id finds the same message.
    cache.clear()
    late = api.post(url, {"text": "Once"}, content_type="application/json", **headers)
    assert late.status_code == 200 and late.json()["reply"] == first.json()["reply"]


def test_an_idempotency_key_reused_for_another_request_is_refused(api, chat):
    url = f"{API}/conversations/{chat.pk}/messages"
    headers = {"HTTP_IDEMPOTENCY_KEY": "k-1"}
    assert (
        api.post(url, {"text": "One"}, content_type="application/json", **headers).status_code
        == 201
    )
    other = api.post(url, {"text": "Two"}, content_type="application/json", **headers)
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"


def test_idempotency_keys_are_per_caller(api, chat, owner, organisation):
    """The same key from another API key is another request."""
    second = Client(**bearer(api_key_create(user=owner, organisation=organisation, name="2").raw))
    url = f"{API}/conversations/{chat.pk}/messages"
    a = api.post(url, {"text": "Same"}, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k")
    b = second.post(
        url, {"text": "Same"}, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k"
    )
    assert a.status_code == b.status_code == 201 and a.json()["reply"] != b.json()["reply"]


@pytest.mark.django_db(transaction=True)
def test_a_concurrent_duplicate_gets_409(api, chat, monkeypatch):
    """The second request arrives while the first still runs: 409, and only one message."""
    inside, release = threading.Event(), threading.Event()
    real_send = services.message_send

    def slow_send(**kwargs):
        inside.set()
        assert release.wait(10)
        return real_send(**kwargs)

    monkeypatch.setattr(services, "message_send", slow_send)
    url = f"{API}/conversations/{chat.pk}/messages"
    results = {}

    def first():
        results["first"] = api.post(
            url, {"text": "Dup"}, content_type="application/json", HTTP_IDEMPOTENCY_KEY="dup"
        )

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(10)
    duplicate = api.post(
        url, {"text": "Dup"}, content_type="application/json", HTTP_IDEMPOTENCY_KEY="dup"
    )
    release.set()
    thread.join(10)
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "idempotency_conflict"
    assert results["first"].status_code == 201
    wait_final(api, results["first"].json()["reply"])
    # Once the first finished, a repeat gets its result.
    repeat = api.post(
        url, {"text": "Dup"}, content_type="application/json", HTTP_IDEMPOTENCY_KEY="dup"
    )
    assert repeat.status_code == 201 and repeat.json() == results["first"].json()
    assert Message.objects.filter(content="Dup").count() == 1


def test_the_idempotency_lock_is_atomic(api, api_key, chat):
    """A held lock (another replica running the first request) refuses the duplicate."""
    slot = idempotency.slot_for(
        scope=f"key:{api_key.key.pk}",
        key="held",
        method="POST",
        path=f"{API}/conversations/{chat.pk}/messages",
        payload={"text": "x"},
    )
    assert cache.add(slot.lock_key, 1, 60)
    response = api.post(
        f"{API}/conversations/{chat.pk}/messages",
        {"text": "x"},
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="held",
    )
    assert response.status_code == 409


@pytest.mark.django_db(transaction=True)
def test_cancel_stops_a_running_reply_and_keeps_its_text(api, chat, settings):
    settings.SIMULATED_TOKENS_PER_SECOND = 20.0
    settings.STREAM_CANCEL_POLL_INTERVAL = 0.05
    body = api.post(
        f"{API}/conversations/{chat.pk}/messages",
        {"text": "Tell me a long story"},
        content_type="application/json",
    ).json()
    deadline = time.monotonic() + 10
    while Message.objects.get(pk=body["reply"]).status != "streaming":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    response = api.post(f"{API}/messages/{body['reply']}/cancel")
    assert response.status_code == 200 and response.json()["id"] == body["reply"]
    reply = wait_final(api, body["reply"])
    assert reply["status"] == "cancelled"
    assert simulated_reply("Tell me a long story").startswith(reply["content"])
    assert len(reply["content"]) < len(simulated_reply("Tell me a long story"))


def test_cancelling_a_user_message_is_a_409(api, chat):
    """A well-formed request the message's kind does not allow: a conflict, not bad input."""
    user_message = chat.messages.get(role="user")
    response = api.post(f"{API}/messages/{user_message.pk}/cancel")
    assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"


def test_posting_is_rate_limited_with_retry_after(api, chat, settings):
    settings.WS_RATE_SENDS_PER_USER = "2/m"
    url = f"{API}/conversations/{chat.pk}/messages"
    statuses = [api.post(url, {"text": f"m{n}"}, content_type="application/json") for n in range(3)]
    assert [r.status_code for r in statuses] == [201, 201, 429]
    refused = statuses[2]
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.json()["error"]["retry_after"] == int(refused["Retry-After"])


def test_posting_over_budget_is_a_429_that_saves_nothing(api, chat, organisation):
    Budget.objects.create(organisation=organisation, period="day", max_tokens=10)
    response = api.post(
        f"{API}/conversations/{chat.pk}/messages", {"text": "Hi"}, content_type="application/json"
    )
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "quota_exceeded" and error["resets_at"]
    assert int(response["Retry-After"]) == error["retry_after"]
    assert chat.messages.count() == 2


# --- models and usage ---------------------------------------------------------------------


def test_models_lists_the_aliases_with_the_default_first(api):
    models = api.get(f"{API}/models").json()
    assert models[0] == {"id": "simulated", "default": True, "fallbacks": []}
    assert {"simulated", "local"} <= {m["id"] for m in models}


@pytest.mark.django_db(transaction=True)
def test_usage_counts_the_callers_replies(api, chat, owner, organisation):
    body = api.post(
        f"{API}/conversations/{chat.pk}/messages",
        {"text": "Count me"},
        content_type="application/json",
    ).json()
    reply = wait_final(api, body["reply"])
    usage = api.get(f"{API}/usage", {"days": 3}).json()
    assert usage["organisation"] == organisation.pk and usage["user"] == owner.pk
    used = reply["usage"]["completion_tokens"]
    assert usage["today"]["requests"] == 1 and usage["today"]["tokens"] >= used
    assert usage["month"] == usage["today"]
    assert len(usage["days"]) == 3 and usage["days"][0]["tokens"] == usage["today"]["tokens"]


def test_organisation_usage_is_for_operators(owner, member, organisation, chat):
    member_key = api_key_create(user=member, organisation=organisation, name="m")
    refused = Client(**bearer(member_key.raw)).get(f"{API}/usage/organisation")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    membership_set(organisation=organisation, user=member, role=Membership.Role.OPERATOR, by=owner)
    allowed = Client(**bearer(member_key.raw)).get(f"{API}/usage/organisation")
    assert allowed.status_code == 200
    assert allowed.json()["user"] is None and allowed.json()["members"] == []


def test_usage_rejects_a_bad_day_count(api):
    response = api.get(f"{API}/usage", {"days": 0})
    assert response.status_code == 400 and "days" in response.json()["error"]["fields"]


# --- the error handler --------------------------------------------------------------------


@pytest.mark.parametrize(
    "code,status,shown",
    [
        ("bad_frame", 400, "invalid"),
        ("not_found", 404, "not_found"),
        ("rate_limited", 429, "rate_limited"),
        ("quota_exceeded", 429, "quota_exceeded"),
        ("provider_unavailable", 503, "provider_unavailable"),
        ("provider_rejected", 502, "provider_rejected"),
        ("internal", 500, "internal"),
        ("something_new", 500, "internal"),
    ],
)
def test_chat_error_codes_map_to_statuses(code, status, shown):
    response = api_exception_handler(ChatError(code, "Why."), {})
    assert response.status_code == status
    assert response.data == {"error": {"code": shown, "detail": "Why."}}


def test_an_unexpected_exception_is_a_json_500(caplog):
    response = api_exception_handler(RuntimeError("boom"), {})
    assert response.status_code == 500 and response.data["error"]["code"] == "internal"
    assert "boom" not in str(response.data)


def test_renaming_a_conversation_deleted_meanwhile_is_not_found(chat):
    stale = Conversation.objects.get(pk=chat.pk)
    chat.delete()
    with pytest.raises(ChatError) as refused:
        services.conversation_rename(conversation=stale, title="Too late")
    assert refused.value.code == "not_found"


@pytest.mark.parametrize(
    "path", ["/messages/%0A", "/conversations/null%2Cnull", "/nothing-here", "/messages/1/x"]
)
def test_unknown_api_paths_are_json_404s(api, owner, path):
    assert api.get(API + path).status_code == 404
    assert api.get(API + path).json()["error"]["code"] == "not_found"
    session = Client(enforce_csrf_checks=True)
    session.force_login(owner)
    response = session.delete(API + path)  # no CSRF refusal hiding the 404
    assert response.status_code == 404 and response["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"title": ' + "[" * 40 + "]" * 40 + "}",
        '{"title": "a\\u0000b"}',
        '{"title": "\\ud800"}',
    ],
    ids=["deep", "nested", "nul", "surrogate"],
)
def test_hostile_json_is_a_400_parse_error_without_a_traceback(api, raw, caplog):
    response = api.post(f"{API}/conversations", raw, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"
    assert not Conversation.objects.exists()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_a_body_over_the_limit_is_a_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = '{"title": "' + "x" * 5000 + '"}'
    response = api.post(f"{API}/conversations", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert not Conversation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_client_id_reused_in_another_organisation_posts_a_new_message(api, chat, owner):
    """ "c-1" posted in Acme, then with the personal organisation's key into a personal
    conversation: a new message there, never Acme's ids or text."""
    acme = api.post(
        f"{API}/conversations/{chat.pk}/messages",
        {"text": "Acme's plan", "client_id": "c-1"},
        content_type="application/json",
    )
    assert acme.status_code == 201
    personal_key = api_key_create(
        user=owner, organisation=owner.personal_organisation, name="personal"
    )
    personal = Client(**bearer(personal_key.raw))
    mine = services.conversation_create(
        owner=owner, title="Mine", organisation=owner.personal_organisation
    )
    response = personal.post(
        f"{API}/conversations/{mine.pk}/messages",
        {"text": "My own", "client_id": "c-1"},
        content_type="application/json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["created"] is True and body["conversation"] == mine.pk
    assert body["message"] != acme.json()["message"]
    assert Message.objects.get(pk=body["message"]).content == "My own"
