"""The send path's cost, pinned: statements per send (a page's or socket's, and an OpenAI-compatible
request's: chat/services/completions.py), and database calls off one thread."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.forms.models import model_to_dict
from django.test import Client

from accounts.models import UsageLedger
from chat import services
from chat.models import Conversation, Message
from chat.replies.dispatch import NOT_STARTED_RETRY_AFTER
from chat.services.completions import PriorMessage, completion_request_create
from chat.services.messages import user_message_create
from chat.tests.test_consumers import connect_as, receive_until
from core.db import db_async
from core.rows import row_insert

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
    # On SQLite: BEGIN; history for the budget estimate; the budget's counters locked, charged
    # and read (one UPDATE … RETURNING); the conversation touched; the user message; the reply;
    # the ledger row, saved with the reply's id; COMMIT. On PostgreSQL all of it is one
    # statement outside a transaction (chat/services/said.py said_in_one_statement). No
    # idempotency look-up: a repeat is found when its statement fails. No deployment query:
    # the catalogue is kept per process (llm/catalog.py).
    with django_assert_num_queries(1 if connection.vendor == "postgresql" else 8):
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


def test_a_send_has_the_orm_build_no_insert_of_its_own(owner, celery_dispatch, monkeypatch):
    """The user message, the reply and the ledger row are written by hand (core/rows.py, and
    on PostgreSQL the messages with the touch in one statement): the ORM's INSERT compiler
    cost more CPU than the database spends on them."""
    from django.db.models.sql.compiler import SQLInsertCompiler

    first = services.message_send(author=owner, conversation=None, text="hi", client_id="a")
    built: list[str] = []
    as_sql = SQLInsertCompiler.as_sql

    def counted(self, *args, **kwargs):
        built.append(self.query.model.__name__)
        return as_sql(self, *args, **kwargs)

    monkeypatch.setattr(SQLInsertCompiler, "as_sql", counted)
    result = services.message_send(
        author=owner, conversation=first.reply.conversation, text="again", client_id="b"
    )
    assert built == []
    assert Message.objects.get(pk=result.user_message.pk).content == "again"
    assert UsageLedger.objects.get(message_id=result.reply.pk).reserved_tokens > 0


def test_a_send_checks_the_catalogue_version_once(owner, celery_dispatch, monkeypatch):
    """Priced (llm/pricing.py) and routed (llm/router.py) from one catalogue held for the
    send: one cache GET of its version, no deployment query."""
    from llm import catalog

    first = services.message_send(author=owner, conversation=None, text="hi", client_id="a")
    reads: list[str] = []

    class Counting:
        def get(self, key: str, default: object = None) -> object:
            reads.append(key)
            return cache.get(key, default)

        def __getattr__(self, name: str) -> object:
            return getattr(cache, name)

    monkeypatch.setattr(catalog, "cache", Counting())
    services.message_send(
        author=owner,
        conversation=first.reply.conversation,
        text="and again",
        client_id="b",
        alias="simulated",
    )
    assert reads == [catalog.CATALOG_VERSION_KEY]
    assert len(celery_dispatch) == 2


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


async def test_a_send_into_a_conversation_the_socket_follows_is_one_database_call(
    owner, monkeypatch
):
    """The access check of a conversation is made once per socket: a later send into it is its
    transaction alone (no check, no catch-up read), and is answered as before."""
    import chat.consumers

    calls: list[str] = []

    def counted(func):
        calls.append(getattr(func, "__name__", repr(func)))
        return db_async(func)

    monkeypatch.setattr(chat.consumers, "db_async", counted)
    ws = await connect_as(owner)
    await ws.send_json_to({"type": "send", "conversation": None, "text": "one", "client_id": "1"})
    first = await receive_until(ws, "done")
    conversation = first[0]["conversation"]
    calls.clear()
    await ws.send_json_to(
        {"type": "send", "conversation": conversation, "text": "two", "client_id": "2"}
    )
    frames = await receive_until(ws, "done")
    assert calls == ["send_save"]
    ack = frames[0]
    assert ack["type"] == "ack" and ack["created"] and ack["conversation"] == conversation
    # Its user message and reply announced, the reply streamed whole.
    announced = [f["message"] for f in frames if f["type"] == "message"]
    assert announced == [ack["message"], ack["reply"]]
    reply = await Message.objects.aget(pk=ack["reply"])
    assert "".join(f["text"] for f in frames if f["type"] == "delta") == reply.content
    await ws.disconnect()


async def test_a_send_into_a_followed_conversation_deleted_since_is_not_found(owner):
    ws = await connect_as(owner)
    await ws.send_json_to({"type": "send", "conversation": None, "text": "one", "client_id": "1"})
    conversation = (await receive_until(ws, "done"))[0]["conversation"]
    await Conversation.objects.filter(pk=conversation).adelete()
    await ws.send_json_to(
        {"type": "send", "conversation": conversation, "text": "two", "client_id": "2"}
    )
    error = (await receive_until(ws, "error"))[-1]
    assert error["code"] == "not_found"
    assert await Message.objects.acount() == 0
    await ws.disconnect()


# --- an OpenAI-compatible request (POST /v1/chat/completions) ---------------------------------


def _request(owner, organisation, client_id: str):
    return completion_request_create(
        author=owner,
        organisation=organisation,
        history=[
            PriorMessage(role=Message.Role.USER, content="Hi"),
            PriorMessage("assistant", "Hello"),
        ],
        text="What is two and two?",
        client_id=client_id,
        alias="",
        system_prompt="Be brief.",
    )


def test_a_request_is_one_transaction_without_a_look_up_first(
    owner, organisation, celery_dispatch, django_assert_num_queries
):
    _request(owner, organisation, "oai-warm")  # the first one in a process warms caches
    # BEGIN; the budget's counters (locked and charged in one UPDATE); the conversation; the
    # earlier messages, the user message and the reply (one INSERT each); the ledger row, saved
    # with the reply's id; COMMIT. The deployments come from the process's catalogue. No
    # idempotency look-up before: a repeat is found when its transaction fails.
    with django_assert_num_queries(8):
        result = _request(owner, organisation, "oai-new")
    assert result.created and len(celery_dispatch) == 2
    assert result.reply.conversation.origin == Conversation.Origin.OPENAI
    assert list(
        result.reply.conversation.messages.order_by("id").values_list("role", "content")
    ) == [
        ("user", "Hi"),
        ("assistant", "Hello"),
        ("user", "What is two and two?"),
        ("assistant", ""),
    ]


def test_a_repeated_client_id_answers_with_the_earlier_reply(owner, organisation, celery_dispatch):
    first = _request(owner, organisation, "idem-same")
    again = _request(owner, organisation, "idem-same")
    assert not again.created
    assert (again.user_message.pk, again.reply.pk) == (first.user_message.pk, first.reply.pk)
    assert Conversation.objects.filter(owner=owner).count() == 1  # the repeat's rolled back
    assert len(celery_dispatch) == 1


# --- the generation task's publish (project/celery.py) -----------------------------------------


@pytest.fixture
def broker_nowhere(settings):
    """Celery generation whose Redis broker does not answer (nothing listens on its port)."""
    from project.celery import app, publish_plans_forget
    from tests.harness.processes import free_port

    settings.GENERATION_BACKEND = "celery"
    before = app.conf.broker_url
    app.conf.broker_url = f"redis://127.0.0.1:{free_port()}/0"
    publish_plans_forget()
    yield
    app.conf.broker_url = before
    publish_plans_forget()


async def test_a_send_with_the_broker_down_is_not_started_and_keeps_the_message(
    owner, broker_nowhere, caplog
):
    """The socket is told to send it again (`not_started`, retryable, with `retry_after`), the
    cause is logged, and what was sent is saved: the user message, and its reply pending and
    marked, so that a repeat of the send starts it (left alone, the reaper ends it:
    docs/protocol.md, "When the generator dies")."""
    ws = await connect_as(owner)
    await ws.send_json_to(
        {"type": "send", "conversation": None, "text": "anyone?", "client_id": "down"}
    )
    error = (await receive_until(ws, "error", timeout=30))[-1]
    assert (error["code"], error["retryable"], error["message"]) == ("not_started", True, None)
    assert error["retry_after"] == NOT_STARTED_RETRY_AFTER
    assert "could not be started" in caplog.text
    user_message = await Message.objects.aget(client_id="down")
    assert user_message.content == "anyone?"
    reply = await Message.objects.aget(reply_to=user_message)
    assert reply.status == Message.Status.PENDING
    assert reply.routing["undispatched"] is True  # a repeat of the send starts it
    await ws.disconnect()


async def test_the_same_send_again_once_the_broker_is_back_starts_its_reply(
    owner, broker_nowhere, settings
):
    """Re-sending the client_id of a send whose dispatch failed answers with the first result
    (`created` false) and gets its reply going, instead of leaving it pending for the reaper;
    re-sent while the broker is still down it is `not_started` again, and nothing doubles."""
    ws = await connect_as(owner)
    frame = {"type": "send", "conversation": None, "text": "anyone?", "client_id": "again"}
    await ws.send_json_to(frame)
    assert (await receive_until(ws, "error", timeout=30))[-1]["code"] == "not_started"
    await ws.send_json_to(frame)  # too early: still down
    assert (await receive_until(ws, "error", timeout=30))[-1]["code"] == "not_started"

    settings.GENERATION_BACKEND = "inprocess"  # the generator is reachable again
    await ws.send_json_to(frame)
    ack = (await receive_until(ws, "ack", timeout=30))[-1]
    assert ack["created"] is False
    done = [f for f in await receive_until(ws, "done", timeout=60) if f["type"] == "done"][-1]
    assert (done["message"], done["status"]) == (ack["reply"], "complete")
    assert await Message.objects.filter(client_id="again").acount() == 1
    assert await Message.objects.filter(reply_to__client_id="again").acount() == 1
    reply = await Message.objects.aget(pk=ack["reply"])
    assert "undispatched" not in reply.routing
    await ws.disconnect()


async def test_a_regenerate_not_started_starts_its_reply_when_repeated(
    owner, broker_nowhere, settings
):
    """The same for a regenerate: `not_started`, and the same frame again (the old reply's
    id) answers with the reply that replaced it and starts it."""
    conversation = await sync_to_async(services.conversation_create)(owner=owner)
    asked = await sync_to_async(user_message_create)(
        conversation=conversation, author=owner, text="Once more?", client_id=None
    )
    old = await Message.objects.acreate(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        reply_to=asked,
        content="Yes.",
        status=Message.Status.COMPLETE,
        seq=4,
    )
    ws = await connect_as(owner)
    frame = {"type": "regenerate", "message": old.pk}
    await ws.send_json_to(frame)
    error = (await receive_until(ws, "error", timeout=30))[-1]
    assert (error["code"], error["retryable"]) == ("not_started", True)

    settings.GENERATION_BACKEND = "inprocess"
    await ws.send_json_to(frame)
    ack = (await receive_until(ws, "ack", timeout=30))[-1]
    assert ack["created"] is False
    done = [f for f in await receive_until(ws, "done", timeout=60) if f["type"] == "done"][-1]
    assert (done["message"], done["status"]) == (ack["reply"], "complete")
    assert await Message.objects.filter(reply_to=asked, superseded=False).acount() == 1
    await ws.disconnect()


@pytest.mark.parametrize("repeat_by", ["client_id", "Idempotency-Key"])
def test_a_rest_send_with_the_broker_down_is_503_and_its_repeat_starts_the_reply(
    owner, organisation, broker_nowhere, settings, repeat_by
):
    """POST messages answers 503 `not_started` with Retry-After; the same request again (its
    client_id, or its Idempotency-Key) answers 200 with the saved message and starts its
    reply."""
    from accounts.services import api_key_create
    from chat.tests.conftest import API, bearer
    from chat.tests.test_api import wait_final

    key = api_key_create(user=owner, organisation=organisation, name="rest")
    api = Client(**bearer(key.raw))
    conversation = services.conversation_create(owner=owner, organisation=organisation)
    url = f"{API}/conversations/{conversation.pk}/messages"
    body = {"text": "Is anyone there?"}
    headers = {}
    if repeat_by == "client_id":
        body["client_id"] = "rest-down"
    else:
        headers["HTTP_IDEMPOTENCY_KEY"] = "rest-down"

    refused = api.post(url, body, content_type="application/json", **headers)
    assert refused.status_code == 503
    assert refused["Retry-After"] == str(NOT_STARTED_RETRY_AFTER)
    error = refused.json()["error"]
    assert (error["code"], error["retry_after"]) == ("not_started", NOT_STARTED_RETRY_AFTER)
    assert "same request again" in error["detail"]
    saved = Message.objects.get(conversation=conversation, role=Message.Role.USER)
    assert saved.replies.get().status == Message.Status.PENDING

    settings.GENERATION_BACKEND = "inprocess"
    again = api.post(url, body, content_type="application/json", **headers)
    assert again.status_code == 200, again.content
    assert (again.json()["message"], again.json()["created"]) == (saved.pk, False)
    assert wait_final(api, again.json()["reply"])["status"] == "complete"
    assert conversation.messages.count() == 2


@pytest.mark.parametrize("stream", [False, True])
async def test_an_openai_request_with_the_broker_down_is_503_and_its_repeat_answers(
    owner, organisation, broker_nowhere, settings, stream
):
    """The OpenAI-compatible endpoint, its reply going through Celery: 503 `server_error`
    `not_started` with Retry-After; the same request with the same Idempotency-Key answers."""
    from accounts.services import api_key_create
    from chat.tests.conftest import asgi_client

    settings.API_GENERATION_IN_SERVER = False  # through the broker, as local models always go
    key = await sync_to_async(api_key_create)(user=owner, organisation=organisation, name="oai")
    headers = {"Authorization": f"Bearer {key.raw}", "Idempotency-Key": f"oai-down-{stream}"}
    payload = {
        "model": "simulated",
        "messages": [{"role": "user", "content": "Still there?"}],
        "stream": stream,
    }
    async with asgi_client(headers=headers) as http:
        refused = await http.post("/v1/chat/completions", json=payload)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == str(NOT_STARTED_RETRY_AFTER)
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("server_error", "not_started")

        settings.GENERATION_BACKEND = "inprocess"
        again = await http.post("/v1/chat/completions", json=payload)
    assert again.status_code == 200
    assert await Message.objects.filter(content="Still there?").acount() == 1
    reply = await Message.objects.aget(reply_to__content="Still there?")
    assert reply.status == Message.Status.COMPLETE
    if stream:
        assert again.text.rstrip().endswith("data: [DONE]")
    else:
        assert again.json()["choices"][0]["message"]["content"] == reply.content


async def test_a_doubled_send_generates_its_reply_once(owner, settings):
    """The twin of a send whose reply is already on its way answers with it and starts
    nothing: one reply, generated once."""
    settings.GENERATION_BACKEND = "inprocess"
    ws = await connect_as(owner)
    frame = {"type": "send", "conversation": None, "text": "twice", "client_id": "twin"}
    await ws.send_json_to(frame)
    await ws.send_json_to(frame)
    acks = []
    while len(acks) < 2:
        acks += [f for f in await receive_until(ws, "ack", timeout=30) if f["type"] == "ack"]
    assert [a["created"] for a in acks] == [True, False]
    assert acks[0]["reply"] == acks[1]["reply"]
    await receive_until(ws, "done", timeout=60)
    reply = await Message.objects.aget(pk=acks[0]["reply"])
    assert reply.status == Message.Status.COMPLETE
    assert await Message.objects.filter(reply_to__client_id="twin").acount() == 1
    await ws.disconnect()


# --- rows written by hand (core/rows.py): the rows save() writes --------------------------------


def _columns(instance) -> dict[str, object]:
    row = type(instance).objects.filter(pk=instance.pk).values().get()
    row.pop("id")
    return row


def _message(conversation: Conversation, owner, client_id: str) -> Message:
    return Message(
        conversation=conversation,
        role=Message.Role.USER,
        author=owner,
        content="héllo ✓",
        status=Message.Status.COMPLETE,
        seq=7,
        client_id=client_id,
        organisation_id=conversation.organisation_id,
        cost=Decimal("0.00012345"),
        routing={"alias": "simulated", "allowed": ["a", "b"]},
    )


def test_a_message_written_by_hand_is_the_row_save_writes(owner):
    conversation = Conversation.objects.create(
        owner=owner, organisation=owner.memberships.get().organisation
    )
    saved, written = _message(conversation, owner, "a"), _message(conversation, owner, "b")
    saved.save(force_insert=True)
    row_insert(written)
    assert written.pk is not None and written.pk != saved.pk
    assert not written._state.adding and written.created_at is not None  # auto_now_add
    by_save, by_hand = _columns(saved), _columns(written)
    for row in (by_save, by_hand):
        row.pop("client_id")
        assert row.pop("created_at") is not None
    assert by_hand == by_save
    assert Message.objects.get(pk=written.pk).routing == {
        "alias": "simulated",
        "allowed": ["a", "b"],
    }
    assert model_to_dict(Message.objects.get(pk=written.pk))["cost"] == Decimal("0.00012345")


def test_a_ledger_row_written_by_hand_takes_its_defaults(owner):
    organisation = owner.memberships.get().organisation
    saved = UsageLedger(organisation=organisation, user=owner, reserved_cost=Decimal("1.5"))
    written = UsageLedger(organisation=organisation, user=owner, reserved_cost=Decimal("1.5"))
    saved.save(force_insert=True)
    row_insert(written)
    by_save, by_hand = _columns(saved), _columns(written)
    by_save.pop("created_at"), by_hand.pop("created_at")
    assert by_hand == by_save
    assert by_hand["state"] == UsageLedger.State.RESERVED


def test_a_duplicate_key_is_djangos_integrity_error(owner):
    conversation = Conversation.objects.create(
        owner=owner, organisation=owner.memberships.get().organisation
    )
    row_insert(_message(conversation, owner, "same"))
    with pytest.raises(IntegrityError), transaction.atomic():
        row_insert(_message(conversation, owner, "same"))
    assert Message.objects.count() == 1
