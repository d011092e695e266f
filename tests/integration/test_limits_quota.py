"""Budgets hold under concurrency across processes, on real PostgreSQL (and Redis as the
cache, as in production): 50 parallel reservations at the edge of a budget, from two
processes of 25 threads each, never overspend, and the ledger and counters agree."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.harness.processes import PYTHON, REPO, base_env, manage
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
            DJANGO_SECRET_KEY=secrets.token_urlsafe(32),
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
