"""The generation function and its coalescer, on the in-memory layer with the simulated model."""

from __future__ import annotations

import asyncio
import json
import uuid
from functools import partial

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.db import connection

from chat import services
from chat.events import conversation_group
from chat.models import Message
from chat.replies.coalesce import DeltaCoalescer, flush_window
from chat.replies.stream import reply_stream
from llm.catalog import catalog_forget
from llm.providers.base import ProviderError
from llm.providers.simulated import simulated_reply


async def test_first_piece_goes_at_once_then_pieces_are_coalesced():
    flushed: list[str] = []
    coalescer = DeltaCoalescer(flushed.append, interval=0.05, max_chars=1000)
    coalescer.add("Hel")
    assert flushed == ["Hel"]
    for piece in ["lo", ",", " wor", "ld"]:
        coalescer.add(piece)
    assert flushed == ["Hel"]  # waiting for the window
    while len(flushed) < 2:  # the window's timer flushes by itself
        await asyncio.sleep(0.01)
    assert flushed == ["Hel", "lo, world"]
    coalescer.add("!")
    coalescer.close()
    assert "".join(flushed) == "Hello, world!"
    await asyncio.sleep(0.08)
    assert flushed == ["Hel", "lo, world", "!"]  # closed: no timer left to flush again


async def test_a_full_buffer_flushes_before_the_window_ends():
    flushed: list[str] = []
    coalescer = DeltaCoalescer(flushed.append, interval=10, max_chars=4)
    for piece in ["a", "bb", "cc", "d"]:
        coalescer.add(piece)
    assert flushed == ["a", "bbcc"]
    coalescer.close()
    assert flushed == ["a", "bbcc", "d"]


def test_the_flush_window_widens_with_the_streams_on_a_loop_up_to_its_cap():
    window = partial(flush_window, interval=0.04, max_interval=0.06, rate=4000)
    assert window(streams=1) == window(streams=160) == 0.04  # few streams: as configured
    assert window(streams=200) == 0.05  # 200 streams publish <= 4,000 deltas/s
    assert window(streams=500) == window(streams=5000) == 0.06  # never wider than the cap
    assert flush_window(streams=500, interval=0.04, max_interval=0.06, rate=0) == 0.04


async def test_a_crowded_loop_coalesces_longer_and_the_first_piece_still_goes_at_once():
    flushed: list[str] = []
    crowd = [
        DeltaCoalescer(lambda text: None, interval=0.01, max_chars=1000, max_interval=60, rate=10)
        for _ in range(300)
    ]
    for other in crowd:
        other.add("x")  # each one's first piece: they now stream on this loop
    coalescer = DeltaCoalescer(
        flushed.append, interval=0.01, max_chars=1000, max_interval=60, rate=10
    )
    coalescer.add("Hel")
    assert flushed == ["Hel"]  # at once, however crowded
    coalescer.add("lo")
    await asyncio.sleep(0.2)  # 20 base windows; with 301 streams at 10 deltas/s it is 30 s
    assert flushed == ["Hel"]
    coalescer.close()
    assert flushed == ["Hel", "lo"]
    for other in crowd:
        other.close()  # the replies ended: the loop is quiet again
    alone: list[str] = []
    quiet = DeltaCoalescer(alone.append, interval=0.01, max_chars=1000, max_interval=60, rate=10)
    quiet.add("a")
    quiet.add("b")
    while len(alone) < 2:  # the base window's timer flushes by itself
        await asyncio.sleep(0.01)
    assert alone == ["a", "b"]
    quiet.close()


