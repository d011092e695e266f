"""llama.cpp's OpenAI-compatible server on loopback, with the bundled SmolLM2 model.

Use the session fixture in a test module:

    from tests.llama_server import llama_server_fixture  # noqa: F401

    def test_something(llama_server): ...

One server is started per pytest process, however many modules import the fixture, and is
stopped when the session ends. Outside CI a server that cannot start skips the tests that need
it; in CI (CI=true) it fails them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness.processes import IN_CI, PYTHON, REPO, base_env, free_port, wait_until_answers

START_TIMEOUT = 60.0


@dataclass
class LlamaServer:
    """A running `python -m llama_cpp.server` and what was measured starting it."""

    port: int
    model_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes] = field(repr=False)
    started_in: float = 0.0  # seconds from spawn until /v1/models answered
    warmed_in: float = 0.0  # seconds the first (one-token) completion took

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as base_url."""
        return f"{self.url}/v1"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def post(self, path: str, payload: dict, timeout: float = 60.0) -> dict:
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def tokenize(self, text: str) -> list[int]:
        """The model's own tokens for a text (SmolLM2 adds no BOS token)."""
        return list(self.post("/extras/tokenize", {"input": text})["tokens"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def model_path() -> Path:
    from llm.providers.local import bundled_model_path

    return bundled_model_path()


def start_llama_server(
    log_dir: Path, *, n_ctx: int = 2048, timeout: float = START_TIMEOUT, warm: bool = True
) -> LlamaServer:
    """Start the server on a free loopback port and wait until it answers; raise if it can't.

    `warm` sends one one-token completion first: the first request after start is several
    seconds slower than the rest, which would otherwise land on whichever test runs first.
    """
    path = model_path()
    if not path.is_file():
        raise FileNotFoundError(f"bundled model not found: {path}")
    port = free_port()
    log_path = log_dir / f"llama-server-{port}.log"
    argv = [
        PYTHON,
        "-m",
        "llama_cpp.server",
        "--model",
        str(path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--verbose",
        "False",
    ]
    began = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=base_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LlamaServer(port=port, model_path=path, log_path=log_path, proc=proc)
    try:
        wait_until_answers(f"{server.url}/v1/models", timeout=timeout, proc=proc)
        server.started_in = time.monotonic() - began
        if warm:
            began = time.monotonic()
            server.post(
                "/v1/chat/completions",
                {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1},
                timeout=timeout,
            )
            server.warmed_in = time.monotonic() - began
    except BaseException as exc:
        server.stop()
        raise RuntimeError(
            f"llama_cpp.server did not start: {exc}\n{server.log()[-3000:]}"
        ) from exc
    return server


_shared: LlamaServer | None = None
_failure: str | None = None


@pytest.fixture(scope="session", name="llama_server")
def llama_server_fixture(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaServer]:
    """One llama.cpp server for the whole session (skipped outside CI if it cannot start)."""
    global _shared, _failure
    if _failure is None and (_shared is None or not _shared.alive()):
        try:
            _shared = start_llama_server(tmp_path_factory.mktemp("llama-server"))
        except Exception as exc:
            _failure = f"{type(exc).__name__}: {exc}"
        else:
            request.config.add_cleanup(_shared.stop)
    if _failure is not None or _shared is None:
        if IN_CI:
            pytest.fail(f"llama.cpp server could not start: {_failure}")
        pytest.skip(f"llama.cpp server could not start: {_failure}")
    yield _shared
