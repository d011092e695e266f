"""Fixtures of chat's tests that start real processes."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fault_server import FaultServer, fault_server
from tests.harness.processes import ProcessGroup, free_port, require_binary, start_redis_server


class PrivateRedis:
    def __init__(self, group: ProcessGroup, binary: str, workdir: Path) -> None:
        self.group, self.binary, self.workdir = group, binary, workdir
        self.port = free_port()
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        start_redis_server(self.group, "redis", self.binary, self.port, self.workdir)

    def stop(self) -> None:
        self.group.kill("redis", 15)


@pytest.fixture
def redis_server() -> Iterator[PrivateRedis]:
    binary = require_binary("redis-server")
    with tempfile.TemporaryDirectory(prefix="parley-layer-") as workdir:
        group = ProcessGroup(log_dir=Path(workdir))
        try:
            yield PrivateRedis(group, binary, Path(workdir))
        finally:
            group.stop_all()


@pytest.fixture
def fault() -> Iterator[FaultServer]:
    """A real OpenAI-compatible upstream on loopback that fails on cue (tests/fault_server.py)."""
    with fault_server() as server:
        yield server
