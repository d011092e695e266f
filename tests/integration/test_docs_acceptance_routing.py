"""docs/routing.md's promises that test_docs_acceptance_failover.py and
test_docs_acceptance_llama.py leave out, checked from outside: aliases (rows taking a settings
alias over, fallback chains from rows and settings), weights, the circuit breaker's states as
`GET /llm/health` and the admin show them, Retry-After pauses, rpm limits, context windows,
options, and estimated tokens and cost.

On the production topology (nginx → two Daphne replicas → Redis ← a Celery worker,
PostgreSQL) with a real OpenAI-compatible upstream (tests/fault_server.py) whose requests are
counted and read, programs' sockets and the `openai` SDK. Every deployment the tests make is an
admin row (as an operator adds it) pointing at a route of its own on the upstream.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.fault_server import Cut, Fail, Reply
from tests.harness.processes import manage
from tests.harness.sockets import Heard, admin_action, hear_reply, sign_in_cookie
from tests.harness.topology import START_TIMEOUT
from tests.integration.test_protocol_promises import Site, send_frame, topology_with_upstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

HEALTH_TOKEN = "routing-acceptance-health-token"
ANSWER = "Routed answer."
COOLDOWN = 3  # LLM_BREAKER_COOLDOWN here, seconds
STAFF = ("routing-staff", "correct horse battery staple")

# provider name: (route, alias, priority, weight, extra Deployment fields, provider options)
ROWS: dict[str, tuple[str, str, int, int, dict[str, Any], dict[str, Any]]] = {
    "w-heavy": ("w-heavy", "weighted", 0, 3, {}, {}),
    "w-light": ("w-light", "weighted", 0, 1, {}, {}),
    "takeover": ("takeover", "simulated", 0, 1, {}, {}),
    "chain-a": ("chain-a", "chain-a", 0, 1, {}, {}),
    "chain-b": ("chain-b", "chain-b", 0, 1, {}, {}),
    "chain-c": ("chain-c", "chain-c", 0, 1, {}, {}),
    "lf-a": ("lf-a", "lf-a", 0, 1, {}, {}),
    "lf-b": ("lf-b", "lf-b", 0, 1, {}, {}),
    "breaker": ("breaker", "breaker", 0, 1, {}, {}),
    "short-429": ("short-429", "short-429", 0, 1, {}, {}),
    "long-429": ("long-429", "long-429", 0, 1, {}, {}),
    "rpm": ("rpm", "rpm", 0, 1, {"rpm_limit": 1}, {}),
    "cw-big": ("cw-big", "cw-big", 0, 1, {"context_window": 100000}, {}),
    "cw-small": ("cw-small", "cw-small", 0, 1, {"context_window": 400}, {}),
    "cw-1000": ("cw-1000", "cw-1000", 0, 1, {"context_window": 1000}, {}),
    "opt-0": ("opt-0", "opt", 0, 1, {}, {"temperature": 0.3}),
    "opt-1": ("opt-1", "opt", 1, 1, {}, {"temperature": 0.3}),
    "mixed-0": ("mixed-0", "mixed", 0, 1, {}, {}),
    "priced": ("priced", "priced", 0, 1, {"input_price": "1.00", "output_price": "2.00"}, {}),
    "key-0": ("key-0", "key-refused", 0, 1, {}, {}),
    "key-1": ("key-1", "key-refused", 1, 1, {}, {}),
    "r408": ("r408", "r408", 0, 1, {}, {}),
    "cut0": ("cut0", "cut0", 0, 1, {}, {}),
    "bulk-0": ("bulk-0", "bulk", 0, 1, {}, {}),
    "bulk-1": ("bulk-1", "bulk", 1, 1, {}, {}),
    "tpm": ("tpm", "tpm", 0, 1, {"tpm_limit": 5}, {}),
    "manual": ("manual", "manual", 0, 1, {}, {}),
    "probe": ("probe", "probe", 0, 1, {}, {}),
    "long-503": ("long-503", "long-503", 0, 1, {}, {}),
    "always-500": ("always-500", "always-500", 0, 1, {}, {}),
    # 1 prompt token at 0.365 per million: 0.000000365, half-up 0.00000037 (half-even: …36)
    "half-up": ("half-up", "half-up", 0, 1, {"input_price": "0.365", "output_price": "0"}, {}),
}

SETUP = """
from accounts.services import account_create
from llm.models import Deployment, FallbackChain, Provider
rows = {rows!r}
for name, (route, alias, priority, weight, fields, options) in rows.items():
    provider = Provider.objects.create(
        name=name, kind="openai-compatible", base_url={base!r} + route + "/v1",
        first_token_timeout=60, inter_token_timeout=60, options=options,
    )
    Deployment.objects.create(
        provider=provider, alias=alias, model="routed-model", priority=priority, weight=weight,
        **fields,
    )
