"""The migration that adds Conversation.retrieves marks the conversations that already have a
document or a picked collection, so their replies keep retrieving
(chat/migrations/0010_conversation_retrieves.py)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("chat", "0009_conversation_pinned")]
AFTER = [("chat", "0010_conversation_retrieves")]


@pytest.mark.django_db(transaction=True)
def test_conversations_with_documents_or_collections_are_marked():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    apps = executor.loader.project_state(BEFORE).apps
    User = apps.get_model("accounts", "User")
    Organisation = apps.get_model("accounts", "Organisation")
    Conversation = apps.get_model("chat", "Conversation")
    Collection = apps.get_model("chat", "Collection")
    Document = apps.get_model("chat", "Document")

    user = User.objects.create(username="olivia")
    organisation = Organisation.objects.create(name="Acme", slug="acme")
    attached, picked, _plain = (
        Conversation.objects.create(owner=user, organisation=organisation, title=title)
        for title in ("attached", "picked", "plain")
    )
    Document.objects.create(
        organisation=organisation,
        conversation=attached,
        name="a.md",
        kind="markdown",
        content_type="text/markdown",
        size=5,
        sha256="0" * 64,
        data=b"notes",
    )
    handbook = Collection.objects.create(organisation=organisation, name="Handbook")
    handbook.conversations.add(picked)

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    Conversation = executor.loader.project_state(AFTER).apps.get_model("chat", "Conversation")
    marked = dict(Conversation.objects.values_list("title", "retrieves"))
    assert marked == {"attached": True, "picked": True, "plain": False}

    MigrationExecutor(connection).migrate(executor.loader.graph.leaf_nodes())
