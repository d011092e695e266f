from __future__ import annotations

import pytest
from django.urls import reverse

from chat import services
from chat.models import Message
from chat.replies import lifecycle

pytestmark = pytest.mark.django_db


@pytest.fixture
def chat_with_history(owner, no_dispatch):
    result = services.message_send(
        author=owner, conversation=None, text="What is **2+2**?", client_id="h"
    )
    lifecycle.reply_start(message_id=result.reply.pk)
    lifecycle.reply_finish(
        message_id=result.reply.pk,
        content="It is **4**.\n\n<script>x()</script>",
        status="complete",
    )
    return result.reply.conversation


def test_the_chat_page_needs_sign_in(client):
    response = client.get(reverse("chat:home"))
    assert response.status_code == 302 and reverse("accounts:login") in response["Location"]


def test_history_is_server_rendered_as_safe_markdown(client, owner, chat_with_history):
    client.force_login(owner)
    response = client.get(reverse("chat:conversation", args=[chat_with_history.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    assert "It is <strong>4</strong>." in html
    assert "<script>x()" not in html and "&lt;script&gt;x()" in html
    assert "What is **2+2**?" in html  # the user's own text is shown as written
    assert chat_with_history.title in html  # in the conversation list


def test_pages_send_a_strict_content_security_policy(client, owner):
    client.force_login(owner)
    policy = client.get(reverse("chat:home"))["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "object-src 'none'" in policy
    assert "unsafe-inline" not in policy


def test_outsider_gets_not_found_for_someone_elses_conversation(
    client, outsider, chat_with_history
):
    client.force_login(outsider)
    response = client.get(reverse("chat:conversation", args=[chat_with_history.pk]))
    assert response.status_code == 404
    assert b"What is" not in response.content


def test_new_chat_creates_a_conversation_and_opens_it(client, owner):
    client.force_login(owner)
    response = client.post(reverse("chat:new"))
    assert response.status_code == 302
    assert owner.conversations.count() == 1


def test_a_streaming_reply_carries_its_seq_for_resume(client, owner, no_dispatch):
    result = services.message_send(author=owner, conversation=None, text="go", client_id="s")
    lifecycle.reply_start(message_id=result.reply.pk)
    lifecycle.replies_checkpoint(
        checkpoints=[
            lifecycle.ReplyCheckpoint(message_id=result.reply.pk, content="Partial", seq=7)
        ]
    )
    client.force_login(owner)
    html = client.get(
        reverse("chat:conversation", args=[result.reply.conversation_id])
    ).content.decode()
    assert f'data-message-id="{result.reply.pk}"' in html
    assert 'data-seq="7"' in html and 'data-content="Partial"' in html
    assert Message.objects.get(pk=result.reply.pk).status == "streaming"


def test_a_failed_reply_names_its_error_code_for_the_pages_label(client, owner, chat_with_history):
    reply = chat_with_history.messages.get(role=Message.Role.ASSISTANT)
    Message.objects.filter(pk=reply.pk).update(
        status=Message.Status.FAILED, error_code="interrupted"
    )
    client.force_login(owner)
    html = client.get(reverse("chat:conversation", args=[chat_with_history.pk])).content.decode()
    assert 'data-status="failed"' in html and 'data-error-code="interrupted"' in html


def test_healthz_answers(client):
    assert client.get("/healthz").json()["status"] == "ok"


JSON = {"HTTP_ACCEPT": "application/json"}


def test_the_sidebar_renames_pins_and_deletes_with_json_for_the_page(
    client, owner, chat_with_history
):
    client.force_login(owner)
    pk = chat_with_history.pk
    renamed = client.post(reverse("chat:rename", args=[pk]), {"title": "  Sums  "}, **JSON)
    assert renamed.status_code == 200 and renamed.json()["title"] == "Sums"
    pinned = client.post(reverse("chat:pin", args=[pk]), {"pinned": "true"}, **JSON)
    assert pinned.json()["pinned"] is True
    chat_with_history.refresh_from_db()
    assert (chat_with_history.title, chat_with_history.pinned) == ("Sums", True)
    deleted = client.post(reverse("chat:delete", args=[pk]))  # a plain form: back to the page
    assert deleted.status_code == 302 and deleted["Location"] == reverse("chat:home")
    assert not type(chat_with_history).objects.filter(pk=pk).exists()


def test_pinned_chats_come_first_in_the_sidebar(client, owner):
    older = services.conversation_create(owner=owner, title="Older pinned chat")
    services.conversation_create(owner=owner, title="Newer chat")
    services.conversation_pin(conversation=older, pinned=True)
    client.force_login(owner)
    html = client.get(reverse("chat:home")).content.decode()
    assert html.index("Older pinned chat") < html.index("Newer chat")


def test_an_empty_title_is_refused_and_changes_nothing(client, owner, chat_with_history):
    client.force_login(owner)
    answer = client.post(
        reverse("chat:rename", args=[chat_with_history.pk]), {"title": " "}, **JSON
    )
    assert answer.status_code == 400 and answer.json()["code"] == "bad_frame"
    chat_with_history.refresh_from_db()
    assert chat_with_history.title != " "


def test_a_title_over_200_characters_is_refused_not_cut(client, owner, chat_with_history):
    """page.md: `title` is 1-200 characters after trimming; what is longer is not cut."""
    client.force_login(owner)
    rename = reverse("chat:rename", args=[chat_with_history.pk])
    answer = client.post(rename, {"title": "  " + "x" * 201}, **JSON)
    assert answer.status_code == 400 and answer.json()["code"] == "bad_frame"
    chat_with_history.refresh_from_db()
    assert chat_with_history.title != "x" * 200
    fits = client.post(rename, {"title": "  " + "y" * 200 + "  "}, **JSON)
    assert fits.status_code == 200 and fits.json()["title"] == "y" * 200


def test_pinned_must_be_true_or_false(client, owner, chat_with_history):
    """page.md: `pinned` (`true` or `false`); anything else is refused, not read as false."""
    client.force_login(owner)
    pin = reverse("chat:pin", args=[chat_with_history.pk])
    assert client.post(pin, {"pinned": "true"}, **JSON).json()["pinned"] is True
    for value in ({"pinned": "yes"}, {"pinned": "1"}, {}):
        answer = client.post(pin, value, **JSON)
        assert answer.status_code == 400 and answer.json()["code"] == "bad_frame", value
    chat_with_history.refresh_from_db()
    assert chat_with_history.pinned is True


def test_a_chats_system_prompt_is_saved_and_rendered(client, owner, chat_with_history):
    client.force_login(owner)
    url = reverse("chat:instructions", args=[chat_with_history.pk])
    answer = client.post(url, {"system_prompt": "Be brief."}, **JSON)
    assert answer.json()["system_prompt"] == "Be brief."
    page = client.get(reverse("chat:conversation", args=[chat_with_history.pk]))
    assert "Be brief.</textarea>" in page.content.decode()


def test_outsider_cannot_rename_pin_delete_or_instruct(client, outsider, chat_with_history):
    client.force_login(outsider)
    pk = chat_with_history.pk
    for name, data in [
        ("chat:rename", {"title": "Mine now"}),
        ("chat:pin", {"pinned": "true"}),
        ("chat:instructions", {"system_prompt": "Leak everything"}),
        ("chat:delete", {}),
    ]:
        answer = client.post(reverse(name, args=[pk]), data, **JSON)
        assert answer.status_code == 404 and answer.json()["code"] == "not_found", name
    chat_with_history.refresh_from_db()
    assert chat_with_history.title != "Mine now" and not chat_with_history.pinned
    assert chat_with_history.system_prompt == ""


def test_a_regenerated_answer_is_rendered_as_an_earlier_version(
    client, owner, chat_with_history, no_dispatch
):
    first = chat_with_history.messages.get(role="assistant")
    again = services.reply_regenerate(message=first, by=owner)
    client.force_login(owner)
    html = client.get(reverse("chat:conversation", args=[chat_with_history.pk])).content.decode()
    assert f'data-version-id="{first.pk}"' in html
    assert f'data-message-id="{again.reply.pk}"' in html


def test_the_api_help_page_is_served(client, owner):
    client.force_login(owner)
    answer = client.get(reverse("chat:api_help"))
    assert answer.status_code == 200 and b"Authorization: Bearer" in answer.content
    assert reverse("chat:api_help").encode() in client.get(reverse("accounts:keys")).content


def test_the_model_picker_offers_only_what_the_organisation_allows(client, owner):
    from llm.catalog import enabled_aliases

    client.force_login(owner)
    everything = enabled_aliases()
    html = client.get(reverse("chat:home")).content.decode()
    assert all(f'<option value="{alias}"' in html for alias in everything)
    organisation = owner.personal_organisation
    organisation.allowed_models = [everything[-1]]
    organisation.save()
    html = client.get(reverse("chat:home")).content.decode()
    assert f'<option value="{everything[-1]}"' in html
    assert all(f'<option value="{alias}"' not in html for alias in everything[:-1])
