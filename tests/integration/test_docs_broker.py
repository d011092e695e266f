"""The `not_started` promises of docs/protocol.md and docs/api.md, checked on the production
topology with a real fault: the Celery broker (a redis-server of its own, apart from the
channel layer's) is killed, a send is made on every edge, the broker comes back, and the same
request again starts the saved reply; a reply nobody asks again for ends `interrupted`.

The sockets and requests go through nginx to two Daphne replicas; a Celery worker generates
(API_GENERATION_IN_SERVER=false, so /v1's replies go through the broker too); the model is a
real OpenAI-compatible upstream (tests/fault_server.py).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from websockets.asyncio.client import ClientConnection

from tests.fault_server import Reply
from tests.harness.processes import (
    ProcessGroup,
    free_port,
    require_binary,
    start_redis_server,
)
from tests.harness.sockets import barrier, hear_reply, recv_frame
from tests.integration.test_api_promises import final_message
from tests.integration.test_protocol_promises import (
    ANSWERS,
    Site,
    send_frame,
    topology_with_upstream,
)

pytestmark = pytest.mark.integration

# A saved reply nobody started is failed `interrupted` this long after it was made (the
# setting REAP_PENDING_AFTER, 900 s by default): short here, so the test can wait for it.
PENDING_AFTER = 20
REDIS_DOWN_FOR = 3.0  # seconds a restarting Redis is away: several poll intervals (0.5 s)


@dataclass
class BrokerSite:
    site: Site
    group: ProcessGroup
    binary: str
    port: int
    workdir: Path
    restarts: int = 0

    def broker_down(self) -> None:
        self.group.kill(f"broker-{self.restarts}")

    def broker_up(self) -> None:
        """A new, empty broker on the same port (no persistence: what was queued is gone)."""
        self.restarts += 1
        start_redis_server(
            self.group, f"broker-{self.restarts}", self.binary, self.port, self.workdir
        )

    def http(self) -> httpx.Client:
        return self.site.http()


@pytest.fixture(scope="module")
def broker_site() -> Iterator[BrokerSite]:
    binary = require_binary("redis-server")
    workdir = Path(tempfile.mkdtemp(prefix="parley-docs-broker-"))
    group = ProcessGroup(log_dir=workdir)
    port = free_port()
    running = BrokerSite(site=None, group=group, binary=binary, port=port, workdir=workdir)  # type: ignore[arg-type]
    try:
        start_redis_server(group, "broker-0", binary, port, workdir)
        env = {
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0",
            "API_GENERATION_IN_SERVER": "false",
            "REAP_PENDING_AFTER": str(PENDING_AFTER),
            "REAP_EVERY": "1",
        }
        with topology_with_upstream("docs-broker", env) as site:
            running.site = site
            with site.topo.logs_on_failure():
                yield running
    finally:
        group.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def broker_down(broker_site: BrokerSite) -> Iterator[BrokerSite]:
    """The broker is down while the test runs (until it calls `broker_up`)."""
    broker_site.broker_down()
    try:
        yield broker_site
    finally:
        if broker_site.group.procs[f"broker-{broker_site.restarts}"].poll() is not None:
            broker_site.broker_up()


def reply_row(broker_site: BrokerSite, reply: int) -> dict[str, Any]:
    return broker_site.site.topo.row(reply)


def reply_of_client_id(broker_site: BrokerSite, client_id: str) -> int:
    rows = broker_site.site.topo.query(
        "SELECT r.id FROM chat_message u JOIN chat_message r ON r.reply_to_id = u.id "
        "WHERE u.client_id = %s",
        client_id,
    )
    assert len(rows) == 1, rows
    return int(rows[0][0])


async def frames_until_error(ws: ClientConnection) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Frames until an `error`; the error and what came before it."""
    before: list[dict[str, Any]] = []
    while True:
        frame = await recv_frame(ws, 60)
        if frame["type"] == "error":
            return frame, before
        before.append(frame)


async def test_a_socket_send_with_the_broker_down_is_not_started_and_its_repeat_starts_it(
    broker_down: BrokerSite,
) -> None:
    site = broker_down.site
    site.upstream.script("up", Reply(text="Started at last."))
    frame = send_frame("Are you there?")
    ws = await site.socket()
    try:
        await ws.send(json.dumps(frame))
        error, before = await frames_until_error(ws)
        assert (error["code"], error["retryable"], error["message"]) == (
            "not_started",
            True,
            None,
        ), error
        assert isinstance(error["retry_after"], int) and error["retry_after"] > 0, error
        assert not [f for f in before if f["type"] == "ack"], before
        reply = reply_of_client_id(broker_down, frame["client_id"])
        assert reply_row(broker_down, reply)["status"] == "pending"
        await barrier(ws)  # the socket stays open

        broker_down.broker_up()
        await ws.send(json.dumps(frame))
        heard = await hear_reply(ws, timeout=120)
    finally:
        await ws.close()
    ack = heard.frames[0]
    assert ack["type"] == "ack" and ack["created"] is False, heard.frames
    assert ack["reply"] == reply
    heard.check_contiguous()
    assert heard.text == "Started at last."


