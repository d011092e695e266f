"""Limits and program auth across two Daphne replicas sharing Redis and PostgreSQL.

Real processes, real WebSocket clients (websockets 15) sending no Origin, as programs do:
- the per-user frame limit and the per-organisation send limit count frames on both
  replicas together, and the error frame says when to retry;
- a member flooding one replica with frames refused by their own limit leaves the
  organisation's limit to their colleagues on the other;
- a one-time ticket bought from replica A works once, on replica B;
- a revoked key is refused on HTTP and on both replicas' WebSockets.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.harness.processes import PYTHON, REPO
from tests.harness.topology import Topology, production_topology

pytestmark = pytest.mark.integration

FRAMES_PER_USER = 8
FRAMES_PER_ORG = 20
SENDS_PER_ORG = 3
FLOOD = 3000

SETUP = """
import json, django
django.setup()
from accounts.services import account_create, api_key_create, membership_set, organisation_create
keys = {}
for name in ("frames", "alice", "bob", "tickets", "revoked", "flooder", "carol"):
    user = account_create(username=name, password="x")
    keys[name] = (user, user.personal_organisation)
for admin, member, team_name in (("alice", "bob", "Team"), ("flooder", "carol", "Floodteam")):
    team = organisation_create(name=team_name, admin=keys[admin][0])
    membership_set(organisation=team, user=keys[member][0], role="member", by=keys[admin][0])
    keys[admin] = (keys[admin][0], team)
    keys[member] = (keys[member][0], team)
print(json.dumps({
    name: api_key_create(user=user, organisation=org, name=name).raw
    for name, (user, org) in keys.items()
}))
"""


@dataclass
class Replicas:
    topo: Topology
    keys: dict[str, str]

    @property
    def env(self) -> dict[str, str]:
        return self.topo.env

    def ws(self, replica: int, query: str = "") -> str:
        return f"ws://127.0.0.1:{self.topo.daphne_ports[replica]}/ws/chat/{query}"

    def http(self, replica: int, path: str) -> str:
        return f"http://127.0.0.1:{self.topo.daphne_ports[replica]}{path}"


@pytest.fixture(scope="module")
def replicas() -> Iterator[Replicas]:
    """Two replicas, no nginx in front (a test picks the replica), generation in-process."""
    with production_topology(
        replicas=2,
        generation="inprocess",
        nginx=False,
        provider="simulated",
        env={
            "SIMULATED_FIRST_TOKEN_DELAY": "0",
            "SIMULATED_TOKENS_PER_SECOND": "500",
            "WS_RATE_FRAMES_PER_USER": f"{FRAMES_PER_USER}/m",
            "WS_RATE_FRAMES_PER_ORG": f"{FRAMES_PER_ORG}/m",
            "WS_RATE_SENDS_PER_ORG": f"{SENDS_PER_ORG}/m",
        },
        name="limits",
    ) as topo:
        out = subprocess.run(
            [PYTHON, "-c", SETUP],
            cwd=REPO,
            env=topo.env,
            capture_output=True,
            text=True,
            check=True,
        )
        yield Replicas(topo=topo, keys=json.loads(out.stdout.strip().splitlines()[-1]))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def next_frame(ws: ClientConnection, kinds: set[str]) -> dict[str, Any]:
    """The next frame of one of `kinds` (skipping deltas and other traffic)."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=15))
        if frame["type"] in kinds:
            return frame


async def test_the_frame_limit_is_shared_by_both_replicas(replicas):
    key = replicas.keys["frames"]
    async with (
        connect(replicas.ws(0), additional_headers=bearer(key)) as on_a,
        connect(replicas.ws(1), additional_headers=bearer(key)) as on_b,
    ):
        answers = []
        for i in range(FRAMES_PER_USER + 1):
            ws = on_a if i % 2 == 0 else on_b
            await ws.send(json.dumps({"type": "ping"}))
            answers.append(await next_frame(ws, {"pong", "error"}))
        assert answers[:FRAMES_PER_USER] == [{"type": "pong"}] * FRAMES_PER_USER
        limited = answers[FRAMES_PER_USER]
        assert limited["code"] == "rate_limited" and limited["retryable"] is True
        assert 1 <= limited["retry_after"] <= 60
        # The other replica refuses too: the count lives in Redis, not in a process.
        await on_a.send(json.dumps({"type": "ping"}))
        assert (await next_frame(on_a, {"pong", "error"}))["code"] == "rate_limited"


