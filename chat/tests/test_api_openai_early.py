"""An OpenAI-compatible request's reply generated in this server begins its provider call in
the request's own transaction, right after the budget reservation (chat/replies/early.py),
against a real OpenAI-compatible upstream on loopback (tests/fault_server.py): the reply is
created claimed, its prompt is the one the database would give, its text reaches the client
and the row, its budget is settled; a request that saves no reply of its own stops its call,
and a request that may be a repeat (an Idempotency-Key) calls only once its rows exist.
The production topology runs the same path: tests/integration/test_openai_in_server.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction

from accounts.models import Budget, UsageLedger
from accounts.quotas import QuotaExceeded
from chat.models import Message
from chat.replies import dispatch, early
from chat.replies.prompt import prompt_from_request, prompt_messages
from chat.services import completions
from chat.services.completions import PriorMessage, completion_request_create
from llm import router
from llm.breaker import CircuitBreaker, Permit
from tests.fault_server import FaultServer, Hang, Reply

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "openai-compatible"  # the settings provider's alias
ROUTE = "early"
TEXT = "The answer is four, as it always was."


@pytest.fixture
def queued(monkeypatch) -> list[object]:
    """What went to Celery (nothing should: recorded, never started)."""
    sent: list[object] = []
    monkeypatch.setattr(
        "chat.replies.dispatch.generate_reply.apply_async", lambda *a, **k: sent.append(a)
    )
    return sent


@pytest.fixture
def upstream(settings, fault: FaultServer, queued) -> FaultServer:
    """Production's dispatch with API replies generated in this process (the ASGI app notes
    the test's loop as the server's)."""
    settings.LLM_DEFAULT_PROVIDER = MODEL
    settings.OPENAI_COMPATIBLE_BASE_URL = fault.base_url(ROUTE)
    settings.OPENAI_COMPATIBLE_MODEL = "fault-model"
    settings.GENERATION_BACKEND = "celery"
    settings.API_GENERATION_IN_SERVER = True
    settings.WS_RATE_SENDS_PER_USER = "10000/m"
    settings.WS_RATE_SENDS_PER_ORG = "10000/m"
    fault.default(ROUTE, Reply(text=TEXT, chunk_chars=6))
    return fault


async def until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Wait for an event (a hang catcher, not a speed limit)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def ask(**extra: object) -> dict[str, object]:
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Answer in one line."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "What is two and two?"},
        ],
        **extra,
    }


def contents(body: str) -> str:
    text = []
    for block in body.split("\n\n"):
        if block.startswith("data: {"):
            for choice in json.loads(block[6:])["choices"]:
                text.append(choice["delta"].get("content") or "")
    return "".join(text)


async def test_a_reply_generated_here_begins_before_its_row_and_ends_settled(
    upstream, queued, http
):
    response = await http.post("/v1/chat/completions", json=ask(stream=True))
    assert response.status_code == 200
    assert contents(response.text) == TEXT
    reply = await Message.objects.select_related("conversation").aget(
        pk=int(response.headers["X-Parley-Message"])
    )
    assert reply.status == Message.Status.COMPLETE and reply.content == TEXT
    # Begun once the budget was reserved, before the row was written; never pending.
    assert reply.started_at is not None and reply.started_at <= reply.created_at
    ledger = await UsageLedger.objects.aget(message_id=reply.pk)
    assert ledger.state != UsageLedger.State.RESERVED  # settled with what it used
    (seen,) = upstream.requests(ROUTE)
    # The prompt built from the request is the one the database gives for its reply.
    expected = await sync_to_async(prompt_messages)(reply)
    assert seen.body["messages"] == [
        {
            "role": {"system": "system", "human": "user", "ai": "assistant"}[m.type],
            "content": m.content,
        }
        for m in expected
    ]
    assert queued == []


async def test_a_repeat_with_the_same_idempotency_key_never_reaches_the_upstream(upstream, http):
    headers = {"Idempotency-Key": "early-1"}
    first = await http.post("/v1/chat/completions", json=ask(stream=True), headers=headers)
    again = await http.post("/v1/chat/completions", json=ask(stream=True), headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.headers["X-Parley-Message"] == again.headers["X-Parley-Message"]
    assert contents(again.text) == TEXT
    assert upstream.count(ROUTE) == 1
    assert await Message.objects.acount() == 4  # one conversation: history, question, reply


async def test_a_call_begun_for_a_request_that_saves_nothing_is_closed(
    upstream, owner, organisation
):
    upstream.default(ROUTE, Hang())  # the upstream answers nothing: the call stays open

    def begin() -> early.EarlyReply | None:
        with dispatch.generation_in_this_server(before_commit=True):
            return dispatch.reply_generation_begin(
                organisation_id=organisation.pk,
                owner_id=owner.pk,
                alias="",
                options=None,
                system_prompt="",
                history=[],
                text="Anyone there?",
            )

    dispatch_loop = asyncio.get_running_loop()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dispatch, "_server_loop", dispatch_loop)
        begun = await sync_to_async(begin)()
    assert begun is not None
    await until(lambda: upstream.count(ROUTE) == 1, "the upstream called")
    await sync_to_async(begun.abort)()  # as the request's thread does when its transaction fails
    await until(lambda: len(upstream.closed(ROUTE)) == 1, "the upstream call closed")
    await until(lambda: not early._running, "the generation ended")
    assert await Message.objects.acount() == 0


async def test_a_repeated_request_rolls_back_and_stops_its_call(upstream, owner, organisation):
    def request() -> Message:
        with dispatch.generation_in_this_server(before_commit=True):
            return completion_request_create(
                author=owner,
                organisation=organisation,
                history=[PriorMessage(role=Message.Role.USER, content="Hi")],
                text="Again?",
                client_id="same",
                alias="",
            ).reply

    upstream.script(ROUTE, Reply(text=TEXT), Hang())  # the repeat's call, if made, hangs
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dispatch, "_server_loop", asyncio.get_running_loop())
        first = await sync_to_async(request)()
        again = await sync_to_async(request)()  # its call begun, then its insert refused
    assert again.pk == first.pk
    await until(lambda: not early._running, "both generations ended")
    hung = upstream.requests(ROUTE, "hang")
    await until(lambda: len(upstream.closed(ROUTE, "hang")) == len(hung), "its call closed")
    first = await Message.objects.aget(pk=first.pk)
    assert first.status == Message.Status.COMPLETE and first.content == TEXT
    assert await UsageLedger.objects.acount() == 1  # the repeat's reservation rolled back


async def test_text_that_comes_before_the_commit_is_held_then_handed_on_whole(
    upstream, owner, organisation
):
    def request() -> Message:
        with transaction.atomic():  # the test's: the request's rows commit with it
            with dispatch.generation_in_this_server(before_commit=True):
                reply = completion_request_create(
                    author=owner,
                    organisation=organisation,
                    history=[],
                    text="Early?",
                    client_id="held",
                    alias="",
                ).reply
            # Not committed yet: the upstream answers in full meanwhile, and its text waits.
            deadline = time.monotonic() + 30
            while not upstream.requests(ROUTE) or upstream.requests(ROUTE)[0].chunks < chunks:
                assert time.monotonic() < deadline, "the upstream was never called"
                time.sleep(0.01)
            assert not Message.objects.filter(pk=reply.pk).exclude(content="").exists()
        return reply

    chunks = len(Reply(text=TEXT, chunk_chars=6).chunks())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dispatch, "_server_loop", asyncio.get_running_loop())
        reply = await sync_to_async(request)()
    await until(lambda: not early._running, "the generation ended")
    reply = await Message.objects.aget(pk=reply.pk)
    assert (reply.status, reply.content, reply.seq) == (Message.Status.COMPLETE, TEXT, len(TEXT))


async def test_the_first_call_is_planned_and_gated_in_the_requests_transaction(
    upstream, settings, http, monkeypatch
):
    """No trip from the loop to a thread between the request and its upstream call: the route
    plan and the breaker's verdict are taken in the request's own transaction (its thread),
    before the call is handed to the loop (llm/failover.py FirstRound)."""
    settings.CACHE_ENABLED = False  # with the cache on, a lookup comes first
    gated_in_transaction: list[bool] = []
    real_gate = router.gate

    def gate(deployment, *, prompt_tokens):
        gated_in_transaction.append(transaction.get_connection().in_atomic_block)
        return real_gate(deployment, prompt_tokens=prompt_tokens)

    monkeypatch.setattr(router, "gate", gate)
    response = await http.post("/v1/chat/completions", json=ask(stream=True))
    assert response.status_code == 200 and contents(response.text) == TEXT
    assert gated_in_transaction == [True]
    assert upstream.count(ROUTE) == 1


async def test_a_streamed_request_refused_by_its_rate_limit_never_reaches_the_upstream(
    upstream, settings, http
):
    settings.WS_RATE_SENDS_PER_USER = "1/m"
    assert (await http.post("/v1/chat/completions", json=ask(stream=True))).status_code == 200
    refused = await http.post("/v1/chat/completions", json=ask(stream=True))
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert upstream.count(ROUTE) == 1
    assert await Message.objects.acount() == 4  # the first request's rows only


async def test_a_probe_taken_for_a_request_that_saves_nothing_is_given_back(
    upstream, settings, owner, organisation
):
    """A half-open breaker's one probe, taken in the request's thread for a call that never
    goes out (its transaction saved nothing), is free again for the next request."""
    settings.CACHE_ENABLED = False
    (deployment,) = (await sync_to_async(router.route_plan)(MODEL)).candidates
    await sync_to_async(CircuitBreaker(deployment.key, cooldown=0).record_failure)(
        Permit(deployment.key, probe=True)
    )

    def begin_then_abort() -> None:
        with dispatch.generation_in_this_server(before_commit=True):
            begun = dispatch.reply_generation_begin(
                organisation_id=organisation.pk,
                owner_id=owner.pk,
                alias="",
                options=None,
                system_prompt="",
                history=[],
                text="Anyone there?",
            )
        assert begun is not None
        assert CircuitBreaker(deployment.key).allow() is None  # this request holds the probe
        begun.abort()  # its transaction failed before the loop ran its call

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dispatch, "_server_loop", asyncio.get_running_loop())
        await sync_to_async(begin_then_abort)()
    await until(lambda: not early._running, "the generation ended")
    probe = await sync_to_async(CircuitBreaker(deployment.key).allow)()
    assert probe is not None and probe.probe
    assert upstream.count(ROUTE) == 0


def test_the_prompt_built_from_a_request_is_the_one_read_back(owner, organisation, settings):
    settings.GENERATION_BACKEND = "celery"
    settings.LLM_HISTORY_MESSAGES = 3
    history = [
        PriorMessage(Message.Role.USER, "one"),
        PriorMessage(Message.Role.ASSISTANT, ""),  # an empty turn is left out of both
        PriorMessage(Message.Role.ASSISTANT, "two"),
        PriorMessage(Message.Role.USER, "three"),
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("chat.replies.dispatch.generate_reply.apply_async", lambda *a, **k: None)
        reply = completion_request_create(
            author=owner,
            organisation=organisation,
            history=history,
            text="four?",
            client_id="prompt",
            alias="",
            system_prompt="Be brief.",
        ).reply
    built = prompt_from_request(
        system_prompt="Be brief.",
        history=[(m.role, m.content) for m in history],
        text="four?",
    )
    assert built == prompt_messages(reply)
    assert [m.content for m in built][1:] == ["two", "three", "four?"]


def test_a_request_refused_by_its_budget_begins_nothing(owner, organisation):
    """The call begins after the reservation: an over-budget request never reaches it."""
    Budget.objects.create(organisation=organisation, period="day", max_tokens=1)
    begun: list[object] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(completions, "reply_generation_begin", lambda **kw: begun.append(kw))
        with pytest.raises(QuotaExceeded):
            completion_request_create(
                author=owner,
                organisation=organisation,
                history=[],
                text="Too much?",
                client_id="budget",
                alias="",
            )
    assert begun == []
