"""The migration that gives ledger rows what their reply was fills existing rows from their
messages (accounts/migrations/0005_usageledger_reply_outcome.py)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE = [("accounts", "0004_invitations"), ("chat", "0007_conversation_origin_system_prompt")]
AFTER = [("accounts", "0005_usageledger_reply_outcome")]


@pytest.mark.django_db(transaction=True)
def test_existing_ledger_rows_are_filled_from_their_messages():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    apps = executor.loader.project_state(BEFORE).apps
    User = apps.get_model("accounts", "User")
    Organisation = apps.get_model("accounts", "Organisation")
    Conversation = apps.get_model("chat", "Conversation")
    Message = apps.get_model("chat", "Message")
    UsageLedger = apps.get_model("accounts", "UsageLedger")

    user = User.objects.create(username="olivia")
    organisation = Organisation.objects.create(name="Acme", slug="acme")
    conversation = Conversation.objects.create(owner=user, organisation=organisation)
    started = timezone.now()
    reply = Message.objects.create(
        conversation=conversation,
        role="assistant",
        status="failed",
        provider="openai",
        model="gpt-4o-mini",
        prompt_tokens=30,
        completion_tokens=12,
        error_code="provider_failed",
        started_at=started,
        first_token_at=started + timedelta(milliseconds=420),
    )
    settled = UsageLedger.objects.create(
        organisation=organisation,
        user=user,
        message=reply,
        state="settled",
        reserved_prompt_tokens=40,
        reserved_tokens=1064,
        used_tokens=42,
        cost=Decimal("0.001"),
    )
    orphan = UsageLedger.objects.create(
        organisation=organisation,
        user=user,
        state="settled",
        reserved_prompt_tokens=20,
        used_tokens=99,
    )

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    apps = executor.loader.project_state(AFTER).apps
    UsageLedger = apps.get_model("accounts", "UsageLedger")
    row = UsageLedger.objects.get(pk=settled.pk)
    assert (row.provider, row.model, row.outcome, row.error_code) == (
        "openai",
        "gpt-4o-mini",
        "failed",
        "provider_failed",
    )
    assert (row.prompt_tokens, row.completion_tokens, row.first_token_ms) == (30, 12, 420)
    # Its message was gone already: the split is the reserved prompt estimate.
    unlinked = UsageLedger.objects.get(pk=orphan.pk)
    assert (unlinked.model, unlinked.prompt_tokens, unlinked.completion_tokens) == ("", 20, 79)

    MigrationExecutor(connection).migrate(executor.loader.graph.leaf_nodes())
