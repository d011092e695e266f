from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.models import User
from chat import services
from chat.models import Message
from chat.replies import lifecycle

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(db):
    return User.objects.create_superuser(username="ops", password="operator passphrase")


@pytest.fixture
def finished_chat(owner, no_dispatch):
    result = services.message_send(
        author=owner, conversation=None, text="quarterly report", client_id="a"
    )
    lifecycle.reply_start(message_id=result.reply.pk)
    lifecycle.reply_finish(
        message_id=result.reply.pk, content="Here it is", status="complete", completion_tokens=3
    )
    return result


def test_operator_sees_conversations_with_messages_inline(client, operator, finished_chat):
    client.force_login(operator)
    conversation = finished_chat.reply.conversation
    page = client.get(
        reverse("admin:chat_conversation_change", args=[conversation.pk])
    ).content.decode()
    assert "quarterly report" in page and "Here it is" in page and "simulated" in page


def test_operator_can_search_and_filter_messages(client, operator, finished_chat):
    client.force_login(operator)
    url = reverse("admin:chat_message_changelist")
    found = client.get(url, {"q": "quarterly"}).content.decode()
    assert "quarterly" in found or f">{finished_chat.user_message.pk}<" in found
    filtered = client.get(url, {"status__exact": "failed"}).content.decode()
    assert "0 messages" in filtered
    assert client.get(url, {"status__exact": "complete"}).status_code == 200


def test_operator_sees_users(client, operator, owner):
    client.force_login(operator)
    assert "olivia" in client.get(reverse("admin:accounts_user_changelist")).content.decode()


def test_non_staff_cannot_open_the_admin(client, owner):
    client.force_login(owner)
    assert client.get(reverse("admin:index")).status_code == 302


def test_failed_replies_show_their_error_in_the_message_list(client, owner, operator):
    conversation = services.conversation_create(owner=owner, title="Broken")
    Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.FAILED,
        error_code="provider_failed",
        error_message="The model provider answered 502 three times.",
    )
    client.force_login(operator)
    url = reverse("admin:chat_message_changelist")
    page = client.get(url, {"status__exact": "failed"}).content.decode()
    assert "provider_failed: The model provider answered 502 three times." in page
    assert "parley_admin/admin.css" in page  # wide lists scroll instead of being cut
    assert "?error_code=provider_failed" in page and "error_code=&" not in page  # named links
