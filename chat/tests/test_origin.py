"""Conversations carry where they were started: the page lists people's own chats (the page,
a program's socket) by default, and programs' traffic (REST, the OpenAI endpoint) only when
asked; the REST API filters by origin. Nothing is hidden from the API."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.urls import reverse

from accounts.services import api_key_create
from chat import services
from chat.models import Conversation
from chat.tests.test_consumers import connect_as, receive_until
from project.asgi import application

ORIGINS = [choice.value for choice in Conversation.Origin]


@pytest.fixture
def one_of_each(owner, organisation) -> dict[str, Conversation]:
    return {
        origin: services.conversation_create(
            owner=owner, title=f"From {origin}", organisation=organisation, origin=origin
        )
        for origin in ORIGINS
    }


def test_the_page_lists_only_peoples_own_chats_unless_asked(client, owner, one_of_each):
    client.force_login(owner)
    url = reverse("chat:conversation", args=[one_of_each["page"].pk])
    sidebar = client.get(url).content.decode()
    assert "From page" in sidebar and "From websocket" in sidebar
    assert "From rest" not in sidebar and "From openai" not in sidebar
    everything = client.get(url, {"all": "1"}).content.decode()
    assert all(f"From {origin}" in everything for origin in ORIGINS)


def test_the_rest_api_filters_conversations_by_origin(owner, organisation, one_of_each):
    key = api_key_create(user=owner, organisation=organisation, name="tests")
    api = Client(HTTP_AUTHORIZATION=f"Bearer {key.raw}")
    listed = api.get("/api/v1/conversations").json()["results"]
    assert sorted(c["origin"] for c in listed) == sorted(ORIGINS)  # nothing lost by default
    only = api.get("/api/v1/conversations", {"origin": "openai"}).json()["results"]
    assert [c["title"] for c in only] == ["From openai"]
    people = api.get("/api/v1/conversations?origin=page&origin=websocket").json()["results"]
    assert sorted(c["origin"] for c in people) == ["page", "websocket"]
    assert api.get("/api/v1/conversations", {"origin": "fax"}).status_code == 400


def test_a_conversation_made_through_rest_is_rests(owner, organisation):
    key = api_key_create(user=owner, organisation=organisation, name="tests")
    api = Client(HTTP_AUTHORIZATION=f"Bearer {key.raw}")
    made = api.post("/api/v1/conversations", {"title": "Scripted"}, content_type="application/json")
    assert made.status_code == 201 and made.json()["origin"] == "rest"


def test_a_send_without_a_conversation_starts_one_with_its_origin(owner, no_dispatch):
    result = services.message_send(
        author=owner, conversation=None, text="Hi", client_id="c1", origin="websocket"
    )
    assert result.reply.conversation.origin == "websocket"
    page = services.message_send(author=owner, conversation=None, text="Hi", client_id="c2")
    assert page.reply.conversation.origin == "page"


@pytest.mark.django_db(transaction=True)
async def test_a_sockets_new_chat_is_the_pages_with_a_session_and_a_programs_with_a_key(
    owner, organisation
):
    key = await sync_to_async(api_key_create)(user=owner, organisation=organisation, name="k")
    program = WebsocketCommunicator(
        application,
        "/ws/chat/",
        headers=[(b"authorization", f"Bearer {key.raw}".encode()), (b"host", b"127.0.0.1:8000")],
    )
    person = await connect_as(owner)
    assert (await program.connect())[0]
    origins = []
    for socket, client_id in ((program, "p-1"), (person, "s-1")):
        await socket.send_json_to(
            {"type": "send", "conversation": None, "text": "Hi", "client_id": client_id}
        )
        ack = (await receive_until(socket, "done"))[0]
        conversation = await Conversation.objects.aget(pk=ack["conversation"])
        origins.append(conversation.origin)
        await socket.disconnect()
    assert origins == ["websocket", "page"]


@pytest.mark.django_db(transaction=True)
def test_the_migration_marks_earlier_openai_requests(owner, organisation):
    executor = MigrationExecutor(connection)
    old = [("chat", "0006_message_status_incomplete")]
    executor.migrate(old)
    apps = executor.loader.project_state(old).apps
    OldConversation = apps.get_model("chat", "Conversation")
    OldMessage = apps.get_model("chat", "Message")
    made = {}
    for title, client_id in (("SDK call", "oai-1a2b"), ("A person's chat", "c-1")):
        conversation = OldConversation.objects.create(
            owner_id=owner.pk, organisation_id=organisation.pk, title=title
        )
        OldMessage.objects.create(
            conversation=conversation,
            organisation_id=organisation.pk,
            role="user",
            content="Hi",
            client_id=client_id,
        )
        made[title] = conversation.pk

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert Conversation.objects.get(pk=made["SDK call"]).origin == "openai"
    assert Conversation.objects.get(pk=made["A person's chat"]).origin == "page"
