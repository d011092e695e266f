"""A hostile user against the production topology, for real, on loopback (issue 12).

nginx (the repository's nginx.conf) → three Daphne replicas (the image's own command line) → a
private Redis (channel layer, cache) that a test may stop; PostgreSQL holds every row. Replies
are generated in-process by the simulated provider. What crosses a process boundary is tested
here: oversized WebSocket messages and URLs (Daphne and nginx limits), a Redis outage at the
handshake, a burst of handshakes through nginx.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from tests.harness.nginx import start_repository_nginx
from tests.harness.processes import (
    ProcessGroup,
    base_env,
    free_port,
    manage,
    require_binary,
    start_redis_server,
    wait_until_answers,
)
from tests.harness.services import POSTGRES_ADMIN_URL, postgres_database, require_service
from tests.harness.sockets import sign_in_cookie

pytestmark = pytest.mark.integration

REPLICAS = 3
USERNAME = "hostile-hana"
PASSWORD = "correct horse battery staple"
MIB = 1024 * 1024


@dataclass
class Site:
    group: ProcessGroup
    workdir: Path
    redis_binary: str
    redis_port: int
    nginx_port: int
    daphne_ports: list[int]
    database_url: str
    env: dict[str, str] = field(default_factory=dict)
    api_key: str = ""
    redis_runs: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.nginx_port}"

    def ws_url(self, port: int | None = None) -> str:
        return f"ws://127.0.0.1:{port or self.nginx_port}/ws/chat/"

    @property
    def redis_name(self) -> str:
        return f"redis.{self.redis_runs}"

    def start_redis(self) -> None:
        self.redis_runs += 1
        start_redis_server(
            self.group, self.redis_name, self.redis_binary, self.redis_port, self.workdir
        )

    def redis_alive(self) -> bool:
        return self.group.procs[self.redis_name].poll() is None

    def replica_logs(self) -> str:
        return "".join(self.group.log(f"daphne-{i}") for i in range(1, REPLICAS + 1))

    def logs(self, lines: int = 40) -> str:
        parts = []
        for name in self.group.procs:
            tail = "\n".join(self.group.log(name).splitlines()[-lines:])
            parts.append(f"----- {name} (last {lines} lines) -----\n{tail}")
        return "\n".join(parts)

    async def socket(self, port: int | None = None, **kwargs: Any) -> ClientConnection:
        """A program's socket (API key), through nginx unless a replica's port is given."""
        options: dict[str, Any] = {"open_timeout": 15, "close_timeout": 5, **kwargs}
        return await connect(
            self.ws_url(port),
            additional_headers={"Authorization": f"Bearer {self.api_key}"},
            **options,
        )


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    nginx = require_binary("nginx")
    redis_binary = require_binary("redis-server")
    require_service("PostgreSQL", "127.0.0.1", 5432)
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="parley-hostile-"))
        workdir.chmod(0o755)  # nginx workers (another user) read the static root
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        if keep := os.environ.get("PARLEY_HOSTILE_KEEP_LOGS"):  # a directory, for debugging
            stack.callback(shutil.copytree, workdir / "logs", keep, dirs_exist_ok=True)
        database_url = stack.enter_context(postgres_database(POSTGRES_ADMIN_URL, "parley_hostile"))
        (workdir / "logs").mkdir()
        group = ProcessGroup(log_dir=workdir / "logs")
        stack.callback(group.stop_all)
        site = Site(
            group=group,
            workdir=workdir,
            redis_binary=redis_binary,
            redis_port=free_port(),
            nginx_port=free_port(),
            daphne_ports=[free_port() for _ in range(REPLICAS)],
            database_url=database_url,
        )
        static_root = workdir / "staticfiles"
        unlimited = "1000000/m"
        site.env = base_env(
            DATABASE_URL=database_url,
            REDIS_URL=f"redis://127.0.0.1:{site.redis_port}/0",
            GENERATION_BACKEND="inprocess",
            DJANGO_SECRET_KEY=secrets.token_urlsafe(40),
            DJANGO_DEBUG="false",
            DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
            SERVE_STATIC="false",
            STATIC_ROOT=str(static_root),
            LLM_DEFAULT_PROVIDER="simulated",
            SIMULATED_FIRST_TOKEN_DELAY="0.05",
            WS_RATE_FRAMES_PER_USER=unlimited,
            WS_RATE_FRAMES_PER_ORG=unlimited,
            WS_RATE_SENDS_PER_USER=unlimited,
            WS_RATE_SENDS_PER_ORG=unlimited,
            CACHE_ENABLED="false",
            LOG_LEVEL="INFO",
        )
        try:
            site.start_redis()
            manage("migrate", "--noinput", env=site.env, timeout=180)
            manage("collectstatic", "--noinput", env=site.env, timeout=180)
            site.api_key = (
                manage(
                    "shell",
                    "-c",
                    "from accounts.models import Organisation\n"
                    "from accounts.services import account_create, api_key_create\n"
                    f"user = account_create(username={USERNAME!r}, password={PASSWORD!r})\n"
                    "org = Organisation.objects.get(personal_owner=user)\n"
                    "print(api_key_create(user=user, organisation=org, name='hostile').raw)\n",
                    env=site.env,
                    timeout=120,
                )
                .strip()
                .splitlines()[-1]
            )
            for index, port in enumerate(site.daphne_ports, start=1):
                group.daphne(f"daphne-{index}", port, site.env, as_in_image=True, wait_for=None)
            for index, port in enumerate(site.daphne_ports, start=1):
                proc = group.procs[f"daphne-{index}"]
                wait_until_answers(f"http://127.0.0.1:{port}/healthz", timeout=90, proc=proc)
            start_repository_nginx(
                group,
                nginx,
                workdir=workdir,
                upstream_ports=site.daphne_ports,
                listen_port=site.nginx_port,
                static_root=static_root,
            )
        except BaseException:
            print(site.logs())
            raise
        yield site


@pytest.fixture
def hostile(site: Site) -> Iterator[Site]:
    """The site, with Redis running again after the test."""
    try:
        yield site
    finally:
        if not site.redis_alive():
            site.start_redis()


async def frames_until(ws: ClientConnection, kind: str, timeout: float = 15) -> list[dict]:
    frames = []
    async with asyncio.timeout(timeout):
        while True:
            frames.append(json.loads(await ws.recv()))
            if frames[-1]["type"] == kind:
                return frames


async def pong(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"type": "ping"}))
    assert (await frames_until(ws, "pong"))[-1] == {"type": "pong"}


# --- Item 7: sizes that cross Daphne and nginx ------------------------------------------------


@pytest.mark.parametrize("via", ["nginx", "direct"])
async def test_a_message_over_one_mib_is_closed_with_1009(hostile: Site, via: str) -> None:
    """Daphne's transport limit (1 MiB, the Dockerfile CMD) answers with a close frame."""
    port = None if via == "nginx" else hostile.daphne_ports[0]
    ws = await hostile.socket(port, max_size=None)
    await pong(ws)
    frame = json.dumps({"type": "ping", "pad": "x" * MIB})
    with pytest.raises(ConnectionClosed) as closed:
        await ws.send(frame)
        await asyncio.wait_for(ws.recv(), timeout=15)
    assert closed.value.rcvd is not None, "the server dropped the connection without a close"
    assert closed.value.rcvd.code == 1009


