"""The first-text successes of one loop's replies are written together (llm/successes.py):
one round trip to a real Redis for every reply that answered in the same turn, every one of
them counted, a probe's success still closing its breaker at once, a failure counted after
the success before it, and replies answered when Redis is down."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from django.core.cache import cache
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from redis.connection import AbstractConnection

from llm import failover, successes
from llm.breaker import CircuitBreaker, State
from llm.catalog import DeploymentConfig
from llm.failover import RoutingRecord, stream_with_failover
from llm.health import key_health
from llm.providers.base import ProviderError
from llm.retry import RetryPolicy
from llm.router import RoutePlan
from llm.tests.test_breaker import Clock, _trip
from tests.harness.services import REDIS_HOST, REDIS_PORT, redis_database, require_service


@pytest.fixture
def redis_cache(settings):
    """The production cache backend on a real Redis database of this test's own."""
    require_service("Redis", REDIS_HOST, REDIS_PORT)  # fails in CI, skips elsewhere
    with redis_database() as index:
        settings.CACHES = {
            "default": {
                "BACKEND": "project.cache.SharedClientRedisCache",
                "LOCATION": f"redis://{REDIS_HOST}:{REDIS_PORT}/{index}",
                "KEY_PREFIX": "parley-test",
            }
        }
        yield


@pytest.fixture(params=["locmem", "redis"])
def shared_cache(request):
    """The breaker's store: this process's LocMem cache, or a real Redis database."""
    if request.param == "redis":
        request.getfixturevalue("redis_cache")
    return request.param


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("llm.breaker.wall_clock", fake)
    return fake


class Gate:
    """Holds every stream before its first text until the test opens it, so that the first
    texts of all of them come in one turn of the loop."""

    def __init__(self, streams: int) -> None:
        self.open = asyncio.Event()
        self.all_waiting = asyncio.Event()
        self.asked_next = asyncio.Event()  # a stream was asked for what follows its first text
        self.finish = asyncio.Event()  # with hold_after_first: what follows waits for it
        self.ended = asyncio.Event()  # a stream was read to its end
        self.hold_after_first = False
        self._streams, self._waiting = streams, 0

    async def wait(self) -> None:
        self._waiting += 1
        if self._waiting == self._streams:
            self.all_waiting.set()
        await self.open.wait()


class GatedModel(BaseChatModel):
    """The provider, which these tests are not about: one text chunk once the gate opens, then
    the finish; or, with `fails`, a retryable failure once the gate opens."""

    gate: Any
    fails: bool = False

    @property
    def _llm_type(self) -> str:
        return "gated"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    async def _astream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        await self.gate.wait()
        if self.fails:
            await asyncio.sleep(0)  # a turn after the gate: after the other streams' first text
            raise ProviderError("provider_failed", "The gated model failed.")
        yield ChatGenerationChunk(message=AIMessageChunk(content="hello"))
        self.gate.asked_next.set()  # the attempt is done with its first text
        if self.gate.hold_after_first:
            await self.gate.finish.wait()
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", response_metadata={"finish_reason": "stop"})
        )
        self.gate.ended.set()  # asked for more after the last chunk


def _deployment(key: str) -> DeploymentConfig:
    return DeploymentConfig(name=key, kind="openai-compatible", model="m", alias="default", key=key)


async def _reply(
    deployment: DeploymentConfig, model: GatedModel, record: RoutingRecord | None = None
) -> RoutingRecord:
    record = record or RoutingRecord("default")

    async def sink(text: str) -> None:
        pass

    await stream_with_failover(
        alias="default",
        messages=[HumanMessage("hi")],
        sink=sink,
        build=lambda d: model,
        record=record,
        policy=RetryPolicy(max_attempts=1),
        plan_for=lambda alias: RoutePlan("default", ["default"], [deployment]),
    )
    return record


