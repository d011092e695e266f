"""Budgets hold under concurrency across processes, on real PostgreSQL (and Redis as the
cache, as in production): 50 parallel reservations at the edge of a budget, from two
processes of 25 threads each, never overspend, and the ledger and counters agree; and 50
parallel sends on sockets of two Daphne replicas, answered by a priced deployment, never
spend past a cost budget although QUOTA_COST_PER_TOKEN is 0."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.harness.processes import PYTHON, REPO, ProcessGroup, base_env, free_port, manage
from tests.harness.services import (
    REDIS_HOST,
    REDIS_PORT,
    postgres_database,
    redis_database,
    require_service,
)

pytestmark = pytest.mark.integration

MAX_TOKENS = 500
PROMPT_TOKENS = 100
WORST = PROMPT_TOKENS + MAX_TOKENS
ADMITTED = 10
# Room for ten worst cases and part of an eleventh: the edge the eleventh must not pass.
BUDGET = ADMITTED * WORST + WORST // 2
THREADS_PER_PROCESS = 25

SETUP = """
import json, django
django.setup()
from accounts.models import Budget
from accounts.services import account_create, organisation_create
owner = account_create(username="quota-owner", password="x")
org = organisation_create(name="Budgeted", admin=owner)
Budget.objects.create(organisation=org, period="day", max_tokens={budget})
print(json.dumps({{"user": owner.pk, "organisation": org.pk}}))
"""

# Phases are driven by files in a shared directory, so a slow start of one process (imports
# under load) cannot let the other settle before every reservation was tried:
#   worker: threads ready -> "<name>.ready"; waits for "go"
#   threads reserve at once; all tried -> "<name>.reserved"; wait for "settle"
#   the admitted settle what they "used": the prompt plus up to max_tokens of completion
#   (never more: that is what max_tokens guarantees).
WORKER = """
import json, os, random, sys, threading, time, django
django.setup()
from django.db import connection
from accounts.quotas import QuotaExceeded, ledger_settle, quota_reserve

user_id, org_id, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
phases, name = sys.argv[4], sys.argv[5]
results, lock, tried = [], threading.Lock(), threading.Semaphore(0)

def wait_for(flag):
    while not os.path.exists(os.path.join(phases, flag)):
        time.sleep(0.001)

def touch(flag):
    open(os.path.join(phases, flag), "w").close()

def one():
    wait_for("go")
    entry = None
    try:
        entry = quota_reserve(
            user_id=user_id, organisation_id=org_id, prompt_tokens={prompt}, max_tokens={max_tokens}
        )
        outcome = {{"ok": True, "id": entry.pk, "reserved": entry.reserved_tokens}}
    except QuotaExceeded as refused:
        outcome = {{"ok": False, "code": refused.code}}
    tried.release()
    if entry is not None:
        wait_for("settle")
        outcome["used"] = {prompt} + random.randint(0, {max_tokens})
        ledger_settle(entry_id=entry.pk, used_tokens=outcome["used"])
    connection.close()
    with lock:
        results.append(outcome)

workers = [threading.Thread(target=one) for _ in range(threads)]
for w in workers:
    w.start()
touch(name + ".ready")
for _ in range(threads):
    tried.acquire()
touch(name + ".reserved")
for w in workers:
    w.join()