simulated = Provider.objects.create(name="mixed-sim", kind="simulated")
Deployment.objects.create(provider=simulated, alias="mixed", model="sim", priority=1)
FallbackChain.objects.create(alias="chain-a", fallbacks="chain-b")
FallbackChain.objects.create(alias="chain-b", fallbacks="chain-c")
FallbackChain.objects.create(alias="cw-big", fallbacks="cw-small")
account_create(username={staff!r}, password={password!r}, is_superuser=True)
"""


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    env = {
        "LLM_HEALTH_TOKEN": HEALTH_TOKEN,
        "LLM_BREAKER_FAILURES": "3",
        "LLM_BREAKER_COOLDOWN": str(COOLDOWN),
        "LLM_FALLBACKS": "lf-a=lf-b",
    }
    with topology_with_upstream("acceptance-routing", env) as running:
        up = running.upstream
        for name, (route, *_rest) in ROWS.items():
            up.default(route, Reply(text=f"{ANSWER} ({name})"))
        for route in ("chain-a", "chain-b", "lf-a", "opt-0"):
            up.default(route, Fail(503, message="vendor says: overloaded-secret-detail"))
        up.default("long-429", Fail(429, retry_after=600))
        up.default("key-0", Fail(401, message="vendor says: bad key"))
        up.default("r408", Fail(408))
        up.default("long-503", Fail(503, retry_after=600))
        up.default("always-500", Fail(500))
        up.default("cut0", Cut(after_chunks=0))
        base = up.base_url("x").removesuffix("x/v1")
        code = SETUP.format(rows=ROWS, base=base, staff=STAFF[0], password=STAFF[1])
        manage("shell", "-c", code, env=running.topo.env, timeout=START_TIMEOUT)
        with running.topo.logs_on_failure():
            yield running


@pytest.fixture
def sdk(site: Site) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{site.topo.base}/v1", api_key=site.key, max_retries=0)


async def ask(site: Site, alias: str, text: str = "", **extra: Any) -> Heard:
    """A program's socket sends to `alias`; what it heard of the reply (done or error)."""
    ws = await site.socket()
    try:
        frame = send_frame(text or f"route me {uuid.uuid4().hex}", model=alias, **extra)
        await ws.send(json.dumps(frame))
        return await hear_reply(ws, timeout=120)
    finally:
        await ws.close()


def final(heard: Heard) -> dict[str, Any]:
    assert heard.final is not None, heard.frames
    return heard.final


def routing(site: Site, reply: int | None) -> dict[str, Any]:
    assert reply is not None
    found = site.topo.row(reply)["routing"]
    assert isinstance(found, dict)
    return found


def health(site: Site) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(
        f"{site.topo.base}/llm/health",
        headers={"Authorization": f"Bearer {HEALTH_TOKEN}"},
        timeout=30,
    )
    return answer.status_code, answer.json()


def deployment_health(site: Site, provider: str) -> dict[str, Any]:
    _, body = health(site)
    (found,) = [d for d in body["deployments"] if d["provider"] == provider]
    return found


# --- aliases -----------------------------------------------------------------------------------


async def test_an_alias_any_row_names_is_served_by_rows_only(site: Site) -> None:
    """routing.md: with zero rows the settings providers serve under their own names; "An
    alias that any Deployment row names is served by rows only" (here `simulated`)."""
    before = site.upstream.count("takeover")
    heard = await ask(site, "simulated")
    assert (final(heard)["type"], heard.text) == ("done", f"{ANSWER} (takeover)"), heard.frames
    assert site.upstream.count("takeover") == before + 1


