"""Task messages published the short way (project/celery.py QuickPublishTask), against the real
thing: the topology's private Redis as the broker and the Celery worker compose.yaml runs (as
`make worker` does). The message is the one Celery itself would publish; the worker runs it; a
broker that is down is an OperationalError after Celery's retry policy, and one that comes back
is used again without a restart."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from typing import cast

import pytest
import redis
from celery import Task
from kombu.exceptions import OperationalError

from chat.replies.tasks import generate_reply, reap_replies
from project.celery import app, publish_plans_forget
from tests.harness.topology import Topology, production_topology

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SCRATCH = "publish-scratch"  # a queue no worker reads: messages stay there to be compared


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    with production_topology(replicas=1, nginx=False, name="taskpub") as topo:
        yield topo


@pytest.fixture
def broker(topo: Topology) -> Iterator[redis.Redis]:
    """This process publishes to the topology's broker; the broker's own client to read it."""
    url = topo.env["CELERY_BROKER_URL"]
    before = app.conf.broker_url
    app.conf.broker_url = url
    publish_plans_forget()
    client = redis.Redis.from_url(url)
    try:
        yield client
    finally:
        client.close()
        app.conf.broker_url = before
        publish_plans_forget()


@pytest.fixture
def no_celery_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Celery's own apply_async refuses: what passes went the short way."""

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("published by Celery, not the short way")

    monkeypatch.setattr(Task, "apply_async", refused)


def _comparable(raw: bytes) -> dict[str, object]:
    """A message without what differs between any two publishes (ids, tags, the time)."""
    message = json.loads(raw)
    for key in ("id", "root_id", "parley_sent_at"):
        message["headers"].pop(key)
    for key in ("correlation_id", "delivery_tag"):
        message["properties"].pop(key)
    return message


def until(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)
    return found


def test_a_message_is_the_one_celery_would_publish(broker: redis.Redis) -> None:
    broker.delete(SCRATCH)
    quick = generate_reply.apply_async((41,), queue=SCRATCH)
    Task.apply_async(generate_reply, (41,), queue=SCRATCH)  # Celery's own way, same task
    assert broker.llen(SCRATCH) == 2
    first, second = cast(bytes, broker.rpop(SCRATCH)), cast(bytes, broker.rpop(SCRATCH))
    assert json.loads(first)["headers"]["id"] == quick.id
    assert _comparable(first) == _comparable(second)
    assert isinstance(json.loads(first)["headers"]["parley_sent_at"], float)  # the signal ran


def test_the_worker_runs_a_task_published_the_short_way(
    topo: Topology, broker: redis.Redis, no_celery_fallback: None
) -> None:
    result = reap_replies.apply_async((), queue="llm-remote")
    until(
        lambda: f"Task llm.tasks.reap_replies[{result.id}] succeeded" in topo.log("worker"),
        60,
        "the worker ran it",
    )
    # The publish time travelled in the headers (project/observability/celery.py).
    assert re.search(r"task llm\.tasks\.reap_replies started from llm-remote \(queued [0-9.]+ s\)",
                     topo.log("worker"))  # fmt: skip


def test_a_broker_down_is_an_operational_error_and_one_back_is_used_again(
    topo: Topology, broker: redis.Redis, no_celery_fallback: None
) -> None:
    reap_replies.apply_async((), queue=SCRATCH)  # the process's client is connected
    topo.kill("redis", signal.SIGKILL)
    try:
        with pytest.raises(OperationalError):
            reap_replies.apply_async((), queue=SCRATCH)
    finally:
        topo.start_redis()  # same port, empty
    result = reap_replies.apply_async((), queue="llm-remote")  # the same client, reconnected
    until(
        lambda: f"Task llm.tasks.reap_replies[{result.id}] succeeded" in topo.log("worker"),
        120,
        "the worker, reconnected, ran it",
    )
