"""Metrics, probes, logs and traces of one process, through the full ASGI app and Django's
test client (the cross-process evidence is tests/integration/test_metrics_topology.py)."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import logging.config

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from chat.models import Message
from chat.tests.test_consumers import connect_as, receive_until
from conftest import wait_for
from core.observability.context import bind, carrier_extract, carrier_inject, tracer
from core.observability.logs import logging_config
from core.observability.metrics import INTER_TOKEN, ChunkGaps, cache_looked_up
from project.observability import celery as celery_signals

pytestmark = pytest.mark.django_db(transaction=True)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- /metrics: off by default, then token and/or network ------------------------------------


def test_metrics_are_off_until_a_rule_is_configured(settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "", []
    assert Client().get("/metrics").status_code == 404


def test_metrics_need_the_bearer_token(settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "s3cret-token", []
    client = Client()
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    ok = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert ok.status_code == 200 and ok["Content-Type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(ok.content.decode())}
    assert {"parley_replies", "parley_websocket_connections", "parley_celery_queue_depth"} <= names


def test_metrics_network_rule_refuses_other_peers_and_proxied_requests(settings):
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "", ["10.1.0.0/16"]
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="10.2.0.1").get("/metrics").status_code == 403
    proxied = Client(REMOTE_ADDR="10.1.2.3").get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert proxied.status_code == 403


def test_the_worker_metrics_port_applies_the_same_rules(settings):
    import urllib.error
    import urllib.request

    from tests.harness.processes import free_port

    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS = "worker-token", []
    port = free_port()
    server = celery_signals.metrics_server_start(port, "127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 403
        request = urllib.request.Request(url, headers={"Authorization": "Bearer worker-token"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert b"parley_replies_total" in response.read()
    finally:
        server.shutdown()
        server.server_close()


# --- one streamed reply, counted once ---------------------------------------------------------


async def test_a_streamed_reply_is_counted_once_with_its_ttft_tokens_and_status(owner):
    before = {
        "complete": sample(
            "parley_replies_total", status="complete", error_code="", provider="simulated"
        ),
        "ttft": sample(
            "parley_reply_time_to_first_token_seconds_count",
            provider="simulated",
            model="simulated",
        ),
        "sockets": sample("parley_websocket_connections"),
        "http": sample(
            "parley_http_request_seconds_count", route="/metrics", method="GET", status="200"
        ),
    }
    ws = await connect_as(owner)
    assert sample("parley_websocket_connections") == before["sockets"] + 1
    await ws.send_json_to({"type": "send", "conversation": None, "text": "Hi", "client_id": "m1"})
    frames = await receive_until(ws, "done")
    reply = await Message.objects.select_related("conversation").aget(pk=frames[-1]["message"])
    organisation = str(reply.conversation.organisation_id)
    assert (
        sample("parley_replies_total", status="complete", error_code="", provider="simulated")
        == before["complete"] + 1
    )
    assert (
        sample(
            "parley_reply_time_to_first_token_seconds_count",
            provider="simulated",
            model="simulated",
        )
        == before["ttft"] + 1
    )
    completion = sample(
        "parley_reply_tokens_total",
        provider="simulated",
        model="simulated",
        organisation=organisation,
        kind="completion",
    )
    assert completion == reply.completion_tokens > 0

    async def stream_ended() -> bool:  # `done` goes out before the generation returns
        return sample("parley_reply_streams_active") == 0

    await wait_for(stream_ended)
    await ws.disconnect()
    assert sample("parley_websocket_connections") == before["sockets"]


def test_http_latency_is_by_route_pattern_and_answers_carry_a_request_id():
    client = Client()
    route = "/v1/models"
    before = sample(
        "parley_http_request_seconds_count", route="/v1/models", method="GET", status="401"
    )
    mine = client.get(route, HTTP_X_REQUEST_ID="trace-me-42")
    assert mine.status_code == 401 and mine["x-request-id"] == "trace-me-42"
    ours = client.get(route, HTTP_X_REQUEST_ID="not a token\n")
    assert len(ours["x-request-id"]) == 16 and ours["x-request-id"] != mine["x-request-id"]
    assert (
        sample("parley_http_request_seconds_count", route="/v1/models", method="GET", status="401")
        == before + 2
    )


# --- probes ------------------------------------------------------------------------------------


def test_ready_and_live_while_postgres_or_sqlite_and_redis_answer(settings, redis_server):
    settings.REDIS_URL = redis_server.url
    ready = Client().get("/readyz")
    assert ready.status_code == 200, ready.content
    assert set(ready.json()["checks"]) == {"database", "redis"}
    assert Client().get("/livez").status_code == 200


def test_a_replica_whose_redis_is_down_is_not_ready_but_still_live(settings, redis_server):
    settings.REDIS_URL = redis_server.url
    redis_server.stop()
    redis_server.group.procs["redis"].wait(timeout=30)
    ready = Client().get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "not ready",
        "checks": {"database": ready.json()["checks"]["database"], "redis": "down"},
    }
    assert ready.json()["checks"]["database"].startswith("ok")
    assert Client().get("/livez").status_code == 200


def test_embedded_mode_is_ready_without_redis(settings):
    settings.REDIS_URL = ""
    ready = Client().get("/readyz")
    assert ready.status_code == 200 and set(ready.json()["checks"]) == {"database"}


# --- logs ---------------------------------------------------------------------------------------


def test_json_logs_carry_the_bound_ids_and_the_trace(spans):
    stream = io.StringIO()
    config = logging_config(log_format="json", level="INFO")
    config["handlers"]["console"]["stream"] = stream
    config["loggers"]["obs.test"] = {"handlers": ["console"], "propagate": False}
    logging.config.dictConfig(config)
    try:
        with tracer.start_as_current_span("work") as span:
            bind(request_id="req-1", message_id=7)
            logging.getLogger("obs.test").warning("reply %s failed", 7)
    finally:
        from django.conf import settings

        logging.config.dictConfig(settings.LOGGING)
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["event"] == "reply 7 failed" and line["level"] == "warning"
    assert line["request_id"] == "req-1" and line["message_id"] == 7
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_plain_text_stays_the_default(settings):
    assert settings.LOG_FORMAT == "plain"
    assert settings.LOGGING["handlers"]["console"]["formatter"] == "plain"


def test_an_unknown_log_format_is_refused():
    with pytest.raises(ValueError, match="plain or json"):
        logging_config(log_format="xml", level="INFO")


# --- traces -------------------------------------------------------------------------------------


async def test_one_message_makes_one_connected_trace(owner, spans):
    ws = await connect_as(owner)
    await ws.send_json_to({"type": "send", "conversation": None, "text": "Hey", "client_id": "t1"})
    await receive_until(ws, "done")
    await ws.disconnect()
    # `done` is published from inside the reply's span, which ends just after: wait for it.
    async with asyncio.timeout(30):
        while "reply.stream" not in {s.name for s in spans.get_finished_spans()}:
            await asyncio.sleep(0.01)
    finished = await sync_to_async(spans.get_finished_spans)()
    names = [s.name for s in finished]
    assert {"ws.frame", "reply.stream", "llm.provider_call"} <= set(names), names
    (frame,) = [s for s in finished if s.name == "ws.frame"]
    trace_ids = {s.context.trace_id for s in finished}
    assert trace_ids == {frame.context.trace_id}, names
    by_id = {s.context.span_id: s for s in finished}
    for span in finished:
        if span is not frame:  # every other span hangs off the frame's, through its parents
            assert span.parent is not None and span.parent.span_id in by_id, span.name
    service = next(s for s in finished if s.name == "chat.message_send")
    stream = next(s for s in finished if s.name == "reply.stream")
    call = next(s for s in finished if s.name == "llm.provider_call")
    assert service.parent.span_id == frame.context.span_id
    # The reply is dispatched as the service's transaction commits: its generation continues
    # the service's span (in a worker, through the task's span: test_task_headers_carry_…).
    assert stream.parent.span_id == service.context.span_id
    assert call.parent.span_id == stream.context.span_id


def test_task_headers_carry_the_trace_and_request_id_to_the_worker(spans):
    headers: dict = {}
    with tracer.start_as_current_span("publish") as publisher:
        bind(request_id="req-task")
        celery_signals._before_publish(headers=headers)
    assert headers["parley_request_id"] == "req-task" and "traceparent" in headers

    class Request:
        delivery_info = {"routing_key": "llm-remote"}

    request = Request()
    for key, value in headers.items():
        setattr(request, key, value)

    class Task:
        name = "llm.tasks.generate_reply"

    task = Task()
    task.request = request
    before = sample("parley_celery_task_wait_seconds_count", queue="llm-remote", task=Task.name)
    celery_signals._prerun(task_id="t-1", task=task)
    with tracer.start_as_current_span("inside") as inside:
        import structlog

        assert structlog.contextvars.get_contextvars()["request_id"] == "req-task"
    celery_signals._postrun(task_id="t-1", task=task, state="SUCCESS")
    assert inside.get_span_context().trace_id == publisher.get_span_context().trace_id
    assert carrier_extract(headers) is not None
    assert (
        sample("parley_celery_task_wait_seconds_count", queue="llm-remote", task=Task.name)
        == before + 1
    )
    carrier: dict = {}
    carrier_inject(carrier)  # outside any span or request: nothing to carry
    assert "traceparent" not in carrier


def test_batched_chunk_gaps_fill_the_histogram_as_observing_each_gap_would():
    # Chunk times whose gaps fall below, on and past bucket bounds, and past the last one.
    times = [0.0, 0.004, 0.014, 0.0240001, 0.3240001, 0.6240001, 42.6240001]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    batched = ChunkGaps("gaps-batched", "m")
    for at in times:
        batched.chunk(at)
    batched.flush()
    batched.flush()  # a second flush adds nothing
    for gap in gaps:
        INTER_TOKEN.labels("gaps-each", "m").observe(gap)

    def buckets(provider: str) -> dict[str, float]:
        (family,) = [f for f in INTER_TOKEN.collect()]
        return {
            f"{s.name}{s.labels.get('le', '')}": s.value
            for s in family.samples
            if s.labels["provider"] == provider and not s.name.endswith("_created")
        }

    each, mine = buckets("gaps-each"), buckets("gaps-batched")
    assert mine.keys() == each.keys()
    for key, value in each.items():
        assert mine[key] == pytest.approx(value, abs=1e-6), key
    assert mine["parley_provider_inter_chunk_seconds_count"] == len(gaps)


# --- the one-line hooks elsewhere count what they say -------------------------------------------


def test_limit_refusals_are_counted_by_code_and_scope():
    from accounts.limits import RateLimitExceeded
    from accounts.ratelimit import ViewRateLimited

    socket = sample("parley_refusals_total", code="rate_limited", scope="messages")
    http = sample("parley_refusals_total", code="rate_limited", scope="http")
    RateLimitExceeded(retry_after=3, what="messages")
    ViewRateLimited(5)
    assert sample("parley_refusals_total", code="rate_limited", scope="messages") == socket + 1
    assert sample("parley_refusals_total", code="rate_limited", scope="http") == http + 1


def test_a_breaker_opening_is_counted_once_however_many_failures_follow(settings):
    from llm.breaker import CircuitBreaker

    breaker = CircuitBreaker("obs-test", failures=2, min_requests=1000, cooldown=60)
    before = sample("parley_breaker_opens_total", breaker="obs-test")
    in_flight = [breaker.allow() for _ in range(5)]  # five requests sent while it was closed
    for permit in in_flight:  # ... all fail: it opens at the second, the others find it open
        assert permit is not None
        breaker.record_failure(permit)
    assert breaker.allow() is None  # open
    assert sample("parley_breaker_opens_total", breaker="obs-test") == before + 1


def test_cache_lookups_count_hits_by_kind_and_their_savings():
    from decimal import Decimal

    from llm.cache.service import Hit

    hits = sample("parley_cache_lookups_total", result="hit_semantic")
    misses = sample("parley_cache_lookups_total", result="miss")
    skips = sample("parley_cache_lookups_total", result="skip")
    saved = sample("parley_cache_saved_tokens_total")
    hit = Hit(
        entry_id=1,
        kind="semantic",
        answer="a",
        model="m",
        saved_cost=Decimal("0.002"),
        saved_tokens=120,
    )
    cache_looked_up(hit, cacheable=True)
    cache_looked_up(None, cacheable=True)
    cache_looked_up(None, cacheable=False)
    assert sample("parley_cache_lookups_total", result="hit_semantic") == hits + 1
    assert sample("parley_cache_lookups_total", result="miss") == misses + 1
    assert sample("parley_cache_lookups_total", result="skip") == skips + 1
    assert sample("parley_cache_saved_tokens_total") == saved + 120


@pytest.mark.integration
async def test_layer_publishes_are_timed_and_their_batches_sized(redis_server):
    from chat.tests.test_layers import layer_for

    layer = layer_for(redis_server)
    batches = sample("parley_layer_publish_batch_size_count")
    events = sample("parley_layer_publish_batch_size_sum")
    try:
        await asyncio.gather(*(layer.group_send(f"obs-{i}", {"type": "x"}) for i in range(20)))
    finally:
        await layer.flush()
    sent_batches = sample("parley_layer_publish_batch_size_count") - batches
    assert 1 <= sent_batches < 20  # group commit: fewer round trips than events
    assert sample("parley_layer_publish_batch_size_sum") - events == 20
    assert sample("parley_layer_publish_seconds_count") >= sent_batches