async def test_a_frame_over_the_frame_limit_is_a_bad_frame_on_a_live_socket(hostile: Site) -> None:
    ws = await hostile.socket()
    for raw in (
        json.dumps({"type": "ping", "pad": "x" * (300 * 1024)}),
        "[" * 100_000 + "]" * 100_000,
        '{"type": "send", "conversation": null, "text": "a\\u0000b", "client_id": "c-1"}',
        '{"type": "send", "conversation": null, "text": "hi", "client_id": "\\ud800"}',
    ):
        await ws.send(raw)
        error = (await frames_until(ws, "error"))[-1]
        assert error["code"] == "bad_frame" and error["retryable"] is False, error
        await pong(ws)
    await ws.close()
    assert "Traceback" not in hostile.replica_logs()


def raw_request(port: int, request: bytes, timeout: float = 15) -> bytes:
    """Send raw bytes, read the answer until the server closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks: list[bytes] = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


@pytest.mark.parametrize("via", ["nginx", "direct"])
def test_a_20000_character_url_is_answered_414(hostile: Site, via: str) -> None:
    port = hostile.nginx_port if via == "nginx" else hostile.daphne_ports[0]
    request = (
        f"GET /api/v1/models?q={'a' * 20_000} HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = raw_request(port, request)
    assert answer.startswith(b"HTTP/1.1 414"), answer[:200]


# --- Item 8: a handshake while Redis is down --------------------------------------------------


async def test_a_new_socket_while_redis_is_down_is_told_unavailable_and_closed_4503(
    hostile: Site,
) -> None:
    hostile.group.kill(hostile.redis_name)
    before = hostile.replica_logs().count("Exception inside application")
    for port in (None, hostile.daphne_ports[1]):  # through nginx, and a replica directly
        ws = await hostile.socket(port)
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
        assert frame == {
            "type": "error",
            "code": "unavailable",
            "detail": frame["detail"],
            "retryable": True,
            "message": None,
        }
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), timeout=15)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4503
    assert hostile.replica_logs().count("Exception inside application") == before
    assert "new socket refused while Redis is unreachable" in hostile.replica_logs()

    hostile.start_redis()  # back: a client reconnecting with backoff gets in, on every replica
    for port in hostile.daphne_ports:
        async with asyncio.timeout(30):
            while True:
                ws = await hostile.socket(port)
                try:
                    await pong(ws)
                    break
                except ConnectionClosed as closed:  # not subscribed again yet: told 4503
                    assert closed.rcvd is not None and closed.rcvd.code == 4503
                    await asyncio.sleep(0.5)
        await ws.close()


# --- Item 9: a burst of handshakes ------------------------------------------------------------

BURST = 200
BURST_SECONDS = 2.0
# Past Daphne's default 5 s handshake timeout, within the image's --websocket_connect_timeout.
STALL_SECONDS = 8.0
RECOVERY_SECONDS = 5.0


async def _handshake(site: Site, delay: float) -> tuple[str, ClientConnection | None]:
    await asyncio.sleep(delay)
    try:
        ws = await site.socket(open_timeout=60)
    except InvalidStatus as refused:
        return f"http {refused.response.status_code}", None
    except (OSError, ConnectionClosed, TimeoutError) as error:
        return type(error).__name__, None
    return "open", ws


async def test_a_burst_of_slow_handshakes_does_not_take_the_site_down(hostile: Site) -> None:
    """200 sockets in 2 s through nginx while every replica is slow to authenticate them (the
    API key table locked in PostgreSQL for STALL_SECONDS: a machine too busy to answer in time).
    Daphne waits for them rather than resetting them, nginx keeps every replica in rotation,
    and the site answers within seconds of the stall ending."""
    with psycopg.connect(hostile.database_url, autocommit=True) as lock:
        lock.execute("BEGIN")
        lock.execute("LOCK TABLE accounts_apikey IN ACCESS EXCLUSIVE MODE")
        burst = asyncio.gather(
            *(_handshake(hostile, BURST_SECONDS * i / BURST) for i in range(BURST))
        )
        await asyncio.sleep(STALL_SECONDS)
        lock.execute("COMMIT")
        stall_ended = time.monotonic()
        results = await burst
    outcomes: dict[str, int] = {}
    for outcome, _ in results:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    try:
        async with httpx.AsyncClient(base_url=hostile.base, timeout=RECOVERY_SECONDS) as http:
            while True:
                response = await http.get("/healthz")
                if response.status_code == 200:
                    break
                assert time.monotonic() - stall_ended < RECOVERY_SECONDS, (
                    f"{response.status_code} {response.text[:200]} after the burst: {outcomes}"
                )
                await asyncio.sleep(0.2)
        ws = await hostile.socket()
        await pong(ws)
        await ws.close()
        assert outcomes == {"open": BURST}
        assert "no live upstreams" not in hostile.group.log("nginx")
    finally:
        await asyncio.gather(*(ws.close() for _, ws in results if ws is not None))


# --- Item 2: access that ends reaches sockets on every replica -------------------------------

CLOSE_WITHIN = 5.0


def shell(site: Site, code: str) -> str:
    """Run Python in a separate process against the site's database and Redis."""
    return manage("shell", "-c", code, env=site.env, timeout=120).strip().splitlines()[-1]


