"""REST regenerate and edit (the socket's `regenerate` / `edit`, docs/protocol.md): the same
services, the same answers as a send; the message's state decides (409), outsiders get 404;
request bodies refuse unknown fields and non-string text everywhere."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.services import api_key_create
from chat.models import Message
from chat.tests.conftest import API, bearer
from chat.tests.test_api_send_options import chat, final, send  # noqa: F401
from llm.providers.simulated import simulated_reply

pytestmark = pytest.mark.django_db(transaction=True)


def post(client: Client, path: str, body: dict | None = None, **headers):
    return client.post(f"{API}{path}", body or {}, content_type="application/json", **headers)


@pytest.fixture
def answered(api, chat):  # noqa: F811
    sent = send(api, chat, text="First question")
    assert sent.status_code == 201, sent.content
    final(api, sent.json()["reply"])
    return sent.json()


def test_regenerate_answers_again_and_supersedes_the_old_reply(api, chat, answered):  # noqa: F811
    again = post(api, f"/messages/{answered['reply']}/regenerate")
    assert again.status_code == 201, again.content
    body = again.json()
    assert body["message"] == answered["message"] and body["reply"] != answered["reply"]
    assert body["reply_url"] == f"{API}/messages/{body['reply']}"
    assert final(api, body["reply"])["content"] == simulated_reply("First question")
    assert Message.objects.get(pk=answered["reply"]).superseded
    listed = [m["id"] for m in api.get(f"{API}/conversations/{chat.pk}/messages").json()["results"]]
    assert listed == [answered["message"], body["reply"]]
    # A repeat answers with the reply that replaced it, and starts nothing.
    repeat = post(api, f"/messages/{answered['reply']}/regenerate")
    assert repeat.status_code == 200 and repeat.json()["reply"] == body["reply"]
    assert Message.objects.filter(conversation=chat).count() == 3


def test_edit_replaces_the_message_and_answers_it(api, chat, answered):  # noqa: F811
    edited = post(
        api, f"/messages/{answered['message']}/edit", {"text": "Second try", "client_id": "e-1"}
    )
    assert edited.status_code == 201, edited.content
    body = edited.json()
    assert final(api, body["reply"])["content"] == simulated_reply("Second try")
    old = Message.objects.filter(pk__in=[answered["message"], answered["reply"]])
    assert all(m.superseded for m in old)
    repeat = post(
        api, f"/messages/{answered['message']}/edit", {"text": "Second try", "client_id": "e-1"}
    )
    assert repeat.status_code == 200 and repeat.json()["reply"] == body["reply"]


def test_the_messages_state_refuses_with_409(api, chat, answered):  # noqa: F811
    # A user message cannot be regenerated or cancelled, nor a reply edited.
    for path in (
        f"/messages/{answered['message']}/regenerate",
        f"/messages/{answered['message']}/cancel",
    ):
        refused = post(api, path)
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "conflict"
    refused = post(api, f"/messages/{answered['reply']}/edit", {"text": "x"})
    assert refused.status_code == 409
    # Only the last reply can be regenerated.
    later = send(api, chat, text="Later")
    final(api, later.json()["reply"])
    assert post(api, f"/messages/{answered['reply']}/regenerate").status_code == 409


def test_an_outsider_can_neither_regenerate_nor_edit(answered, outsider):
    key = api_key_create(user=outsider, organisation=outsider.personal_organisation, name="x")
    them = Client(**bearer(key.raw))
    assert post(them, f"/messages/{answered['reply']}/regenerate").status_code == 404
    assert post(them, f"/messages/{answered['message']}/edit", {"text": "mine"}).status_code == 404
    assert Message.objects.count() == 2


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/conversations", {"title": "ok", "colour": "red"}, "colour"),
        ("/conversations", {"title": 0}, "title"),
        ("/conversations/{chat}/messages", {"text": "hi", "modle": "x"}, "modle"),
        ("/conversations/{chat}/messages", {"text": 5}, "text"),
        ("/conversations/{chat}/messages", {"text": "   "}, "text"),
        ("/messages/{message}/edit", {"text": "hi", "extra": 1}, "extra"),
        ("/messages/{reply}/regenerate", {"model": "simulated"}, "model"),
    ],
)
def test_unknown_or_mistyped_fields_are_a_400_naming_them(
    api,
    chat,  # noqa: F811
    answered,
    path,
    body,
    field,
):
    url = path.format(chat=chat.pk, message=answered["message"], reply=answered["reply"])
    refused = post(api, url, body)
    assert refused.status_code == 400, refused.content
    assert field in refused.json()["error"]["fields"]


def test_patch_without_a_title_changes_nothing_and_bad_titles_are_400(api, chat):  # noqa: F811
    unchanged = api.patch(f"{API}/conversations/{chat.pk}", {}, content_type="application/json")
    assert unchanged.status_code == 200 and unchanged.json()["title"] == chat.title
    for bad in ({"title": 0}, {"title": ""}, {"name": "x"}):
        refused = api.patch(f"{API}/conversations/{chat.pk}", bad, content_type="application/json")
        assert refused.status_code == 400, bad


@pytest.mark.parametrize("query", ["page_size=null", "page_size=0", "page_size=101", "page_size="])
def test_a_bad_page_size_is_a_400(api, query):
    refused = api.get(f"{API}/conversations?{query}")
    assert refused.status_code == 400 and "page_size" in refused.json()["error"]["fields"]
    assert api.get(f"{API}/usage?days=").status_code == 400


@pytest.mark.parametrize("action", ["regenerate", "edit"])
def test_a_regenerated_or_edited_answer_is_asked_as_the_one_it_replaces(api, chat, action):  # noqa: F811
    """The model and generation options the user chose stay with the answer: a regenerate or
    an edit is not answered by the default model with the default options."""
    sent = send(api, chat, text="First question", model="simulated", max_tokens=3, temperature=0.5)
    assert sent.status_code == 201, sent.content
    final(api, sent.json()["reply"])
    if action == "regenerate":
        again = post(api, f"/messages/{sent.json()['reply']}/regenerate")
    else:
        again = post(api, f"/messages/{sent.json()['message']}/edit", {"text": "Second try"})
    assert again.status_code == 201, again.content
    body = final(api, again.json()["reply"])
    assert body["status"] == "incomplete"  # stopped at the 3 tokens asked for
    reply = Message.objects.get(pk=again.json()["reply"])
    assert reply.routing["alias"] == "simulated"
    assert reply.routing["options"] == {"max_tokens": 3, "temperature": 0.5}


def test_a_regenerate_whose_model_the_organisation_may_no_longer_use_takes_the_default(
    api,
    chat,  # noqa: F811
    answered,
):
    Message.objects.filter(pk=answered["reply"]).update(routing={"alias": "withdrawn"})
    again = post(api, f"/messages/{answered['reply']}/regenerate")
    assert again.status_code == 201, again.content
    assert final(api, again.json()["reply"])["status"] == "complete"
    assert Message.objects.get(pk=again.json()["reply"]).routing["alias"] != "withdrawn"