async def test_the_organisation_send_limit_counts_members_on_both_replicas(replicas):
    async with (
        connect(replicas.ws(0), additional_headers=bearer(replicas.keys["alice"])) as alice,
        connect(replicas.ws(1), additional_headers=bearer(replicas.keys["bob"])) as bob,
    ):
        outcomes = []
        for i, ws in enumerate([alice, bob, alice, bob]):
            await ws.send(
                json.dumps(
                    {"type": "send", "conversation": None, "text": f"hi {i}", "client_id": f"s{i}"}
                )
            )
            outcomes.append(await next_frame(ws, {"ack", "error"}))
        assert [f["type"] for f in outcomes[:SENDS_PER_ORG]] == ["ack"] * SENDS_PER_ORG
        assert outcomes[SENDS_PER_ORG]["code"] == "rate_limited"
        assert outcomes[SENDS_PER_ORG]["retry_after"] >= 1


async def test_a_member_flooding_one_replica_leaves_the_organisation_limit_to_colleagues(
    replicas,
):
    async with (
        connect(replicas.ws(0), additional_headers=bearer(replicas.keys["flooder"])) as flooder,
        connect(replicas.ws(1), additional_headers=bearer(replicas.keys["carol"])) as carol,
    ):
        for _ in range(FLOOD):
            await flooder.send(json.dumps({"type": "ping"}))
        answers = [await next_frame(flooder, {"pong", "error"}) for _ in range(FLOOD)]
        assert answers[:FRAMES_PER_USER] == [{"type": "pong"}] * FRAMES_PER_USER
        assert {a.get("code") for a in answers[FRAMES_PER_USER:]} == {"rate_limited"}
        # Only the flooder's 8 admitted frames were charged to the organisation's 20: carol
        # has her own 8 (the refused 2,992 would have used the organisation's up).
        for _ in range(FRAMES_PER_USER):
            await carol.send(json.dumps({"type": "ping"}))
            assert await next_frame(carol, {"pong", "error"}) == {"type": "pong"}


async def test_a_ticket_from_one_replica_works_once_on_the_other(replicas):
    async with httpx.AsyncClient() as http:
        response = await http.post(
            replicas.http(0, "/api/v1/ws-ticket"), headers=bearer(replicas.keys["tickets"])
        )
    assert response.status_code == 201
    ticket = response.json()["ticket"]
    async with connect(replicas.ws(1, f"?ticket={ticket}")) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert await next_frame(ws, {"pong"}) == {"type": "pong"}
    for replica in (0, 1):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(replicas.ws(replica, f"?ticket={ticket}")):
                pass
        assert refused.value.response.status_code == 403


async def test_a_revoked_key_is_refused_on_http_and_on_both_replicas(replicas):
    key = replicas.keys["revoked"]
    async with connect(replicas.ws(0), additional_headers=bearer(key)):
        pass  # accepted before
    subprocess.run(
        [
            PYTHON,
            "-c",
            "import django; django.setup(); from accounts.models import ApiKey; "
            "from accounts.services import api_key_revoke; "
            "api_key_revoke(key=ApiKey.objects.get(name='revoked'), by=None)",
        ],
        cwd=REPO,
        env=replicas.env,
        check=True,
        capture_output=True,
    )
    async with httpx.AsyncClient() as http:
        response = await http.post(replicas.http(1, "/api/v1/ws-ticket"), headers=bearer(key))
    assert response.status_code == 401 and "ticket" not in response.text
    for replica in (0, 1):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(replicas.ws(replica), additional_headers=bearer(key)):
                pass
        assert refused.value.response.status_code == 403
