"""Fixtures for the router's tests: quick retry delays, the fault-injecting server, deployment
rows pointing at it, and a reply generated through reply_stream."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from chat import services
from chat.events import conversation_group
from chat.models import Message
from chat.replies.stream import reply_stream
from llm.models import Deployment, Provider
from tests.fault_server import FaultServer, fault_server


@pytest.fixture(autouse=True)
def _quick_retries(settings):
    """Backoff in milliseconds, not seconds; tests about waiting set their own delays."""
    settings.LLM_RETRY_BASE_DELAY = 0.01
    settings.LLM_RETRY_MAX_DELAY = 0.05


@pytest.fixture
def fault():
    # One server per test: a new port means new base URLs, so no pooled HTTP connection of
    # langchain-openai's process-wide clients outlives the test's event loop.
    with fault_server() as server:
        yield server


@pytest.fixture
def deploy(db, fault: FaultServer):
    """Create a provider + deployment row whose base URL is a route of the fault server."""

    def make(
        route: str,
        *,
        alias: str = "default",
        weight: int = 1,
        priority: int = 0,
        first_token_timeout: float = 5.0,
        inter_token_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        **fields,
    ) -> Deployment:
        provider = Provider.objects.create(
            name=route,
            kind=Provider.Kind.OPENAI_COMPATIBLE,
            base_url=fault.base_url(route),
            connect_timeout=connect_timeout,
            first_token_timeout=first_token_timeout,
            inter_token_timeout=inter_token_timeout,
        )
        return Deployment.objects.create(
            provider=provider,
            alias=alias,
            model=f"{route}-model",
            weight=weight,
            priority=priority,
            **fields,
        )

    return make


@dataclass
class Generated:
    """A reply after reply_stream, with what its conversation's group heard and how long."""

    message: Message
    events: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def deltas(self) -> list[dict]:
        return [e for e in self.events if e["type"] == "chat.delta"]

    @property
    def streamed_text(self) -> str:
        return "".join(d["text"] for d in self.deltas)

    @property
    def attempts(self) -> list[dict]:
        return self.message.routing["attempts"]


async def _drain(layer, channel) -> list[dict]:
    events = []
    while True:
        try:
            events.append(await asyncio.wait_for(layer.receive(channel), 0.05))
        except TimeoutError:
            return events


@pytest.fixture
def generate(owner, settings, monkeypatch):
    """Send a message to a model alias and run its reply's generation to the end."""
    monkeypatch.setattr("chat.replies.dispatch.dispatch_generation", lambda mid, provider: None)
    sent = 0

    async def run(alias: str = "default", text: str = "Hello?") -> Generated:
        nonlocal sent
        sent += 1
        settings.LLM_DEFAULT_MODEL = alias
        reply = (
            await sync_to_async(services.message_send)(
                author=owner, conversation=None, text=text, client_id=f"c-{sent}"
            )
        ).reply
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(conversation_group(reply.conversation_id), channel)
        loop = asyncio.get_running_loop()
        began = loop.time()
        async with asyncio.timeout(30):
            await reply_stream(message_id=reply.pk)
        seconds = loop.time() - began
        events = await _drain(layer, channel)
        message = await Message.objects.aget(pk=reply.pk)
        return Generated(message=message, events=events, seconds=seconds)

    return run
