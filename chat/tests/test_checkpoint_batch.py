"""The watch's batch checkpoint (chat/replies/lifecycle.py replies_checkpoint) row by row: on
PostgreSQL one UPDATE over arrays, elsewhere executemany; the same rows either way."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from chat import services
from chat.models import Message
from chat.replies import lifecycle

pytestmark = pytest.mark.django_db(transaction=True)


def _streaming(owner, count: int) -> list[int]:
    ids = []
    for n in range(count):
        reply = services.message_send(
            author=owner, conversation=None, text=f"Question {n}", client_id=f"c{n}"
        ).reply
        lifecycle.reply_start(message_id=reply.pk)
        ids.append(reply.pk)
    return ids


def test_a_batch_saves_each_replys_own_text_seq_and_first_token_time(owner, no_dispatch):
    ids = _streaming(owner, 3)
    earlier = timezone.now() - timedelta(seconds=5)
    Message.objects.filter(pk=ids[2]).update(first_token_at=earlier)
    now = timezone.now()
    texts = ['Say "hi", {braces} and \\ backslash', "héllo 👋\nnew line", "NULL"]
    saved = lifecycle.replies_checkpoint(
        checkpoints=[
            lifecycle.ReplyCheckpoint(ids[0], texts[0], len(texts[0]), first_token_at=now),
            lifecycle.ReplyCheckpoint(ids[1], texts[1], len(texts[1])),
            lifecycle.ReplyCheckpoint(ids[2], texts[2], 2, first_token_at=now),
        ]
    )
    assert saved == 3
    rows = {m.pk: m for m in Message.objects.filter(pk__in=ids)}
    assert [(rows[i].content, rows[i].seq) for i in ids] == [
        (texts[0], len(texts[0])),
        (texts[1], len(texts[1])),
        ("NULL", 2),
    ]
    assert rows[ids[0]].first_token_at == now
    assert rows[ids[1]].first_token_at is None  # no first token yet
    assert rows[ids[2]].first_token_at == earlier  # the first one noted is kept
    assert all(rows[i].status == "streaming" and rows[i].heartbeat_at for i in ids)


def test_a_batch_of_hundreds_is_one_statement_on_postgresql(
    owner, no_dispatch, django_assert_num_queries
):
    if connection.vendor != "postgresql":
        pytest.skip("executemany elsewhere (its count is pinned in test_reply_watch.py)")
    ids = _streaming(owner, 60)
    with django_assert_num_queries(1):
        saved = lifecycle.replies_checkpoint(
            checkpoints=[lifecycle.ReplyCheckpoint(i, f"text {i}", 4) for i in ids]
        )
    assert saved == 60


def test_a_checkpoint_leaves_the_heartbeat_to_the_watchs_own_round(owner, no_dispatch):
    """The heartbeat is the watch's heartbeat round's to refresh (every interval, for every
    live reply): a checkpoint writes the text only, on any database."""
    ids = _streaming(owner, 2)
    long_ago = timezone.now() - timedelta(minutes=5)
    Message.objects.filter(pk__in=ids).update(heartbeat_at=long_ago)
    saved = lifecycle.replies_checkpoint(
        checkpoints=[lifecycle.ReplyCheckpoint(i, "Some text", 9) for i in ids]
    )
    assert saved == 2
    rows = Message.objects.filter(pk__in=ids)
    assert {(m.content, m.heartbeat_at) for m in rows} == {("Some text", long_ago)}
    assert lifecycle.replies_heartbeat(message_ids=ids) == set(ids)
    assert all(m.heartbeat_at > long_ago for m in Message.objects.filter(pk__in=ids))
