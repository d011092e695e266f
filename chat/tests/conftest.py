"""Fixtures of chat's tests: clients of the API authenticated by an API key, and real
processes (a private Redis, a fault-injecting upstream)."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.utils import timezone

from accounts.models import Organisation, User
from accounts.services import NewApiKey, api_key_create
from chat import services
from chat.models import Message
from project.asgi import application
from tests.fault_server import FaultServer, fault_server
from tests.harness.processes import ProcessGroup, free_port, require_binary, start_redis_server

API = "/api/v1"


def bearer(raw: str) -> dict[str, Any]:
    """Django test Client arguments that send this API key with every request."""
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def asgi_client(**options: Any) -> httpx.AsyncClient:
    """An httpx client of the whole ASGI application (project/asgi.py), in this process: what
    Daphne would serve, streaming responses included."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application),
        base_url="http://127.0.0.1:8000",
        timeout=60,
        **options,
    )


@pytest.fixture
def api_key(owner: User, organisation: Organisation) -> NewApiKey:
    """The owner's API key for the team organisation `Acme` (`.raw` is the secret)."""
    return api_key_create(user=owner, organisation=organisation, name="tests")


@pytest.fixture
def api(api_key: NewApiKey) -> Client:
    """A Django test client that sends the owner's Acme key with every request."""
    return Client(**bearer(api_key.raw))


@pytest.fixture
async def http(api_key: NewApiKey) -> AsyncIterator[httpx.AsyncClient]:
    """An asgi_client that sends the owner's Acme key with every request."""
    async with asgi_client(headers={"Authorization": f"Bearer {api_key.raw}"}) as client:
        yield client


async def streaming_reply(owner: User, content: str) -> Message:
    """A reply streaming in a new conversation of the owner's, its saved text `content`."""
    conversation = await sync_to_async(services.conversation_create)(owner=owner)
    return await Message.objects.acreate(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        content=content,
        seq=len(content),
        started_at=timezone.now(),
    )


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