async def test_only_the_pinned_aliases_own_fallback_chain_is_followed(site: Site) -> None:
    """routing.md: "Only the pinned alias's own chain is followed, not the chains of its
    fallbacks": chain-a → chain-b (failing) never reaches chain-c; chain-b → chain-c does."""
    before = site.upstream.count("chain-c")
    heard = await ask(site, "chain-a")
    assert (final(heard)["type"], final(heard)["code"]) == ("error", "provider_failed")
    record = routing(site, heard.reply)
    assert record["chain"] == ["chain-a", "chain-b"], record
    assert site.upstream.count("chain-c") == before
    heard = await ask(site, "chain-b")
    assert (final(heard)["type"], heard.text) == ("done", f"{ANSWER} (chain-c)"), heard.frames
    record = routing(site, heard.reply)
    assert (record["chain"], record["failover"]) == (["chain-b", "chain-c"], True), record


async def test_settings_level_fallback_chains_are_followed(site: Site) -> None:
    """routing.md: `LLM_FALLBACKS="default=claude,local;claude=local"` gives settings-level
    chains (here lf-a=lf-b)."""
    heard = await ask(site, "lf-a")
    assert (final(heard)["type"], heard.text) == ("done", f"{ANSWER} (lf-b)"), heard.frames
    assert routing(site, heard.reply)["chain"] == ["lf-a", "lf-b"]


# --- weights -----------------------------------------------------------------------------------


async def test_weights_3_to_1_give_3_of_every_4_turns_across_every_process(
    site: Site, sdk: openai.OpenAI
) -> None:
    """routing.md: "a shared counter per alias and tier in the cache, so weights hold across
    all workers: weights 3:1 give exactly 3 of every 4 turns to the first". Socket replies run
    on the Celery worker, `/v1` completions on the Daphne replica holding them."""
    heavy, light = site.upstream.count("w-heavy"), site.upstream.count("w-light")
    for _ in range(4):
        heard = await ask(site, "weighted")
        assert final(heard)["type"] == "done", heard.frames
    for _ in range(4):
        sdk.chat.completions.create(
            model="weighted", messages=[{"role": "user", "content": uuid.uuid4().hex}]
        )
    assert (site.upstream.count("w-heavy") - heavy, site.upstream.count("w-light") - light) == (
        6,
        2,
    )


# --- the circuit breaker as the health endpoint and the admin show it -------------------------


async def test_the_breaker_opens_shows_in_health_and_the_admin_then_a_probe_closes_it(
    site: Site,
) -> None:
    """routing.md, "Circuit breakers" and "Health": LLM_BREAKER_FAILURES (3 here) consecutive
    failures open it; while open, nothing is sent (`provider_unavailable` at once); health
    says `degraded` with the deployment `open`, its failures, the seconds until a probe and
    the last error in Parley's words, never the vendor's; after the cooldown it is half-open
    and one probe's first token closes it."""
    detail = "vendor says: breaker-secret-detail"
    # Two attempts for the first reply (LLM_RETRY_MAX_ATTEMPTS=2), one for the second: the
    # third failure opens the breaker, and the second reply's retry is not sent.
    site.upstream.script("breaker", *[Fail(500, message=detail)] * 3)
    for _ in range(2):
        heard = await ask(site, "breaker")
        assert final(heard)["type"] == "error", heard.frames
    asked = site.upstream.count("breaker")
    heard = await ask(site, "breaker")
    assert (final(heard)["code"], final(heard)["retryable"]) == ("provider_unavailable", True)
    assert site.upstream.count("breaker") == asked

    status, body = health(site)
    row = deployment_health(site, "breaker")
    assert (status, body["status"]) == (200, "degraded"), body
    assert row["state"] == "open", row
    assert row["consecutive_failures"] >= 3, row
    assert row["retry_in"] is not None and 0 <= row["retry_in"] <= COOLDOWN, row
    assert row["last_error_code"] == "provider_failed", row
    assert "secret" not in json.dumps(row), row

    admin = httpx.Client(
        base_url=site.topo.base, headers={"Cookie": sign_in_cookie(site.topo.base, *STAFF)}
    )
    page = admin.get("/admin/llm/deployment/", params={"q": "breaker"}, timeout=30)
    assert page.status_code == 200
    assert "open (" in page.text, page.text  # the Breaker column: "open (N s) (failures)"

    deadline = time.monotonic() + 60  # a bound for failing only
    while deployment_health(site, "breaker")["state"] != "half_open":
        assert time.monotonic() < deadline, deployment_health(site, "breaker")
        time.sleep(0.2)
    heard = await ask(site, "breaker")  # the probe: the upstream answers now
    assert (final(heard)["type"], heard.text) == ("done", f"{ANSWER} (breaker)"), heard.frames
    row = deployment_health(site, "breaker")
    assert (row["state"], row["consecutive_failures"]) == ("closed", 0), row
    assert row["last_ok_at"] is not None and row["last_first_token_ms"] is not None, row


