"""No reply hangs in `streaming` forever: dead generators are reaped, and only once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from chat import services
from chat.models import Message
from chat.replies import lifecycle, reaper

pytestmark = pytest.mark.django_db


@pytest.fixture
def streaming_reply(owner, monkeypatch):
    monkeypatch.setattr("chat.replies.dispatch.dispatch_generation", lambda mid, provider: None)
    reply = services.message_send(author=owner, conversation=None, text="hi", client_id="x").reply
    lifecycle.reply_start(message_id=reply.pk)
    lifecycle.replies_checkpoint(
        checkpoints=[lifecycle.ReplyCheckpoint(message_id=reply.pk, content="Half an ans", seq=11)]
    )
    return reply


def test_a_reply_without_heartbeat_is_failed_retryably_with_its_partial_text(streaming_reply):
    Message.objects.filter(pk=streaming_reply.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=60)
    )
    reaped = reaper.replies_reap(
        stale_after=timedelta(seconds=20), pending_after=timedelta(hours=1)
    )
    streaming_reply.refresh_from_db()
    assert reaped == 1
    assert streaming_reply.status == "failed" and streaming_reply.error_code == "interrupted"
    assert streaming_reply.content == "Half an ans"


def test_a_live_reply_is_left_alone(streaming_reply):
    assert (
        reaper.replies_reap(stale_after=timedelta(seconds=20), pending_after=timedelta(hours=1))
        == 0
    )
    assert lifecycle.replies_heartbeat(message_ids=[streaming_reply.pk]) == {streaming_reply.pk}


def test_the_generator_cannot_finish_a_reaped_reply(streaming_reply):
    reaper.replies_reap(stale_after=timedelta(0), pending_after=timedelta(0))
    # It learns it lost.
    assert lifecycle.replies_heartbeat(message_ids=[streaming_reply.pk]) == set()
    assert (
        lifecycle.reply_finish(message_id=streaming_reply.pk, content="late", status="complete")
        is None
    )
    streaming_reply.refresh_from_db()
    assert streaming_reply.status == "failed" and streaming_reply.content == "Half an ans"


def test_reap_all_at_start_up_clears_unfinished_replies(streaming_reply, capsys):
    call_command("reap_replies", "--all")
    assert "Reaped 1 unfinished reply." in capsys.readouterr().out
    assert Message.objects.get(pk=streaming_reply.pk).status == "failed"


def test_a_heartbeat_that_lands_after_the_scan_saves_the_reply(streaming_reply, monkeypatch):
    """The reaper scans for stale replies, then locks each one: a generator whose heartbeat
    arrives in between is alive, and its reply must not be failed."""
    from django.db import transaction

    Message.objects.filter(pk=streaming_reply.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=60)
    )
    real_atomic = transaction.atomic
    landed = []

    def heartbeat_lands_first(*args, **kwargs):
        if not landed:
            landed.append(None)  # once: the heartbeat opens a transaction of its own
            live = lifecycle.replies_heartbeat(message_ids=[streaming_reply.pk])
            landed[0] = streaming_reply.pk in live
        return real_atomic(*args, **kwargs)

    monkeypatch.setattr(transaction, "atomic", heartbeat_lands_first)
    reaped = reaper.replies_reap(
        stale_after=timedelta(seconds=20), pending_after=timedelta(hours=1)
    )
    streaming_reply.refresh_from_db()
    assert landed == [True]
    assert reaped == 0 and streaming_reply.status == "streaming"