async def test_the_windows_of_many_coalescers_on_a_loop_share_one_timer(monkeypatch):
    """Hundreds of replies on one loop each wait for a window: they take the loop's flush
    schedule's one timer, not a loop timer per window, and every window still flushes."""
    loop = asyncio.get_running_loop()
    timers = 0
    call_at = loop.call_at

    def counted(when, callback, *args, context=None):
        nonlocal timers
        if type(getattr(callback, "__self__", None)).__module__ == DeltaCoalescer.__module__:
            timers += 1  # a coalescer's (or its schedule's), not the test's own sleeps
        return call_at(when, callback, *args, context=context)

    monkeypatch.setattr(loop, "call_at", counted)
    flushed: list[list[str]] = [[] for _ in range(200)]
    coalescers = [DeltaCoalescer(f.append, interval=0.02, max_chars=1000) for f in flushed]
    now = loop.time()
    with monkeypatch.context() as clock:
        clock.setattr(loop, "time", lambda: now)  # their windows end together, however slow
        for coalescer in coalescers:
            coalescer.add("a")  # the first piece goes at once
            coalescer.add("b")  # waits for the window
    while any(len(f) < 2 for f in flushed):
        await asyncio.sleep(0.01)
    assert all(f == ["a", "b"] for f in flushed)
    assert timers == 1
    for coalescer in coalescers:
        coalescer.close()


async def test_a_flush_that_fails_stops_no_other_replys_window():
    flushed: list[str] = []

    def failing(text: str) -> None:
        if text == "b":
            raise RuntimeError("publish failed")

    first = DeltaCoalescer(failing, interval=0.01, max_chars=1000)
    second = DeltaCoalescer(flushed.append, interval=0.01, max_chars=1000)
    for coalescer in (first, second):
        coalescer.add("a")
        coalescer.add("b")
    while len(flushed) < 2:  # the schedule goes on past the failed flush
        await asyncio.sleep(0.01)
    assert flushed == ["a", "b"]
    first.close()
    second.close()


async def _drain(layer, channel) -> list[dict]:
    events = []
    while True:
        try:
            events.append(await asyncio.wait_for(layer.receive(channel), 0.2))
        except TimeoutError:
            return events


@pytest.fixture
def pending_reply(owner, no_dispatch):
    def make(text="Tell me"):
        # A client id fits its column (64 characters) however long the text.
        return services.message_send(
            author=owner, conversation=None, text=text, client_id=uuid.uuid4().hex
        ).reply

    return make


@pytest.mark.django_db(transaction=True)
async def test_reply_stream_publishes_contiguous_deltas_and_saves_the_same_text(pending_reply):
    reply = await sync_to_async(pending_reply)()
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(conversation_group(reply.conversation_id), channel)
    await reply_stream(message_id=reply.pk)
    events = await _drain(layer, channel)
    deltas = [e for e in events if e["type"] == "chat.delta"]
    position = 0
    for delta in deltas:
        assert delta["start"] == position
        position = delta["seq"]
    saved = await Message.objects.aget(pk=reply.pk)
    assert "".join(d["text"] for d in deltas) == saved.content == simulated_reply("Tell me")
    assert saved.status == "complete" and saved.seq == len(saved.content)
    assert saved.first_token_at and saved.finished_at and not saved.tokens_estimated
    assert events[-1]["type"] == "chat.done" and events[-1]["seq"] == saved.seq


@pytest.mark.django_db(transaction=True)
async def test_each_delta_carries_its_finished_frame(pending_reply):
    """The frame a socket sends for a delta it takes whole is built once, by the producer, and
    is the JSON text of the `delta` frame (docs/protocol.md)."""
    reply = await sync_to_async(pending_reply)('Say something with "quotes", é and 👋')
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(conversation_group(reply.conversation_id), channel)
    await reply_stream(message_id=reply.pk)
    deltas = [e for e in await _drain(layer, channel) if e["type"] == "chat.delta"]
    assert deltas
    for delta in deltas:
        frame = {"type": "delta", **{k: delta[k] for k in ("message", "start", "seq", "text")}}
        assert delta["frame"] == json.dumps(frame)


@pytest.mark.django_db(transaction=True)
async def test_a_catalogue_read_again_when_the_reply_starts_is_read_off_the_loop(
    pending_reply, settings
):
    """The context window is looked up in the catalogue just before the provider call; a
    catalogue this process must read again then (an admin's change, or CATALOG_MAX_AGE
    passed) is database queries, which may not run on the event loop: the reply still
    answers (seen on the production topology as an `internal` failure now and then)."""
    settings.CACHE_ENABLED = False  # no cache lookup reads the catalogue first in a thread
    reply = await sync_to_async(pending_reply)()
    catalog_forget()
    await reply_stream(message_id=reply.pk)
    saved = await Message.objects.aget(pk=reply.pk)
    assert (saved.status, saved.error_code) == ("complete", "")
    assert saved.content == simulated_reply("Tell me")