print(json.dumps(results))
"""


def run_python(code: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-c", code, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def output_of(proc: subprocess.Popen[str], timeout: float = 180) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out.strip().splitlines()[-1]


def wait_for_files(paths: list[Path], procs: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + 120
    while not all(p.exists() for p in paths):
        for proc in procs:
            assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, f"workers did not reach {paths}"
        time.sleep(0.01)


def race(env: dict[str, str], ids: dict[str, int], phases: Path) -> list[dict[str, Any]]:
    """Two processes × 25 threads reserve at once; once all 50 have tried, the admitted ones
    settle. Returns the admitted outcomes."""
    phases.mkdir()
    code = WORKER.format(prompt=PROMPT_TOKENS, max_tokens=MAX_TOKENS)
    args = [str(ids["user"]), str(ids["organisation"]), str(THREADS_PER_PROCESS), str(phases)]
    names = ["a", "b"]
    procs = [run_python(code, *args, name, env=env) for name in names]
    wait_for_files([phases / f"{n}.ready" for n in names], procs)
    (phases / "go").touch()
    wait_for_files([phases / f"{n}.reserved" for n in names], procs)
    (phases / "settle").touch()
    results = [r for proc in procs for r in json.loads(output_of(proc))]
    assert len(results) == 2 * THREADS_PER_PROCESS
    assert {r["code"] for r in results if not r["ok"]} <= {"quota_exceeded"}
    return [r for r in results if r["ok"]]


def ledger_and_counters(database_url: str, organisation_id: int) -> tuple[Any, list[Any]]:
    with psycopg.connect(database_url) as conn:
        ledger = conn.execute(
            "SELECT count(*), coalesce(sum(used_tokens), 0), "
            "count(*) FILTER (WHERE state = 'settled') "
            "FROM accounts_usageledger WHERE organisation_id = %s",
            [organisation_id],
        ).fetchone()
        counters = conn.execute(
            "SELECT user_id IS NULL, period, tokens, requests FROM accounts_usagecounter "
            "WHERE organisation_id = %s",
            [organisation_id],
        ).fetchall()
    return ledger, counters


def test_fifty_parallel_reservations_from_two_processes_never_overspend_a_budget(tmp_path):
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    with (
        postgres_database(prefix="parley_quota") as database_url,
        redis_database() as redis_index,
    ):
        env = base_env(
            DATABASE_URL=database_url,
            REDIS_URL=f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_index}",
            LLM_DEFAULT_PROVIDER="simulated",
            LLM_MAX_TOKENS=str(MAX_TOKENS),
        )
        manage("migrate", "--noinput", env=env)
        ids = json.loads(output_of(run_python(SETUP.format(budget=BUDGET), env=env)))

        # Round 1, at the edge: exactly as many worst cases as fit are admitted, whichever
        # process or thread got there first; the eleventh would pass the budget.
        first = race(env, ids, tmp_path / "round1")
        assert len(first) == ADMITTED
        assert sum(r["reserved"] for r in first) <= BUDGET
        spent = sum(r["used"] for r in first)

        # Round 2: settling gave back what was not used; again exactly what fits is admitted.
        second = race(env, ids, tmp_path / "round2")
        assert len(second) == (BUDGET - spent) // WORST
        spent += sum(r["used"] for r in second)
        assert spent <= BUDGET  # the bound is BUDGET + MAX_TOKENS; this is stricter

        # The ledger of record and the counters agree with what the workers saw.
        ledger, counters = ledger_and_counters(database_url, ids["organisation"])
        admitted = len(first) + len(second)
        assert ledger == (admitted, spent, admitted)
        assert len(counters) == 4  # user and organisation, day and month
        for whole_org, period, tokens, requests in counters:
            assert (tokens, requests) == (spent, admitted), (whole_org, period)


# --- Cost budgets priced by the deployment, through the real request path ------------------

COST_MAX_TOKENS = 20
REQUESTS = 50
BUDGET_DOLLARS = Decimal(5)

PRICED_SETUP = """
import json, django
django.setup()
from accounts.models import Budget
from accounts.services import account_create, api_key_create, organisation_create
from llm.models import Deployment, Provider
owner = account_create(username="cost-owner", password="x")
org = organisation_create(name="Priced", admin=owner)
Budget.objects.create(organisation=org, period="day", max_cost="{budget}")
# Slow to start, so that every request is reserved before the first one is settled.
provider = Provider.objects.create(
    name="sim", kind="simulated", options={{"first_token_delay": 1.0, "tokens_per_second": 200}}
)
# $0.01 a prompt token, $0.05 a completion token: a capped reply costs over $1.
Deployment.objects.create(
    provider=provider, alias="priced", model="sim", input_price=10000, output_price=50000
)
key = api_key_create(user=owner, organisation=org, name="bot").raw
print(json.dumps({{"organisation": org.pk, "key": key}}))
"""


async def send_all(urls: list[str], key: str) -> list[dict[str, Any]]:
    """REQUESTS program sockets spread over the replicas, each sending one message at the
    same moment; each one's answer: `done` for an admitted reply, else its `error`."""
    headers = {"Authorization": f"Bearer {key}"}
    sockets = [
        await connect(f"{urls[i % len(urls)]}/ws/chat/", additional_headers=headers)
        for i in range(REQUESTS)
    ]

    async def one(i: int, ws: ClientConnection) -> dict[str, Any]:
        await ws.send(
            json.dumps(
                {
                    "type": "send",
                    "conversation": None,
                    "text": f"Tell me about topic number {i}",
                    "client_id": f"c{i}",
                }
            )
        )
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=120))
            if frame["type"] in ("done", "error"):
                return frame

    try:
        return list(await asyncio.gather(*(one(i, ws) for i, ws in enumerate(sockets))))
    finally:
        for ws in sockets:
            await ws.close()


def test_fifty_parallel_sends_never_spend_past_a_cost_budget_at_the_default_flat_price(
    tmp_path,
):
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    group = ProcessGroup(tmp_path)
    with (
        postgres_database(prefix="parley_cost") as database_url,
        redis_database() as redis_index,
    ):
        env = base_env(
            DATABASE_URL=database_url,
            REDIS_URL=f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_index}",
            LLM_MAX_TOKENS=str(COST_MAX_TOKENS),
            QUOTA_COST_PER_TOKEN="0",  # the default: the deployment's prices must bound it
            LLM_DEFAULT_MODEL="priced",
            WS_RATE_SENDS_PER_USER="1000/m",
            WS_RATE_SENDS_PER_ORG="1000/m",
        )
        manage("migrate", "--noinput", env=env)
        ids = json.loads(output_of(run_python(PRICED_SETUP.format(budget=BUDGET_DOLLARS), env=env)))
        ports = [free_port(), free_port()]
        try:
            for i, port in enumerate(ports):
                group.daphne(f"daphne-{i}", port, env)
            answers = asyncio.run(send_all([f"ws://127.0.0.1:{p}" for p in ports], ids["key"]))
            # Every reply settles (its ledger row leaves `reserved`) before its `done` is sent.
            with psycopg.connect(database_url) as conn:
                states, spent, reserved, replies_cost = conn.execute(
                    "SELECT array_agg(DISTINCT state), coalesce(sum(cost), 0), "
                    "coalesce(sum(reserved_cost), 0), "
                    "(SELECT coalesce(sum(cost), 0) FROM chat_message WHERE role = 'assistant') "
                    "FROM accounts_usageledger WHERE organisation_id = %s",
                    [ids["organisation"]],
                ).fetchone()
        finally:
            group.stop_all()
    admitted = sum(a["type"] == "done" for a in answers)
    assert spent <= BUDGET_DOLLARS, f"{admitted} of {REQUESTS} admitted spent ${spent}"
    assert reserved <= BUDGET_DOLLARS
    # Admitted replies end at their natural end or at the 20-token cap (`incomplete`).
    outcomes = {a.get("status") or a["code"] for a in answers}
    assert "quota_exceeded" in outcomes
    assert outcomes <= {"complete", "incomplete", "quota_exceeded"}
    assert admitted >= 2  # the budget held several replies: the bound is not "refuse all"
    assert states == ["settled"]
    assert replies_cost == spent > 0  # the deployment's prices were really charged