def test_health_is_refused_without_the_token_or_with_a_wrong_one(site: Site) -> None:
    """routing.md: "Anyone else gets 401"."""
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        answer = httpx.get(f"{site.topo.base}/llm/health", headers=headers, timeout=30)
        assert answer.status_code == 401, answer.text


# --- Retry-After, rpm limits -------------------------------------------------------------------


async def test_a_short_retry_after_is_waited_for_then_the_reply_is_answered(site: Site) -> None:
    """routing.md: the next round waits "at least the smallest Retry-After among the
    failures"; `routing.retry_after` keeps the wait."""
    site.upstream.script("short-429", Fail(429, retry_after=2))
    heard = await ask(site, "short-429")
    assert (final(heard)["type"], heard.text) == ("done", f"{ANSWER} (short-429)"), heard.frames
    first, second = site.upstream.requests("short-429")[-2:]
    assert second.at - first.at >= 2.0
    record = routing(site, heard.reply)
    assert record["retries"] == 1 and record["slept_ms"] >= 2000, record
    assert record["attempts"][0]["retry_after"] == 2.0, record


async def test_a_retry_after_past_the_maximum_ends_the_socket_reply_at_once(site: Site) -> None:
    """routing.md: "A Retry-After longer than `LLM_RETRY_AFTER_MAX` (20 s) ends the reply at
    once with `provider_rate_limited` … instead of holding it"; the wait is kept on the reply
    as `routing.retry_after`; the deployment is then paused (skipped, not asked: every
    deployment paused, `provider_unavailable` at once, the soonest retry kept the same way)."""
    before = site.upstream.count("long-429")
    heard = await ask(site, "long-429")
    error = final(heard)
    assert (error["type"], error["code"], error["retryable"]) == (
        "error",
        "provider_rate_limited",
        True,
    ), error
    assert site.upstream.count("long-429") == before + 1
    assert routing(site, heard.reply)["retry_after"] == 600, routing(site, heard.reply)
    again = await ask(site, "long-429")
    assert final(again)["code"] == "provider_unavailable", again.frames
    assert "paused" in final(again)["detail"] and "try again in about" in final(again)["detail"]
    assert 0 < routing(site, again.reply)["retry_after"] <= 600, routing(site, again.reply)
    assert site.upstream.count("long-429") == before + 1


