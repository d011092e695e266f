"""The send path's cost, pinned: statements per send, and database calls off one thread."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.db import connection

from chat import services
from chat.models import Conversation, Message
from core.db import db_async

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def celery_dispatch(settings, monkeypatch):
    """Generation handed to Celery (not started here): the send alone is measured."""
    settings.GENERATION_BACKEND = "celery"
    sent: list[tuple[int, ...]] = []
    monkeypatch.setattr(
        "chat.replies.dispatch.generate_reply.apply_async",
        lambda args, queue: sent.append(args),
    )
    return sent


def test_a_send_into_a_conversation_is_one_transaction_of_few_statements(
    owner, celery_dispatch, django_assert_num_queries
):
    first = services.message_send(author=owner, conversation=None, text="hi", client_id="a")
    conversation = first.reply.conversation
    # The idempotency look-up, then BEGIN; history for the budget estimate; the budget's
    # counters (lock, charge) and its ledger row; the conversation touched; the user message;
    # the deployment chosen; the reply; the ledger row attached to it; COMMIT.
    with django_assert_num_queries(12):
        result = services.message_send(
            author=owner,
            conversation=conversation,
            text="hello again",
            client_id="b",
            organisation=conversation.organisation,
        )
    assert result.created and len(celery_dispatch) == 2
    conversation.refresh_from_db()
    assert conversation.title == "hi"  # titled by its first message, not by later ones


def test_the_first_message_titles_a_conversation_made_empty(owner, celery_dispatch):
    conversation = Conversation.objects.create(
        owner=owner, organisation=owner.memberships.get().organisation, title="New chat"
    )
    services.message_send(
        author=owner,
        conversation=conversation,
        text="What is the capital of France?",
        client_id="t",
        organisation=conversation.organisation,
    )
    conversation.refresh_from_db()
    assert conversation.title == "What is the capital of France?"


async def test_database_calls_from_sockets_run_side_by_side_and_return_their_connections(
    owner, settings
):
    """With DATABASE_ASYNC_THREADS, calls run on several threads at once (not channels' one
    thread-sensitive thread), and each ends with its thread's connection closed (returned to
    the pool, where there is one)."""
    settings.DATABASE_ASYNC_THREADS = 4
    inside = threading.Barrier(3, timeout=30)
    threads: set[str] = set()
    left_open: list[bool] = []

    def call() -> int:
        threads.add(threading.current_thread().name)
        count = Message.objects.count()  # opens this thread's connection
        inside.wait()  # all three calls are in at once, or this times out
        return count

    def probe() -> None:
        left_open.append(connection.connection is not None)

    results = await asyncio.gather(*(db_async(call)() for _ in range(3)))
    assert results == [0, 0, 0] and len(threads) == 3
    for _ in range(8):  # every pool thread reports its connection after the calls
        await db_async(probe)()
    assert not any(left_open)
