"""A server generating replies in-process, killed mid-reply and started again, on real processes.

Production settings without Celery (GENERATION_BACKEND=inprocess): one Daphne replica (the
image's command line) with PostgreSQL and a private Redis (channel layer, cache), streaming
from an OpenAI-compatible upstream on loopback that sends a long answer slowly. No beat runs
here: the restarted server reaps the reply itself (chat/replies/reaper.py, REAP_IN_SERVER),
keeping all the text a client was shown, which the killed server journaled in Redis.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fault_server import FaultServer, Reply, fault_server
from tests.harness.client import Client, all_final, assert_clean, start_reply, streaming, until
from tests.harness.topology import Topology, production_topology

pytestmark = pytest.mark.integration

USERNAME, PASSWORD = "restart-rosa", "correct horse battery staple"
HEARTBEAT_INTERVAL = 0.5
REAP_STALE_AFTER = 4.0
REAP_EVERY = 1.0
ANSWER = " ".join(f"word{index}" for index in range(400))  # ~20 s at 5 characters per 50 ms


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultServer]:
    with fault_server() as server:
        server.default("slow", Reply(text=ANSWER, chunk_chars=5, chunk_delay=0.05))
        yield server


@pytest.fixture
def topo(upstream: FaultServer) -> Iterator[Topology]:
    unlimited = "1000000/m"
    env = {
        "OPENAI_COMPATIBLE_BASE_URL": upstream.base_url("slow"),
        "STREAM_HEARTBEAT_INTERVAL": str(HEARTBEAT_INTERVAL),
        "REAP_STALE_AFTER": str(REAP_STALE_AFTER),
        "REAP_EVERY": str(REAP_EVERY),
        "CACHE_ENABLED": "false",
        "WS_RATE_FRAMES_PER_USER": unlimited,
        "WS_RATE_SENDS_PER_USER": unlimited,
    }
    with production_topology(
        replicas=1,
        generation="inprocess",
        provider="openai-compatible",
        env=env,
        nginx=False,
        user=(USERNAME, PASSWORD),
        name="restart",
    ) as topology:
        yield topology


@pytest.mark.timeout(300, func_only=True)
async def test_a_server_killed_mid_reply_ends_it_once_started_again(topo: Topology) -> None:
    """SIGKILL Daphne while a client holds more of a reply than PostgreSQL does, start it
    again: within the reap window the reply is failed (`interrupted`), its stored text holds
    all the client was shown, the reconnected socket gets the ending, and the page shows it."""
    client = Client(topo, "rosa")
    await client.open()
    try:
        reply = await start_reply(client, "Tell me a long story")
        await streaming([client], reply)
        await until(lambda: topo.row(reply)["seq"] > 0, 30, "a checkpoint in PostgreSQL")
        stored_at_kill, shown_at_kill = await freeze_ahead_of_checkpoint(topo, client, reply)
        topo.kill("daphne-1")
        assert topo.row(reply)["status"] == "streaming"
        topo.start_replica("daphne-1")  # its first request (the health check) starts its reaper
        restarted = time.monotonic()
        bound = REAP_STALE_AFTER + 2 * REAP_EVERY + 20  # + reconnecting on a loaded machine
        await all_final([client], [reply], bound)
        ended_after = client.final_at[reply] - restarted
        row = topo.row(reply)
        conversation = next(iter(client.acks.values()))[0]["conversation"]
        page = httpx.get(f"{topo.base}/c/{conversation}/", headers={"Cookie": topo.cookie}).text
    finally:
        await client.close()

    assert row["status"] == "failed" and row["error_code"] == "interrupted", row
    assert row["seq"] == len(row["content"]) and ANSWER.startswith(row["content"])
    shown = client.shown[reply]
    assert row["content"].startswith(shown), (len(shown), row["seq"])
    final = client.final(reply)
    assert final is not None and final["type"] == "error" and final["code"] == "interrupted"
    assert final["seq"] == row["seq"]
    assert client.texts[reply] == row["content"]
    assert client.reconnects >= 1
    article = re.search(rf'data-message-id="{reply}"[^>]*', page)
    assert article is not None and 'data-status="failed"' in article.group(0), page[:2000]
    assert_clean(client)
    print(
        f"server killed: reply failed {ended_after:.1f} s after the restart; at the kill "
        f"PostgreSQL held {stored_at_kill} characters, the client {shown_at_kill}; "
        f"kept {row['seq']}"
    )


async def freeze_ahead_of_checkpoint(topo: Topology, client: Client, reply: int) -> tuple[int, int]:
    """Stop Daphne (SIGSTOP) at a moment when the client holds more of `reply` than its
    checkpoint, as it does between two checkpoints; frozen, Daphne writes no checkpoint and
    sends nothing, so the difference stands until the kill. (Stored, shown) at that moment."""
    daphne = topo.pid("daphne-1")
    for _ in range(20):
        await until(
            lambda: len(client.shown.get(reply, "")) > topo.row(reply)["seq"],
            10,
            "the client holding more than the checkpoint",
        )
        os.killpg(daphne, signal.SIGSTOP)
        stored, shown = topo.row(reply)["seq"], len(client.shown[reply])
        if shown > stored:
            return stored, shown
        os.killpg(daphne, signal.SIGCONT)  # a checkpoint landed in between: again
    raise AssertionError("never caught the client ahead of the checkpoint")
