"""The production topology on loopback, in one call.

nginx (the repository's nginx.conf) → N Daphne replicas (the image's own command line) → a
private redis-server (channel layer, cache, Celery broker) ← the Celery worker compose.yaml runs
for the provider, and beat when asked; a fresh PostgreSQL database holds every row. Parts are
known by role (daphne-1 … daphne-N, worker, beat, redis, nginx): a test kills one and starts it
again, and the restarted process gets a name of its own (daphne-1.2) so every log is kept.

    with production_topology(replicas=3, provider="simulated", beat=True) as topo:
        topo.kill("daphne-2"); topo.restore()
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import secrets
import shutil
import signal
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tests.harness.nginx import nginx_conf, start_nginx
from tests.harness.processes import (
    REPO,
    ProcessGroup,
    base_env,
    free_port,
    manage,
    require_binary,
    start_redis_server,
    wait_until_answers,
)
from tests.harness.services import (
    POSTGRES_ADMIN_URL,
    POSTGRES_HOST,
    POSTGRES_PORT,
    postgres_database,
    require_service,
)
from tests.harness.sockets import sign_in_cookie

# Deadlines for a process to come up: generous, since a busy machine starts Django slowly;
# they only run out when something is broken.
START_TIMEOUT = 180.0


@dataclass
class Topology:
    group: ProcessGroup
    workdir: Path
    database_url: str
    redis_binary: str
    redis_port: int
    daphne_ports: list[int]
    nginx_port: int | None  # None: clients talk to the first replica directly
    worker_service: str  # compose.yaml's worker for the provider
    as_in_image: bool  # Daphne with the Dockerfile's CMD, or `make run`'s plain command
    env: dict[str, str] = field(default_factory=dict)
    cookie: str = ""  # the signed-in user's, when the topology made one
    # role -> names of its processes, latest last (restarts)
    roles: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    @property
    def base(self) -> str:
        port = self.nginx_port if self.nginx_port is not None else self.daphne_ports[0]
        return f"http://127.0.0.1:{port}"

    @property
    def url(self) -> str:
        """The site's address, as a browser test's server gives it (tests/browser/support.py)."""
        return self.base

    @property
    def ws_url(self) -> str:
        return f"{self.base.replace('http://', 'ws://', 1)}/ws/chat/"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}"

    @property
    def static_root(self) -> Path:
        return self.workdir / "staticfiles"

    @property
    def replicas(self) -> list[str]:
        return [f"daphne-{index}" for index in range(1, len(self.daphne_ports) + 1)]

    def current(self, role: str) -> str:
        return self.roles[role][-1]

    def alive(self, role: str) -> bool:
        return self.group.procs[self.current(role)].poll() is None

    def pid(self, role: str) -> int:
        return self.group.procs[self.current(role)].pid

    def _name(self, role: str) -> str:
        name = role if not self.roles[role] else f"{role}.{len(self.roles[role]) + 1}"
        self.roles[role].append(name)
        return name

    def kill(self, role: str, sig: int = signal.SIGKILL) -> None:
        """Signal the role's whole process group (a Celery worker with its pool, too)."""
        self.group.kill(self.current(role), sig)

    # -- starting (and restarting) each part --

    def start_redis(self) -> None:
        """The private redis-server, on its port: a restart comes back empty (no persistence)."""
        start_redis_server(
            self.group, self._name("redis"), self.redis_binary, self.redis_port, self.workdir
        )

    def start_replica(self, role: str, wait: bool = True) -> None:
        port = self.daphne_ports[self.replicas.index(role)]
        self.group.daphne(self._name(role), port, self.env, as_in_image=self.as_in_image)
        if wait:
            self.wait_for_replica(role)

    def wait_for_replica(self, role: str) -> None:
        port = self.daphne_ports[self.replicas.index(role)]
        proc = self.group.procs[self.current(role)]
        wait_until_answers(f"http://127.0.0.1:{port}/healthz", timeout=START_TIMEOUT, proc=proc)

    def start_worker(
        self, role: str = "worker", *, env: Mapping[str, str] = {}, extra: Sequence[str] = ()
    ) -> None:
        """The provider's Celery worker as compose.yaml runs it; `env` and `extra` flags on top."""
        name = self._name(role)
        worker_env = {**self.env, **env}
        self.group.celery(name, self.worker_service, worker_env, extra=extra, timeout=START_TIMEOUT)

    def start_beat(self) -> None:
        schedule = self.workdir / f"beat-schedule-{secrets.token_hex(3)}"
        self.group.celery(
            self._name("beat"),
            "beat",
            self.env,
            extra=(f"--schedule={schedule}",),  # the last --schedule wins: not /tmp's
            ready="beat: Starting...",
            timeout=START_TIMEOUT,
        )

    def restore(self) -> None:
        """Start again every part that is down (restarted parts keep their new pids)."""
        if not self.alive("redis"):
            self.start_redis()
        for role in self.replicas:
            if not self.alive(role):
                self.start_replica(role)
        if "worker" in self.roles and not self.alive("worker"):
            self.start_worker()
        if "beat" in self.roles and not self.alive("beat"):
            self.start_beat()

    # -- what the processes said --

    def logs(self, lines: int = 80) -> str:
        parts = []
        for names in self.roles.values():
            for name in names:
                tail = "\n".join(self.group.log(name).splitlines()[-lines:])
                parts.append(f"----- {name} (last {lines} lines) -----\n{tail}")
        return "\n".join(parts)

    def log(self, role: str) -> str:
        return "".join(self.group.log(name) for name in self.roles[role])

    @contextmanager
    def logs_on_failure(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            print(self.logs())
            raise

    def wsconnects(self) -> dict[str, int]:
        """WebSockets each replica accepted so far (Daphne logs WSCONNECT)."""
        return {role: self.log(role).count('"WSCONNECT /ws/chat/"') for role in self.replicas}

    async def replica_of_new_socket(self, before: dict[str, int], timeout: float = 30) -> str:
        """The replica that accepted the socket just opened (`before`: `wsconnects()` then)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for role, count in self.wsconnects().items():
                if count > before[role]:
                    return role
            await asyncio.sleep(0.02)
        raise AssertionError("no replica logged the new WebSocket")

    def ws_upstreams(self, since: int = 0) -> list[str]:
        """Upstream addresses of the WebSocket handshakes nginx logged after offset `since` of
        its log (101 = upgraded; nginx logs a WebSocket when it closes)."""
        pattern = re.compile(r'"GET /ws/chat/ HTTP/1\.1" 101 .* upstream=(\S+)')
        return [m.group(1) for m in pattern.finditer(self.log("nginx")[since:])]

    # -- PostgreSQL --

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.database_url, connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()

    def reply_rows(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        """Messages by id as PostgreSQL holds them; every id must exist."""
        columns = (
            "id",
            "role",
            "status",
            "provider",
            "content",
            "seq",
            "error_code",
            "started_at",
            "finished_at",
            "routing",
        )
        rows = self.query(f"SELECT {', '.join(columns)} FROM chat_message WHERE id = ANY(%s)", ids)
        found = {row[0]: dict(zip(columns, row, strict=True)) for row in rows}
        assert set(found) == set(ids), f"missing rows: {set(ids) - set(found)}"
        return found

    def row(self, message_id: int) -> dict[str, Any]:
        return self.reply_rows([message_id])[message_id]

    @contextmanager
    def alias_served_by(
        self, alias: str, base_url: str, *, windowed: dict[str, int] | None = None
    ) -> Iterator[None]:
        """Serve `alias` from an OpenAI-compatible upstream while inside (admin rows, as an
        operator adds them: an alias any row names is served by rows only), then as before.
        `windowed`: more aliases on the same upstream, each with its deployment's context
        window (tokens)."""
        more = "".join(
            f"Deployment.objects.create(provider=p, alias={name!r}, model='upstream-model', "
            f"context_window={window}); "
            for name, window in (windowed or {}).items()
        )
        manage(
            "shell",
            "-c",
            "from llm.models import Deployment, Provider; "
            "p = Provider.objects.create(name='harness-upstream', kind='openai-compatible', "
            f"base_url={base_url!r}, first_token_timeout=60, inter_token_timeout=60); "
            f"{more}"
            f"Deployment.objects.create(provider=p, alias={alias!r}, model='upstream-model')",
            env=self.env,
            timeout=START_TIMEOUT,
        )
        try:
            yield
        finally:
            manage(
                "shell",
                "-c",
                "from llm.models import Provider; "
                "Provider.objects.filter(name='harness-upstream').delete()",
                env=self.env,
                timeout=START_TIMEOUT,
            )

    def prompt_of(self, reply_id: int) -> str:
        (row,) = self.query(
            "SELECT u.content FROM chat_message r JOIN chat_message u ON u.id = r.reply_to_id "
            "WHERE r.id = %s",
            reply_id,
        )
        return str(row[0])


def shows_logs(test: Callable[..., Any]) -> Callable[..., Any]:
    """For an async test taking the topology as `topo`: on failure, print every log's tail."""

    @functools.wraps(test)
    async def wrapper(topo: Topology) -> None:
        with topo.logs_on_failure():
            await test(topo)

    return wrapper


@contextmanager
def production_topology(
    *,
    replicas: int = 2,
    generation: Literal["celery", "inprocess"] = "celery",
    provider: str = "simulated",
    env: Mapping[str, str] = {},
    worker: bool = True,
    beat: bool = False,
    nginx: bool = True,
    as_in_image: bool = True,
    user: tuple[str, str] | None = None,
    name: str = "topology",
    layer_urls: Sequence[str] = (),
) -> Iterator[Topology]:
    """Start the topology, yield it, stop every process and drop the database.

    `generation="celery"` starts the worker compose.yaml runs for `provider` (worker-local for
    the bundled model, worker-remote for the others) unless `worker=False` (a caller that starts
    its own with `start_worker`); `beat` adds the reaper's scheduler. `nginx=False` leaves
    nginx out (clients then talk to daphne-1). `user` (username, password) is created and signed
    in like a browser: `topo.cookie`. `env` goes on top of the production environment built
    here. PARLEY_KEEP_LOGS=DIR copies every process's log there at the end. `layer_urls`: more
    Redis servers for the channel layer, sharded after the topology's own.
    """
    nginx_binary = require_binary("nginx") if nginx else ""
    redis_binary = require_binary("redis-server")
    require_service("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix=f"parley-{name}-"))
        workdir.chmod(0o755)  # nginx workers (another user) read the static root
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        if keep := os.environ.get("PARLEY_KEEP_LOGS"):
            stack.callback(shutil.copytree, workdir / "logs", keep, dirs_exist_ok=True)
        database_url = stack.enter_context(
            postgres_database(POSTGRES_ADMIN_URL, f"parley_{name.replace('-', '_')}")
        )
        (workdir / "logs").mkdir()
        group = ProcessGroup(log_dir=workdir / "logs")
        stack.callback(group.stop_all)  # runs first: processes stop before the database goes
        topo = Topology(
            group=group,
            workdir=workdir,
            database_url=database_url,
            redis_binary=redis_binary,
            redis_port=free_port(),
            daphne_ports=[free_port() for _ in range(replicas)],
            nginx_port=free_port() if nginx else None,
            worker_service="worker-local" if provider == "local" else "worker-remote",
            as_in_image=as_in_image,
        )
        production = {
            "DATABASE_URL": database_url,
            "REDIS_URL": f"{topo.redis_url}/0",
            "CELERY_BROKER_URL": f"{topo.redis_url}/1" if generation == "celery" else "",
            "GENERATION_BACKEND": generation,
            "DJANGO_DEBUG": "false",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DJANGO_CSRF_TRUSTED_ORIGINS": "",
            "BEHIND_TLS_PROXY": "false",
            "SESSION_COOKIE_SECURE": "false",
            "CSRF_COOKIE_SECURE": "false",
            "SERVE_STATIC": "false",  # as in production: nginx serves /static/
            "STATIC_ROOT": str(topo.static_root),
            "LLM_DEFAULT_PROVIDER": provider,
            "LOG_LEVEL": "INFO",
        }
        if layer_urls:
            production["CHANNEL_LAYER_REDIS_URLS"] = ",".join([f"{topo.redis_url}/0", *layer_urls])
        topo.env = base_env(**{**production, **env})
        with topo.logs_on_failure():
            _start(topo, generation=generation, worker=worker, beat=beat, user=user)
            if nginx:
                _start_nginx(topo, nginx_binary)
            if user is not None:
                topo.cookie = sign_in_cookie(topo.base, *user)
        yield topo


def _start(
    topo: Topology, *, generation: str, worker: bool, beat: bool, user: tuple[str, str] | None
) -> None:
    topo.start_redis()
    manage("migrate", "--noinput", env=topo.env, timeout=300)
    if topo.nginx_port is not None:
        manage("collectstatic", "--noinput", env=topo.env, timeout=300)
    if user is not None:
        username, password = user
        manage(
            "shell",
            "-c",
            "from accounts.models import User; "
            f"User.objects.create_user(username={username!r}, password={password!r})",
            env=topo.env,
            timeout=300,
        )
    for role in topo.replicas:  # started together, waited for below
        topo.start_replica(role, wait=False)
    if generation == "celery" and worker:
        topo.start_worker()
    if generation == "celery" and beat:
        topo.start_beat()
    for role in topo.replicas:
        topo.wait_for_replica(role)


def _start_nginx(topo: Topology, binary: str) -> None:
    assert topo.nginx_port is not None
    nginx_dir = topo.workdir / "nginx"
    nginx_dir.mkdir()
    conf = nginx_dir / "nginx.conf"
    conf.write_text(
        nginx_conf(
            (REPO / "nginx.conf").read_text(),
            upstream_ports=topo.daphne_ports,
            listen_port=topo.nginx_port,
            static_root=topo.static_root,
            prefix=nginx_dir,
        )
    )
    start_nginx(topo.group, topo._name("nginx"), binary, conf, nginx_dir, topo.nginx_port)