@pytest.mark.django_db(transaction=True)
async def test_a_reply_is_generated_once_even_if_dispatched_twice(pending_reply):
    reply = await sync_to_async(pending_reply)()
    await asyncio.gather(reply_stream(message_id=reply.pk), reply_stream(message_id=reply.pk))
    saved = await Message.objects.aget(pk=reply.pk)
    assert saved.content == simulated_reply("Tell me")


@pytest.mark.django_db(transaction=True)
async def test_provider_failure_marks_the_reply_failed_with_a_clear_error(
    pending_reply, monkeypatch
):
    reply = await sync_to_async(pending_reply)()

    class Broken:
        async def astream(self, messages):
            raise ProviderError("provider_unavailable", "The model provider answered 503.")
            yield  # pragma: no cover

    monkeypatch.setattr(
        "chat.replies.stream.chat_model_for", lambda config, max_tokens, options=None: Broken()
    )
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(conversation_group(reply.conversation_id), channel)
    await reply_stream(message_id=reply.pk)
    saved = await Message.objects.aget(pk=reply.pk)
    assert saved.status == "failed" and saved.error_code == "provider_unavailable"
    error = (await _drain(layer, channel))[-1]
    assert error["type"] == "chat.error" and error["retryable"] is True and error["detail"]


@pytest.mark.django_db(transaction=True)
async def test_unexpected_failure_never_leaves_a_reply_streaming(pending_reply, monkeypatch):
    reply = await sync_to_async(pending_reply)()

    def explode(config, max_tokens):
        raise RuntimeError("boom")

    monkeypatch.setattr("chat.replies.stream.chat_model_for", explode)
    await reply_stream(message_id=reply.pk)
    saved = await Message.objects.aget(pk=reply.pk)
    assert saved.status == "failed" and saved.error_code == "internal"


@pytest.mark.django_db(transaction=True)
async def test_history_reaches_the_model_in_order(pending_reply, owner, monkeypatch):
    seen = []

    class Recorder:
        async def astream(self, messages):
            seen.append([(m.type, m.content) for m in messages])
            from langchain_core.messages import AIMessageChunk

            # A provider says how its stream ended; one that does not was cut (interrupted).
            yield AIMessageChunk(content="ok", response_metadata={"finish_reason": "stop"})

    monkeypatch.setattr(
        "chat.replies.stream.chat_model_for", lambda config, max_tokens, options=None: Recorder()
    )
    first = await sync_to_async(pending_reply)("one")
    await reply_stream(message_id=first.pk)
    second = await sync_to_async(services.message_send)(
        author=owner, conversation=first.conversation, text="two", client_id="two"
    )
    await reply_stream(message_id=second.reply.pk)
    assert [t for t, _ in seen[1]] == ["system", "human", "ai", "human"]
    assert [c for _, c in seen[1]][1:] == ["one", "ok", "two"]


