"""The OpenAI-compatible endpoint generates in the Daphne process holding the request
(API_GENERATION_IN_SERVER, chat/replies/dispatch.py) on the production topology: nginx → 2
Daphne → Redis, PostgreSQL, a real OpenAI-compatible upstream (tests/fault_server.py) and **no
Celery worker at all**, so a reply that went to Celery would never be generated; the broker's
queue is checked empty too. Streaming, usage, cancel on client disconnect (the upstream's
socket closes), the upstream's errors (429 with Retry-After, 502, an open circuit's 503) and
failover work as they do through Celery, and the reply is persisted and accounted. The request
follows its reply from the generator in its own process (chat/replies/live.py); every other
watcher, on that replica or the other, still gets it through the channel layer."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from tests.fault_server import Endless, Fail, FaultServer, Reply, fault_server
from tests.harness.embedded import MAKE_KEY
from tests.harness.processes import manage
from tests.harness.topology import Topology, production_topology

pytestmark = pytest.mark.integration

QUEUES = ("llm-remote", "llm-local", "celery")


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultServer]:
    with fault_server() as server:
        yield server


@pytest.fixture(scope="module")
def topo(upstream: FaultServer) -> Iterator[Topology]:
    env = {
        "LLM_DEFAULT_PROVIDER": "openai-compatible",
        "OPENAI_COMPATIBLE_BASE_URL": upstream.base_url("default"),
        "OPENAI_COMPATIBLE_MODEL": "fault-model",
        "CACHE_ENABLED": "false",
        "LLM_RETRY_MAX_ATTEMPTS": "2",
        "LLM_RETRY_BASE_DELAY": "0.01",
        "LLM_RETRY_MAX_DELAY": "0.05",
        "LLM_BREAKER_FAILURES": "2",
        "WS_RATE_SENDS_PER_USER": "10000/m",
        "WS_RATE_SENDS_PER_ORG": "10000/m",
    }
    with production_topology(
        provider="openai-compatible", env=env, worker=False, name="openai-in-server"
    ) as topology:
        yield topology


@pytest.fixture(scope="module")
def key(topo: Topology) -> str:
    return manage("shell", "-c", MAKE_KEY, env=topo.env).strip().splitlines()[-1]


@pytest.fixture
def http(topo: Topology, key: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=topo.base, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        yield client


def serve(topo: Topology, alias: str, *upstreams: tuple[str, int]) -> None:
    """Serve `alias` from these (base URL, priority) deployments: admin rows of their own, so
    each test has its own breakers and counters."""
    rows = "; ".join(
        f"p = Provider.objects.create(name='{alias}-{n}', kind='openai-compatible', "
        f"base_url={url!r}, first_token_timeout=60, inter_token_timeout=60); "
        f"Deployment.objects.create(provider=p, alias={alias!r}, model='m', priority={priority})"
        for n, (url, priority) in enumerate(upstreams)
    )
    manage("shell", "-c", f"from llm.models import Deployment, Provider; {rows}", env=topo.env)


def ask(model: str, stream: bool, **extra: object) -> dict[str, object]:
    text = f"hello {uuid.uuid4().hex}"
    return {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream} | (
        extra
    )


def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def assert_nothing_queued_on_celery(topo: Topology) -> None:
    broker = redis.Redis.from_url(topo.env["CELERY_BROKER_URL"])
    try:
        assert {queue: broker.llen(queue) for queue in QUEUES} == dict.fromkeys(QUEUES, 0)
    finally:
        broker.close()


def sse_events(body: str) -> list[dict[str, object] | str]:
    events: list[dict[str, object] | str] = []
    for block in body.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_a_stream_is_generated_in_the_server_persisted_and_accounted(topo, upstream, http):
    upstream.default("default", Reply(text="In the server, no queue.", chunk_chars=5))
    response = http.post(
        "/v1/chat/completions",
        json=ask("openai-compatible", True, stream_options={"include_usage": True}),
    )
    assert response.status_code == 200, response.text
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events if isinstance(e, dict)]
    text = "".join(
        str(choice["delta"].get("content") or "")  # type: ignore[index, union-attr]
        for chunk in chunks
        for choice in chunk["choices"]  # type: ignore[union-attr]
    )
    assert text == "In the server, no queue."
    usage = chunks[-1]["usage"]
    assert usage["prompt_tokens"] == 11 and usage["completion_tokens"] == 5  # type: ignore[index]
    reply_id = int(response.headers["X-Parley-Message"])
    row = topo.row(reply_id)
    assert (row["status"], row["content"]) == ("complete", text), row
    (ledger,) = topo.query(
        "SELECT state, used_tokens FROM accounts_usageledger WHERE message_id = %s", reply_id
    )
    assert ledger == ("settled", 16)  # the budget's reservation, settled with the real usage
    # Its provider call began once the budget was reserved, before the reply's row was written
    # (chat/replies/early.py): created claimed, never pending.
    ((begun_first,),) = topo.query(
        "SELECT started_at <= created_at FROM chat_message WHERE id = %s", reply_id
    )
    assert begun_first
    assert_nothing_queued_on_celery(topo)


def test_a_repeat_with_the_same_idempotency_key_calls_the_upstream_once(topo, upstream, http):
    upstream.default("default", Reply(text="Only once.", chunk_chars=5))
    body, headers = ask("openai-compatible", True), {"Idempotency-Key": uuid.uuid4().hex}
    before = upstream.count("default")
    first = http.post("/v1/chat/completions", json=body, headers=headers)
    again = http.post("/v1/chat/completions", json=body, headers=headers)
    assert first.status_code == again.status_code == 200, again.text
    assert first.headers["X-Parley-Message"] == again.headers["X-Parley-Message"]
    assert sse_events(again.text)[-1] == "[DONE]"
    assert upstream.count("default") == before + 1


def watch(base: str, key: str, reply_id: int) -> tuple[str, str]:
    """Follow a reply with GET /api/v1/messages/<id>/stream: its text and how it ended."""
    text, ended = "", ""
    with httpx.stream(
        "GET",
        f"{base}/api/v1/messages/{reply_id}/stream",
        headers={"Authorization": f"Bearer {key}", "Accept": "text/event-stream"},
        timeout=30,
    ) as response:
        assert response.status_code == 200, response.read()
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event == "delta":
                delta = json.loads(line[len("data: ") :])
                assert delta["start"] == len(text), (delta, text)
                text += delta["text"]
            elif line.startswith("data: ") and event in ("done", "error"):
                ended = event
                break
    return text, ended


def test_other_watchers_still_get_a_reply_the_requester_follows_in_process(topo, upstream, key):
    """The request is sent to daphne-1 itself, so daphne-1 generates; one watcher follows on
    daphne-1 (the same process, through the layer) and one on daphne-2 (another process)."""
    words = " ".join(f"word{n}" for n in range(30))
    serve(topo, "watched", (upstream.base_url("watched"), 0))
    upstream.default("watched", Reply(text=words, chunk_chars=6, chunk_delay=0.03))
    first, second = (f"http://127.0.0.1:{port}" for port in topo.daphne_ports[:2])
    auth = {"Authorization": f"Bearer {key}"}
    with (
        ThreadPoolExecutor(max_workers=2) as pool,
        httpx.stream(
            "POST",
            f"{first}/v1/chat/completions",
            json=ask("watched", True),
            headers=auth,
            timeout=30,
        ) as response,
    ):
        assert response.status_code == 200
        reply_id = int(response.headers["X-Parley-Message"])
        watchers = [pool.submit(watch, base, key, reply_id) for base in (first, second)]
        mine = "".join(
            str(choice["delta"].get("content") or "")  # type: ignore[index, union-attr]
            for chunk in sse_events(response.read().decode())
            if isinstance(chunk, dict)
            for choice in chunk["choices"]  # type: ignore[union-attr]
        )
        seen = [watcher.result(timeout=60) for watcher in watchers]
    assert mine == words
    assert seen == [(words, "done"), (words, "done")]
    assert topo.row(reply_id)["content"] == words
    assert_nothing_queued_on_celery(topo)


def test_a_completion_without_stream_is_generated_in_the_server(topo, upstream, http):
    upstream.default("default", Reply(text="Whole answer."))
    response = http.post("/v1/chat/completions", json=ask("openai-compatible", False))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "Whole answer."
    assert body["usage"]["prompt_tokens"] == 11
    assert topo.row(int(response.headers["X-Parley-Message"]))["status"] == "complete"
    assert_nothing_queued_on_celery(topo)


def test_a_client_that_goes_away_cancels_the_reply_and_the_upstream_call(topo, upstream, http):
    serve(topo, "endless", (upstream.base_url("endless"), 0))
    upstream.default("endless", Endless(text="and on ", chunk_delay=0.05))
    with http.stream("POST", "/v1/chat/completions", json=ask("endless", True)) as response:
        assert response.status_code == 200
        reply_id = int(response.headers["X-Parley-Message"])
        for line in response.iter_lines():
            if '"content":"and on' in line:
                break
    until(lambda: bool(upstream.closed("endless")), 30, "the upstream response closed")
    until(lambda: topo.row(reply_id)["status"] == "cancelled", 30, "the reply cancelled")
    assert topo.row(reply_id)["content"].startswith("and on ")
    assert_nothing_queued_on_celery(topo)


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_429_ends_as_429_with_its_retry_after(topo, upstream, http, stream):
    alias = f"limited-{stream}".lower()
    serve(topo, alias, (upstream.base_url(alias), 0))
    upstream.default(alias, Fail(429, retry_after=1))
    response = http.post("/v1/chat/completions", json=ask(alias, stream))
    assert response.status_code == 429, response.text
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "provider_rate_limited"
    assert upstream.count(alias) == 2  # retried within Parley first
    (failed,) = topo.query(
        "SELECT status, error_code FROM chat_message WHERE role = 'assistant' "
        "AND routing->>'alias' = %s",
        alias,
    )
    assert failed == ("failed", "provider_rate_limited")


def test_an_upstream_500_is_a_502_and_an_open_circuit_a_503(topo, upstream, http):
    serve(topo, "broken", (upstream.base_url("broken"), 0))
    upstream.default("broken", Fail(500))
    response = http.post("/v1/chat/completions", json=ask("broken", True))
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "provider_failed"
    # Its two attempts were the breaker's two failures (LLM_BREAKER_FAILURES): now open.
    response = http.post("/v1/chat/completions", json=ask("broken", True))
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"]["code"] == "provider_unavailable"
    assert upstream.count("broken") == 2  # the open circuit sent nothing upstream


def test_a_failing_deployment_fails_over_to_the_next(topo, upstream, http):
    serve(topo, "tiers", (upstream.base_url("tier0"), 0), (upstream.base_url("tier1"), 1))
    upstream.default("tier0", Fail(500))
    upstream.default("tier1", Reply(text="From the second tier."))
    response = http.post("/v1/chat/completions", json=ask("tiers", True))
    assert response.status_code == 200, response.text
    row = topo.row(int(response.headers["X-Parley-Message"]))
    assert (row["status"], row["content"]) == ("complete", "From the second tier."), row
    assert upstream.count("tier0") >= 1 and upstream.count("tier1") == 1
    assert_nothing_queued_on_celery(topo)


MAKE_OWN_KEY = """
from accounts.services import account_create, api_key_create
user = account_create(username="revoked-{tag}", password=None)
print(api_key_create(user=user, organisation=user.personal_organisation, name="cached").raw)
"""


def test_a_key_cached_by_every_replica_is_refused_by_each_once_revoked(topo):
    """Each replica keeps a key's look-up (accounts/services.py api_key_use); the revocation
    made through one replica reaches the next request on the other, with no wait."""
    raw = (
        manage("shell", "-c", MAKE_OWN_KEY.format(tag=uuid.uuid4().hex[:8]), env=topo.env)
        .strip()
        .splitlines()[-1]
    )
    auth = {"Authorization": f"Bearer {raw}"}
    replicas = [f"http://127.0.0.1:{port}" for port in topo.daphne_ports]
    assert len(replicas) >= 2
    for base in replicas:
        for _ in range(3):  # the third use is answered from the replica's cache
            assert httpx.get(f"{base}/v1/models", headers=auth, timeout=30).status_code == 200
    prefix = raw.split("_")[1]
    listed = httpx.get(f"{replicas[0]}/api/v1/keys", headers=auth, timeout=30).json()
    (key_id,) = [key["id"] for key in listed if key["prefix"] == prefix]
    revoked = httpx.delete(f"{replicas[0]}/api/v1/keys/{key_id}", headers=auth, timeout=30)
    assert revoked.status_code == 204
    for base in reversed(replicas):
        refused = httpx.get(f"{base}/v1/models", headers=auth, timeout=30)
        assert refused.status_code == 401, (base, refused.text)
        assert refused.json()["error"]["code"] == "invalid_api_key"
