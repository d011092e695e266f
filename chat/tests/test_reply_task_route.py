"""A reply's route travels with its Celery task (chat/replies/tasks.py ROUTE_HEADER), so the
worker plans and gates its provider call on the task's thread while the generation loop claims
the reply, instead of after the claim (docs/benchmarks.md, "Where the first token's time goes
at 20 senders")."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from celery import signals

from chat import services
from chat.models import Message
from chat.replies import tasks
from chat.replies.lifecycle import reply_cancel
from llm.router import route_plan

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def published(settings, monkeypatch) -> list[dict[str, Any]]:
    """Generation handed to Celery: each task's headers as its publisher fills them (the
    before_task_publish receivers, as Celery and project/celery.py QuickPublishTask call them),
    and nothing started. The reply cache off, as the plan made early needs."""
    settings.GENERATION_BACKEND = "celery"
    settings.CACHE_ENABLED = False
    headers_sent: list[dict[str, Any]] = []

    def apply_async(args: tuple[int], queue: str) -> None:
        headers: dict[str, Any] = {"id": "t-1", "task": "llm.tasks.generate_reply"}
        signals.before_task_publish.send(
            sender="llm.tasks.generate_reply", body=(list(args), {}, {}), headers=headers
        )
        headers_sent.append({**headers, "args": list(args)})

    monkeypatch.setattr("chat.replies.dispatch.generate_reply.apply_async", apply_async)
    return headers_sent


def _planned_by(monkeypatch, module: str) -> list[str]:
    """The threads `module`'s route_plan is called on (it still plans)."""
    threads: list[str] = []

    def spy(alias: str, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return route_plan(alias, **kwargs)

    monkeypatch.setattr(f"{module}.route_plan", spy)
    return threads


def _generate_as_the_worker(message_id: int, headers: dict[str, Any]) -> None:
    """The task body with the message's headers as its request, as the worker runs it."""
    tasks.generate_reply.push_request(**headers)
    try:
        tasks.generate_reply.run(message_id)
    finally:
        tasks.generate_reply.pop_request()


def test_a_reply_task_carries_its_model_and_allow_list_to_the_worker(owner, published):
    result = services.message_send(author=owner, conversation=None, text="hi", client_id="a")

    (sent,) = published
    assert sent["args"] == [result.reply.pk]
    alias = result.reply.routing["alias"]
    allowed = result.reply.routing.get("allowed", [])
    received = type("Request", (), {tasks.ROUTE_HEADER: sent[tasks.ROUTE_HEADER]})()
    assert tasks._route_received(received) == (alias, allowed)


def test_the_worker_plans_the_call_on_the_task_thread_not_after_the_claim(
    owner, published, monkeypatch
):
    result = services.message_send(author=owner, conversation=None, text="hi", client_id="a")
    on_task_thread = _planned_by(monkeypatch, "chat.replies.tasks")
    after_the_claim = _planned_by(monkeypatch, "chat.replies.stream")

    _generate_as_the_worker(result.reply.pk, published[0])

    reply = Message.objects.get(pk=result.reply.pk)
    assert reply.status == Message.Status.COMPLETE and reply.content
    assert on_task_thread == [threading.current_thread().name]
    assert after_the_claim == []  # the generation took the plan made meanwhile


def test_a_task_of_an_older_release_plans_after_the_claim_as_before(owner, published, monkeypatch):
    result = services.message_send(author=owner, conversation=None, text="hi", client_id="a")
    on_task_thread = _planned_by(monkeypatch, "chat.replies.tasks")
    after_the_claim = _planned_by(monkeypatch, "chat.replies.stream")
    older = {k: v for k, v in published[0].items() if k != tasks.ROUTE_HEADER}

    _generate_as_the_worker(result.reply.pk, older)

    reply = Message.objects.get(pk=result.reply.pk)
    assert reply.status == Message.Status.COMPLETE and reply.content
    assert on_task_thread == []
    assert len(after_the_claim) == 1


def test_a_reply_gone_before_its_claim_gives_the_planned_probe_back(owner, published, monkeypatch):
    """The plan's breaker permit is settled once, also when no generation ever takes it."""
    result = services.message_send(author=owner, conversation=None, text="hi", client_id="a")
    reply_cancel(message=result.reply, by=owner)  # cancelled while pending
    released: list[object] = []
    monkeypatch.setattr(
        "llm.failover.FirstRound.release", lambda first: released.append(first), raising=True
    )

    _generate_as_the_worker(result.reply.pk, published[0])

    assert Message.objects.get(pk=result.reply.pk).status == Message.Status.CANCELLED
    assert len(released) == 1


def test_a_plan_made_before_the_prompt_is_not_taken_where_the_prompt_size_decides(
    owner, published, monkeypatch
):
    """A first candidate with a tokens-per-minute limit was gated for no size: the generation
    plans again with its prompt's, and the early permit is given back."""
    from llm.catalog import DeploymentConfig
    from llm.router import RoutePlan

    def limited(plan: RoutePlan) -> RoutePlan:
        first, *rest = plan.candidates
        fields = {**first.__dict__, "tpm_limit": 1_000_000}
        return RoutePlan(plan.alias, plan.chain, [DeploymentConfig(**fields), *rest])

    result = services.message_send(author=owner, conversation=None, text="hi", client_id="a")
    monkeypatch.setattr(
        "chat.replies.tasks.route_plan", lambda alias, **kw: limited(route_plan(alias, **kw))
    )
    after_the_claim = _planned_by(monkeypatch, "chat.replies.stream")

    _generate_as_the_worker(result.reply.pk, published[0])

    assert Message.objects.get(pk=result.reply.pk).status == Message.Status.COMPLETE
    assert len(after_the_claim) == 1


def test_with_the_reply_cache_on_the_worker_plans_after_its_lookup_as_before(
    owner, published, monkeypatch, settings
):
    """A reply the cache answers calls no provider: its gate must not count against the
    deployment's limits, so nothing is planned before the lookup."""
    settings.CACHE_ENABLED = True
    result = services.message_send(author=owner, conversation=None, text="hi", client_id="a")
    on_task_thread = _planned_by(monkeypatch, "chat.replies.tasks")
    after_the_claim = _planned_by(monkeypatch, "chat.replies.stream")

    _generate_as_the_worker(result.reply.pk, published[0])

    assert Message.objects.get(pk=result.reply.pk).status == Message.Status.COMPLETE
    assert on_task_thread == []
    assert len(after_the_claim) == 1
