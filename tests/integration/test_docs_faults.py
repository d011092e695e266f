"""docs/api.md's and docs/protocol.md's promises under real faults, on the production topology
(nginx → two Daphne replicas → Redis ← a Celery worker, PostgreSQL): Redis restarted under a
server-sent events stream, the Daphne replica generating a `/v1/chat/completions` stream
killed, and a real upstream (llama.cpp's OpenAI-compatible server) killed mid-reply.
test_faults.py has the socket's faults (replicas, workers, Redis, cancels);
test_docs_broker.py the broker's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fault_server import Reply
from tests.harness.sockets import hear_reply, recv_frame
from tests.integration.test_api_promises import final_message, post_message, sse_events
from tests.integration.test_protocol_promises import Site, send_frame, topology_with_upstream
from tests.llama_server import LlamaServer, start_llama_server

pytestmark = pytest.mark.integration

REAP_STALE_AFTER = 10.0
REAP_EVERY = 1.0
REDIS_DOWN_FOR = 3.0  # seconds a restarting Redis is away
# A reply long enough to outlive a fault in its middle: 600 characters, 6 a chunk, 0.1 s
# apart (about ten seconds).
LONG = "".join(f"word{n:03d} " for n in range(75))


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    env = {"REAP_STALE_AFTER": str(REAP_STALE_AFTER), "REAP_EVERY": str(REAP_EVERY)}
    with topology_with_upstream("docs-faults", env) as running:
        with running.topo.logs_on_failure():
            yield running


def slow_reply() -> Reply:
    return Reply(text=LONG, chunk_chars=6, chunk_delay=0.1)


def check_sse(events: list[dict[str, Any]], after_seq: int = 0) -> str:
    """The text of an SSE body's deltas, checked contiguous from `after_seq` to its `done`."""
    *deltas, final = events
    position = after_seq
    for delta in deltas:
        assert delta["event"] == "delta", events
        assert delta["data"]["start"] == position, f"gap or overlap at {position}: {events}"
        assert int(delta["id"]) == delta["data"]["seq"]
        position = delta["data"]["seq"]
    assert final["event"] == "done" and final["data"]["seq"] == position, final
    return "".join(delta["data"]["text"] for delta in deltas)


def test_a_server_sent_events_stream_outlives_a_redis_restart(site: Site) -> None:
    """The stream "re-reads the reply from the database" while the live feed is gone: a Redis
    restart mid-reply slows it down, the client still gets every character once and `done`."""
    site.upstream.script("up", slow_reply())
    with site.http() as http:
        sent = post_message(http, "Talk for a while")
        body, restarted = [], False
        with http.stream("GET", sent["stream_url"]) as stream:
            assert stream.status_code == 200
            for line in stream.iter_lines():
                body.append(line)
                if line.startswith("event: delta") and not restarted:
                    site.topo.kill("redis")
                    # Down for a few of the stream's poll intervals (0.5 s here), as a
                    # restart takes: the stream's follower looks for the layer meanwhile.
                    time.sleep(REDIS_DOWN_FOR)
                    site.topo.start_redis()  # empty: journals and caches are gone
                    restarted = True
        reply = final_message(http, sent["reply"])
    text = check_sse(sse_events("\n".join(body)))
    assert reply["status"] == "complete" and text == reply["content"] == LONG


def test_a_server_sent_events_stream_opened_while_redis_is_down_follows_the_database(
    site: Site,
) -> None:
    """Redis down when the stream is asked for: it still answers, from the saved text, and
    ends with the reply's `done` (operations.md: what needs Redis "fails on its own terms";
    following a reply over HTTP does not need it)."""
    site.upstream.script("up", slow_reply())
    with site.http() as http:
        sent = post_message(http, "Talk for a while")
        while not http.get(sent["reply_url"]).json()["content"]:
            time.sleep(0.05)
        site.topo.kill("redis")
        try:
            stream = http.get(sent["stream_url"])
        finally:
            site.topo.start_redis()
        reply = final_message(http, sent["reply"])
    assert stream.status_code == 200, stream.text
    text = check_sse(sse_events(stream.text))
    assert reply["status"] == "complete" and text == reply["content"] == LONG


def replica_calling(site: Site, port: int) -> str:
    """The replica holding a TCP connection to 127.0.0.1:`port` (the upstream's)."""
    for _ in range(200):
        listing = subprocess.run(
            ["ss", "-tnpH", "state", "established", "dst", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for role in site.topo.replicas:
            if site.topo.alive(role) and f"pid={site.topo.pid(role)}," in listing:
                return role
        time.sleep(0.05)
    raise AssertionError(f"no replica is calling port {port}")


def test_a_completion_stream_whose_replica_dies_ends_interrupted_with_its_text_kept(
    site: Site,
) -> None:
    """docs/api.md, "Where it is generated": the reply lives and dies with the Daphne process
    holding the request; "the client's connection goes with it; the reply stops heartbeating
    and … the reaper ends it failed/interrupted", its text kept. A streaming repeat with the
    same Idempotency-Key follows that reply and ends with its error."""
    site.upstream.script("up", slow_reply())
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = {
        "model": "openai-compatible",
        "messages": [{"role": "user", "content": "Talk for a while"}],
        "stream": True,
    }
    got = ""
    with site.http() as http:
        with pytest.raises(httpx.HTTPError):
            with http.stream("POST", "/v1/chat/completions", json=body, headers=key) as stream:
                assert stream.status_code == 200
                reply = int(stream.headers["x-parley-message"])
                for line in stream.iter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line.removeprefix("data: "))
                    got += chunk["choices"][0]["delta"].get("content") or ""
                    if (
                        len(got) >= 30
                        and site.topo.alive("daphne-1")
                        and site.topo.alive("daphne-2")
                    ):
                        site.topo.kill(replica_calling(site, site.upstream.port))
        assert got and not got.endswith(LONG[-10:]), got
        message = final_message(http, reply, timeout=REAP_STALE_AFTER + 60)
        assert (message["status"], message["error"]["code"]) == ("failed", "interrupted")
        assert message["content"].startswith(got) and LONG.startswith(message["content"])
        again = http.post("/v1/chat/completions", json=body, headers=key)
    site.topo.restore()
    assert again.status_code == 200, again.text
    assert again.headers["x-parley-message"] == str(reply)
    events = [
        json.loads(line.removeprefix("data: "))
        for line in again.text.splitlines()
        if line.startswith("data: {")
    ]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if "choices" in e)
    assert text == message["content"]
    assert events[-1]["error"]["code"] == "interrupted", events[-1]


