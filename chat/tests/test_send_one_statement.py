"""A send into an existing conversation writes its budget reservation, the touch, the user
message, its reply and the ledger row in one statement on PostgreSQL (chat/services/said.py
said_in_one_statement): the rows are the ones the statements one after the other wrote, and
its rules hold (a conversation gone is not_found and saves nothing; a repeat answers with the
first send). The budget's side: chat/tests/test_send_budget_statement.py."""

from __future__ import annotations

import pytest
from django.db import connection

from accounts.models import UsageLedger
from chat import services
from chat.errors import ChatError
from chat.models import Conversation, Message

pytestmark = pytest.mark.django_db(transaction=True)


def _row(message: Message) -> dict[str, object]:
    return {f.attname: getattr(message, f.attname) for f in Message._meta.concrete_fields}


def _send(owner, conversation, text: str, client_id: str) -> services.SendResult:
    return services.message_send(
        author=owner,
        conversation=conversation,
        text=text,
        client_id=client_id,
        organisation=conversation.organisation,
    )


def test_a_send_into_a_conversation_saves_the_rows_it_hands_back(owner, no_dispatch):
    first = services.message_send(author=owner, conversation=None, text="hi", client_id="a")
    conversation = first.reply.conversation
    touched_before = Conversation.objects.get(pk=conversation.pk).updated_at

    sent = _send(owner, conversation, "again", "b")

    user_message, reply = sent.user_message, sent.reply
    assert _row(Message.objects.get(pk=user_message.pk)) == _row(user_message)
    assert _row(Message.objects.get(pk=reply.pk)) == _row(reply)
    assert user_message.pk < reply.pk and reply.reply_to_id == user_message.pk
    assert (user_message.content, user_message.client_id) == ("again", "b")
    assert reply.status == Message.Status.PENDING and reply.routing["alias"]
    saved = Conversation.objects.get(pk=conversation.pk)
    assert saved.title == "hi" and saved.updated_at > touched_before
    assert no_dispatch == [first.reply.pk, reply.pk]


def test_a_send_into_a_conversation_deleted_meanwhile_is_not_found_and_saves_nothing(
    owner, no_dispatch
):
    first = services.message_send(author=owner, conversation=None, text="hi", client_id="a")
    conversation = first.reply.conversation
    Conversation.objects.filter(pk=conversation.pk).delete()

    with pytest.raises(ChatError) as refused:
        _send(owner, conversation, "again", "b")

    assert refused.value.code == "not_found"
    assert not Message.objects.filter(client_id="b").exists()
    assert no_dispatch == [first.reply.pk]


def test_a_repeated_send_into_a_conversation_answers_with_the_first(owner, no_dispatch):
    first = services.message_send(author=owner, conversation=None, text="hi", client_id="a")
    conversation = first.reply.conversation

    sent = _send(owner, conversation, "again", "b")
    repeated = _send(owner, conversation, "again", "b")

    assert not repeated.created
    assert (repeated.user_message.pk, repeated.reply.pk) == (sent.user_message.pk, sent.reply.pk)
    assert Message.objects.filter(conversation=conversation).count() == 4
    assert no_dispatch == [first.reply.pk, sent.reply.pk]


def test_on_postgresql_a_send_into_a_conversation_is_one_statement_and_no_transaction(
    owner, no_dispatch, django_assert_num_queries
):
    if connection.vendor != "postgresql":
        pytest.skip("the one statement is PostgreSQL's (data-modifying WITH)")
    first = services.message_send(author=owner, conversation=None, text="hi", client_id="a")
    # The estimate, the reservation, the touch, both messages, the ledger row and the charge:
    # one statement, in autocommit (no BEGIN, no COMMIT).
    with django_assert_num_queries(1) as captured:
        sent = _send(owner, first.reply.conversation, "again", "b")
    assert captured.captured_queries[0]["sql"].startswith("WITH estimate_history AS (")
    entry = UsageLedger.objects.get(message_id=sent.reply.pk)
    assert entry.state == UsageLedger.State.RESERVED and entry.reserved_tokens > 0
