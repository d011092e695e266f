"""The production topology, for real, on loopback.

nginx (the repository's nginx.conf) → two Daphne replicas → Redis channel layer ← one Celery
worker running the bundled local model; PostgreSQL holds every row. Clients talk to nginx only:
an HTTP sign-in, then WebSockets that least_conn spreads over both replicas. The topology and
the socket helpers are the shared harness's (tests/harness/).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.harness.processes import PYTHON, REPO, free_port
from tests.harness.sockets import (
    Heard,
    barrier,
    hear_reply,
    open_socket,
    recv_frame,
    send_text,
)
from tests.harness.topology import Topology, production_topology

USERNAME = "e2e-olivia"
PASSWORD = "correct horse battery staple"
STATIC_FILE = "admin/css/base.css"  # collected from django.contrib.admin
REPLY_TIMEOUT = 60.0  # one short reply from SmolLM2 takes a few seconds here
# An answer the 48-token cap (LLM_MAX_TOKENS) cut short is `incomplete`, finish reason `length`.
ANSWERED = ("complete", "incomplete")
FINISH_REASONS = {"complete": "stop", "incomplete": "length"}


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    with production_topology(
        replicas=2,
        provider="local",
        env={"LLM_MAX_TOKENS": "48"},
        user=(USERNAME, PASSWORD),
        name="e2e",
    ) as topo:
        yield topo


# --- Tests ---------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(180, func_only=True)
def test_healthz_and_static_through_nginx(topology: Topology) -> None:
    with topology.logs_on_failure(), httpx.Client(base_url=topology.base, timeout=10) as client:
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "generation": "celery"}

        static = client.get(f"/static/{STATIC_FILE}", headers={"Accept-Encoding": "gzip"})
        assert static.status_code == 200
        assert static.content == (topology.static_root / STATIC_FILE).read_bytes()
        assert static.headers["content-type"].startswith("text/css")
        assert static.headers["content-encoding"] == "gzip"
        assert "max-age=" in static.headers["cache-control"]
        assert "public" in static.headers["cache-control"]
        assert client.get("/static/no/such/file.css").status_code == 404

        # nginx, not Daphne, serves them: a replica itself has no /static/ (SERVE_STATIC=false).
        direct = httpx.get(
            f"http://127.0.0.1:{topology.daphne_ports[0]}/static/{STATIC_FILE}", timeout=10
        )
        assert direct.status_code == 404

    # The image's HEALTHCHECK script, against a replica, with the Host it derives.
    for port, expected in ((topology.daphne_ports[0], 0), (free_port(), 1)):
        check = subprocess.run(
            [PYTHON, str(REPO / "deploy" / "healthcheck.py")],
            env={**topology.env, "PORT": str(port), "DJANGO_ALLOWED_HOSTS": "localhost,x.test"},
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert check.returncode == expected, check.stderr


@pytest.mark.integration
@pytest.mark.timeout(180, func_only=True)
async def test_websocket_refused_without_session_or_from_foreign_origin(
    topology: Topology,
) -> None:
    with topology.logs_on_failure():
        with pytest.raises(InvalidStatus) as anonymous:
            await open_socket(topology, cookie="")
        assert anonymous.value.response.status_code == 403

        with pytest.raises(InvalidStatus) as foreign:
            await open_socket(topology, origin="http://evil.example")
        assert foreign.value.response.status_code == 403


@pytest.mark.integration
@pytest.mark.timeout(180, func_only=True)
async def test_reply_streams_through_nginx_and_matches_postgres(topology: Topology) -> None:
    with topology.logs_on_failure():
        ws = await open_socket(topology)
        try:
            await send_text(ws, "Say hello in one short sentence.")
            heard = await hear_reply(ws)
        finally:
            await ws.close()
        heard.check_contiguous()
        assert heard.text, "the model said nothing"
        assert heard.final is not None
        assert heard.final["status"] in ANSWERED
        assert heard.final["finish_reason"] == FINISH_REASONS[heard.final["status"]]
        assert heard.final["provider"] == "local"
        assert heard.reply is not None
        row = topology.row(heard.reply)
        assert row["role"] == "assistant"
        assert row["status"] == heard.final["status"]
        assert row["provider"] == "local"
        assert row["content"] == heard.text
        assert row["seq"] == len(heard.text)

        # A client that reconnects (any replica) and resumes gets exactly the rest, then done.
        held = len(heard.text) // 2
        late = await open_socket(topology)
        try:
            resume = {"type": "resume", "message": heard.reply, "after_seq": held}
            await late.send(json.dumps(resume))
            resumed = await hear_reply(late, reply=heard.reply)
        finally:
            await late.close()
        resumed.check_contiguous(after_seq=held)
        assert heard.text[:held] + resumed.text == row["content"]


@pytest.mark.integration
@pytest.mark.timeout(180, func_only=True)
async def test_every_replica_delivers_the_same_stream(topology: Topology) -> None:
    """Six sockets (least_conn puts half on each replica) follow one conversation; the worker's
    deltas reach all of them through the Redis channel layer, whichever replica holds them."""
    with topology.logs_on_failure():
        log_start = len(topology.log("nginx"))
        sockets = [await open_socket(topology) for _ in range(6)]
        try:
            await send_text(sockets[0], "Name one colour.")
            first = await hear_reply(sockets[0])
            assert first.final is not None and first.final["status"] in ANSWERED
            conversation = first.conversation
            for ws in sockets:
                await ws.send(json.dumps({"type": "subscribe", "conversation": conversation}))
                await barrier(ws)

            await send_text(sockets[3], "Name one animal.", conversation=conversation)
            heard = await asyncio.gather(*(hear_reply(ws) for ws in sockets))
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

        reply = heard[3].reply
        assert reply is not None and reply != first.reply
        row = topology.row(reply)
        assert row["status"] in ANSWERED and row["provider"] == "local"
        for index, got in enumerate(heard):
            assert got.reply == reply, (index, got.frames)
            got.check_contiguous()
            assert got.text == row["content"], f"socket {index} heard {got.text!r}"

        # Both replicas held some of the six sockets (nginx logs a WebSocket when it closes).
        expected = {f"127.0.0.1:{port}" for port in topology.daphne_ports}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            upstreams = topology.ws_upstreams(log_start)
            if len(upstreams) >= len(sockets):
                break
            await asyncio.sleep(0.2)
        assert set(upstreams) == expected, upstreams


def test_compose_nginx_and_dockerfile_agree() -> None:
    """The files that cannot run here (no Docker engine) stay consistent with each other."""
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    nginx_conf = (REPO / "nginx.conf").read_text()
    dockerfile = (REPO / "Dockerfile").read_text()
    services = compose["services"]

    upstreams = re.findall(r"^\s*server (daphne-\d+):8000 ", nginx_conf, flags=re.M)
    replicas = sorted(name for name in services if name.startswith("daphne-"))
    assert upstreams == replicas and len(replicas) >= 2

    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        assert "healthcheck" in service, f"{name} has no healthcheck"
    for name in replicas:
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["redis"]["image"].startswith("redis:7")

    workers = {
        name: service["command"]
        for name, service in services.items()
        if "worker" in (service.get("command") or [])
    }
    queues = {q for cmd in workers.values() for q in cmd[cmd.index("-Q") + 1].split(",")}
    assert queues == {"llm-local", "llm-remote"}
    local = next(cmd for cmd in workers.values() if cmd[cmd.index("-Q") + 1] == "llm-local")
    assert "--concurrency=1" in local

    # The static files nginx serves are where the image collects them.
    assert "alias /app/staticfiles/;" in nginx_conf
    assert "STATIC_ROOT=/app/staticfiles" in dockerfile
    assert "COPY --from=app-base /app/staticfiles /app/staticfiles" in dockerfile
    assert services["nginx"]["build"]["target"] == "nginx"


@pytest.mark.integration
@pytest.mark.timeout(180, func_only=True)
async def test_subscriber_joining_mid_stream_gets_the_whole_reply(topology: Topology) -> None:
    """A second tab that subscribes while a reply streams (before its first checkpoint) ends
    up with the whole text: the consumer fills the part it missed from PostgreSQL."""
    with topology.logs_on_failure():
        sender, late = await open_socket(topology), await open_socket(topology)
        try:
            await send_text(sender, "Write a short poem about the sea.")
            heard = Heard()
            while not heard.deltas:  # the reply is streaming: its first delta is out
                frame = await recv_frame(sender, REPLY_TIMEOUT)
                heard.frames.append(frame)
                if frame["type"] == "ack":
                    heard.reply, heard.conversation = frame["reply"], frame["conversation"]
                elif frame["type"] == "delta":
                    heard.deltas.append(frame)
                elif frame["type"] in ("done", "error"):
                    raise AssertionError(f"the reply ended before streaming: {heard.frames}")
            await late.send(json.dumps({"type": "subscribe", "conversation": heard.conversation}))
            rest, joined = await asyncio.gather(
                hear_reply(sender, reply=heard.reply), hear_reply(late, reply=heard.reply)
            )
        finally:
            await asyncio.gather(sender.close(), late.close(), return_exceptions=True)
        assert heard.reply is not None
        row = topology.row(heard.reply)
        assert heard.text + rest.text == row["content"]
        assert rest.final is not None and rest.final["status"] in ANSWERED
        assert joined.final is not None, joined.frames
        assert joined.final["status"] in ANSWERED
        joined.check_contiguous(after_seq=joined.deltas[0]["start"] if joined.deltas else 0)


@pytest.mark.integration
@pytest.mark.timeout(180, func_only=True)
async def test_replica_killed_mid_stream_loses_nothing(topology: Topology) -> None:
    """SIGKILL the replica holding the sender's socket while its reply streams: the worker goes
    on, the other replica's subscriber hears it all, and the sender reconnects through nginx
    (which fails over to the live replica) and resumes with no gap and no duplicate."""
    with topology.logs_on_failure():
        placed: dict[str, ClientConnection] = {}
        spare: list[ClientConnection] = []
        victim = ""
        try:
            for _ in range(6):  # least_conn alternates; a stale count may repeat a replica
                before = topology.wsconnects()
                ws = await open_socket(topology)
                name = await topology.replica_of_new_socket(before)
                if name in placed:
                    spare.append(ws)
                else:
                    placed[name] = ws
                if len(placed) == len(topology.daphne_ports):
                    break
            assert len(placed) == 2, f"sockets landed on {list(placed)} only"
            victim, survivor = sorted(placed)
            await send_text(placed[victim], "Name one colour.")
            first = await hear_reply(placed[victim])
            conversation = first.conversation
            await placed[survivor].send(
                json.dumps({"type": "subscribe", "conversation": conversation})
            )
            await barrier(placed[survivor])

            await send_text(placed[victim], "Write a short poem about the sea.", conversation)
            cut = Heard()
            listening = asyncio.create_task(hear_reply(placed[survivor]))
            try:
                while not cut.deltas:
                    frame = await recv_frame(placed[victim], REPLY_TIMEOUT)
                    cut.frames.append(frame)
                    if frame["type"] == "ack":
                        cut.reply = frame["reply"]
                    elif frame["type"] == "delta" and frame["message"] == cut.reply:
                        cut.deltas.append(frame)
                topology.kill(victim)  # SIGKILL: no close frame, no cleanup
                while True:  # whatever was already in flight, then the cut
                    frame = await recv_frame(placed[victim], 10)
                    cut.frames.append(frame)
                    if frame["type"] == "delta" and frame["message"] == cut.reply:
                        cut.deltas.append(frame)
                    assert frame["type"] != "done", "the reply ended before the kill"
            except ConnectionClosed:
                pass
            survivor_heard = await listening

            held = cut.deltas[-1]["seq"]
            # nginx: the dead replica refuses, the live one takes it
            again = await open_socket(topology)
            try:
                resume = {"type": "resume", "message": cut.reply, "after_seq": held}
                await again.send(json.dumps(resume))
                resumed = await hear_reply(again, reply=cut.reply)
            finally:
                await again.close()
        finally:
            sockets = [*placed.values(), *spare]
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
            # Put the replica back for anything that runs after this test.
            if victim and not topology.alive(victim):
                topology.start_replica(victim)

        assert cut.reply is not None
        row = topology.row(cut.reply)
        assert row["status"] in ANSWERED
        cut.check_contiguous_prefix()
        resumed.check_contiguous(after_seq=held)
        assert cut.text + resumed.text == row["content"]
        survivor_heard.check_contiguous()
        assert survivor_heard.text == row["content"]