def test_a_rest_send_with_the_broker_down_is_a_503_and_its_repeat_answers_200_and_starts_it(
    broker_down: BrokerSite,
) -> None:
    site = broker_down.site
    site.upstream.script("up", Reply(text="By client_id."), Reply(text="By key."))
    with broker_down.http() as http:
        conversation = http.post("/api/v1/conversations", json={}).json()["id"]
        path = f"/api/v1/conversations/{conversation}/messages"
        by_client_id = {"text": "One", "model": ANSWERS, "client_id": uuid.uuid4().hex}
        by_key = {"Idempotency-Key": uuid.uuid4().hex}
        refused = [
            http.post(path, json=by_client_id),
            http.post(path, json={"text": "Two", "model": ANSWERS}, headers=by_key),
        ]
        for answer in refused:
            assert answer.status_code == 503, answer.text
            error = answer.json()["error"]
            assert error["code"] == "not_started", error
            assert answer.headers["retry-after"] == str(error["retry_after"]), answer.headers

        broker_down.broker_up()
        repeats = [
            http.post(path, json=by_client_id),
            http.post(path, json={"text": "Two", "model": ANSWERS}, headers=by_key),
        ]
        for answer in repeats:
            assert answer.status_code == 200, answer.text
            assert answer.json()["created"] is False
        texts = {final_message(http, answer.json()["reply"])["content"] for answer in repeats}
    assert texts == {"By client_id.", "By key."}


def test_a_completion_with_the_broker_down_is_a_503_and_its_keyed_repeat_answers(
    broker_down: BrokerSite,
) -> None:
    site = broker_down.site
    site.upstream.script("up", Reply(text="Completed at last."))
    sdk = openai.OpenAI(base_url=f"{site.topo.base}/v1", api_key=site.key, max_retries=0)
    key = {"Idempotency-Key": uuid.uuid4().hex}
    messages: Any = [{"role": "user", "content": "Anyone?"}]
    with pytest.raises(openai.InternalServerError) as refused:
        sdk.chat.completions.create(model=ANSWERS, messages=messages, extra_headers=key)
    assert refused.value.status_code == 503
    assert (refused.value.type, refused.value.code) == ("server_error", "not_started")
    assert int(refused.value.response.headers["retry-after"]) > 0

    broker_down.broker_up()
    completion = sdk.chat.completions.create(model=ANSWERS, messages=messages, extra_headers=key)
    assert completion.choices[0].message.content == "Completed at last."
    assert completion.choices[0].finish_reason == "stop"


async def test_a_reply_nobody_starts_again_ends_interrupted_and_its_followers_hear_it(
    broker_down: BrokerSite,
) -> None:
    """ "Until then the reply stays `pending`; if nobody repeats the frame it ends
    `interrupted`": the replicas' own reaper (no beat runs here) fails it REAP_PENDING_AFTER
    after it was made, and a socket following its conversation gets the `error`."""
    site = broker_down.site
    with broker_down.http() as http:
        conversation = http.post("/api/v1/conversations", json={}).json()["id"]
        refused = http.post(
            f"/api/v1/conversations/{conversation}/messages",
            json={"text": "Forget me", "model": ANSWERS, "client_id": uuid.uuid4().hex},
        )
        assert refused.status_code == 503, refused.text
    broker_down.broker_up()
    rows = site.topo.query(
        "SELECT id FROM chat_message WHERE conversation_id = %s AND role = 'assistant'",
        conversation,
    )
    (reply,) = (row[0] for row in rows)
    ws = await site.socket()
    try:
        await ws.send(json.dumps({"type": "subscribe", "conversation": conversation}))
        await barrier(ws)
        assert reply_row(broker_down, reply)["status"] == "pending"
        while True:
            frame = await recv_frame(ws, PENDING_AFTER + 60)
            if frame["type"] == "error" and frame["message"] == reply:
                break
    finally:
        await ws.close()
    assert (frame["code"], frame["retryable"], frame["seq"]) == ("interrupted", True, 0), frame
    row = reply_row(broker_down, reply)
    assert (row["status"], row["error_code"]) == ("failed", "interrupted")


