"""A reply's first round made before its generation runs (llm/failover.py FirstRound): the
route plan and the gate's verdict taken in the request's thread, handed to the generation, and
the breaker's permit settled exactly once whichever way the reply goes. A half-open breaker
makes the permit visible: its one probe slot is held until the permit is settled."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import HumanMessage

from llm.breaker import CircuitBreaker, Permit, State
from llm.catalog import DeploymentConfig
from llm.failover import FirstRound, RoutingRecord, first_round_context, stream_with_failover
from llm.registry import chat_model_for
from llm.retry import RetryPolicy
from llm.router import RoutePlan
from tests.fault_server import Reply

pytestmark = pytest.mark.django_db(transaction=True)

ALIAS = "default"


def _config(route: str, base_url: str = "http://127.0.0.1:9") -> DeploymentConfig:
    return DeploymentConfig(
        key=route,
        name=route,
        kind="openai-compatible",
        model="fault-model",
        base_url=base_url,
        alias=ALIAS,
        first_token_timeout=5.0,
        inter_token_timeout=5.0,
    )


def _half_open(key: str) -> None:
    """Open the breaker with no cooldown: the next caller gets its one probe."""
    CircuitBreaker(key, cooldown=0).record_failure(Permit(key, probe=True))


def _probe_free(key: str) -> bool:
    breaker = CircuitBreaker(key)
    permit = breaker.allow()
    if permit is None:
        return False
    breaker.release(permit)
    return True


def _first(config: DeploymentConfig, calls: list[str] | None = None) -> FirstRound:
    def plan_for(alias: str) -> RoutePlan:
        if calls is not None:
            calls.append(alias)
        return RoutePlan(alias=alias, chain=[alias], candidates=[config])

    first = FirstRound.made(plan_for, ALIAS, prompt_tokens=5)
    assert first is not None
    return first


def test_a_first_round_never_taken_gives_its_probe_back():
    config = _config("never-taken")
    _half_open(config.key)
    first = _first(config)
    assert isinstance(first.verdict, Permit) and first.verdict.probe
    assert not _probe_free(config.key)  # held by the round
    first.release()
    assert _probe_free(config.key)
    assert first.take(ALIAS, 5) is None  # released: the generation plans afresh


def test_a_first_round_taken_is_left_to_its_attempt():
    config = _config("taken")
    _half_open(config.key)
    first = _first(config)
    assert first.take(ALIAS, 5) == (first.plan, first.verdict)
    first.release()  # as the generation's end does: a no-op once taken
    assert not _probe_free(config.key)  # the attempt that took it settles it
    assert first.take(ALIAS, 5) is None  # and only once


def test_a_first_round_made_for_another_prompt_is_given_back_unused():
    config = _config("other-prompt")
    _half_open(config.key)
    first = _first(config)
    assert first.take(ALIAS, 6) is None
    assert _probe_free(config.key)


async def test_a_reply_given_its_first_round_calls_without_planning_again(fault):
    config = _config("planned", base_url=fault.base_url("planned"))
    fault.default("planned", Reply(text="Hello there", chunk_chars=4))
    _half_open(config.key)
    calls: list[str] = []
    first = _first(config, calls)
    texts: list[str] = []

    async def sink(text: str) -> None:
        texts.append(text)

    record = RoutingRecord(alias=ALIAS)
    generation = stream_with_failover(
        alias=ALIAS,
        messages=[HumanMessage("Hi")],
        sink=sink,
        build=lambda d: chat_model_for(d, max_tokens=16),
        record=record,
        policy=RetryPolicy(max_attempts=2, budget=10.0),
        prompt_tokens=5,
        plan_for=lambda alias: RoutePlan(alias=alias, chain=[alias], candidates=[config]),
        stop=None,
    )
    task = asyncio.get_running_loop().create_task(generation, context=first_round_context(first))
    answered = await task
    assert answered == config and "".join(texts) == "Hello there"
    assert calls == [ALIAS]  # planned once, before the generation ran
    assert first.take(ALIAS, 5) is None  # taken by it
    assert CircuitBreaker(config.key).status().state == State.CLOSED  # the probe succeeded
