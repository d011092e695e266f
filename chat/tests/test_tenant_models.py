"""Tenant features: an organisation's allowed models hold on every edge (WebSocket send, REST,
OpenAI endpoint), through the one check in llm/catalog.py, and the model lists show only them."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.urls import reverse

from accounts.models import AuditLog, Organisation, UsageLedger, User
from chat import services
from chat.models import Conversation, Message
from chat.tests.conftest import API
from chat.tests.test_consumers import connect_as, receive_until
from core.errors import ParleyError, error_code
from llm.catalog import tenant_alias, tenant_aliases
from llm.models import Deployment, Provider


def _allow(organisation: Organisation, *aliases: str) -> None:
    Organisation.objects.filter(pk=organisation.pk).update(allowed_models=list(aliases))


def rest_send(api: Client, *, model: str) -> Any:
    """POST "Hi" with `model` into a new conversation through the REST API."""
    conversation = api.post(f"{API}/conversations", {}, content_type="application/json").json()
    return api.post(
        f"{API}/conversations/{conversation['id']}/messages",
        {"text": "Hi", "model": model},
        content_type="application/json",
    )


def _simulated_alias(alias: str) -> None:
    provider = Provider.objects.create(name=f"{alias}-provider", kind="simulated")
    Deployment.objects.create(provider=provider, alias=alias, model=f"{alias}-model")


# --- the one check ---------------------------------------------------------------------


@pytest.mark.django_db
def test_an_empty_allow_list_allows_every_model():
    assert tenant_alias("local", allowed=()) == "local"
    assert tenant_alias("", allowed=()) == ""
    assert tenant_aliases(["simulated", "local"], allowed=()) == ["simulated", "local"]


@pytest.mark.django_db
def test_a_model_off_the_list_is_refused_with_its_code():
    with pytest.raises(ParleyError) as refused:
        tenant_alias("simulated", allowed={"local"})
    assert refused.value.code == "model_not_allowed" and "local" in refused.value.detail
    entry = error_code("model_not_allowed")
    assert (entry.http_status, entry.openai_status, entry.openai_type) == (
        403,
        403,
        "permission_error",
    )
    assert tenant_aliases(["simulated", "local"], allowed={"local"}) == ["local"]


@pytest.mark.django_db
def test_the_default_model_gives_way_to_the_first_allowed_one():
    # The test settings' default model is "simulated".
    assert tenant_alias("", allowed={"simulated", "local"}) == ""
    assert tenant_alias("", allowed={"local"}) == "local"
    with pytest.raises(ParleyError):
        tenant_alias("", allowed={"no-such-model"})


@pytest.mark.django_db
def test_a_send_without_a_model_runs_on_an_allowed_one(owner, organisation, no_dispatch):
    _allow(organisation, "local")
    result = services.message_send(
        author=owner,
        conversation=None,
        text="Hi",
        client_id="c-1",
        organisation=organisation,
    )
    assert result.reply.routing["alias"] == "local" and result.reply.provider == "local"


# --- every edge ------------------------------------------------------------------------


@pytest.mark.django_db
def test_rest_refuses_a_model_the_organisation_may_not_use(api, organisation):
    _allow(organisation, "local")
    conversation = api.post(f"{API}/conversations", {}, content_type="application/json").json()
    refused = api.post(
        f"{API}/conversations/{conversation['id']}/messages",
        {"text": "Hi", "model": "simulated"},
        content_type="application/json",
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "model_not_allowed"
    assert not Message.objects.exists() and not UsageLedger.objects.exists()  # nothing saved
    models = api.get(f"{API}/models").json()
    assert [(m["id"], m["default"]) for m in models] == [("local", True)]


@pytest.mark.django_db(transaction=True)
async def test_the_openai_endpoint_refuses_a_model_the_organisation_may_not_use(http, organisation):
    await sync_to_async(_allow)(organisation, "local")
    request = {"model": "simulated", "messages": [{"role": "user", "content": "Hi"}]}
    for stream in (False, True):
        response = await http.post("/v1/chat/completions", json={**request, "stream": stream})
        assert response.status_code == 403
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("permission_error", "model_not_allowed")
    assert not await Conversation.objects.aexists()
    listed = (await http.get("/v1/models")).json()
    # Chat models: only the allowed one; the embedding model (/v1/embeddings) follows them.
    assert [m["id"] for m in listed["data"]] == ["local", "all-MiniLM-L6-v2"]
    # A hidden model's own page answers as one that does not exist (OpenAI's way).
    assert (await http.get("/v1/models/local")).status_code == 200
    hidden = await http.get("/v1/models/simulated")
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "model_not_found"


@pytest.mark.django_db(transaction=True)
async def test_model_default_runs_on_the_first_allowed_model_on_the_openai_endpoint(
    http, organisation
):
    # The docs' examples say model="default"; the test settings' default is "simulated".
    await sync_to_async(_simulated_alias)("smart")
    await sync_to_async(_allow)(organisation, "smart")
    request = {"model": "default", "messages": [{"role": "user", "content": "Hi"}]}
    for stream in (False, True):
        response = await http.post("/v1/chat/completions", json={**request, "stream": stream})
        assert response.status_code == 200, response.text
        reply = await Message.objects.aget(pk=int(response.headers["X-Parley-Message"]))
        assert (reply.routing["alias"], reply.status) == ("smart", Message.Status.COMPLETE)
        assert reply.content.startswith("You said: Hi") and "simulated" in response.text


@pytest.mark.django_db(transaction=True)
async def test_model_detail_is_a_404_for_a_model_the_organisation_may_not_use(http, organisation):
    await sync_to_async(_allow)(organisation, "local")
    hidden = await http.get("/v1/models/simulated")
    assert hidden.status_code == 404
    error = hidden.json()["error"]
    assert (error["code"], error["param"]) == ("model_not_found", "model")
    assert (await http.get("/v1/models/local")).json()["id"] == "local"
    assert (await http.get("/v1/models/default")).status_code == 200
    assert (await http.get("/v1/models/all-MiniLM-L6-v2")).status_code == 200


@pytest.mark.django_db
def test_rest_model_default_runs_on_the_first_allowed_model(api, organisation, no_dispatch):
    _allow(organisation, "local")
    sent = rest_send(api, model="default")
    assert sent.status_code == 201, sent.content
    assert Message.objects.get(pk=sent.json()["reply"]).routing["alias"] == "local"


@pytest.mark.django_db(transaction=True)
async def test_a_socket_send_of_a_model_the_organisation_may_not_use_is_refused(owner):
    personal = await Organisation.objects.aget(personal_owner=owner)
    await sync_to_async(_allow)(personal, "local")
    ws = await connect_as(owner)
    await ws.send_json_to(
        {
            "type": "send",
            "conversation": None,
            "text": "Hi",
            "client_id": "c1",
            "model": "simulated",
        }
    )
    [error] = await receive_until(ws, "error")
    assert error["code"] == "model_not_allowed" and error["retryable"] is False
    assert not await Message.objects.aexists()
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_socket_send_of_model_default_runs_on_the_first_allowed_model(owner):
    personal = await Organisation.objects.aget(personal_owner=owner)
    await sync_to_async(_allow)(personal, "local")
    ws = await connect_as(owner)
    frame = {"type": "send", "conversation": None, "text": "Hi", "client_id": "d1"}
    await ws.send_json_to({**frame, "model": "default"})
    [ack] = await receive_until(ws, "ack")
    reply = await Message.objects.aget(reply_to_id=ack["message"])
    assert reply.routing["alias"] == "local"
    await ws.disconnect()


# --- the admin -------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_organisation_admin_ticks_its_allowed_models_in_the_admin(client, owner, organisation):
    User.objects.filter(pk=owner.pk).update(is_staff=True)
    client.force_login(owner)  # the admin of Acme (the fixture)
    url = reverse("admin:accounts_organisation_change", args=[organisation.pk])
    form = client.get(url).content.decode()
    assert 'name="allowed_models" value="local"' in form
    assert 'name="allowed_models" value="simulated"' in form
    response = client.post(
        url,
        {
            "name": organisation.name,
            "slug": organisation.slug,
            "allowed_models": ["simulated"],
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    organisation.refresh_from_db()
    assert organisation.allowed_models == ["simulated"]
    audited = AuditLog.objects.filter(action=AuditLog.Action.ADMIN_EDIT)
    assert {"allowed_models": ["simulated"]} in [entry.details for entry in audited]
    listing = client.get(reverse("admin:accounts_organisation_changelist")).content.decode()
    assert "simulated" in listing


@pytest.mark.django_db
def test_a_changed_allow_list_holds_at_once_for_the_next_send(owner, organisation, no_dispatch):
    def send(client_id: str) -> Message:
        return services.message_send(
            author=owner,
            conversation=None,
            text="Hi",
            client_id=client_id,
            organisation=organisation,
            alias="simulated",
        ).reply

    assert send("before").routing["alias"] == "simulated"  # every model: the list is cached
    organisation.allowed_models = ["local"]
    organisation.save()  # as the admin saves it
    with pytest.raises(ParleyError) as refused:
        send("after")
    assert refused.value.code == "model_not_allowed"