@pytest.mark.django_db(transaction=True)
def test_a_reply_costs_a_fixed_number_of_statements_whatever_its_length(
    pending_reply, django_assert_num_queries, settings
):
    """The claim (one UPDATE returning the row and its conversation's prompt and tenant), the
    prompt's history (no look for documents in a conversation that never had any:
    Conversation.retrieves, chat/documents/retrieval.py), one final UPDATE and the quota
    settlement (routing reads the catalogue each process keeps, llm/catalog.py): no statement
    per token or per delta (the first token's time and the checkpoints go with the watch's
    batched rounds, chat/replies/watch.py). The generation's database calls run on this
    thread (async_to_sync sends thread-sensitive calls back here), so they are all counted, a
    transaction's BEGIN and COMMIT too. The same statements on SQLite and PostgreSQL, but for
    the history, which PostgreSQL returns with the claim (chat/replies/prompt.py)."""
    settings.STREAM_CHECKPOINT_INTERVAL = settings.STREAM_HEARTBEAT_INTERVAL = 3600
    settings.CACHE_ENABLED = False  # the reply cache's own statements are not this path's
    expected = [
        "UPDATE chat_message SET",  # the claim, returning the row and its conversation's
        # the history: only role and content (on PostgreSQL returned by the claim)
        *(["SELECT role, content"] if connection.vendor != "postgresql" else []),
        "UPDATE chat_message SET",  # the final save
        "BEGIN IMMEDIATE" if connection.vendor == "sqlite" else "BEGIN",  # the settlement: the
        "SELECT accounts_usageledger.id, accounts_usageledger.organisation_id,",  # row locked,
        "UPDATE accounts_usageledger SET",  # settled,
        "UPDATE accounts_usagecounter SET",  # and its counters charged in one statement
        "COMMIT",
    ]
    short, long = pending_reply("Hi"), pending_reply(" ".join(["word"] * 200))
    for reply in (short, long):
        with django_assert_num_queries(len(expected)) as captured:
            async_to_sync(reply_stream)(message_id=reply.pk)
        statements = [
            " ".join(q["sql"].replace('"', "").split()[:3]) for q in captured.captured_queries
        ]
        assert statements == expected, statements
        assert "RETURNING" in captured.captured_queries[0]["sql"]  # no read after the claim
    finals = [Message.objects.get(pk=reply.pk) for reply in (short, long)]
    assert [m.status for m in finals] == ["complete", "complete"]
    assert all(m.first_token_at and m.first_token_at >= m.started_at for m in finals)


@pytest.mark.django_db(transaction=True)
async def test_replies_starting_together_on_a_loop_share_their_claims(pending_reply, monkeypatch):
    """Claims that arrive while one is on its way go together in the next (the first alone,
    then what waited), each reply claimed once and generated whole; a reply dispatched twice
    is generated once (its second claim finds it taken)."""
    from chat.replies import stream

    batches: list[list[int]] = []
    original = stream.replies_start

    def recorded(*, message_ids):
        batches.append(list(message_ids))
        return original(message_ids=message_ids)

    monkeypatch.setattr(stream, "replies_start", recorded)
    replies = [await sync_to_async(pending_reply)(f"Question {n}") for n in range(12)]
    ids = [r.pk for r in replies]
    await asyncio.gather(*(reply_stream(message_id=i) for i in [*ids, ids[0]]))
    assert set().union(*batches) == set(ids)
    assert len(batches) < len(ids) and batches[0] == [ids[0]]
    saved = [m async for m in Message.objects.filter(pk__in=ids).order_by("pk")]
    assert [m.content for m in saved] == [simulated_reply(f"Question {n}") for n in range(12)]
    assert all(m.status == "complete" for m in saved)


async def test_a_claim_handed_the_lead_and_cancelled_meanwhile_passes_it_on(monkeypatch):
    """The claim told to lead the next batch may be cancelled before it runs (its reply's task
    stopped): the lead goes on to the claim behind it, which would otherwise wait for ever."""
    import threading

    from chat.replies import stream

    first_begun, release = threading.Event(), threading.Event()

    def claim_many(ids):
        if not first_begun.is_set():
            first_begun.set()
            release.wait(30)
        return {i: (f"reply {i}", []) for i in ids}

    monkeypatch.setattr(stream, "_claim_many", claim_many)
    claims = stream.ClaimBatches()
    leader = asyncio.create_task(claims.claim(1))
    await asyncio.get_running_loop().run_in_executor(None, first_begun.wait, 30)
    second = asyncio.create_task(claims.claim(2))
    third = asyncio.create_task(claims.claim(3))
    await asyncio.sleep(0)  # both queued behind the leader's batch
    hand_on = claims._hand_the_lead_on

    def hand_on_then_cancel_the_one_told():
        claims._hand_the_lead_on = hand_on  # once
        hand_on()
        second.cancel()

    claims._hand_the_lead_on = hand_on_then_cancel_the_one_told
    release.set()
    assert await leader == ("reply 1", [])
    with pytest.raises(asyncio.CancelledError):
        await second
    assert await asyncio.wait_for(third, 30) == ("reply 3", [])
