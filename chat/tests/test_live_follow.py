"""A reply this server generates for the request that asked for it (API_GENERATION_IN_SERVER)
is followed by that request from the generator itself (chat/replies/live.py,
chat/api/follow.py LiveFollower): the whole text and the final row, with no read of the reply,
while every other watcher of the conversation still gets it through the channel layer. The
same on the real topology: tests/integration/test_openai_in_server.py."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from asgiref.sync import sync_to_async

from chat.api import follow
from chat.api.follow import Delta, Final, LiveFollower, ReplyFollower, follower_for
from chat.models import Message
from chat.replies import dispatch
from chat.replies.live import live_reply
from chat.services import completion_request_create


@pytest.fixture
def in_server(settings, monkeypatch):
    """Production's dispatch and no Celery at all; `in_server()` in the test makes its loop
    the server's."""
    settings.GENERATION_BACKEND = "celery"
    settings.API_GENERATION_IN_SERVER = True
    settings.SIMULATED_TOKENS_PER_SECOND = 200.0  # several deltas, not one
    monkeypatch.setattr(
        "chat.replies.dispatch.generate_reply.apply_async",
        lambda *args, **kwargs: pytest.fail("an API reply went to Celery"),
    )
    return lambda: monkeypatch.setattr(dispatch, "_server_loop", asyncio.get_running_loop())


@pytest.fixture
def reads(monkeypatch) -> list[tuple[int, asyncio.Task | None]]:
    """The replies the followers read from the database, and the task that read each."""
    done: list[tuple[int, asyncio.Task | None]] = []
    real = follow._read

    async def counted(message_id: int) -> Message:
        done.append((message_id, asyncio.current_task()))
        return await real(message_id)

    monkeypatch.setattr(follow, "_read", counted)
    return done


def _create(owner, text: str) -> Message:
    with dispatch.generation_in_this_server():
        return completion_request_create(
            author=owner,
            organisation=owner.personal_organisation,
            history=[],
            text=text,
            client_id=f"live-{text}",
            alias="simulated",
        ).reply


async def _follow(follower: LiveFollower | ReplyFollower) -> tuple[str, Message]:
    text, final = "", None
    async with follower, contextlib.aclosing(follower.events()) as events:
        async for item in events:
            if isinstance(item, Delta):
                assert item.start == len(text)
                text += item.text
            elif isinstance(item, Final):
                final = item.message
                break
    assert final is not None
    return text, final


@pytest.mark.django_db(transaction=True)
async def test_the_requester_follows_from_the_generator_and_others_through_the_layer(
    in_server, owner, reads
):
    in_server()
    reply = await sync_to_async(_create)(owner, "hello there")
    # Registered before the view resumes: the generation was scheduled first.
    assert live_reply(reply.pk) is not None
    mine = follower_for(message_id=reply.pk, conversation_id=reply.conversation_id)
    assert isinstance(mine, LiveFollower)
    other = ReplyFollower(message_id=reply.pk, conversation_id=reply.conversation_id)
    requester, watcher = asyncio.create_task(_follow(mine)), asyncio.create_task(_follow(other))
    async with asyncio.timeout(30):  # a bound for failing, not a speed requirement
        (text, final), (watched, watched_final) = await asyncio.gather(requester, watcher)
    saved = await Message.objects.aget(pk=reply.pk)
    assert saved.status == Message.Status.COMPLETE and saved.content
    assert text == watched == saved.content
    assert final.status == watched_final.status == Message.Status.COMPLETE
    assert (final.completion_tokens, final.seq) == (saved.completion_tokens, saved.seq)
    # The other watcher read the reply (its saved text first, its final row); the requester never.
    assert {task for _, task in reads} == {watcher} and len(reads) >= 2
    assert live_reply(reply.pk) is None  # forgotten when the generation ended


@pytest.mark.django_db(transaction=True)
async def test_a_reader_that_comes_after_the_end_reads_the_database(in_server, owner, reads):
    in_server()
    reply = await sync_to_async(_create)(owner, "late")
    live = live_reply(reply.pk)
    assert live is not None
    async with asyncio.timeout(30):
        while live_reply(reply.pk) is not None:
            await asyncio.sleep(0.01)
    follower = follower_for(message_id=reply.pk, conversation_id=reply.conversation_id)
    assert isinstance(follower, ReplyFollower)
    text, final = await _follow(follower)
    assert final.status == Message.Status.COMPLETE and text == final.content


@pytest.mark.django_db(transaction=True)
async def test_a_generation_ending_without_its_final_row_hands_over_to_the_database(
    in_server, owner, reads, monkeypatch
):
    """The reaper finished the reply first (reply_finish saved nothing): the requester's
    follower reads the row the reaper saved."""

    def reaped_first(*, message_id, values, claimed):
        Message.objects.filter(pk=message_id).update(
            status=Message.Status.FAILED,
            error_code="interrupted",
            error_message="reaped",
            content=values["content"],
            seq=len(values["content"]),
        )
        return None

    monkeypatch.setattr("chat.replies.ending.reply_finish_row", reaped_first)
    in_server()
    reply = await sync_to_async(_create)(owner, "reaped")
    follower = follower_for(message_id=reply.pk, conversation_id=reply.conversation_id)
    assert isinstance(follower, LiveFollower)
    async with asyncio.timeout(30):
        text, final = await _follow(follower)
    assert final.status == Message.Status.FAILED and final.error_code == "interrupted"
    assert text == final.content
    assert reads and {message_id for message_id, _ in reads} == {reply.pk}
