"""The production topology, for real, on loopback.

nginx (the repository's nginx.conf) → two Daphne replicas → Redis channel layer ← one Celery
worker running the bundled local model; PostgreSQL holds every row. Clients talk to nginx only:
an HTTP sign-in, then WebSockets that least_conn spreads over both replicas.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from tests.servers import (
    POSTGRES_ADMIN_URL,
    PYTHON,
    REDIS_HOST,
    REDIS_PORT,
    REPO,
    ProcessGroup,
    base_env,
    free_port,
    manage,
    nginx_conf_for_test,
    postgres_database,
    redis_database,
    require_binary,
    require_service,
    sign_in_cookie,
    start_celery_worker,
    start_daphne_behind_proxy,
    start_nginx,
    wait_until_answers,
)

USERNAME = "e2e-olivia"
PASSWORD = "correct horse battery staple"
STATIC_FILE = "admin/css/base.css"  # collected from django.contrib.admin
REPLY_TIMEOUT = 60.0  # one short reply from SmolLM2 takes a few seconds here


@dataclass
class Topology:
    group: ProcessGroup
    nginx_port: int
    daphne_ports: list[int]
    database_url: str
    static_root: Path
    cookie: str = ""
    names: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.nginx_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.nginx_port}/ws/chat/"

    def logs(self, lines: int = 120) -> str:
        parts = []
        for name in self.names:
            tail = "\n".join(self.group.log(name).splitlines()[-lines:])
            parts.append(f"----- {name} (last {lines} lines) -----\n{tail}")
        return "\n".join(parts)

    @contextmanager
    def logs_on_failure(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            print(self.logs())
            raise

    def row(self, message_id: int) -> dict[str, Any]:
        with psycopg.connect(self.database_url, connect_timeout=5) as conn:
            cur = conn.execute(
                "SELECT role, status, provider, content, seq FROM chat_message WHERE id = %s",
                (message_id,),
            )
            found = cur.fetchone()
        assert found is not None, f"message {message_id} is not in PostgreSQL"
        return dict(zip(("role", "status", "provider", "content", "seq"), found, strict=True))


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    nginx = require_binary("nginx")
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    with ExitStack() as stack:
        # World-readable: nginx workers run as an unprivileged user and read the static root.
        workdir = Path(tempfile.mkdtemp(prefix="parley-e2e-"))
        workdir.chmod(0o755)
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        database_url = stack.enter_context(postgres_database(POSTGRES_ADMIN_URL))
        layer_db = stack.enter_context(redis_database())
        broker_db = stack.enter_context(redis_database())
        (workdir / "logs").mkdir()
        group = ProcessGroup(log_dir=workdir / "logs")
        stack.callback(group.stop_all)  # runs first: processes stop before the databases go

        topo = Topology(
            group=group,
            nginx_port=free_port(),
            daphne_ports=[free_port(), free_port()],
            database_url=database_url,
            static_root=workdir / "staticfiles",
        )
        env = base_env(
            DATABASE_URL=database_url,
            REDIS_URL=f"redis://{REDIS_HOST}:{REDIS_PORT}/{layer_db}",
            CELERY_BROKER_URL=f"redis://{REDIS_HOST}:{REDIS_PORT}/{broker_db}",
            GENERATION_BACKEND="celery",
            DJANGO_SECRET_KEY=secrets.token_urlsafe(40),
            DJANGO_DEBUG="false",
            DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
            DJANGO_CSRF_TRUSTED_ORIGINS="",
            BEHIND_TLS_PROXY="false",
            SESSION_COOKIE_SECURE="false",
            CSRF_COOKIE_SECURE="false",
            SERVE_STATIC="false",  # as in production: nginx serves /static/
            STATIC_ROOT=str(topo.static_root),
            LLM_DEFAULT_PROVIDER="local",
            LLM_MAX_TOKENS="48",
            LOG_LEVEL="INFO",
        )
        topo.env = env
        try:
            manage("migrate", "--noinput", env=env, timeout=120)
            manage("collectstatic", "--noinput", env=env, timeout=120)
            manage(
                "shell",
                "-c",
                "from accounts.models import User; "
                f"User.objects.create_user(username={USERNAME!r}, password={PASSWORD!r})",
                env=env,
                timeout=120,
            )
            replicas = []
            for index, port in enumerate(topo.daphne_ports, start=1):
                name = f"daphne-{index}"
                topo.names.append(name)
                replicas.append(start_daphne_behind_proxy(group, name, port, env))
            topo.names.append("celery")
            start_celery_worker(group, "celery", env, queues="llm-remote,llm-local", concurrency=2)
            for port, proc in zip(topo.daphne_ports, replicas, strict=True):
                wait_until_answers(f"http://127.0.0.1:{port}/healthz", timeout=60, proc=proc)

            nginx_dir = workdir / "nginx"
            nginx_dir.mkdir()
            conf = nginx_dir / "nginx.conf"
            conf.write_text(
                nginx_conf_for_test(
                    (REPO / "nginx.conf").read_text(),
                    upstream_ports=topo.daphne_ports,
                    listen_port=topo.nginx_port,
                    static_root=topo.static_root,
                    prefix=nginx_dir,
                )
            )
            topo.names.append("nginx")
            start_nginx(group, "nginx", nginx, conf, nginx_dir, topo.nginx_port)
            topo.cookie = sign_in_cookie(topo.base, USERNAME, PASSWORD)
        except BaseException:
            print(topo.logs())
            raise
        yield topo


# --- WebSocket helpers ---------------------------------------------------------------------


async def _open(topo: Topology, *, cookie: str | None = None, origin: str | None = None):
    headers = {"Cookie": topo.cookie if cookie is None else cookie}
    return await connect(
        topo.ws_url,
        origin=Origin(origin or topo.base),
        additional_headers=headers,
        open_timeout=10,
        close_timeout=2,
    )


async def _recv(ws: ClientConnection, timeout: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        return json.loads(await ws.recv())


@dataclass
class Heard:
    """What one socket received for one reply."""

    reply: int | None = None
    conversation: int | None = None
    deltas: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    frames: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(d["text"] for d in self.deltas)

    def check_contiguous_prefix(self) -> None:
        """Deltas received before a cut: contiguous from 0, no final frame needed."""
        position = 0
        for delta in self.deltas:
            assert delta["start"] == position, f"gap/overlap at {position}: {self.frames}"
            position = delta["seq"]

    def check_contiguous(self, after_seq: int = 0) -> None:
        """Deltas follow each other with no gap or overlap, and `done` closes at their end."""
        assert self.deltas, f"no deltas: {self.frames}"
        position = after_seq
        for delta in self.deltas:
            assert delta["start"] == position, f"gap/overlap at {position}: {self.frames}"
            assert len(delta["text"]) == delta["seq"] - delta["start"], delta
            position = delta["seq"]
        assert self.final is not None and self.final["type"] == "done", self.frames
        assert self.final["seq"] == position, (self.final, position)


async def _hear_reply(ws: ClientConnection, reply: int | None = None) -> Heard:
    """Read frames until the reply is final. The reply id comes from `ack` (the sender) or
    from the assistant `message` frame (a subscriber) when not given."""
    heard = Heard(reply=reply)
    deadline = time.monotonic() + REPLY_TIMEOUT
    while heard.final is None:
        frame = await _recv(ws, max(0.1, deadline - time.monotonic()))
        heard.frames.append(frame)
        kind = frame["type"]
        if kind == "ack":
            heard.reply, heard.conversation = frame["reply"], frame["conversation"]
        elif kind == "message" and frame["role"] == "assistant" and heard.reply is None:
            heard.reply, heard.conversation = frame["message"], frame["conversation"]
        elif kind == "delta" and frame["message"] == heard.reply:
            heard.deltas.append(frame)
        elif kind in ("done", "error") and frame.get("message") == heard.reply:
            heard.final = frame
        elif kind == "error":
            raise AssertionError(f"error frame: {frame}")
    return heard


async def _send(ws: ClientConnection, text: str, conversation: int | None = None) -> str:
    client_id = uuid.uuid4().hex
    frame = {"type": "send", "conversation": conversation, "text": text, "client_id": client_id}
    await ws.send(json.dumps(frame))
    return client_id


async def _barrier(ws: ClientConnection) -> None:
    """Frames are handled in order: a pong means every earlier frame (subscribe) took effect."""
    await ws.send(json.dumps({"type": "ping"}))
    while (await _recv(ws, 10))["type"] != "pong":
        pass


def _ws_upstreams(nginx_log: str) -> list[str]:
    """Upstream addresses of the WebSocket handshakes nginx logged (101 = upgraded)."""
    pattern = re.compile(r'"GET /ws/chat/ HTTP/1\.1" 101 .* upstream=(\S+)')
    return [m.group(1) for m in pattern.finditer(nginx_log)]


# --- Tests ---------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(180)
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
@pytest.mark.timeout(180)
async def test_websocket_refused_without_session_or_from_foreign_origin(
    topology: Topology,
) -> None:
    with topology.logs_on_failure():
        with pytest.raises(InvalidStatus) as anonymous:
            await _open(topology, cookie="")
        assert anonymous.value.response.status_code == 403

        with pytest.raises(InvalidStatus) as foreign:
            await _open(topology, origin="http://evil.example")
        assert foreign.value.response.status_code == 403


@pytest.mark.integration
@pytest.mark.timeout(180)
async def test_reply_streams_through_nginx_and_matches_postgres(topology: Topology) -> None:
    with topology.logs_on_failure():
        ws = await _open(topology)
        try:
            await _send(ws, "Say hello in one short sentence.")
            heard = await _hear_reply(ws)
        finally:
            await ws.close()
        heard.check_contiguous()
        assert heard.text, "the model said nothing"
        assert heard.final is not None
        assert heard.final["status"] == "complete"
        assert heard.final["provider"] == "local"
        assert heard.reply is not None
        row = topology.row(heard.reply)
        assert row["role"] == "assistant"
        assert row["status"] == "complete"
        assert row["provider"] == "local"
        assert row["content"] == heard.text
        assert row["seq"] == len(heard.text)

        # A client that reconnects (any replica) and resumes gets exactly the rest, then done.
        held = len(heard.text) // 2
        late = await _open(topology)
        try:
            resume = {"type": "resume", "message": heard.reply, "after_seq": held}
            await late.send(json.dumps(resume))
            resumed = await _hear_reply(late, reply=heard.reply)
        finally:
            await late.close()
        resumed.check_contiguous(after_seq=held)
        assert heard.text[:held] + resumed.text == row["content"]


@pytest.mark.integration
@pytest.mark.timeout(180)
async def test_every_replica_delivers_the_same_stream(topology: Topology) -> None:
    """Six sockets (least_conn puts half on each replica) follow one conversation; the worker's
    deltas reach all of them through the Redis channel layer, whichever replica holds them."""
    with topology.logs_on_failure():
        log_start = len(topology.group.log("nginx"))
        sockets = [await _open(topology) for _ in range(6)]
        try:
            await _send(sockets[0], "Name one colour.")
            first = await _hear_reply(sockets[0])
            assert first.final is not None and first.final["status"] == "complete"
            conversation = first.conversation
            for ws in sockets:
                await ws.send(json.dumps({"type": "subscribe", "conversation": conversation}))
                await _barrier(ws)

            await _send(sockets[3], "Name one animal.", conversation=conversation)
            heard = await asyncio.gather(*(_hear_reply(ws) for ws in sockets))
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

        reply = heard[3].reply
        assert reply is not None and reply != first.reply
        row = topology.row(reply)
        assert row["status"] == "complete" and row["provider"] == "local"
        for index, got in enumerate(heard):
            assert got.reply == reply, (index, got.frames)
            got.check_contiguous()
            assert got.text == row["content"], f"socket {index} heard {got.text!r}"

        # Both replicas held some of the six sockets (nginx logs a WebSocket when it closes).
        expected = {f"127.0.0.1:{port}" for port in topology.daphne_ports}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            upstreams = _ws_upstreams(topology.group.log("nginx")[log_start:])
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
@pytest.mark.timeout(180)
async def test_subscriber_joining_mid_stream_gets_the_whole_reply(topology: Topology) -> None:
    """A second tab that subscribes while a reply streams (before its first checkpoint) ends
    up with the whole text: the consumer fills the part it missed from PostgreSQL."""
    with topology.logs_on_failure():
        sender, late = await _open(topology), await _open(topology)
        try:
            await _send(sender, "Write a short poem about the sea.")
            heard = Heard()
            while not heard.deltas:  # the reply is streaming: its first delta is out
                frame = await _recv(sender, REPLY_TIMEOUT)
                heard.frames.append(frame)
                if frame["type"] == "ack":
                    heard.reply, heard.conversation = frame["reply"], frame["conversation"]
                elif frame["type"] == "delta":
                    heard.deltas.append(frame)
                elif frame["type"] in ("done", "error"):
                    raise AssertionError(f"the reply ended before streaming: {heard.frames}")
            await late.send(json.dumps({"type": "subscribe", "conversation": heard.conversation}))
            rest, joined = await asyncio.gather(
                _hear_reply(sender, reply=heard.reply), _hear_reply(late, reply=heard.reply)
            )
        finally:
            await asyncio.gather(sender.close(), late.close(), return_exceptions=True)
        assert heard.reply is not None
        row = topology.row(heard.reply)
        assert heard.text + rest.text == row["content"]
        assert rest.final is not None and rest.final["status"] == "complete"
        assert joined.final is not None, joined.frames
        assert joined.final["status"] == "complete"
        joined.check_contiguous(after_seq=joined.deltas[0]["start"] if joined.deltas else 0)


def _replica_of_next_socket(topo: Topology, before: dict[str, int]) -> str:
    """Which replica logged the WebSocket that just connected (Daphne logs WSCONNECT)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for name, count in _wsconnects(topo).items():
            if count > before[name]:
                return name
        time.sleep(0.05)
    raise AssertionError("no replica logged the new WebSocket")


