"""The claim returns the prompt's history on PostgreSQL (chat/replies/prompt.py
history_returning): one round trip fewer on the way to the first token, the same history the
read finds, on any database."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection

from chat import services
from chat.models import Message
from chat.replies import lifecycle
from chat.replies.prompt import prompt_messages

pytestmark = pytest.mark.django_db


def _said(owner, conversation, text: str, reply_text: str, **reply_fields) -> None:
    sent = services.message_send(
        author=owner,
        conversation=conversation,
        text=text,
        client_id=uuid.uuid4().hex,
        organisation=conversation.organisation,
    )
    fields = {"status": Message.Status.COMPLETE, **reply_fields}
    Message.objects.filter(pk=sent.reply.pk).update(content=reply_text, **fields)


def test_the_claim_brings_the_history_the_read_finds(owner, no_dispatch, settings):
    settings.LLM_HISTORY_MESSAGES = 4  # fewer than were said: the newest count
    first = services.message_send(author=owner, conversation=None, text="one", client_id="a")
    conversation = first.reply.conversation
    Message.objects.filter(pk=first.reply.pk).update(content="1", status="complete")
    _said(owner, conversation, "two", "2")
    _said(owner, conversation, "three", "", status=Message.Status.FAILED)  # left out
    _said(owner, conversation, "four", "4", superseded=True)  # left out
    other = services.message_send(author=owner, conversation=None, text="elsewhere", client_id="o")
    Message.objects.filter(pk=other.reply.pk).update(content="x", status="complete")
    pending = services.message_send(
        author=owner,
        conversation=conversation,
        text="five",
        client_id="b",
        organisation=conversation.organisation,
    ).reply

    claimed = lifecycle.reply_start(message_id=pending.pk)
    assert claimed is not None
    read = Message.objects.select_related("conversation").get(pk=pending.pk)

    assert [m.content for m in prompt_messages(claimed)] == [
        m.content for m in prompt_messages(read)
    ]
    assert [m.content for m in prompt_messages(read)][1:] == ["2", "three", "four", "five"]
    carried = getattr(claimed, "_claimed_history", None)
    assert (carried is not None) == (connection.vendor == "postgresql")


def test_a_claim_that_finds_the_reply_taken_returns_nothing(owner, no_dispatch):
    sent = services.message_send(author=owner, conversation=None, text="hi", client_id="a")
    assert lifecycle.reply_start(message_id=sent.reply.pk) is not None
    assert lifecycle.reply_start(message_id=sent.reply.pk) is None


def test_replies_dispatched_together_are_claimed_in_one_statement_each_once(
    owner, no_dispatch, django_assert_num_queries
):
    sent = [
        services.message_send(author=owner, conversation=None, text=f"q{n}", client_id=f"c{n}")
        for n in range(5)
    ]
    ids = [s.reply.pk for s in sent]
    lifecycle.reply_start(message_id=ids[4])  # claimed already: not again
    with django_assert_num_queries(1):
        claimed = lifecycle.replies_start(message_ids=ids)
    assert sorted(claimed) == ids[:4]
    for message_id, reply in claimed.items():
        assert reply.status == "streaming" and reply.started_at is not None
        assert reply.conversation.owner_id == owner.pk
        question = Message.objects.get(pk=message_id - 1).content  # the user's, just before
        assert [m.content for m in prompt_messages(reply)][-1] == question
    assert lifecycle.replies_start(message_ids=ids) == {}
