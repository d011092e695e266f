"""The claim and the ending are hand-written statements (chat/replies/lifecycle.py): the rows
they hand back are the rows the ORM reads, on SQLite and on PostgreSQL, and they keep the
reply's rules (claimed once; a reply someone else ended is left as it is)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from chat import services
from chat.models import Conversation, Message
from chat.replies import lifecycle, reaper
from chat.replies.prompt import prompt_messages

pytestmark = pytest.mark.django_db


def _row(message: Message) -> dict[str, object]:
    return {f.attname: getattr(message, f.attname) for f in Message._meta.concrete_fields}


@pytest.fixture
def pending(owner, no_dispatch):
    sent = services.message_send(author=owner, conversation=None, text="Hi", client_id="one")
    Conversation.objects.filter(pk=sent.reply.conversation_id).update(
        system_prompt="Answer in French."
    )
    return sent.reply


def test_the_claim_returns_the_row_as_the_orm_reads_it_and_its_conversations_prompt(
    pending, django_assert_num_queries
):
    claimed = lifecycle.reply_start(message_id=pending.pk)
    assert claimed is not None
    read = Message.objects.select_related("conversation").get(pk=pending.pk)
    assert _row(claimed) == _row(read)
    assert claimed.status == "streaming" and claimed.started_at == claimed.heartbeat_at
    assert claimed.routing == read.routing and isinstance(claimed.routing, dict)
    with django_assert_num_queries(0):  # what a generation reads of it came with the claim
        conversation = claimed.conversation
        assert (conversation.pk, conversation.owner_id, conversation.organisation_id) == (
            read.conversation.pk,
            read.conversation.owner_id,
            read.conversation.organisation_id,
        )
        assert conversation.system_prompt == "Answer in French."
        assert conversation.retrieves is False
    assert conversation.title == read.conversation.title  # the rest is read when asked for


def test_a_reply_is_claimed_once(pending):
    assert lifecycle.reply_start(message_id=pending.pk) is not None
    assert lifecycle.reply_start(message_id=pending.pk) is None


def test_the_prompt_holds_what_was_said_before_the_reply_oldest_first(owner, no_dispatch):
    first = services.message_send(author=owner, conversation=None, text="one", client_id="1")
    lifecycle.reply_start(message_id=first.reply.pk)
    lifecycle.reply_finish(message_id=first.reply.pk, content="uno", status="complete")
    failed = services.message_send(
        author=owner, conversation=first.reply.conversation, text="two", client_id="2"
    )
    lifecycle.reply_start(message_id=failed.reply.pk)
    lifecycle.reply_finish(message_id=failed.reply.pk, content="", status="failed")
    third = services.message_send(
        author=owner, conversation=first.reply.conversation, text="three", client_id="3"
    )
    reply = lifecycle.reply_start(message_id=third.reply.pk)
    assert reply is not None
    said = [(m.type, m.content) for m in prompt_messages(reply)][1:]
    # The failed reply's empty text is left out, as is every later or pending message.
    assert said == [("human", "one"), ("ai", "uno"), ("human", "two"), ("human", "three")]


@pytest.mark.parametrize("with_claimed_row", [True, False])
def test_the_ending_hands_back_the_row_as_saved(pending, with_claimed_row):
    claimed = lifecycle.reply_start(message_id=pending.pk)
    first_token_at = timezone.now()
    finished = lifecycle.reply_finish(
        message_id=pending.pk,
        content="Bonjour",
        status="complete",
        prompt_tokens=3,
        completion_tokens=2,
        provider="simulated",
        model="sim-1",
        cost=Decimal("0.00012000"),
        routing={"alias": "default", "attempts": 1},
        first_token_at=first_token_at,
        claimed=claimed if with_claimed_row else None,
    )
    assert finished is not None
    saved = Message.objects.get(pk=pending.pk)
    assert _row(finished) == _row(saved)
    assert (saved.content, saved.seq, saved.status) == ("Bonjour", 7, "complete")
    assert saved.first_token_at == first_token_at and saved.cost == Decimal("0.00012")


@pytest.mark.parametrize("with_claimed_row", [True, False])
def test_an_ending_after_the_reaper_saves_nothing(pending, with_claimed_row):
    claimed = lifecycle.reply_start(message_id=pending.pk)
    lifecycle.replies_checkpoint(
        checkpoints=[lifecycle.ReplyCheckpoint(message_id=pending.pk, content="Bon", seq=3)]
    )
    Message.objects.filter(pk=pending.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert reaper.replies_reap(stale_after=timedelta(seconds=1), pending_after=timedelta(hours=1))
    ending = lifecycle.reply_finish(
        message_id=pending.pk,
        content="Bonjour",
        status="complete",
        claimed=claimed if with_claimed_row else None,
    )
    assert ending is None
    saved = Message.objects.get(pk=pending.pk)
    assert (saved.status, saved.error_code, saved.content) == ("failed", "interrupted", "Bon")


def test_a_cancelled_reply_is_neither_claimed_nor_ended(pending, owner):
    lifecycle.reply_cancel(message=pending, by=owner)
    assert lifecycle.reply_start(message_id=pending.pk) is None
    assert lifecycle.reply_finish(message_id=pending.pk, content="late", status="complete") is None
    assert Message.objects.get(pk=pending.pk).status == "cancelled"