def new_key(site: Site) -> tuple[int, str]:
    out = shell(
        site,
        "from accounts.models import Organisation, User\n"
        "from accounts.services import api_key_create\n"
        f"user = User.objects.get(username={USERNAME!r})\n"
        "org = Organisation.objects.get(personal_owner=user)\n"
        "new = api_key_create(user=user, organisation=org, name='doomed')\n"
        "print(new.key.pk, new.raw)\n",
    )
    key_id, raw = out.split()
    return int(key_id), raw


async def closed_code(ws: ClientConnection) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(CLOSE_WITHIN):
            while True:
                await ws.recv()
    assert closed.value.rcvd is not None, "dropped without a close frame"
    return closed.value.rcvd.code


def browser(site: Site, port: int) -> httpx.Client:
    """A signed-in browser talking to one replica (cookies, CSRF header, Origin)."""
    base = f"http://127.0.0.1:{port}"
    cookie = sign_in_cookie(base, USERNAME, PASSWORD)
    cookies = dict(part.split("=", 1) for part in cookie.split("; "))
    return httpx.Client(
        base_url=base,
        cookies=cookies,
        headers={"X-CSRFToken": cookies["csrftoken"], "Origin": base, "Referer": f"{base}/"},
        timeout=30,
    )


async def test_a_key_revoked_on_one_replica_closes_its_socket_on_another(hostile: Site) -> None:
    replica_a, replica_b = hostile.daphne_ports[0], hostile.daphne_ports[1]
    key_id, raw = new_key(hostile)
    ws = await connect(
        hostile.ws_url(replica_a), additional_headers={"Authorization": f"Bearer {raw}"}
    )
    await pong(ws)
    with browser(hostile, replica_b) as http:
        response = http.post(f"/accounts/keys/{key_id}/revoke")
        assert response.status_code == 302, response.text[:300]
    assert await closed_code(ws) == 4401


