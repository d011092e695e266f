"""Celery app for production mode: generation runs here and reaches sockets via Redis.

Every task of the app publishes through `QuickPublishTask`: a send's generation task was ~0.5 ms
of a Daphne replica's CPU in Celery's and kombu's publishing machinery (routing, a producer from
the pool, a new Redis client object per message: docs/benchmarks.md "Send path"). On a Redis
broker the same message, headers and envelope are now built directly and pushed with one LPUSH
on a client kept per process. Anything the short way does not cover goes through Celery.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis
from celery import Celery, Task, signals
from celery.utils.nodenames import anon_nodename
from celery.utils.saferepr import saferepr
from kombu.exceptions import OperationalError
from redis.backoff import NoBackoff
from redis.retry import Retry

from core import hops

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

# Kombu's Redis transport options that change key names or routing: with any of them set, the
# short way would push where the worker does not read.
_KEY_CHANGING_OPTIONS = frozenset({"global_keyprefix", "sep", "priority_steps", "fanout_prefix"})
# Arguments the short way sends as plain JSON; others (kombu's encoder also takes dates,
# decimals, UUIDs) go through Celery.
_PLAIN = frozenset({int, str, float, bool, type(None)})
# Sent only when something listens, as Celery does (celery-types does not show `receivers`).
_BEFORE_PUBLISH: Any = signals.before_task_publish
_AFTER_PUBLISH: Any = signals.after_task_publish


class QuickPublishTask(Task):  # type: ignore[misc]
    """`apply_async(args, queue=...)` on a Redis broker, as Celery would publish it, without its
    machinery: the message protocol v2 headers and body, kombu's Redis envelope, the
    before/after_task_publish signals (trace context, request id, publish time:
    project/observability/celery.py), the retry policy and its OperationalError when the broker
    cannot be reached. tests/integration/test_task_publish.py pins the message against Celery's
    own."""

    def apply_async(
        self,
        args: Any = None,
        kwargs: Any = None,
        task_id: str | None = None,
        producer: Any = None,
        link: Any = None,
        link_error: Any = None,
        shadow: str | None = None,
        **options: Any,
    ) -> Any:
        queue = options.get("queue")
        if (
            kwargs
            or task_id
            or producer
            or link
            or link_error
            or shadow
            or options.keys() != {"queue"}
            or not isinstance(queue, str)
            or any(type(arg) not in _PLAIN for arg in args or ())
            or (plan := _plan_for(self)) is None
            or self.app.current_worker_task is not None  # a child task: Celery sets its parent
        ):
            return super().apply_async(
                args, kwargs, task_id, producer, link, link_error, shadow, **options
            )
        if self.typing and (check := getattr(self, "__header__", None)) is not None:
            check(*(args or ()))  # a wrong argument count raises here, as in Celery
        task_id = str(uuid.uuid4())
        _publish(self, plan, task_id, list(args or ()), queue)
        return self.AsyncResult(task_id)


def _start_up_frozen(**_: Any) -> None:
    """Keep what a worker loaded at start-up (Django, Celery, LangChain: ~300k objects that
    live as long as the process) out of the collector's sight, as Daphne does (project/asgi.py):
    a full collection then walks only what came after. Unfrozen, a worker's full collection
    walked ~330k objects, ~0.15 s of CPU each time (docs/benchmarks.md "The worker's CPU per
    send"). worker_ready in the process that runs the tasks (threads pool); worker_process_init
    in each prefork child."""
    gc.collect()
    gc.freeze()


def _received_stamped(request: Any = None, **_: Any) -> None:
    """PARLEY_HOP_STAMPS (core/hops.py): when the worker's consumer took a reply's task off the
    broker, before its pool runs it."""
    if request is not None and request.name == "llm.tasks.generate_reply" and request.args:
        hops.hop("w.received", request.args[0])


if hops.enabled():
    signals.task_received.connect(_received_stamped, weak=False)
signals.worker_ready.connect(_start_up_frozen, weak=False)
signals.worker_process_init.connect(_start_up_frozen, weak=False)


app = Celery("parley", task_cls=QuickPublishTask)
app.config_from_object("django.conf:settings", namespace="CELERY")
# A reply's tasks live with the rest of its life, in chat/replies/tasks.py; a document's
# ingestion in chat/documents/tasks.py.
app.autodiscover_tasks(["chat.replies", "chat.documents"])


@dataclass(frozen=True)
class _Plan:
    """How a task's messages go the short way, read once from the app's configuration."""

    url: str
    transport: dict[str, Any]
    policy: dict[str, Any]
    retries: int | None


_plans: dict[str, _Plan | None] = {}  # task name -> its plan, None: Celery publishes it


def _plan_for(task: Task) -> _Plan | None:
    """The short way, when Celery would publish this task's messages exactly as `_publish`
    does: a single Redis broker with kombu's key names, protocol 2, JSON, no routes, no
    per-task options. Read once per task and process (tests that change the broker clear
    `_plans`)."""
    if task.name in _plans:
        return _plans[task.name]
    conf = task.app.conf
    transport = dict(conf.broker_transport_options or {})
    options = {k: v for k, v in cast(Any, task)._get_exec_options().items() if v is not None}
    quick = (
        isinstance(conf.broker_url, str)
        and conf.broker_url.startswith("redis://")
        and ";" not in conf.broker_url
        and not _KEY_CHANGING_OPTIONS & transport.keys()
        and conf.task_protocol == 2
        and conf.task_serializer == "json"
        and not conf.task_compression
        and not conf.task_routes
        and not conf.task_queues
        and conf.task_create_missing_queues
        and not conf.task_always_eager
        and not conf.task_send_sent_event
        and not conf.task_time_limit
        and not conf.task_soft_time_limit
        and conf.task_default_delivery_mode in ("persistent", 2)
        and options in ({}, {"serializer": "json"})
        and not getattr(task, "_dump_pydantic_arguments", None)
    )
    policy = dict(conf.task_publish_retry_policy or {})
    retries = policy.get("max_retries", 3) if conf.task_publish_retry else 0
    plan = _Plan(conf.broker_url, transport, policy, retries) if quick else None
    _plans[task.name] = plan
    return plan


class _Broker:
    """The process's Redis client for publishing (made again after a fork)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = 0
        self.url = ""
        self.client: redis.Redis | None = None
        self.origin = ""

    def get(self, url: str, transport: dict[str, Any]) -> redis.Redis:
        client = self.client
        if client is not None and self.pid == os.getpid() and self.url == url:
            return client
        with self.lock:
            if self.client is None or self.pid != os.getpid() or self.url != url:
                self.client = redis.Redis.from_url(
                    url,
                    # kombu's defaults (none unless the transport options say), and no retries
                    # of redis-py's own: the task's retry policy decides, as in Celery.
                    socket_timeout=transport.get("socket_timeout"),
                    socket_connect_timeout=transport.get("socket_connect_timeout"),
                    health_check_interval=transport.get("health_check_interval", 25),
                    retry=Retry(NoBackoff(), 0),
                )
                self.pid, self.url, self.origin = os.getpid(), url, anon_nodename()
            return self.client


_broker = _Broker()


def _publish(task: Task, plan: _Plan, task_id: str, args: list[Any], queue: str) -> None:
    """One task message, as Celery 5.7 and kombu 5.7 build it for a Redis broker, pushed with
    one LPUSH onto the queue's list (what kombu's anonymous direct exchange does)."""
    client = _broker.get(plan.url, plan.transport)
    headers: dict[str, Any] = {
        "lang": "py",
        "task": task.name,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": saferepr(tuple(args)),
        "kwargsrepr": "{}",
        "origin": _broker.origin,
        "ignore_result": task.ignore_result,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    properties: dict[str, Any] = {
        "correlation_id": task_id,
        "reply_to": cast(Any, task.app).thread_oid,
    }
    body: tuple[list[Any], dict[str, Any], dict[str, None]] = (
        args,
        {},
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    )
    if _BEFORE_PUBLISH.receivers:
        _BEFORE_PUBLISH.send(
            sender=task.name, body=body, exchange="", routing_key=queue,
            declare=[], headers=headers, properties=properties, retry_policy=dict(plan.policy),
        )  # fmt: skip
    encoded = json.dumps(body).encode()
    envelope = {
        "body": base64.b64encode(encoded).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            **properties,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    message = json.dumps(envelope)
    for wait in _intervals(plan.policy, plan.retries):
        try:
            client.lpush(queue, message)
            break
        except (redis.ConnectionError, redis.TimeoutError) as error:
            if wait is None:
                raise OperationalError(str(error)) from error
            client.connection_pool.disconnect()  # a broker restarted: new sockets next time
            time.sleep(wait)
    if _AFTER_PUBLISH.receivers:
        _AFTER_PUBLISH.send(
            sender=task.name, body=body, headers=headers, exchange="", routing_key=queue
        )


def _intervals(policy: dict[str, Any], retries: int | None) -> Iterator[float | None]:
    """The waits between attempts, as kombu's retry_over_time spaces them; None: the last."""
    start = float(policy.get("interval_start", 0))
    step = float(policy.get("interval_step", 0.2))
    most = float(policy.get("interval_max", 1))
    attempt = 0
    while retries is None or attempt < retries:
        yield min(start + step * attempt, most)
        attempt += 1
    yield None


def publish_plans_forget() -> None:
    """Read the app's configuration again at the next publish (tests that move the broker)."""
    _plans.clear()
