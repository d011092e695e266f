"""Real processes on loopback for integration tests: Daphne, Celery, nginx, llama.cpp's server.

Each helper starts a process with an explicit environment (tests never read the developer's
own), waits until it answers, and is stopped by `ProcessGroup.stop_all()`.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
IN_CI = os.environ.get("CI") == "true"

# Variables a developer may have set that must not leak into a test's processes.
_SCRUBBED = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "GENERATION_BACKEND",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "OPENAI_COMPATIBLE_BASE_URL",
    "LLM_DEFAULT_PROVIDER",
    "DJANGO_SETTINGS_MODULE",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Production settings refuse weak secrets (project/security.py). One strong pair per test run,
# so every process a test starts (setup scripts, replicas, workers) shares sessions and can
# read the provider keys the others stored.
_SECRET_KEY = secrets.token_urlsafe(50)
_ENCRYPTION_KEY = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()  # a Fernet key


def base_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update({"DJANGO_SETTINGS_MODULE": "project.settings", "PYTHONUNBUFFERED": "1"})
    env.update({"DJANGO_SECRET_KEY": _SECRET_KEY, "PARLEY_ENCRYPTION_KEY": _ENCRYPTION_KEY})
    env.update(overrides)
    return env


def wait_until_answers(
    url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
            last = exc
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


def manage(*args: str, env: Mapping[str, str], timeout: float = 300) -> str:
    result = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=REPO,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@dataclass
class ProcessGroup:
    """Processes a test started, with their logs, stopped together at the end."""

    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "wb")
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill(name)

    def daphne(self, name: str, port: int, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        proc = self.start(
            name,
            [
                PYTHON,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "project.asgi:application",
            ],
            env,
        )
        wait_until_answers(f"http://127.0.0.1:{port}/healthz", timeout=60, proc=proc)
        return proc


def require_binary(name: str) -> str:
    """The path of a system binary; missing ones fail in CI and skip elsewhere."""
    import pytest

    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is not installed; .ci/run must install it")
        pytest.skip(f"{name} is not installed")
    return path


# --- The production topology on loopback (tests/integration/test_topology.py) ----------------

POSTGRES_ADMIN_URL = os.environ.get(
    "PARLEY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
_REDIS_LOCK_KEY = "parley-e2e:lock"
_REDIS_MARKER_KEY = "parley-e2e:marker"


def require_service(name: str, host: str, port: int, timeout: float = 3.0) -> None:
    """A TCP service the test needs (PostgreSQL, Redis): missing fails in CI, skips elsewhere."""
    import pytest

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        message = f"{name} is not reachable on {host}:{port} ({exc})"
    if IN_CI:
        pytest.fail(f"{message}; .ci/run must start it")
    pytest.skip(message)


@contextmanager
def postgres_database(
    admin_url: str = POSTGRES_ADMIN_URL, prefix: str = "parley_e2e"
) -> Iterator[str]:
    """A fresh, empty PostgreSQL database; yields its URL and drops it (with its sessions) after."""
    import psycopg
    from psycopg import sql

    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def redis_database(candidates: range = range(8, 16), ttl: int = 900) -> Iterator[int]:
    """Claim an empty Redis database index for one test run; flushed at claim and at release.

    Concurrent runs (several developers on one machine) each get their own index, so their
    channel-layer groups (conversation.1, …) and Celery queues never cross. A database holding
    someone else's keys is skipped; one left by a crashed run (marker, expired lock) is reused.
    """
    import redis

    token = secrets.token_hex(8)
    for index in candidates:
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=index, socket_timeout=5)
        if not client.set(_REDIS_LOCK_KEY, token, nx=True, ex=ttl):
            continue
        if cast(int, client.dbsize()) > 1 and not client.exists(_REDIS_MARKER_KEY):
            client.delete(_REDIS_LOCK_KEY)
            client.close()
            continue
        with client.pipeline(transaction=True) as pipe:
            pipe.flushdb()
            pipe.set(_REDIS_LOCK_KEY, token, ex=ttl)
            pipe.set(_REDIS_MARKER_KEY, "1")
            pipe.execute()
        try:
            yield index
        finally:
            if client.get(_REDIS_LOCK_KEY) == token.encode():
                client.flushdb()
            client.close()
        return
    raise RuntimeError(f"no free Redis database among {list(candidates)}")


def wait_for_log(
    group: ProcessGroup,
    name: str,
    needle: str,
    timeout: float = 60.0,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Wait until a process's log contains `needle`; fail early if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in group.log(name):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before logging {needle!r}")
        time.sleep(0.2)
    raise TimeoutError(f"{name} did not log {needle!r} within {timeout}s")


def start_daphne_behind_proxy(
    group: ProcessGroup, name: str, port: int, env: Mapping[str, str]
) -> subprocess.Popen[bytes]:
    """Daphne as the image runs it (--proxy-headers), not waited for: start several, then wait."""
    return group.start(
        name,
        [
            PYTHON,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "--proxy-headers",
            "project.asgi:application",
        ],
        env,
    )


def start_celery_worker(
    group: ProcessGroup,
    name: str,
    env: Mapping[str, str],
    queues: str = "llm-remote,llm-local",
    concurrency: int = 2,
    timeout: float = 90.0,
) -> subprocess.Popen[bytes]:
    """A Celery worker consuming `queues`; returns once it logs that it is ready."""
    proc = group.start(
        name,
        [
            PYTHON,
            "-m",
            "celery",
            "-A",
            "project",
            "worker",
            "-Q",
            queues,
            "-c",
            str(concurrency),
            "--loglevel=INFO",
            "-n",
            f"{name}-{secrets.token_hex(3)}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        env,
    )
    wait_for_log(group, name, " ready.", timeout=timeout, proc=proc)
    return proc


def nginx_conf_for_test(
    source: str, *, upstream_ports: list[int], listen_port: int, static_root: Path, prefix: Path
) -> str:
    """The repository's nginx.conf pointed at loopback processes; every other line unchanged.

    Rewrites the upstream `server daphne-N:8000` lines (one per port, in order), `listen 80;`,
    the static alias, and adds temp paths under `prefix`. Fails loudly when the file no longer
    has the shape this expects, rather than testing a config that production would not run.
    """
    servers = list(re.finditer(r"^(\s*)server daphne-\d+:8000\b", source, flags=re.M))
    if len(servers) != len(upstream_ports):
        raise AssertionError(
            f"nginx.conf has {len(servers)} daphne upstream servers, test has {len(upstream_ports)}"
        )
    ports = iter(upstream_ports)
    text = re.sub(
        r"^(\s*)server daphne-\d+:8000\b",
        lambda m: f"{m.group(1)}server 127.0.0.1:{next(ports)}",
        source,
        flags=re.M,
    )
    replacements = [
        (r"^(\s*)listen 80;", rf"\g<1>listen 127.0.0.1:{listen_port};"),
        (r"^(\s*)alias /app/staticfiles/;", rf"\g<1>alias {static_root}/;"),
    ]
    for pattern, replacement in replacements:
        text, count = re.subn(pattern, replacement, text, flags=re.M)
        if count != 1:
            raise AssertionError(f"nginx.conf: expected one line matching {pattern!r}")
    temp_paths = "".join(
        f"    {kind}_temp_path {prefix / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text, count = re.subn(r"^http \{\n", f"http {{\n{temp_paths}", text, flags=re.M)
    if count != 1:
        raise AssertionError("nginx.conf: expected one `http {` line")
    return text


def start_nginx(
    group: ProcessGroup, name: str, binary: str, conf: Path, prefix: Path, port: int
) -> subprocess.Popen[bytes]:
    """nginx in the foreground with its own prefix and pid file; returns once it answers."""
    test = subprocess.run(
        [
            binary,
            "-t",
            "-p",
            str(prefix),
            "-c",
            str(conf),
            "-e",
            "stderr",
            "-g",
            f"pid {prefix / 'nginx.pid'};",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if test.returncode != 0:
        raise RuntimeError(f"nginx -t failed:\n{test.stderr}")
    proc = group.start(
        name,
        [
            binary,
            "-p",
            str(prefix),
            "-c",
            str(conf),
            "-e",
            "stderr",
            "-g",
            f"daemon off; pid {prefix / 'nginx.pid'};",
        ],
        os.environ,
    )
    wait_until_answers(f"http://127.0.0.1:{port}/nginx-health", timeout=20, proc=proc)
    return proc


# --- Fault tests (tests/integration/test_faults.py) and the benchmark (bench/) ---------------
# Processes started with the argv production uses (the Dockerfile's CMD, compose.yaml's worker
# commands), a private redis-server a test may stop and restart, and nginx over N replicas.


def start_redis_server(
    group: ProcessGroup, name: str, binary: str, port: int, workdir: Path
) -> subprocess.Popen[bytes]:
    """A private redis-server on loopback without persistence; returns once it answers PING.

    A test that stops Redis must never touch the machine's shared one on 6379.
    """
    proc = group.start(
        name,
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        os.environ,
    )
    wait_for_redis(port, timeout=15, proc=proc)
    return proc


def wait_for_redis(
    port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    import redis

    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"redis-server on {port} exited with {proc.returncode}")
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        try:
            if client.ping():
                return
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
        finally:
            client.close()
        time.sleep(0.1)


def daphne_argv_from_dockerfile(port: int) -> list[str]:
    """The app image's CMD (the Dockerfile's last CMD line) bound to 127.0.0.1:`port`, so a
    test runs Daphne with exactly the flags production uses (timeouts, pings, proxy headers)."""
    import json

    commands = re.findall(r"^CMD (\[.*\])\s*$", (REPO / "Dockerfile").read_text(), flags=re.M)
    if not commands:
        raise AssertionError("Dockerfile: no CMD [...] line")
    argv = list(json.loads(commands[-1]))
    if argv[0] != "daphne" or "-b" not in argv or "-p" not in argv:
        raise AssertionError(f"Dockerfile CMD is not a daphne -b HOST -p PORT command: {argv}")
    argv[argv.index("-b") + 1] = "127.0.0.1"
    argv[argv.index("-p") + 1] = str(port)
    return [PYTHON, "-m", "daphne", *argv[1:]]


def start_daphne_as_in_image(
    group: ProcessGroup, name: str, port: int, env: Mapping[str, str]
) -> subprocess.Popen[bytes]:
    """Daphne with the image's own command line; not waited for (start several, then wait)."""
    return group.start(name, daphne_argv_from_dockerfile(port), env)


