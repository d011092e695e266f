"""Organisations: everyone has a personal one; chats belong to one and stay private to their
owner; the session's active organisation is switchable only to your own."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse

from accounts.models import Membership, Organisation, User
from accounts.selectors import ACTIVE_ORGANISATION_SESSION_KEY
from chat import selectors, services
from chat.errors import ChatError
from chat.models import Conversation


@pytest.mark.django_db
def test_signup_gives_a_personal_organisation_with_admin_role(client):
    client.post(
        reverse("accounts:signup"),
        {
            "username": "nadia",
            "password1": "a long passphrase 42",
            "password2": "a long passphrase 42",
        },
    )
    membership = Membership.objects.get(user__username="nadia")
    assert membership.organisation.personal and membership.role == "admin"


@pytest.mark.django_db
def test_ensure_admin_gets_a_personal_organisation(monkeypatch):
    monkeypatch.setenv("PARLEY_ADMIN_PASSWORD", "s3cret-pass-phrase")
    call_command("ensure_admin")
    admin = User.objects.get(is_superuser=True)
    assert Organisation.objects.filter(personal_owner=admin).count() == 1


@pytest.mark.django_db
def test_a_new_chat_starts_in_the_active_organisation(client, owner, member, organisation):
    client.force_login(member)
    session = client.session
    session[ACTIVE_ORGANISATION_SESSION_KEY] = organisation.pk
    session.save()
    client.post(reverse("chat:new"))
    assert member.conversations.get().organisation == organisation


@pytest.mark.django_db
def test_member_cannot_read_another_members_conversation_in_the_same_organisation(
    client, owner, member, organisation, no_dispatch
):
    result = services.message_send(
        author=owner,
        conversation=None,
        text="salary review",
        client_id="a",
        organisation=organisation,
    )
    conversation = result.reply.conversation
    client.force_login(member)
    response = client.get(reverse("chat:conversation", args=[conversation.pk]))
    assert response.status_code == 404 and b"salary review" not in response.content
    with pytest.raises(ChatError):
        selectors.conversation_access(user=member, conversation_id=conversation.pk)
    with pytest.raises(ChatError):
        selectors.message_access(user=member, message_id=result.reply.pk)
    assert not selectors.conversation_list(user=member, organisation=organisation).exists()


@pytest.mark.django_db
def test_outsider_sees_nothing_of_another_organisation(client, owner, outsider, no_dispatch):
    result = services.message_send(author=owner, conversation=None, text="roadmap", client_id="a")
    client.force_login(outsider)
    assert b"roadmap" not in client.get(reverse("chat:home")).content
    response = client.get(reverse("chat:conversation", args=[result.reply.conversation_id]))
    assert response.status_code == 404


@pytest.mark.django_db
def test_leaving_an_organisation_loses_access_to_your_chats_in_it(
    owner, member, organisation, no_dispatch
):
    result = services.message_send(
        author=member,
        conversation=None,
        text="team notes",
        client_id="a",
        organisation=organisation,
    )
    assert selectors.conversation_access(user=member, conversation_id=result.reply.conversation_id)
    Membership.objects.filter(user=member, organisation=organisation).delete()
    with pytest.raises(ChatError):
        selectors.conversation_access(user=member, conversation_id=result.reply.conversation_id)


@pytest.mark.django_db
def test_a_key_scoped_selector_does_not_reach_other_organisations(
    owner, member, organisation, no_dispatch
):
    personal = Organisation.objects.get(personal_owner=member)
    mine = services.message_send(author=member, conversation=None, text="x", client_id="a")
    assert mine.reply.conversation.organisation == personal
    with pytest.raises(ChatError):
        selectors.conversation_access(
            user=member, conversation_id=mine.reply.conversation_id, organisation=organisation
        )


@pytest.mark.django_db
def test_switching_to_your_organisation_works_and_to_a_foreign_one_is_refused(
    client, owner, member, organisation, other_organisation
):
    client.force_login(member)
    url = reverse("accounts:organisation_switch")
    assert client.post(url, {"organisation": organisation.pk}).status_code == 302
    assert client.session[ACTIVE_ORGANISATION_SESSION_KEY] == organisation.pk
    assert client.post(url, {"organisation": other_organisation.pk}).status_code == 404
    assert client.session[ACTIVE_ORGANISATION_SESSION_KEY] == organisation.pk
    page = client.get(reverse("chat:home")).content.decode()
    assert organisation.name in page and other_organisation.name not in page


@pytest.mark.django_db
def test_a_forged_session_organisation_falls_back_to_the_personal_one(
    client, member, other_organisation
):
    client.force_login(member)
    session = client.session
    session[ACTIVE_ORGANISATION_SESSION_KEY] = other_organisation.pk
    session.save()
    client.post(reverse("chat:new"))
    assert member.conversations.get().organisation.personal
    assert member.conversations.get().organisation != other_organisation


@pytest.mark.django_db(transaction=True)
def test_migrations_give_existing_users_and_conversations_a_personal_organisation():
    executor = MigrationExecutor(connection)
    old = [("accounts", "0001_initial"), ("chat", "0001_initial")]
    executor.migrate(old)
    apps = executor.loader.project_state(old).apps
    OldUser = apps.get_model("accounts", "User")
    OldConversation = apps.get_model("chat", "Conversation")
    user = OldUser.objects.create(username="legacy", password="!")
    OldConversation.objects.create(owner=user, title="from before")

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    conversation = Conversation.objects.get(title="from before")
    assert conversation.organisation.personal
    assert Membership.objects.get(user_id=user.pk).organisation == conversation.organisation
