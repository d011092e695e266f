"""Processes on loopback: started with an explicit environment and the command line production
uses (the Dockerfile's CMD, compose.yaml's commands), waited for until they answer, and stopped
together by `ProcessGroup.stop_all()`."""

from __future__ import annotations

import base64
import json
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
IN_CI = os.environ.get("CI") == "true"
ASGI_APP = "project.asgi:application"

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
    # Observability: a test's processes get their own (tests/integration/test_metrics_topology.py).
    "PROMETHEUS_MULTIPROC_DIR",
    "METRICS_TOKEN",
    "METRICS_ALLOWED_NETWORKS",
    "METRICS_PORT",
    "LOG_FORMAT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
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
    """Until `url` answers below 500; fails early if `proc` exits."""
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
    """`manage.py ARGS` in the repository; its stdout, or an error with both streams."""
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


def daphne_argv(port: int, *, as_in_image: bool, app: str = ASGI_APP) -> list[str]:
    """Daphne on 127.0.0.1:`port`. `as_in_image`: the app image's CMD (the Dockerfile's last
    CMD line), so a test runs Daphne with exactly the flags production uses (timeouts, pings,
    proxy headers); otherwise `make run`'s plain command."""
    if not as_in_image:
        return [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app]
    commands = re.findall(r"^CMD (\[.*\])\s*$", (REPO / "Dockerfile").read_text(), flags=re.M)
    if not commands:
        raise AssertionError("Dockerfile: no CMD [...] line")
    argv = list(json.loads(commands[-1]))
    if argv[0] != "daphne" or "-b" not in argv or "-p" not in argv or argv[-1] != ASGI_APP:
        raise AssertionError(f"Dockerfile CMD is not a daphne -b HOST -p PORT APP command: {argv}")
    argv[argv.index("-b") + 1] = "127.0.0.1"
    argv[argv.index("-p") + 1] = str(port)
    return [PYTHON, "-m", "daphne", *argv[1:-1], app]


def image_env() -> dict[str, str]:
    """The Dockerfile's ENV settings that change how the interpreter runs (PYTHONMALLOC), for
    Daphne started as in the image; a caller's env still wins (bench `--env`)."""
    text = (REPO / "Dockerfile").read_text()
    return dict(re.findall(r"^\s*(?:ENV\s+)?(PYTHONMALLOC)=(\S+)", text, flags=re.M))


def celery_argv(service: str, *, node_name: str) -> list[str]:
    """A Celery command from compose.yaml (`worker-remote`, `worker-local`, `beat`), run by
    this Python; a worker gets a node name of its own."""
    import yaml

    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    command = list(compose["services"][service]["command"])
    if command[0] != "celery":
        raise AssertionError(f"compose.yaml {service}: not a celery command: {command}")
    argv = [PYTHON, "-m", "celery", *command[1:]]
    if "worker" in command:
        argv += ["-n", f"{node_name}-{secrets.token_hex(3)}@%h"]
    return argv


@dataclass
class ProcessGroup:
    """Processes a test started, with their logs, stopped together at the end."""

    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        """`argv` in its own session (a kill reaches its children), output to `name`.log."""
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

    def wait_for_log(self, name: str, needle: str, timeout: float = 60.0) -> None:
        """Until the process's log contains `needle`; fails early if the process exits."""
        proc = self.procs[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log(name):
                return
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}) before logging {needle!r}")
            time.sleep(0.2)
        raise TimeoutError(f"{name} did not log {needle!r} within {timeout}s")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal the process's whole group (a Celery worker with its pool, too) and reap it."""
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

    def daphne(
        self,
        name: str,
        port: int,
        env: Mapping[str, str],
        *,
        as_in_image: bool = False,
        app: str = ASGI_APP,
        wait_for: str | None = "/healthz",
    ) -> subprocess.Popen[bytes]:
        """Daphne (see `daphne_argv`); returns once `wait_for` answers (None: at once, so that
        several start together and are waited for after)."""
        if as_in_image:
            env = {**image_env(), **env}
        proc = self.start(name, daphne_argv(port, as_in_image=as_in_image, app=app), env)
        if wait_for is not None:
            wait_until_answers(f"http://127.0.0.1:{port}{wait_for}", timeout=60, proc=proc)
        return proc

    def celery(
        self,
        name: str,
        service: str,
        env: Mapping[str, str],
        *,
        extra: Sequence[str] = (),
        ready: str = " ready.",
        timeout: float = 90.0,
    ) -> subprocess.Popen[bytes]:
        """compose.yaml's `service` command (plus `extra` flags: for an option given twice,
        the last wins); returns once it logs `ready`."""
        proc = self.start(name, [*celery_argv(service, node_name=name), *extra], env)
        self.wait_for_log(name, ready, timeout=timeout)
        return proc


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
