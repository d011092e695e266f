"""No reply hangs in `streaming` forever: dead generators are reaped, and only once."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from chat import services
from chat.models import Message
from chat.replies import lifecycle, reaper

pytestmark = pytest.mark.django_db


@pytest.fixture
def streaming_reply(owner, no_dispatch):
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


def stale(reply: Message) -> None:
    Message.objects.filter(pk=reply.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=1))


@pytest.mark.django_db(transaction=True)
def test_a_server_generating_in_process_reaps_from_its_first_request(
    streaming_reply, settings, monkeypatch
):
    """No Celery beat runs beside in-process generation: the server's reaper thread, started
    by its first request, fails a reply left streaming by a server that died."""
    from asgiref.sync import async_to_sync
    from channels.testing import HttpCommunicator

    from project.asgi import application

    settings.REAP_IN_SERVER = True
    settings.REAP_EVERY = 0.05
    stale(streaming_reply)
    monkeypatch.setattr(application, "reaping", False)
    started = []
    monkeypatch.setattr("chat.replies.dispatch.reaper_start", lambda: started.append(1))

    async def request() -> None:
        await HttpCommunicator(application, "GET", "/healthz").get_response(timeout=60)

    async_to_sync(request)()
    async_to_sync(request)()
    assert started == [1]  # once per process

    reaper.reaper_start()
    try:
        deadline = time.monotonic() + 10
        while Message.objects.get(pk=streaming_reply.pk).status == "streaming":
            assert time.monotonic() < deadline, "not reaped"
            time.sleep(0.05)
    finally:
        reaper.reaper_stop()
    streaming_reply.refresh_from_db()
    assert streaming_reply.status == "failed" and streaming_reply.error_code == "interrupted"
    assert streaming_reply.content == "Half an ans"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_reaper_keeps_what_was_published_after_the_last_checkpoint(
    streaming_reply, redis_server, settings
):
    """The worker published past its checkpoint ("Half an ans") and died: clients were shown
    the longer text, which the journal in the layer's Redis still holds; the reaper keeps it."""
    from asgiref.sync import async_to_sync

    from chat.events import conversation_group, delta_event, event_publish
    from chat.journal import journal_key
    from chat.layers import journal_read

    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chat.layers.BatchingPubSubChannelLayer",
            "CONFIG": {"hosts": [redis_server.url]},
        }
    }
    full = "Half an answer, and then some more of it"

    async def publish() -> None:
        for start, seq in ((0, 6), (6, 11), (11, 20), (20, len(full))):
            event = delta_event(
                message_id=streaming_reply.pk, start=start, seq=seq, text=full[start:seq]
            )
            await event_publish(streaming_reply.conversation_id, event)

    async_to_sync(publish)()
    stale(streaming_reply)
    assert reaper.replies_reap(stale_after=timedelta(seconds=20), pending_after=timedelta(0)) == 1
    streaming_reply.refresh_from_db()
    assert streaming_reply.status == "failed" and streaming_reply.error_code == "interrupted"
    assert (streaming_reply.content, streaming_reply.seq) == (full, len(full))
    # The reply's final event deleted its journal.
    group = conversation_group(streaming_reply.conversation_id)
    assert journal_read(group=group, key=journal_key(streaming_reply.pk)) == []


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_without_a_journal_the_reaper_keeps_the_checkpoint(streaming_reply, redis_server, settings):
    from asgiref.sync import async_to_sync

    from chat.events import delta_event, event_publish

    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chat.layers.BatchingPubSubChannelLayer",
            "CONFIG": {"hosts": [redis_server.url]},
        }
    }
    settings.STREAM_JOURNAL_TTL = 0
    event = delta_event(message_id=streaming_reply.pk, start=0, seq=20, text="Half an answer, and")
    async_to_sync(event_publish)(streaming_reply.conversation_id, event)
    stale(streaming_reply)
    reaper.replies_reap(stale_after=timedelta(seconds=20), pending_after=timedelta(0))
    streaming_reply.refresh_from_db()
    assert (streaming_reply.content, streaming_reply.seq) == ("Half an ans", 11)