@pytest.fixture
def llama(site: Site) -> Iterator[tuple[str, LlamaServer]]:
    """A llama.cpp server of this test's own (it gets killed), serving the alias `llama`."""
    with tempfile.TemporaryDirectory() as logs:
        server = start_llama_server(Path(logs))
        try:
            with site.topo.alias_served_by("llama", server.base_url):
                yield "llama", server
        finally:
            server.stop()


async def test_a_real_upstream_killed_mid_reply_ends_it_interrupted_with_its_text_kept(
    site: Site, llama: tuple[str, LlamaServer]
) -> None:
    """protocol.md `interrupted`: "the model provider … dropped the connection … after text
    was sent. The partial text is kept": llama.cpp's server is SIGKILLed while it streams."""
    alias, server = llama
    ws = await site.socket()
    try:
        frame = send_frame(
            "Write a long story about a dragon who learns to bake bread.",
            model=alias,
            max_tokens=400,
        )
        await ws.send(json.dumps(frame))
        held = ""
        while True:
            event = await recv_frame(ws, 120)
            if event["type"] == "delta":
                held += event["text"]
                if len(held) >= 20 and server.alive():
                    os.killpg(server.proc.pid, signal.SIGKILL)
            elif event["type"] in ("done", "error") and event.get("message") is not None:
                break
            elif event["type"] == "error":
                raise AssertionError(event)
        reply = event["message"]
    finally:
        await ws.close()
    assert not server.alive()
    assert event["type"] == "error", event
    assert (event["code"], event["retryable"], event["seq"]) == ("interrupted", True, len(held))
    row = site.topo.row(reply)
    assert (row["status"], row["error_code"], row["content"]) == ("failed", "interrupted", held)
    ws = await site.socket()  # and a resume answers with the same ending
    try:
        await ws.send(json.dumps({"type": "resume", "message": reply, "after_seq": 0}))
        resumed = await hear_reply(ws, reply, timeout=30)
    finally:
        await ws.close()
    assert resumed.text == held and resumed.final is not None
    assert resumed.final["code"] == "interrupted"


def test_with_redis_down_reads_answer_and_a_ticket_is_503_unavailable(site: Site) -> None:
    """docs/operations.md: what needs Redis "fails on its own terms", the rest goes on. A
    ticket lives in Redis and a socket needs it (4503), so none can be had: 503
    `unavailable` with Retry-After, not a 500. Reads answer from PostgreSQL."""
    with site.http() as http:
        site.topo.kill("redis")
        try:
            ticket = http.post("/api/v1/ws-ticket")
            reads = {
                path: http.get(path).status_code
                for path in (
                    "/api/v1/models",
                    "/api/v1/conversations",
                    "/api/v1/usage",
                    "/api/v1/keys",
                    "/v1/models",
                )
            }
        finally:
            site.topo.start_redis()
        assert ticket.status_code == 503, ticket.text
        error = ticket.json()["error"]
        assert error["code"] == "unavailable", error
        assert ticket.headers["retry-after"] == str(error["retry_after"])
        assert set(reads.values()) == {200}, reads
        assert http.post("/api/v1/ws-ticket").status_code == 201


def test_a_completion_not_streamed_whose_replica_dies_is_a_502_and_ends_interrupted(
    site: Site,
) -> None:
    """docs/api.md, "Where it is generated": a request not streamed yet has no body to cut,
    so nginx answers it 502 when its replica dies, in OpenAI's shape (`bad_gateway`: an SDK
    raises InternalServerError) with the request's id; the reply still ends
    `failed`/`interrupted` by the reaper, its text kept."""
    site.upstream.script("up", slow_reply())
    body = {"model": "openai-compatible", "messages": [{"role": "user", "content": "Slowly"}]}
    answer: list[httpx.Response] = []
    with site.http() as http:
        asking = threading.Thread(
            target=lambda: answer.append(
                http.post("/v1/chat/completions", json=body, headers={"X-Request-ID": "dies.1"})
            )
        )
        before = site.upstream.count("up")
        asking.start()
        try:
            while (
                site.upstream.count("up") == before or not site.upstream.requests("up")[-1].chunks
            ):
                time.sleep(0.02)
            site.topo.kill(replica_calling(site, site.upstream.port))
        finally:
            asking.join(timeout=120)
        site.topo.restore()
        (refused,) = answer
        assert refused.status_code == 502, refused.text[:200]
        assert refused.json()["error"]["code"] == "bad_gateway", refused.text[:200]
        assert refused.headers["x-request-id"] == "dies.1"
        (row,) = site.topo.query(
            "SELECT id FROM chat_message WHERE role = 'assistant' ORDER BY id DESC LIMIT 1"
        )
        message = final_message(http, row[0], timeout=REAP_STALE_AFTER + 60)
    assert (message["status"], message["error"]["code"]) == ("failed", "interrupted")
    assert LONG.startswith(message["content"])