async def test_signing_out_on_one_replica_closes_the_sessions_socket_on_another(
    hostile: Site,
) -> None:
    replica_a, replica_b = hostile.daphne_ports[0], hostile.daphne_ports[2]
    with browser(hostile, replica_b) as http:
        cookie = "; ".join(f"{name}={value}" for name, value in http.cookies.items())
        ws = await connect(
            hostile.ws_url(replica_a),
            origin=Origin(f"http://127.0.0.1:{replica_a}"),
            additional_headers={"Cookie": cookie},
        )
        await pong(ws)
        assert http.post("/accounts/logout/").status_code == 302
    assert await closed_code(ws) == 4401


async def test_a_signed_out_session_cannot_reconnect_from_the_handshake_cache(
    hostile: Site,
) -> None:
    """Its handshake was cached (Redis) on connecting; signing out elsewhere forgets it, so a
    reconnect, on any replica, is refused rather than answered from the cache."""
    replica_a, replica_b = hostile.daphne_ports[0], hostile.daphne_ports[1]
    with browser(hostile, replica_b) as http:
        cookie = "; ".join(f"{name}={value}" for name, value in http.cookies.items())
        for port in (replica_a, replica_a):  # the second handshake is answered from the cache
            ws = await connect(
                hostile.ws_url(port),
                origin=Origin(f"http://127.0.0.1:{port}"),
                additional_headers={"Cookie": cookie},
            )
            await pong(ws)
            await ws.close()
        assert http.post("/accounts/logout/").status_code == 302
    for port in (replica_a, replica_b):
        with pytest.raises(InvalidStatus) as refused:
            await connect(
                hostile.ws_url(port),
                origin=Origin(f"http://127.0.0.1:{port}"),
                additional_headers={"Cookie": cookie},
            )
        assert refused.value.response.status_code == 403


async def test_a_membership_removed_elsewhere_closes_the_members_socket(hostile: Site) -> None:
    """Removed by another process (a shell, as an admin's script would), socket on a replica."""
    team, raw = shell(
        hostile,
        "from accounts.models import Membership, User\n"
        "from accounts.services import api_key_create, organisation_create\n"
        f"user = User.objects.get(username={USERNAME!r})\n"
        "boss = User.objects.create_user(username='hostile-boss', password='x')\n"
        "team = organisation_create(name='Team', admin=boss)\n"
        "Membership.objects.create(user=user, organisation=team, role='member')\n"
        "print(team.pk, api_key_create(user=user, organisation=team, name='team').raw)\n",
    ).split()
    ws = await connect(
        hostile.ws_url(hostile.daphne_ports[1]),
        additional_headers={"Authorization": f"Bearer {raw}"},
    )
    await pong(ws)
    shell(
        hostile,
        "from accounts.models import Membership\n"
        f"print(Membership.objects.filter(organisation_id={team}, user__username={USERNAME!r})"
        ".delete())\n",
    )
    assert await closed_code(ws) == 4403