def test_a_completion_stream_read_through_the_layer_outlives_a_redis_restart(
    broker_site: BrokerSite,
) -> None:
    """Here a Celery worker generates /v1's replies and the request follows them through the
    channel layer: Redis (the layer, not the broker) restarting mid-reply slows the stream
    down to the poll interval, and the client still gets every character once, then its
    finish_reason and [DONE]."""
    site, topo = broker_site.site, broker_site.site.topo
    text = "".join(f"word{n:03d} " for n in range(75))
    site.upstream.script("up", Reply(text=text, chunk_chars=6, chunk_delay=0.1))
    body = {"model": ANSWERS, "messages": [{"role": "user", "content": "Talk"}], "stream": True}
    got, lines, restarted = "", [], False
    with broker_site.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line:
                lines.append(line)
            if not line.startswith("data: {"):
                continue
            got += (
                json.loads(line.removeprefix("data: "))["choices"][0]["delta"].get("content") or ""
            )
            if got and not restarted:
                topo.kill("redis")
                time.sleep(REDIS_DOWN_FOR)  # a restart's outage, several poll intervals long
                topo.start_redis()
                restarted = True
    assert got == text
    assert lines[-1] == "data: [DONE]", lines[-5:]
    last = json.loads([line for line in lines if line.startswith("data: {")][-1][6:])
    assert last["choices"][0]["finish_reason"] == "stop", last


def test_with_redis_down_a_keyed_send_is_saved_once_on_rest_and_on_v1(
    broker_site: BrokerSite,
) -> None:
    """docs/operations.md: "A send does not need the cache: with Redis unreachable … the send
    is saved". With an Idempotency-Key too (its stored responses live in Redis): the request
    runs, and a repeat still answers with the first message, as api.md says the key's
    client_id makes the database do."""
    site, topo = broker_site.site, broker_site.site.topo
    with broker_site.http() as http:
        conversation = http.post("/api/v1/conversations", json={}).json()["id"]
        path = f"/api/v1/conversations/{conversation}/messages"
        key = {"Idempotency-Key": uuid.uuid4().hex}
        asked = f"Once, {uuid.uuid4().hex}"
        completion = {"model": ANSWERS, "messages": [{"role": "user", "content": asked}]}
        completion_key = {"Idempotency-Key": uuid.uuid4().hex}
        topo.kill("redis")
        try:
            first = http.post(path, json={"text": "Once", "model": ANSWERS}, headers=key)
            again = http.post(path, json={"text": "Once", "model": ANSWERS}, headers=key)
            answers = [
                http.post("/v1/chat/completions", json=completion, headers=completion_key)
                for _ in range(2)
            ]
        finally:
            topo.start_redis()
        assert first.status_code == 201, first.text
        assert again.status_code == 200 and again.json()["created"] is False, again.text
        assert again.json()["reply"] == first.json()["reply"]
        assert final_message(http, first.json()["reply"])["status"] == "complete"
    for answer in answers:
        assert answer.status_code == 200, answer.text
    assert answers[1].headers["x-parley-message"] == answers[0].headers["x-parley-message"]
    assert answers[1].json()["choices"] == answers[0].json()["choices"]
    calls = [r for r in site.upstream.requests("up") if r.body["messages"][-1]["content"] == asked]
    assert len(calls) == 1, "the repeat must not ask the model again"


async def test_a_send_while_the_live_feed_is_down_is_acknowledged_and_its_reply_follows(
    broker_site: BrokerSite,
) -> None:
    """protocol.md `unavailable`: the socket stays open; "a send that started a conversation
    while Redis was unreachable still gets its answer (`ack`) after this error: the send is
    saved, and its reply follows once the feed is back"; `live` says it is back, "just
    before it the server re-sent what was saved meanwhile". Here only the live feed's Redis
    goes away (the broker is another one), so the worker generates the reply meanwhile."""
    site, topo = broker_site.site, broker_site.site.topo
    text = "Written while you could not hear it."
    site.upstream.script("up", Reply(text=text))
    ws = await site.socket()
    try:
        await barrier(ws)
        topo.kill("redis")
        error, _ = await frames_until_error(ws)
        assert (error["code"], error["message"]) == ("unavailable", None), error
        frame = send_frame("Anyone there?")
        await ws.send(json.dumps(frame))
        while (ack := await recv_frame(ws, 60))["type"] != "ack":
            assert ack["type"] == "error" and ack["code"] == "unavailable", ack
        assert ack["client_id"] == frame["client_id"] and ack["created"] is True
        reply = ack["reply"]
        deadline = time.monotonic() + 60
        while reply_row(broker_site, reply)["status"] != "complete":
            assert time.monotonic() < deadline, reply_row(broker_site, reply)
            time.sleep(0.1)
        topo.start_redis()
        frames = []
        while (frame_in := await recv_frame(ws, 60))["type"] != "live":
            frames.append(frame_in)
    finally:
        await ws.close()
    deltas = [f for f in frames if f["type"] == "delta" and f["message"] == reply]
    assert "".join(d["text"] for d in deltas) == text, frames
    done = [f for f in frames if f["type"] == "done" and f["message"] == reply]
    assert len(done) == 1 and done[0]["seq"] == len(text), frames