def celery_argv_from_compose(service: str, *, node_name: str) -> list[str]:
    """A Celery command from compose.yaml (`worker-remote`, `beat`, ...) for this machine."""
    import yaml

    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    command = list(compose["services"][service]["command"])
    if command[0] != "celery":
        raise AssertionError(f"compose.yaml {service}: not a celery command: {command}")
    argv = [PYTHON, "-m", "celery", *command[1:]]
    if "worker" in command:
        argv += ["-n", f"{node_name}-{secrets.token_hex(3)}@%h"]
    return argv


def start_celery_from_compose(
    group: ProcessGroup,
    name: str,
    service: str,
    env: Mapping[str, str],
    *,
    extra: tuple[str, ...] = (),
    ready: str = " ready.",
    timeout: float = 90.0,
) -> subprocess.Popen[bytes]:
    """compose.yaml's `service` command as a process; returns once it logs `ready`."""
    argv = celery_argv_from_compose(service, node_name=name) + list(extra)
    proc = group.start(name, argv, env)
    wait_for_log(group, name, ready, timeout=timeout, proc=proc)
    return proc


def nginx_conf_for_replicas(
    source: str, *, upstream_ports: list[int], listen_port: int, static_root: Path, prefix: Path
) -> str:
    """`nginx_conf_for_test` for any number of replicas: the first upstream `server daphne-N`
    line is the template for one line per port (same max_fails/fail_timeout), the others go."""
    lines = source.splitlines(keepends=True)
    servers = [i for i, line in enumerate(lines) if re.match(r"^\s*server daphne-\d+:8000\b", line)]
    if not servers or servers != list(range(servers[0], servers[0] + len(servers))):
        raise AssertionError("nginx.conf: expected consecutive `server daphne-N:8000` lines")
    template = lines[servers[0]]
    expanded = [
        re.sub(r"daphne-\d+:8000", f"daphne-{index}:8000", template)
        for index in range(1, len(upstream_ports) + 1)
    ]
    text = "".join(lines[: servers[0]] + expanded + lines[servers[-1] + 1 :])
    return nginx_conf_for_test(
        text,
        upstream_ports=upstream_ports,
        listen_port=listen_port,
        static_root=static_root,
        prefix=prefix,
    )


def sign_in_cookie(base: str, username: str, password: str) -> str:
    """Sign in like a browser (CSRF cookie, POST with Origin and Referer); returns the Cookie
    header a WebSocket client sends."""
    import httpx

    with httpx.Client(base_url=base, timeout=30) as client:
        page = client.get("/accounts/login/")
        assert page.status_code == 200, page.text
        response = client.post(
            "/accounts/login/",
            data={
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": client.cookies["csrftoken"],
            },
            headers={"Referer": f"{base}/accounts/login/", "Origin": base},
        )
        assert response.status_code == 302, f"sign-in failed ({response.status_code})"
        home = client.get(response.headers["location"])
        assert home.status_code == 200, home.status_code
        return "; ".join(f"{name}={value}" for name, value in client.cookies.items())