def _window_requests(breaker: CircuitBreaker) -> int:
    """The requests the error-rate window holds now (all its buckets: a test may straddle two)."""
    current, _ = breaker.window_bucket()
    base, now = current.rsplit(":", 1)
    size = max(1, breaker.window // 6)  # as the breaker buckets it
    keys = [f"{base}:{b}" for b in range(int(now) - breaker.window // size + 1, int(now) + 1)]
    return sum(int(count or 0) for count in cache.get_many(keys).values())


class RoundTrips:
    """Counts the requests this process sends to Redis over redis-py's synchronous
    connections (a pipeline is one), by wrapping the real connection's send."""

    def __init__(self, monkeypatch) -> None:
        self.count = 0
        self._lock = threading.Lock()
        send = AbstractConnection.send_packed_command

        def counted(connection: AbstractConnection, *args: Any, **kwargs: Any) -> None:
            with self._lock:
                self.count += 1
            send(connection, *args, **kwargs)

        monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)


async def test_replies_answering_in_one_turn_are_written_in_one_round_trip(
    redis_cache, monkeypatch
):
    deployment = _deployment("together")
    breaker = CircuitBreaker(deployment.key)
    for _ in range(3):  # three failures in a row so far: the replies' successes clear them
        breaker.record_failure(breaker.allow())
    warm = Gate(1)  # one reply first, so the writer's connection is open before counting
    warm.open.set()
    await _reply(deployment, GatedModel(gate=warm))
    for _ in range(3):
        breaker.record_failure(breaker.allow())
    requests_before = _window_requests(breaker)

    gate = Gate(40)
    replies = [asyncio.create_task(_reply(deployment, GatedModel(gate=gate))) for _ in range(40)]
    await gate.all_waiting.wait()  # every reply planned and gated, waiting for its first text
    trips = RoundTrips(monkeypatch)
    gate.open.set()
    records = await asyncio.gather(*replies)

    assert [r.attempts[0]["outcome"] for r in records] == ["answered"] * 40
    assert trips.count == 1  # before: a thread trip and three round trips a reply
    assert _window_requests(breaker) == requests_before + 40  # every request counted
    status, record = key_health(deployment.key)
    assert status.state == State.CLOSED and status.consecutive_failures == 0
    assert record["last_first_token_ms"] in {r.attempts[0]["first_token_ms"] for r in records}


async def test_every_answered_reply_is_counted_in_the_window(shared_cache):
    deployment = _deployment("counted")
    breaker = CircuitBreaker(deployment.key)
    gate = Gate(25)
    replies = [asyncio.create_task(_reply(deployment, GatedModel(gate=gate))) for _ in range(25)]
    await gate.all_waiting.wait()
    gate.open.set()
    await asyncio.gather(*replies)
    # A second wave, its successes recorded while nothing else is being written.
    for _ in range(5):
        opened = Gate(1)
        opened.open.set()
        await _reply(deployment, GatedModel(gate=opened))

    assert _window_requests(breaker) == 30
    status, record = key_health(deployment.key)
    assert status.consecutive_failures == 0 and record["last_ok_at"] is not None


async def test_a_reply_reads_on_before_its_success_is_written_and_ends_after(shared_cache):
    deployment = _deployment("unwaited")
    breaker = CircuitBreaker(deployment.key)
    held = threading.Event()
    successes._writer().submit(held.wait)  # the writer is busy until the test says
    gate = Gate(1)
    gate.hold_after_first = True
    reply = asyncio.create_task(_reply(deployment, GatedModel(gate=gate)))
    await gate.all_waiting.wait()
    try:
        gate.open.set()
        await gate.asked_next.wait()  # the attempt read on after its first text...
        assert _window_requests(breaker) == 0  # ...its success not yet written
        gate.finish.set()
        await gate.ended.wait()  # the stream has nothing more: the attempt is ending
        for _ in range(10):  # turns enough for it to return, had it nothing to wait for
            await asyncio.sleep(0)
        assert not reply.done()  # the reply is not over before its success is written
    finally:
        held.set()
    record = await reply
    assert record.attempts[0]["outcome"] == "answered"
    assert _window_requests(breaker) == 1


async def test_a_probe_closes_its_breaker_at_its_first_text(shared_cache, clock, settings):
    settings.LLM_BREAKER_COOLDOWN = 30
    deployment = _deployment("probed")
    breaker = CircuitBreaker(deployment.key)
    _trip(breaker)
    clock.advance(31)
    gate = Gate(1)
    gate.hold_after_first = True
    reply = asyncio.create_task(_reply(deployment, GatedModel(gate=gate)))
    await gate.all_waiting.wait()
    assert breaker.status().state == State.HALF_OPEN
    gate.open.set()
    await gate.asked_next.wait()
    # While the probe's reply still streams, and before it reads on: closed for everyone.
    state = breaker.status().state
    gate.finish.set()
    await reply
    assert state == State.CLOSED
    assert breaker.allow() is not None and not breaker.allow().probe


async def test_a_failure_after_a_success_is_counted_after_it(shared_cache, monkeypatch):
    deployment = _deployment("ordered")
    breaker = CircuitBreaker(deployment.key)
    for _ in range(2):
        breaker.record_failure(breaker.allow())
    said: list[str] = []  # what the cache heard, in order
    write, fail = successes.successes_write, failover._failed

    def written(batch: list[successes.Success]) -> None:
        write(batch)
        said.append("success")

    async def failed(*args: Any) -> None:
        said.append("failure")
        await fail(*args)

    monkeypatch.setattr(successes, "successes_write", written)
    monkeypatch.setattr(failover, "_failed", failed)
    held = threading.Event()
    successes._writer().submit(held.wait)  # the success's write waits until the test says
    gate = Gate(2)
    answered = asyncio.create_task(_reply(deployment, GatedModel(gate=gate)))
    failure = RoutingRecord("default")
    failing = asyncio.create_task(_reply(deployment, GatedModel(gate=gate, fails=True), failure))
    await gate.all_waiting.wait()
    try:
        gate.open.set()  # one reply's first text, and the other's failure a turn later
        while not failure.attempts or failure.attempts[0]["outcome"] != "failed":
            await asyncio.sleep(0)  # no thread between the gate and the failure: a few turns
        assert said == []  # the failure waits for the success before it
    finally:
        held.set()
    await answered
    with pytest.raises(ProviderError):
        await failing
    assert said == ["success", "failure"]
    # The success cleared the two failures before it; the failure after it counts one.
    assert breaker.status().consecutive_failures == 1


async def test_replies_answer_when_redis_is_down(settings, caplog):
    settings.CACHES = {
        "default": {
            "BACKEND": "project.cache.SharedClientRedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    with pytest.raises(redis.ConnectionError):
        cache.get("anything")  # truly down
    deployment = _deployment("unreachable")
    gate = Gate(10)
    replies = [asyncio.create_task(_reply(deployment, GatedModel(gate=gate))) for _ in range(10)]
    await gate.all_waiting.wait()
    with caplog.at_level(logging.WARNING, logger="llm.successes"):
        gate.open.set()
        records = await asyncio.gather(*replies)

    assert [r.attempts[0]["outcome"] for r in records] == ["answered"] * 10
    assert [r.finish_reason for r in records] == ["stop"] * 10
    assert any(
        r.name == "llm.successes" and "routing state not saved for unreachable" in r.message
        for r in caplog.records
    )


def test_a_success_recorded_as_its_loop_closes_is_still_written(shared_cache):
    """Recorded and not waited for, on a loop that asyncio.run then closes: written anyway."""
    deployment = _deployment("closing")

    async def record_and_leave() -> None:
        successes.successes_of(asyncio.get_running_loop()).record(
            key=deployment.key, first_token_ms=42
        )

    asyncio.run(record_and_leave())
    successes._writer().submit(lambda: None).result()  # the writer's queue, in order

    assert _window_requests(CircuitBreaker(deployment.key)) == 1
    assert key_health(deployment.key)[1]["last_first_token_ms"] == 42


def test_a_loop_is_not_kept_alive_by_its_batches(shared_cache):
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def answer() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        await successes.successes_of(asyncio.get_running_loop()).record(
            key="gone", first_token_ms=1
        )

    asyncio.run(answer())
    gc.collect()
    assert loops[0]() is None
