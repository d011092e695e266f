"""The reply watch: one cache read and one database round per interval for every live reply of
an event loop, instead of a query per reply; real database, real (locmem) cache."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.core.cache.backends.locmem import LocMemCache
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chat import services
from chat.models import Message
from chat.replies import ending as ending_module
from chat.replies import lifecycle, reaper, watch
from chat.replies import stream as stream_module
from chat.replies.stream import reply_stream
from chat.replies.watch import reply_watch
from conftest import wait_for
from llm.providers.simulated import simulated_reply

pytestmark = pytest.mark.django_db(transaction=True)

POLL = 0.05
INTERVAL = 0.1
GENEROUS = 30  # seconds: a deadline that catches a hang, never a slow machine


@pytest.fixture(autouse=True)
def _quick_watch(settings, no_dispatch):
    """Intervals in tens of milliseconds; generation is started by hand."""
    settings.STREAM_CANCEL_POLL_INTERVAL = POLL
    settings.STREAM_CHECKPOINT_INTERVAL = INTERVAL
    settings.STREAM_HEARTBEAT_INTERVAL = INTERVAL


def _streaming_replies(owner, count: int, *, started: bool = True) -> list[int]:
    ids = []
    for n in range(count):
        reply = services.message_send(
            author=owner, conversation=None, text=f"Question {n}", client_id=f"q{n}"
        ).reply
        if started:
            lifecycle.reply_start(message_id=reply.pk)
        ids.append(reply.pk)
    return ids


async def streaming(owner, count: int = 1) -> list[int]:
    """Replies claimed for generation, as reply_stream leaves them before it is watched."""
    return await sync_to_async(_streaming_replies)(owner, count)


async def pending(owner) -> int:
    """A reply waiting for reply_stream."""
    [reply_id] = await sync_to_async(_streaming_replies)(owner, 1, started=False)
    return reply_id


@contextlib.contextmanager
def watching(ids: list[int]):
    watched = [reply_watch(message_id=message_id) for message_id in ids]
    try:
        yield watched
    finally:
        for one in watched:
            one.close()


def watch_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "reply-watch" and not t.done()]


async def saved(message_id: int) -> Message:
    return await Message.objects.aget(pk=message_id)


@pytest.fixture
def cancel_reads(monkeypatch) -> list[list[str]]:
    """Every cache read of cancel flags, by key; the cache itself stays real."""
    reads: list[list[str]] = []
    real_get_many, real_get = LocMemCache.get_many, LocMemCache.get
    inside = threading.local()  # locmem's get_many is a loop of gets: count the batch once

    def get_many(self, keys, version=None):
        keys = list(keys)
        if any(key.startswith("reply-cancel:") for key in keys):
            reads.append(keys)
        inside.many = True
        try:
            return real_get_many(self, keys, version=version)
        finally:
            inside.many = False

    def get(self, key, default=None, version=None):
        if key.startswith("reply-cancel:") and not getattr(inside, "many", False):
            reads.append([key])
        return real_get(self, key, default=default, version=version)

    monkeypatch.setattr(LocMemCache, "get_many", get_many)
    monkeypatch.setattr(LocMemCache, "get", get)
    return reads


@pytest.fixture
def checkpoint_rounds(monkeypatch) -> list[list[tuple[int, str]]]:
    """Each checkpoint round the watch sends to the database: (message id, text) per reply."""
    rounds: list[list[tuple[int, str]]] = []
    real = lifecycle.replies_checkpoint

    def recorded(*, checkpoints):
        rounds.append([(c.message_id, c.content) for c in checkpoints])
        return real(checkpoints=checkpoints)

    monkeypatch.setattr(watch, "replies_checkpoint", recorded)
    return rounds


@pytest.fixture
def heartbeat_rounds(monkeypatch) -> list[tuple[list[int], int]]:
    """Each heartbeat round: the replies it covered, and how many queries it took."""
    rounds: list[tuple[list[int], int]] = []
    real = lifecycle.replies_heartbeat

    def counted(*, message_ids):
        # In the watch's own thread, on its own connection.
        with CaptureQueriesContext(connection) as queries:
            live = real(message_ids=message_ids)
        rounds.append((sorted(message_ids), len(queries)))
        return live

    monkeypatch.setattr(watch, "replies_heartbeat", counted)
    return rounds


# --- cancel --------------------------------------------------------------------------------


async def test_a_cancel_stops_only_the_reply_it_names_within_a_poll(owner):
    ids = await streaming(owner, 3)
    with watching(ids) as watched:
        target = await saved(ids[1])
        await sync_to_async(lifecycle.reply_cancel)(message=target, by=owner)
        loop = asyncio.get_running_loop()
        asked_at = loop.time()
        await asyncio.wait_for(watched[1].stop.wait(), timeout=GENEROUS)
        print(f"stopped {loop.time() - asked_at:.3f} s after the cancel (one poll is 50 ms here)")
        await asyncio.sleep(3 * POLL)
        assert not watched[0].stop.is_set() and not watched[2].stop.is_set()


async def test_one_cache_read_per_poll_covers_every_reply(owner, cancel_reads):
    ids = await streaming(owner, 5)
    with watching(ids):
        await asyncio.sleep(10 * POLL)
    assert 3 <= len(cancel_reads) <= 11
    keys = sorted(lifecycle.CANCEL_KEY.format(message_id=message_id) for message_id in ids)
    assert all(sorted(read) == keys for read in cancel_reads)  # one get_many, never a get each


async def test_an_unreadable_cache_does_not_stop_the_reply(owner, monkeypatch, caplog):
    [reply_id] = await streaming(owner)
    real_get_many = LocMemCache.get_many
    down = True

    def get_many(self, keys, version=None):
        if down:
            raise ConnectionError("Redis went away")
        return real_get_many(self, keys, version=version)

    monkeypatch.setattr(LocMemCache, "get_many", get_many)
    with watching([reply_id]) as (watched,), caplog.at_level(logging.WARNING, "chat.replies.watch"):
        cache.set(lifecycle.CANCEL_KEY.format(message_id=reply_id), owner.pk)
        await asyncio.sleep(4 * POLL)
        assert not watched.stop.is_set()
        assert "cancel flags of 1 replies unreadable" in caplog.text
        down = False  # back: the flag is seen at the next poll
        await asyncio.wait_for(watched.stop.wait(), timeout=GENEROUS)


# --- heartbeat -----------------------------------------------------------------------------


async def test_heartbeats_refresh_every_live_reply_in_one_round(owner, heartbeat_rounds):
    ids = await streaming(owner, 3)
    long_ago = timezone.now() - timedelta(minutes=1)
    await Message.objects.filter(pk__in=ids).aupdate(heartbeat_at=long_ago)
    with watching(ids) as watched:

        async def all_fresh():
            return await Message.objects.filter(pk__in=ids, heartbeat_at__gt=long_ago).acount()

        assert await wait_for(all_fresh, timeout=GENEROUS) == 3
        assert not any(one.stop.is_set() for one in watched)
    covered, queries = heartbeat_rounds[0]
    assert covered == sorted(ids)
    assert queries == 1  # one UPDATE … RETURNING: the same for one reply or many


async def test_a_reply_the_reaper_took_is_stopped_and_the_others_go_on(owner):
    ids = await streaming(owner, 3)
    with watching(ids) as watched:
        await Message.objects.filter(pk=ids[1]).aupdate(status=Message.Status.FAILED)
        await asyncio.wait_for(watched[1].stop.wait(), timeout=GENEROUS)
        await asyncio.sleep(2 * INTERVAL)
        assert not watched[0].stop.is_set() and not watched[2].stop.is_set()


async def test_a_reaped_reply_stops_generating_and_keeps_what_the_reaper_wrote(owner, settings):
    settings.SIMULATED_TOKENS_PER_SECOND = 0.5  # the whole reply would take a minute
    reply_id = await pending(owner)
    generation = asyncio.create_task(reply_stream(message_id=reply_id))

    async def started():
        return (await saved(reply_id)).first_token_at

    await wait_for(started)
    await sync_to_async(reaper.replies_reap)(
        stale_after=timedelta(0), pending_after=timedelta(hours=1)
    )
    await asyncio.wait_for(generation, timeout=GENEROUS)
    reply = await saved(reply_id)
    assert reply.status == Message.Status.FAILED and reply.error_code == "interrupted"
    assert len(reply.content) < len(simulated_reply("Question 0"))


# --- checkpoints ---------------------------------------------------------------------------


async def test_checkpoints_save_the_latest_text_once_per_interval(owner, checkpoint_rounds):
    [reply_id] = await streaming(owner)
    with watching([reply_id]) as (watched,):
        for text in ["Hel", "Hello", "Hello, wor"]:
            watched.checkpoint(content=text, seq=len(text))

        async def checkpointed():
            return (await saved(reply_id)).seq == 10

        await wait_for(checkpointed, timeout=GENEROUS)
        await asyncio.sleep(3 * INTERVAL)  # nothing new: nothing written
    assert checkpoint_rounds == [[(reply_id, "Hello, wor")]]
    reply = await saved(reply_id)
    assert reply.content == "Hello, wor" and reply.status == Message.Status.STREAMING


async def test_replies_checkpointed_together_share_one_round(owner, checkpoint_rounds):
    ids = await streaming(owner, 3)
    with watching(ids) as watched:
        for one in watched:
            one.checkpoint(content=f"Text of {one.message_id}", seq=11)

        async def all_checkpointed():
            return await Message.objects.filter(pk__in=ids, seq=11).acount() == 3

        await wait_for(all_checkpointed, timeout=GENEROUS)
    assert len(checkpoint_rounds) == 1 and len(checkpoint_rounds[0]) == 3


async def test_unsaved_text_is_dropped_when_the_reply_leaves(owner, checkpoint_rounds):
    [reply_id] = await streaming(owner)
    with watching([reply_id]) as (watched,):
        watched.checkpoint(content="Half an ans", seq=11)
    await asyncio.sleep(3 * INTERVAL)
    assert checkpoint_rounds == []
    assert (await saved(reply_id)).content == ""


async def test_a_streamed_reply_is_checkpointed_while_it_runs_and_never_after(
    owner, settings, monkeypatch
):
    """Held mid-stream until the watch has saved a checkpoint (no race with the machine's
    speed); once the reply is final, no checkpoint changes its row again."""
    settings.STREAM_CHECKPOINT_INTERVAL = 0.05
    saved_rounds: list[tuple[bool, int]] = []  # (reply final when the round ran, rows saved)
    final = threading.Event()
    real_checkpoint = lifecycle.replies_checkpoint

    def recorded(*, checkpoints):
        ended = final.is_set()
        rows = real_checkpoint(checkpoints=checkpoints)
        saved_rounds.append((ended, rows))
        return rows

    monkeypatch.setattr(watch, "replies_checkpoint", recorded)
    real_model_for = stream_module.chat_model_for

    async def checkpointed():
        return any(rows for _, rows in saved_rounds)

    class HeldMidStream:
        """The simulated model, held after its second chunk until a checkpoint was saved (the
        first chunk's delta went at once, so its text is checkpointable)."""

        def __init__(self, model):
            self.model = model

        async def astream(self, messages):
            sent = 0
            async for chunk in self.model.astream(messages):
                yield chunk
                sent += 1
                if sent == 2:
                    await wait_for(checkpointed, timeout=60)

    monkeypatch.setattr(
        stream_module,
        "chat_model_for",
        lambda config, max_tokens, options=None: HeldMidStream(
            real_model_for(config, max_tokens=max_tokens, options=options)
        ),
    )
    real_finish = ending_module.replies_finish

    def finish_and_mark(**kwargs):
        try:
            return real_finish(**kwargs)
        finally:
            final.set()

    monkeypatch.setattr(ending_module, "replies_finish", finish_and_mark)
    reply_id = await pending(owner)
    await reply_stream(message_id=reply_id)
    await asyncio.sleep(4 * INTERVAL)
    assert any(rows for ended, rows in saved_rounds if not ended)  # saved while it ran
    assert [rows for ended, rows in saved_rounds if ended and rows] == []  # never after
    reply = await saved(reply_id)
    assert reply.status == Message.Status.COMPLETE
    assert reply.content == simulated_reply("Question 0")


async def test_a_failed_database_round_is_retried_next_interval(owner, monkeypatch, caplog):
    [reply_id] = await streaming(owner)
    real = lifecycle.replies_checkpoint
    failures = [OperationalError("database is locked")]

    def flaky(*, checkpoints):
        if failures:
            raise failures.pop()
        return real(checkpoints=checkpoints)

    monkeypatch.setattr(watch, "replies_checkpoint", flaky)
    with watching([reply_id]) as (watched,), caplog.at_level(logging.WARNING, "chat.replies.watch"):
        watched.checkpoint(content="Saved at last", seq=13)

        async def checkpointed():
            return (await saved(reply_id)).content == "Saved at last"

        await wait_for(checkpointed, timeout=GENEROUS)
        assert not watched.stop.is_set()
    assert "checkpoints of 1 replies not saved" in caplog.text


# --- the watch's life ----------------------------------------------------------------------


async def test_the_watch_ends_when_its_last_reply_leaves(owner):
    first_id, second_id = await streaming(owner, 2)
    first = reply_watch(message_id=first_id)
    second = reply_watch(message_id=second_id)
    assert len(watch_tasks()) == 1  # one for the loop, not one per reply
    first.close()
    await asyncio.sleep(2 * INTERVAL)
    assert len(watch_tasks()) == 1
    second.close()

    async def ended():
        return not watch_tasks()

    await wait_for(ended, timeout=GENEROUS)
    with watching([first_id]):  # the next reply starts a new watch
        assert len(watch_tasks()) == 1
    await wait_for(ended, timeout=GENEROUS)


async def test_a_crashed_watch_comes_back_and_still_stops_a_cancelled_reply(
    owner, monkeypatch, caplog
):
    [reply_id] = await streaming(owner)
    real = watch.ReplyWatch._take_unsaved
    bugs = [RuntimeError("a bug in the watch")]

    def buggy(self):
        if bugs:
            raise bugs.pop()
        return real(self)

    monkeypatch.setattr(watch.ReplyWatch, "_take_unsaved", buggy)
    with watching([reply_id]) as (watched,), caplog.at_level(logging.ERROR, "chat.replies.watch"):
        watched.checkpoint(content="Still saved", seq=11)

        async def crashed():
            return not bugs

        await wait_for(crashed, timeout=GENEROUS)
        cache.set(lifecycle.CANCEL_KEY.format(message_id=reply_id), owner.pk)
        await asyncio.wait_for(watched.stop.wait(), timeout=GENEROUS)

        async def checkpointed():
            return (await saved(reply_id)).content == "Still saved"

        await wait_for(checkpointed, timeout=GENEROUS)
    assert "the reply watch crashed" in caplog.text


async def test_each_event_loop_has_its_own_watch(owner):
    here_id, there_id = await streaming(owner, 2)
    there_stopped = threading.Event()

    async def other_loop():
        with watching([there_id]) as (there,):
            assert len(watch_tasks()) == 1  # this loop's own
            cache.set(lifecycle.CANCEL_KEY.format(message_id=there_id), owner.pk)
            await asyncio.wait_for(there.stop.wait(), timeout=GENEROUS)
            there_stopped.set()

    with watching([here_id]) as (here,):
        thread = threading.Thread(target=asyncio.run, args=(other_loop(),))
        thread.start()
        await asyncio.to_thread(thread.join, 5)
        assert there_stopped.is_set()
        assert len(watch_tasks()) == 1 and not here.stop.is_set()


# --- the batch services --------------------------------------------------------------------


def test_batch_heartbeat_tells_which_replies_are_still_streaming(owner):
    ids = _streaming_replies(owner, 3)
    Message.objects.filter(pk=ids[0]).update(status=Message.Status.FAILED)
    assert lifecycle.replies_heartbeat(message_ids=ids) == set(ids[1:])
    assert lifecycle.replies_heartbeat(message_ids=[]) == set()


def test_batch_heartbeat_and_checkpoint_cost_the_same_for_one_reply_or_many(
    owner, django_assert_num_queries
):
    ids = _streaming_replies(owner, 3)
    # Counted on SQLite, whose BEGIN and COMMIT show up as queries.
    for batch in (ids[:1], ids):
        with django_assert_num_queries(1):  # one UPDATE … RETURNING, no transaction
            lifecycle.replies_heartbeat(message_ids=batch)
        # PostgreSQL: one UPDATE over arrays; elsewhere BEGIN, an executemany UPDATE, COMMIT.
        with django_assert_num_queries(1 if connection.vendor == "postgresql" else 3):
            lifecycle.replies_checkpoint(
                checkpoints=[lifecycle.ReplyCheckpoint(i, "Some text", 9) for i in batch]
            )


def test_batch_checkpoint_leaves_final_replies_alone(owner):
    ids = _streaming_replies(owner, 2)
    lifecycle.reply_finish(message_id=ids[0], content="The whole answer.", status="complete")
    saved_count = lifecycle.replies_checkpoint(
        checkpoints=[lifecycle.ReplyCheckpoint(i, "Stale", 5) for i in ids]
    )
    assert saved_count == 1
    finished, running = Message.objects.get(pk=ids[0]), Message.objects.get(pk=ids[1])
    assert finished.content == "The whole answer." and finished.status == "complete"
    assert running.content == "Stale" and running.seq == 5 and running.heartbeat_at


def test_batch_cancel_lookup_names_only_flagged_replies(owner):
    ids = _streaming_replies(owner, 3)
    cache.set(lifecycle.CANCEL_KEY.format(message_id=ids[2]), owner.pk)
    assert lifecycle.replies_cancel_requested(message_ids=ids) == {ids[2]}
    assert lifecycle.replies_cancel_requested(message_ids=[]) == set()