@pytest.mark.parametrize("alias", ["rpm", "tpm"])
async def test_a_deployment_whose_rpm_or_tpm_is_spent_is_skipped_until_the_next_minute(
    site: Site, alias: str
) -> None:
    """routing.md: skipped "if its rpm/tpm budget for the current minute is spent (fixed
    one-minute windows, counted in the cache; tokens are added when a reply finishes)";
    nothing else can take it: `provider_unavailable` at once. rpm 1; tpm 5, which one reply
    (11 prompt tokens) spends."""
    for _ in range(2):  # a pair straddling a minute's edge is tried once more
        minute = int(time.time() // 60)
        await ask(site, alias)
        asked = site.upstream.count(alias)
        heard = await ask(site, alias)
        if int(time.time() // 60) != minute:
            continue
        assert final(heard)["code"] == "provider_unavailable", heard.frames
        skipped = routing(site, heard.reply)["skipped"]
        assert [s["label"].split("/")[0] for s in skipped] == [alias], skipped
        assert site.upstream.count(alias) == asked
        return
    pytest.fail("two replies never fell in the same minute")


# --- context windows ---------------------------------------------------------------------------


def test_an_aliases_window_is_the_smallest_among_its_fallbacks(site: Site) -> None:
    """routing.md: "An alias's window is the smallest among the enabled deployments of the
    alias and of its fallbacks"; a message too long is refused before anything is saved or
    sent: 400 `context_length_exceeded` on REST."""
    before = site.upstream.count("cw-big") + site.upstream.count("cw-small")
    text = "please summarise this " + "lorem ipsum dolor " * 120  # ~2,200 characters
    with site.http() as http:
        conversation = http.post("/api/v1/conversations", json={}).json()["id"]
        answer = http.post(
            f"/api/v1/conversations/{conversation}/messages", json={"text": text, "model": "cw-big"}
        )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "context_length_exceeded", answer.json()
    saved = site.topo.query(
        "SELECT count(*) FROM chat_message WHERE conversation_id = %s", conversation
    )
    assert saved == [(0,)]
    assert site.upstream.count("cw-big") + site.upstream.count("cw-small") == before


async def test_a_replys_cap_is_lowered_where_the_window_ends_sooner(site: Site) -> None:
    """routing.md: the reply keeps room for its cap or a quarter of the window, whichever is
    smaller; "its cap is lowered where the window ends sooner". Window 1,000 tokens, a prompt
    of ~600: the upstream is asked for fewer than LLM_MAX_TOKENS (512), but at least 250."""
    text = "explain " + "word " * 400  # ~2,000 characters
    heard = await ask(site, "cw-1000", text)
    assert final(heard)["type"] == "done", heard.frames
    body = site.upstream.requests("cw-1000")[-1].body
    assert 250 <= body["max_tokens"] < 512, body["max_tokens"]


# --- options -----------------------------------------------------------------------------------


def test_the_callers_options_reach_every_deployment_tried_and_are_recorded(
    site: Site, sdk: openai.OpenAI
) -> None:
    """routing.md: `options` "stored when the reply is created and passed to every deployment
    tried"; a provider's own options (`{"temperature": 0.3}`) apply where the caller set none."""
    raw = sdk.chat.completions.with_raw_response.create(
        model="opt",
        messages=[{"role": "user", "content": uuid.uuid4().hex}],
        temperature=0.2,
        seed=7,
        max_tokens=40,
    )
    assert raw.parse().choices[0].message.content == f"{ANSWER} (opt-1)"
    tried = [site.upstream.requests(r)[-1].body for r in ("opt-0", "opt-1")]
    for body in tried:
        assert (body["temperature"], body["seed"], body["max_tokens"]) == (0.2, 7, 40), body
    record = routing(site, int(raw.headers["x-parley-message"]))
    options = record["options"]
    assert (options["temperature"], options["seed"], options["max_tokens"]) == (0.2, 7, 40)
    sdk.chat.completions.create(model="opt", messages=[{"role": "user", "content": "plain"}])
    assert site.upstream.requests("opt-1")[-1].body["temperature"] == 0.3


def test_an_option_one_deployment_of_the_alias_cannot_honour_is_refused_before_the_reply(
    site: Site, sdk: openai.OpenAI
) -> None:
    """routing.md: "A deployment whose kind cannot honour one is refused before the reply
    starts" (docs/api.md: response_format is refused for simulated deployments)."""
    before = site.upstream.count("mixed-0")
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(
            model="mixed",
            messages=[{"role": "user", "content": "json please"}],
            response_format={"type": "json_object"},
        )
    assert refused.value.status_code == 400
    assert site.upstream.count("mixed-0") == before


# --- tokens and cost ---------------------------------------------------------------------------


async def test_an_upstream_reporting_no_usage_is_estimated_and_priced_from_the_estimate(
    site: Site,
) -> None:
    """routing.md, "Tokens and cost": without the provider's counts the completion is
    estimated at ~4 characters a token, the prompt count stays null, `tokens_estimated` is
    true, and the cost is priced from the estimate."""
    text = "An answer with no usage reported by its server at all."
    site.upstream.script("priced", Reply(text=text, usage=False))
    heard = await ask(site, "priced")
    done = final(heard)
    assert (done["type"], heard.text) == ("done", text), heard.frames
    usage = done["usage"]
    assert usage["estimated"] is True, usage
    assert usage["prompt_tokens"] is None, usage
    assert usage["completion_tokens"] in (len(text) // 4, math.ceil(len(text) / 4)), usage
    assert done["cost"] is not None and float(done["cost"]) > 0, done


# --- what is dropped, what the caller is told, and where changes are read ---------------------


async def test_a_refused_key_is_dropped_for_the_next_deployment_and_counts_as_a_failure(
    site: Site,
) -> None:
    """routing.md: "A refused key (401/403) … is dropped for this reply and the next deployment
    is tried"; breaker failures are "retryable errors and refused keys"."""
    heard = await ask(site, "key-refused")
    assert (final(heard)["type"], heard.text) == ("done", f"{ANSWER} (key-1)"), heard.frames
    record = routing(site, heard.reply)
    outcomes = [(a["label"].split("/")[0], a["outcome"]) for a in record["attempts"]]
    assert outcomes == [("key-0", "failed"), ("key-1", "answered")], record
    row = deployment_health(site, "key-0")
    assert row["consecutive_failures"] >= 1, row
    assert "bad key" not in json.dumps(row), row


@pytest.mark.parametrize(
    ("alias", "status", "code"),
    [("r408", 503, "provider_unavailable"), ("cut0", 502, "provider_failed")],
)
def test_the_caller_is_told_the_last_failures_own_meaning(
    site: Site, sdk: openai.OpenAI, alias: str, status: int, code: str
) -> None:
    """routing.md, "What the caller is told": an upstream 408 is `provider_unavailable`, 503; a
    stream that ended before any text without a finish reason is `provider_failed`, 502."""
    with pytest.raises(openai.APIStatusError) as failed:
        sdk.chat.completions.create(model=alias, messages=[{"role": "user", "content": "hi"}])
    assert (failed.value.status_code, failed.value.code) == (status, code), failed.value.body


async def test_a_bulk_update_through_the_manager_reaches_every_process_at_its_next_lookup(
    site: Site, sdk: openai.OpenAI
) -> None:
    """routing.md, "Where the rows are read": a bulk write through the managers
    (`queryset.update`) sets a new catalogue version: "every process, Daphne or worker, uses
    the change from its next lookup"."""
    sdk.chat.completions.create(model="bulk", messages=[{"role": "user", "content": "warm"}])
    assert final(await ask(site, "bulk"))["type"] == "done"
    manage(
        "shell",
        "-c",
        "from llm.models import Deployment; "
        "Deployment.objects.filter(provider__name='bulk-0').update(enabled=False)",
        env=site.topo.env,
        timeout=START_TIMEOUT,
    )
    before = site.upstream.count("bulk-0"), site.upstream.count("bulk-1")
    since = len(site.topo.log("nginx"))
    for _ in range(4):  # nginx spreads them over both replicas
        sdk.chat.completions.create(model="bulk", messages=[{"role": "user", "content": "x"}])
    served = re.findall(
        r'"POST /v1/chat/completions HTTP/1\.1" 200 .* upstream=(\S+)',
        site.topo.log("nginx")[since:],
    )
    assert len(served) == 4 and len(set(served)) == 2, served
    heard = await ask(site, "bulk")  # the Celery worker
    assert (final(heard)["type"], heard.text) == ("done", f"{ANSWER} (bulk-1)"), heard.frames
    after = site.upstream.count("bulk-0"), site.upstream.count("bulk-1")
    assert (after[0] - before[0], after[1] - before[1]) == (0, 5)


def test_the_replys_room_is_its_own_cap_when_that_is_below_a_quarter_of_the_window(
    site: Site, sdk: openai.OpenAI
) -> None:
    """routing.md: "The reply keeps room for its cap (`max_tokens`, else `LLM_MAX_TOKENS`) or a
    quarter of the window, whichever is smaller". Window 1,000: a ~780-token prompt leaves no
    quarter (250) for the reply, so it is refused, but it fits beside a cap of 100."""
    question = (
        "summarise " + "alpha " * 497 + "end"
    )  # ~3,000 characters: ~750 tokens, + the system's
    messages: Any = [{"role": "user", "content": question}]
    before = site.upstream.count("cw-1000")
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(model="cw-1000", messages=messages)
    assert refused.value.code == "context_length_exceeded", refused.value.body
    assert site.upstream.count("cw-1000") == before
    answer = sdk.chat.completions.create(model="cw-1000", messages=messages, max_tokens=100)
    assert answer.choices[0].message.content == f"{ANSWER} (cw-1000)"
    body = site.upstream.requests("cw-1000")[-1].body
    assert body["max_tokens"] == 100, body["max_tokens"]


async def test_a_regenerate_whose_prompt_no_longer_fits_ends_failed_with_that_code(
    site: Site,
) -> None:
    """routing.md: "A reply whose prompt cannot fit when it starts (a system prompt changed
    since) ends `failed` with that code" (context_length_exceeded, not retryable)."""
    first = await ask(site, "cw-1000", "What is a context window?")
    assert final(first)["type"] == "done", first.frames
    site.topo.query(
        "WITH c AS (UPDATE chat_conversation SET system_prompt = %s WHERE id = %s RETURNING id) "
        "SELECT * FROM c",
        "Always answer in the voice of a pirate. " * 100,  # ~4,000 characters
        first.conversation,
    )
    before = site.upstream.count("cw-1000")
    ws = await site.socket()
    try:
        await ws.send(json.dumps({"type": "regenerate", "message": first.reply}))
        again = await hear_reply(ws, timeout=120)
    finally:
        await ws.close()
    error = final(again)
    assert (error["type"], error["code"], error["retryable"]) == (
        "error",
        "context_length_exceeded",
        False,
    ), again.frames
    assert site.topo.row(again.reply or 0)["status"] == "failed"
    assert site.upstream.count("cw-1000") == before


async def test_without_a_known_window_nothing_is_fitted_or_refused(site: Site) -> None:
    """routing.md: "Unknown (empty, 0 …), nothing is fitted or refused": a 12,000-character
    message reaches a deployment with no window whole."""
    text = "long " * 2399 + "end"
    heard = await ask(site, "lf-b", text)
    assert final(heard)["type"] == "done", heard.frames
    sent = site.upstream.requests("lf-b")[-1].body["messages"]
    assert sent[-1]["content"] == text


async def test_an_operator_closes_an_open_breaker_by_hand_in_the_admin(site: Site) -> None:
    """routing.md: "Operators can close a breaker by hand (admin action)"; the deployment
    takes the next reply at once."""
    site.upstream.script("manual", *[Fail(500)] * 3)
    for _ in range(2):  # the third failure opens it (see the breaker test above)
        assert final(await ask(site, "manual"))["type"] == "error"
    assert deployment_health(site, "manual")["state"] == "open"
    (deployment,) = site.topo.query(
        "SELECT d.id FROM llm_deployment d JOIN llm_provider p ON p.id = d.provider_id "
        "WHERE p.name = 'manual'"
    )
    base = site.topo.base
    with httpx.Client(
        base_url=base, headers={"Cookie": sign_in_cookie(base, *STAFF)}, timeout=30
    ) as admin:
        done = admin_action(admin, "/admin/llm/deployment/", "reset_breakers", deployment[0])
    assert done.status_code == 302, done.text[:2000]
    row = deployment_health(site, "manual")
    assert (row["state"], row["consecutive_failures"]) == ("closed", 0), row
    heard = await ask(site, "manual")
    assert (final(heard)["type"], heard.text) == ("done", f"{ANSWER} (manual)"), heard.frames


async def test_a_half_open_breaker_lets_exactly_one_probe_go(site: Site) -> None:
    """routing.md: half-open, "exactly one probe may go"; a deployment "half-open with a probe
    already in flight" is skipped, so a reply with nothing else fails at once; the probe's
    first token closes it."""
    site.upstream.script("probe", *[Fail(500)] * 3)
    for _ in range(2):  # the third failure opens it (see the breaker test above)
        assert final(await ask(site, "probe"))["type"] == "error"
    deadline = time.monotonic() + 60  # a bound for failing only
    while deployment_health(site, "probe")["state"] != "half_open":
        assert time.monotonic() < deadline, deployment_health(site, "probe")
        await asyncio.sleep(0.2)
    first_token = threading.Event()
    site.upstream.script("probe", Reply(text="The probe's answer.", held_until=first_token))
    asked = site.upstream.count("probe")
    probe = asyncio.create_task(ask(site, "probe"))
    sent_by = time.monotonic() + 60  # a bound for failing only
    try:
        while site.upstream.count("probe") == asked:  # the probe's call is out, held
            assert time.monotonic() < sent_by and not probe.done(), "no probe was sent"
            await asyncio.sleep(0.05)
        other = await ask(site, "probe")
        assert final(other)["code"] == "provider_unavailable", other.frames
        skipped = routing(site, other.reply)["skipped"]
        assert [s["label"].split("/")[0] for s in skipped] == ["probe"], skipped
        assert site.upstream.count("probe") == asked + 1
        assert deployment_health(site, "probe")["state"] == "half_open"
    finally:
        first_token.set()
    heard = await probe
    assert (final(heard)["type"], heard.text) == ("done", "The probe's answer."), heard.frames
    assert deployment_health(site, "probe")["state"] == "closed"


async def test_cost_is_priced_per_million_tokens_and_rounded_half_up_to_8_places(
    site: Site,
) -> None:
    """routing.md: "`Message.cost` = prompt × input price + completion × output price, per
    million tokens, in Decimal rounded half-up to 8 places", from the provider's counts."""
    site.upstream.script("half-up", Reply(text="Priced.", prompt_tokens=1, completion_tokens=2))
    heard = await ask(site, "half-up")
    done = final(heard)
    assert done["type"] == "done", heard.frames
    assert done["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "estimated": False}
    assert done["cost"] == "0.00000037", done


def test_health_lists_the_settings_served_deployments_too(site: Site) -> None:
    """routing.md, Health: "as JSON at `GET /llm/health` (settings-served deployments
    included)": here `OPENAI_COMPATIBLE_BASE_URL`'s, served as `openai-compatible`."""
    status, body = health(site)
    assert status == 200 and body["status"] in ("ok", "degraded"), body
    served = {(d["alias"], d["kind"]) for d in body["deployments"]}
    assert ("openai-compatible", "openai-compatible") in served, served
    assert ("weighted", "openai-compatible") in served, served


async def test_retries_stop_at_the_attempt_bound_and_a_long_retry_after_ends_at_once(
    site: Site,
) -> None:
    """routing.md: "Bounds: `LLM_RETRY_MAX_ATTEMPTS` … attempts per reply across all
    deployments" (2 on this site); "A Retry-After longer than `LLM_RETRY_AFTER_MAX` (20 s) ends
    the reply at once with `provider_rate_limited` (or the failure's own code)"."""
    before = site.upstream.count("always-500")
    heard = await ask(site, "always-500")
    assert final(heard)["code"] == "provider_failed", heard.frames
    assert site.upstream.count("always-500") == before + 2
    assert len(routing(site, heard.reply)["attempts"]) == 2

    before = site.upstream.count("long-503")
    heard = await ask(site, "long-503")
    assert (final(heard)["code"], final(heard)["retryable"]) == ("provider_failed", True)
    assert site.upstream.count("long-503") == before + 1
    assert routing(site, heard.reply)["retry_after"] == 600


async def test_the_oldest_turns_are_left_out_and_the_history_starts_with_a_user_turn(
    site: Site,
) -> None:
    """routing.md, "The prompt": the system prompt and the question always go; "then as many
    of the latest earlier turns … as fit, the oldest left out first, starting with a user
    turn"; the cap is lowered where the window ends sooner. Window 1,000: four turns of ~260
    tokens each, of which two fit (with room for the second turn's answer, which is dropped
    since the history may not start with it)."""
    ws = await site.socket()
    conversation: int | None = None
    turns = [f"turn {n}: " + "word " * 198 + "end" for n in range(1, 5)]
    try:
        for text in [*turns, "Which turn was first?"]:
            frame = send_frame(text, model="cw-1000")
            frame["conversation"] = conversation
            await ws.send(json.dumps(frame))
            heard = await hear_reply(ws, timeout=120)
            assert final(heard)["type"] == "done", heard.frames
            conversation = heard.conversation
    finally:
        await ws.close()
    body = site.upstream.requests("cw-1000")[-1].body
    sent = [(m["role"], m["content"]) for m in body["messages"]]
    answer = f"{ANSWER} (cw-1000)"
    assert [role for role, _ in sent] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert [content for _, content in sent[1:]] == [
        turns[2],
        answer,
        turns[3],
        answer,
        "Which turn was first?",
    ]
    assert body["max_tokens"] < 512, body["max_tokens"]
