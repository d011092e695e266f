"""A send the server saved but could not start (`not_started`: the Celery broker is down) is
sent again by the page when the server says, and becomes one reply once the broker is back.

docs/protocol.md: `not_started` is retryable with `retry_after`; the same `client_id` again
starts the saved reply and never makes a second message. The page keeps the message in flight
and repeats it (static/chat/transport.js `resendAfter`). Here the topology's broker is a Redis
server of its own, so it can die while the channel layer's Redis keeps the socket working.
Every wait is for a DOM state or a row, never for time.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llm.providers.simulated import simulated_reply
from tests.browser.support import PASSWORD, WAIT_MS, sign_in, wait_final
from tests.harness.processes import ProcessGroup, free_port, require_binary, start_redis_server
from tests.harness.topology import Topology, production_topology

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(300)]

USERNAME = "resend-rahul"


@dataclass
class Broker:
    """A private redis-server used only as the Celery broker, which a test can stop and start."""

    group: ProcessGroup
    binary: str
    port: int
    workdir: Path
    starts: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def name(self) -> str:
        return f"broker.{self.starts}"

    def start(self) -> None:
        self.starts += 1
        start_redis_server(self.group, self.name, self.binary, self.port, self.workdir)

    def kill(self) -> None:
        self.group.kill(self.name)


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    with tempfile.TemporaryDirectory(prefix="parley-broker-") as workdir:
        group = ProcessGroup(log_dir=Path(workdir))
        broker = Broker(group, require_binary("redis-server"), free_port(), Path(workdir))
        broker.start()
        try:
            yield broker
        finally:
            group.stop_all()


@pytest.fixture(scope="module")
def topo(broker: Broker, chromium_path) -> Iterator[Topology]:
    env = {
        "CELERY_BROKER_URL": broker.url,
        "SIMULATED_FIRST_TOKEN_DELAY": "0.1",
        "CACHE_ENABLED": "false",
    }
    with production_topology(
        replicas=1, provider="simulated", env=env, user=(USERNAME, PASSWORD), name="page-resend"
    ) as topo:
        with topo.logs_on_failure():
            yield topo


def user_messages(topo: Topology, text: str) -> list[tuple[int, str]]:
    return topo.query(
        "SELECT id, client_id FROM chat_message WHERE role = 'user' AND content = %s", text
    )


def replies_to(topo: Topology, message_id: int) -> list[tuple[int]]:
    return topo.query(
        "SELECT id FROM chat_message WHERE role = 'assistant' AND reply_to_id = %s", message_id
    )


def test_a_send_refused_as_not_started_is_sent_again_and_answered_once(page, topo, broker):
    """The broker dies: the page's send is saved but refused (`not_started`), the page says so
    and keeps the message; the broker comes back and the page's own repeat, with the same
    client_id, starts the saved reply, which streams and completes. One message, one reply."""
    from playwright.sync_api import expect

    sign_in(page, topo, USERNAME)
    broker.kill()
    prompt = "Answer me once the broker is back"
    page.fill("#composer-text", prompt)
    page.press("#composer-text", "Enter")
    expect(page.locator("#status")).to_contain_text("Error", timeout=WAIT_MS)

    saved = user_messages(topo, prompt)
    assert len(saved) == 1, saved  # refused, yet saved: nothing to type again
    pending = replies_to(topo, saved[0][0])
    assert len(pending) == 1, pending  # its reply was saved with it, not started
    # Still on the page, not handed back to the composer for editing.
    expect(page.locator("#messages article.message--user").last).to_contain_text(prompt)

    broker.start()
    reply = page.locator("#messages article.message--assistant").last
    # The page repeats the frame after the server's retry_after (again, while still refused);
    # the ack names the reply saved at the first attempt.
    expect(reply).to_have_attribute("data-message-id", str(pending[0][0]), timeout=60_000)
    assert wait_final(reply, timeout=60) == "complete"
    row = topo.row(pending[0][0])
    assert row["status"] == "complete" and row["content"] == simulated_reply(prompt)
    assert user_messages(topo, prompt) == saved  # the repeats made no second message
    assert replies_to(topo, saved[0][0]) == pending  # nor a second reply