def _wsconnects(topo: Topology) -> dict[str, int]:
    names = [f"daphne-{index}" for index in range(1, len(topo.daphne_ports) + 1)]
    return {name: topo.group.log(name).count('"WSCONNECT /ws/chat/"') for name in names}


@pytest.mark.integration
@pytest.mark.timeout(180)
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
                before = _wsconnects(topology)
                ws = await _open(topology)
                name = _replica_of_next_socket(topology, before)
                if name in placed:
                    spare.append(ws)
                else:
                    placed[name] = ws
                if len(placed) == len(topology.daphne_ports):
                    break
            assert len(placed) == 2, f"sockets landed on {list(placed)} only"
            victim, survivor = sorted(placed)
            await _send(placed[victim], "Name one colour.")
            first = await _hear_reply(placed[victim])
            conversation = first.conversation
            await placed[survivor].send(
                json.dumps({"type": "subscribe", "conversation": conversation})
            )
            await _barrier(placed[survivor])

            await _send(placed[victim], "Write a short poem about the sea.", conversation)
            cut = Heard()
            listening = asyncio.create_task(_hear_reply(placed[survivor]))
            try:
                while not cut.deltas:
                    frame = await _recv(placed[victim], REPLY_TIMEOUT)
                    cut.frames.append(frame)
                    if frame["type"] == "ack":
                        cut.reply = frame["reply"]
                    elif frame["type"] == "delta" and frame["message"] == cut.reply:
                        cut.deltas.append(frame)
                topology.group.kill(victim)  # SIGKILL: no close frame, no cleanup
                while True:  # whatever was already in flight, then the cut
                    frame = await _recv(placed[victim], 10)
                    cut.frames.append(frame)
                    if frame["type"] == "delta" and frame["message"] == cut.reply:
                        cut.deltas.append(frame)
                    assert frame["type"] != "done", "the reply ended before the kill"
            except ConnectionClosed:
                pass
            survivor_heard = await listening

            held = cut.deltas[-1]["seq"]
            again = await _open(topology)  # nginx: the dead replica refuses, the live one takes it
            try:
                resume = {"type": "resume", "message": cut.reply, "after_seq": held}
                await again.send(json.dumps(resume))
                resumed = await _hear_reply(again, reply=cut.reply)
            finally:
                await again.close()
        finally:
            sockets = [*placed.values(), *spare]
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
            # Put the replica back for anything that runs after this test.
            if victim and topology.group.procs[victim].poll() is not None:
                port = topology.daphne_ports[int(victim.split("-")[1]) - 1]
                name = f"{victim}-restarted"
                topology.names.append(name)
                proc = start_daphne_behind_proxy(topology.group, name, port, topology.env)
                wait_until_answers(f"http://127.0.0.1:{port}/healthz", timeout=60, proc=proc)

        assert cut.reply is not None
        row = topology.row(cut.reply)
        assert row["status"] == "complete"
        cut.check_contiguous_prefix()
        resumed.check_contiguous(after_seq=held)
        assert cut.text + resumed.text == row["content"]
        survivor_heard.check_contiguous()
        assert survivor_heard.text == row["content"]
