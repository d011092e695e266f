"""docs/caching.md's promises, checked from outside as a stranger with only the docs would: on
the production topology (nginx → two Daphne replicas → Redis ← a Celery worker, PostgreSQL) with
the cache on, a real OpenAI-compatible upstream (tests/fault_server.py) whose requests are
counted, programs' sockets and the `openai` SDK, and the operator's commands (`cache_warm`,
`cache_purge`).

A reply served from the cache never reaches the upstream; one that is generated does. Each
test asks questions of its own (the exact key covers the question, alias and history), under
aliases an operator made in the admin: `det` (temperature 0: deterministic, so cached),
`sampled` (the default temperature, 0.7), `det-fo` (temperature 0 in two priority tiers, the
first failing) and `det-cut` (an upstream that stops at its length limit).
"""

from __future__ import annotations

import asyncio
import json
import pickle
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from tests.fault_server import Fail, Reply
from tests.harness.processes import manage
from tests.harness.sockets import Heard, admin_action, hear_reply, recv_frame, sign_in_cookie
from tests.harness.topology import START_TIMEOUT
from tests.integration.test_protocol_promises import Site, send_frame, topology_with_upstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ANSWER = "Open Settings, then Security, and choose Reset password."
# Prices per million tokens, so a cached reply has something to have saved.
INPUT_PRICE, OUTPUT_PRICE = "1.00", "2.00"

SETUP = """
from accounts.services import account_create, api_key_create, membership_set, organisation_create
from llm.models import Deployment, Provider
owner = account_create(username="cache-owner", password="correct horse battery staple")
member = account_create(username="cache-member", password="correct horse battery staple")
acme = organisation_create(name="Acme Cache", admin=owner)
membership_set(organisation=acme, user=member, role="member", by=owner)
routes = {routes!r}
for name, (route, options, priority, alias) in routes.items():
    provider = Provider.objects.create(
        name=name, kind="openai-compatible", base_url={base!r} + route + "/v1",
        first_token_timeout=60, inter_token_timeout=60, options=options,
    )
    Deployment.objects.create(
        provider=provider, alias=alias, model="cache-model", priority=priority,
        input_price={input_price!r}, output_price={output_price!r},
        rpm_limit=1 if alias.startswith("det-rpm") else None,
    )
print(acme.slug)
print(api_key_create(user=owner, organisation=acme, name="acceptance").raw)
print(api_key_create(user=member, organisation=acme, name="acceptance").raw)
"""

# provider name: (upstream route, provider options, priority tier, alias)
ROUTES: dict[str, tuple[str, dict[str, Any], int, str]] = {
    "det-0": ("det", {"temperature": 0}, 0, "det"),
    "sampled-0": ("sampled", {}, 0, "sampled"),
    "fo-0": ("fo-0", {"temperature": 0}, 0, "det-fo"),
    "fo-1": ("fo-1", {"temperature": 0}, 1, "det-fo"),
    "cut-0": ("cut", {"temperature": 0}, 0, "det-cut"),
    "rpm-0": ("rpm", {"temperature": 0}, 0, "det-rpm"),  # 1 request a minute
    "rpm-1": ("rpm", {"temperature": 0}, 0, "det-rpm-2"),  # the same, should a minute end
}


@dataclass
class CacheSite:
    site: Site
    org: str  # the team organisation's slug
    owner: str  # the owner's API key in it
    member: str  # a member's API key in it

    @property
    def upstream(self) -> Any:
        return self.site.upstream

    def manage(self, *args: str) -> str:
        return manage(*args, env=self.site.topo.env, timeout=START_TIMEOUT)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.site.topo.env["REDIS_URL"])


@pytest.fixture(scope="module")
def cache() -> Iterator[CacheSite]:
    with topology_with_upstream("acceptance-caching", {"CACHE_ENABLED": "true"}) as site:
        up = site.upstream
        for route in ("det", "sampled", "fo-1", "rpm"):
            up.default(route, Reply(text=ANSWER))
        up.default("fo-0", Fail(500))
        up.default("cut", Reply(text=ANSWER, finish_reason="length"))
        base = up.base_url("x").removesuffix("x/v1")
        code = SETUP.format(
            routes=ROUTES, base=base, input_price=INPUT_PRICE, output_price=OUTPUT_PRICE
        )
        printed = manage("shell", "-c", code, env=site.topo.env, timeout=START_TIMEOUT)
        org, owner, member = printed.strip().splitlines()[-3:]
        with site.topo.logs_on_failure():
            yield CacheSite(site, org, owner, member)


async def ask(
    cache: CacheSite,
    text: str,
    alias: str = "det",
    *,
    key: str | None = None,
    conversation: int | None = None,
    settle: bool = True,
) -> Heard:
    """A program's socket sends `text` to `alias`; what it heard of the reply, once the cache
    has settled it (stored it, or recorded the hit or the miss; `settle=False` where the cache
    is off and settles nothing)."""
    mark = settle_mark(cache)
    ws = await cache.site.socket(key or cache.owner)
    try:
        frame = send_frame(text, model=alias)
        frame["conversation"] = conversation
        await ws.send(json.dumps(frame))
        heard = await hear_reply(ws, timeout=120)
    finally:
        await ws.close()
    if settle:
        await settled(cache, mark)
    return heard


def settle_mark(cache: CacheSite) -> int:
    """Lookups, hits and stores counted so far (CacheStat, every tenant and day)."""
    ((total,),) = cache.site.topo.query(
        "SELECT coalesce(sum(lookups + exact_hits + semantic_hits + stores), 0) FROM llm_cachestat"
    )
    return int(total)


async def settled(cache: CacheSite, mark: int) -> None:
    """Wait until the cache has settled one more reply: caching.md, "Known limits": "The reply
    is stored just after its `done` is published"; a repeat sent sooner gets a live reply."""
    deadline = time.monotonic() + 60  # a bound for failing only
    while settle_mark(cache) <= mark:
        assert time.monotonic() < deadline, "the cache never settled the reply"
        await asyncio.sleep(0.05)


async def regenerate(cache: CacheSite, reply: int) -> Heard:
    mark = settle_mark(cache)
    ws = await cache.site.socket(cache.owner)
    try:
        await ws.send(json.dumps({"type": "regenerate", "message": reply}))
        heard = await hear_reply(ws, timeout=120)
    finally:
        await ws.close()
    await settled(cache, mark)
    return heard


def routing(cache: CacheSite, reply: int | None) -> dict[str, Any]:
    assert reply is not None
    found = cache.site.topo.row(reply)["routing"]
    assert isinstance(found, dict)
    return found


def done(heard: Heard) -> dict[str, Any]:
    assert heard.final is not None and heard.final["type"] == "done", heard.frames
    return heard.final


def question(words: str) -> str:
    """A question no other test asks (the tag is one more word on both sides)."""
    return f"{words} for account {uuid.uuid4().hex[:8]}"


# --- the exact layer ---------------------------------------------------------------------------


async def test_a_deterministic_question_asked_again_is_replayed_from_the_cache_at_no_cost(
    cache: CacheSite,
) -> None:
    """caching.md: "How do I reset my password?" and "how do i  reset my password" share a key
    (NFKC, case-folded, whitespace collapsed, trailing ?!. dropped); a hit replays the text as
    ordinary numbered deltas and `done` says cached, provider "cache", cost "0.00000000", zero
    tokens; `Message.routing` names the exact layer and the entry, with what it saved."""
    tag = uuid.uuid4().hex[:8]
    before = cache.upstream.count("det")
    first = await ask(cache, f"How do I reset my password {tag}?")
    assert (done(first)["cached"], first.text) == (False, ANSWER)
    assert cache.upstream.count("det") == before + 1

    again = await ask(cache, f"how  do I RESET my password {tag}")
    final = done(again)
    again.check_contiguous()
    assert again.text == ANSWER
    assert (final["status"], final["cached"], final["provider"], final["cost"]) == (
        "complete",
        True,
        "cache",
        "0.00000000",
    ), final
    assert (final["usage"]["prompt_tokens"], final["usage"]["completion_tokens"]) == (0, 0)
    assert cache.upstream.count("det") == before + 1  # the upstream was not asked again
    record = routing(cache, again.reply)
    assert record["cache"] == "exact", record
    assert record["alias"] == "det"
    assert record["saved_tokens"] and record["saved_cost"] not in (None, "0"), record
    (hits,) = cache.site.topo.query(
        "SELECT count(*) FROM llm_cachehit WHERE message_id = %s", again.reply
    )
    assert hits == (1,)


async def test_members_of_one_organisation_share_its_cache_and_another_never_sees_it(
    cache: CacheSite,
) -> None:
    """caching.md, "Keys and tenants": members share the organisation's cache; another
    organisation, a personal one included, never sees it."""
    text = question("How do I export my invoices")
    before = cache.upstream.count("det")
    await ask(cache, text, key=cache.owner)
    member = await ask(cache, text, key=cache.member)
    assert (done(member)["cached"], member.text) == (True, ANSWER)
    assert cache.upstream.count("det") == before + 1
    outsider = await ask(cache, text, key=cache.site.outsider_key)
    assert done(outsider)["cached"] is False
    personal = await ask(cache, text, key=cache.site.key)  # the owner's personal organisation
    assert done(personal)["cached"] is False
    assert cache.upstream.count("det") == before + 3


async def test_a_sampling_models_replies_are_never_stored(cache: CacheSite) -> None:
    """caching.md: a sampling model (temperature > 0): "nothing is stored"."""
    text = question("What is a good name for a cat")
    before = cache.upstream.count("sampled")
    for _ in range(2):
        heard = await ask(cache, text, "sampled")
        assert done(heard)["cached"] is False
    assert cache.upstream.count("sampled") == before + 2


async def test_faq_entries_are_served_even_for_a_sampling_model(cache: CacheSite) -> None:
    """caching.md: for a sampling model "only operator FAQ entries are served"; `cache_warm`
    stores every question and paraphrase for first questions under the alias."""
    tag = uuid.uuid4().hex[:8]
    faq = [
        {
            "question": f"What are the support hours of desk {tag}?",
            "answer": "Weekdays from 9 to 5.",
            "paraphrases": [f"When is desk {tag} open?"],
        }
    ]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "faq.json"
        path.write_text(json.dumps(faq))
        out = cache.manage(
            "cache_warm", "--org", cache.org, "--file", str(path), "--alias", "sampled"
        )
    assert "Stored 2 questions (1 answers)" in out, out
    before = cache.upstream.count("sampled")
    for text in (f"what are the support hours of desk {tag}", f"When is desk {tag} open?"):
        heard = await ask(cache, text, "sampled")
        assert (done(heard)["cached"], heard.text) == (True, "Weekdays from 9 to 5."), text
    assert cache.upstream.count("sampled") == before


async def test_a_regenerate_skips_the_cache_and_its_fresh_answer_replaces_the_entry(
    cache: CacheSite,
) -> None:
    """caching.md: regenerate is "skipped (the user asked for a new answer); the fresh reply
    replaces the entry"."""
    text = question("How do I change my email address")
    first = await ask(cache, text)
    assert done(first)["cached"] is False
    cache.upstream.script("det", Reply(text="A second, fresh answer."))
    before = cache.upstream.count("det")
    fresh = await regenerate(cache, first.reply or 0)
    assert (done(fresh)["cached"], fresh.text) == (False, "A second, fresh answer.")
    assert cache.upstream.count("det") == before + 1
    again = await ask(cache, text)
    assert (done(again)["cached"], again.text) == (True, "A second, fresh answer.")
    assert cache.upstream.count("det") == before + 1


async def test_failed_incomplete_and_failed_over_replies_are_never_stored(
    cache: CacheSite,
) -> None:
    """caching.md: "A reply is stored only when it finished `complete` … and not after a
    failover to another deployment. Failed, … incomplete (cut by the token cap) … replies are
    never stored"."""
    failing = question("Why does my upload fail")
    cache.upstream.script("det", Fail(500), Fail(500))  # both attempts (LLM_RETRY_MAX_ATTEMPTS=2)
    heard = await ask(cache, failing)
    assert heard.final is not None and heard.final["type"] == "error", heard.frames
    before = cache.upstream.count("det")
    heard = await ask(cache, failing)
    assert (done(heard)["cached"], heard.text) == (False, ANSWER)
    assert cache.upstream.count("det") == before + 1

    cut = question("Describe every plan in detail")
    for _ in range(2):
        heard = await ask(cache, cut, "det-cut")
        assert (done(heard)["status"], done(heard)["cached"]) == ("incomplete", False)

    over = question("How do I add a teammate")
    before = cache.upstream.count("fo-1")
    for _ in range(2):
        heard = await ask(cache, over, "det-fo")
        assert (done(heard)["cached"], heard.text) == (False, ANSWER)
        assert routing(cache, heard.reply)["failover"] is True
    assert cache.upstream.count("fo-1") == before + 2


# --- the semantic layer ------------------------------------------------------------------------


async def test_a_reworded_first_question_is_answered_by_the_semantic_layer(
    cache: CacheSite,
) -> None:
    """caching.md: first questions are matched by meaning within the tenant and scope; a
    near-miss that asks for another thing (enable / disable) is not."""
    # No random tag here: a tag is a word of the question, and the lexical check reads it.
    stored = await ask(cache, "How do I enable dark mode in the mobile app?")
    assert done(stored)["cached"] is False
    before = cache.upstream.count("det")
    reworded = await ask(cache, "how can I turn on dark mode in the mobile app")
    assert (done(reworded)["cached"], reworded.text) == (True, ANSWER), reworded.final
    record = routing(cache, reworded.reply)
    assert record["cache"] == "semantic" and 0 < record["similarity"] < 1, record
    opposite = await ask(cache, "How do I disable dark mode in the mobile app?")
    assert done(opposite)["cached"] is False
    assert cache.upstream.count("det") == before + 1


async def test_a_question_longer_than_400_characters_is_matched_exactly_only(
    cache: CacheSite,
) -> None:
    """caching.md: a question longer than CACHE_SEMANTIC_MAX_CHARS (400): exact yes, semantic
    no."""
    tag = uuid.uuid4().hex[:8]
    tail = " ".join(["It happens every morning after the nightly backup job runs."] * 7)
    long = f"How do I fix the sync error on device {tag}? {tail}"
    assert len(long) > 400
    await ask(cache, long)
    before = cache.upstream.count("det")
    exact = await ask(cache, long.upper())
    assert done(exact)["cached"] is True
    reworded = await ask(cache, long.replace("How do I fix", "How can I repair"))
    assert done(reworded)["cached"] is False
    assert cache.upstream.count("det") == before + 1


async def test_a_follow_up_is_answered_exactly_after_the_same_conversation_only(
    cache: CacheSite,
) -> None:
    """caching.md: a follow-up in a conversation: "exact only"; semantic "only if the
    organisation enables `semantic_mid_conversation`" (it does not here)."""
    tag = uuid.uuid4().hex[:8]
    opening, follow = f"What plans do you offer {tag}?", f"Which one includes SSO {tag}?"
    first = await ask(cache, opening)
    await ask(cache, follow, conversation=first.conversation)
    before = cache.upstream.count("det")
    second = await ask(cache, opening)  # a new conversation, the same first turn
    assert done(second)["cached"] is True
    same = await ask(cache, follow, conversation=second.conversation)
    assert (done(same)["cached"], routing(cache, same.reply).get("cache")) == (True, "exact")
    third = await ask(cache, opening)
    reworded = await ask(cache, f"which of them include SSO {tag}", conversation=third.conversation)
    assert done(reworded)["cached"] is False
    assert cache.upstream.count("det") == before + 1


# --- where things live, and the operators' tools -----------------------------------------------


async def test_a_record_gone_while_its_redis_key_lingers_is_a_miss(cache: CacheSite) -> None:
    """caching.md: "A hit needs both: the Redis key, and a live record in the same namespace. A
    record purged or expired whose key lingers is a miss"; the key carries the entry's TTL."""
    text = question("How do I download my data")
    first = await ask(cache, text)
    assert done(first)["cached"] is False
    (entry,) = cache.site.topo.query(
        "SELECT id, namespace, key FROM llm_cacheentry WHERE source_message_id = %s", first.reply
    )
    client = cache.redis()
    (name,) = [k for k in client.scan_iter(f"*llmcache:x:{entry[1]}:{entry[2]}")]
    ttl = int(client.ttl(name))  # type: ignore[arg-type]
    assert 0 < ttl <= 86400, ttl  # CACHE_TTL, a day
    cache.site.topo.query(
        "WITH gone AS (DELETE FROM llm_cacheentry WHERE id = %s RETURNING id) SELECT * FROM gone",
        entry[0],
    )
    before = cache.upstream.count("det")
    again = await ask(cache, text)
    assert done(again)["cached"] is False
    assert cache.upstream.count("det") == before + 1


async def test_cache_purge_of_an_organisation_empties_its_cache(cache: CacheSite) -> None:
    """caching.md, "Commands": `manage.py cache_purge --org acme`."""
    text = question("How do I close my account")
    await ask(cache, text)
    assert done(await ask(cache, text))["cached"] is True
    cache.manage("cache_purge", "--org", cache.org)
    before = cache.upstream.count("det")
    assert done(await ask(cache, text))["cached"] is False
    assert cache.upstream.count("det") == before + 1


def test_a_completion_with_generation_parameters_is_neither_answered_nor_stored(
    cache: CacheSite,
) -> None:
    """docs/api.md (the reply cache applies to `/v1`): "A request with generation parameters is
    never answered from the reply cache, nor stored in it"; one without them is."""
    sdk = openai.OpenAI(base_url=f"{cache.site.topo.base}/v1", api_key=cache.owner, max_retries=0)
    text = question("How do I print a receipt")
    messages: Any = [{"role": "user", "content": text}]
    before = cache.upstream.count("det")
    for _ in range(2):
        raw = sdk.chat.completions.with_raw_response.create(
            model="det", messages=messages, temperature=0
        )
        assert raw.parse().choices[0].message.content == ANSWER
        assert "cache" not in routing(cache, int(raw.headers["x-parley-message"]))
    assert cache.upstream.count("det") == before + 2
    mark = settle_mark(cache)
    sdk.chat.completions.create(model="det", messages=messages)
    deadline = time.monotonic() + 60  # a bound for failing only
    while settle_mark(cache) <= mark:
        assert time.monotonic() < deadline, "the cache never settled the completion"
        time.sleep(0.05)
    raw = sdk.chat.completions.with_raw_response.create(model="det", messages=messages)
    assert raw.parse().choices[0].message.content == ANSWER
    assert routing(cache, int(raw.headers["x-parley-message"]))["cache"] == "exact"
    assert cache.upstream.count("det") == before + 3


POLICY = """
from accounts.models import Organisation
from llm.cache_models import CachePolicy
CachePolicy.objects.update_or_create(
    organisation=Organisation.objects.get(personal_owner__username={username!r}),
    defaults={fields!r},
)
"""


def outsider_policy(cache: CacheSite, username: str = "promise-outsider", **fields: Any) -> None:
    """The CachePolicy row of a personal organisation (the outsider's, unless `username`
    names another owner), as its admin sets it in the admin."""
    cache.manage("shell", "-c", POLICY.format(fields=fields, username=username))


async def test_an_organisations_policy_switches_its_cache_and_bounds_it_least_recently_used(
    cache: CacheSite,
) -> None:
    """caching.md, "Cache policies" (one row per organisation): cache sampled replies;
    semantic matching off: exact hits only; a bound, each store evicting the least recently
    used beyond it (a hit refreshes `last_used_at`); enabled off."""
    key = cache.site.outsider_key
    tag = uuid.uuid4().hex[:8]
    outsider_policy(cache, cache_sampled=True, semantic_enabled=False, max_entries=2)
    sampled = f"What should I name my dog {tag}?"
    await ask(cache, sampled, "sampled", key=key)
    assert done(await ask(cache, sampled, "sampled", key=key))["cached"] is True
    reworded = await ask(cache, f"what name should I give my dog {tag}", "sampled", key=key)
    assert done(reworded)["cached"] is False

    first, second, third = (question(q) for q in ("How do I pay", "How do I ship", "How do I sort"))
    await ask(cache, first, key=key)
    await ask(cache, second, key=key)
    assert done(await ask(cache, first, key=key))["cached"] is True  # first is used again
    await ask(cache, third, key=key)  # the bound is 2: the least recently used goes
    before = cache.upstream.count("det")
    assert done(await ask(cache, first, key=key))["cached"] is True
    assert done(await ask(cache, second, key=key))["cached"] is False
    assert cache.upstream.count("det") == before + 1

    outsider_policy(cache, enabled=False)
    before = cache.upstream.count("det")
    assert done(await ask(cache, first, key=key, settle=False))["cached"] is False
    assert cache.upstream.count("det") == before + 1


def usage_today(cache: CacheSite) -> dict[str, Any]:
    with cache.site.http(cache.member) as http:
        answer = http.get("/api/v1/usage", params={"days": 1})
    assert answer.status_code == 200, answer.text
    today = answer.json()["today"]
    assert isinstance(today, dict)
    return today


async def test_a_cached_reply_charges_the_budget_nothing(cache: CacheSite) -> None:
    """caching.md: "Quotas are charged nothing for a complete cached reply"."""
    text = question("How do I rename a project")
    await ask(cache, text, key=cache.member)
    before = usage_today(cache)
    assert before["tokens"] > 0, before
    heard = await ask(cache, text, key=cache.member)
    assert done(heard)["cached"] is True
    after = usage_today(cache)
    assert (after["tokens"], after["cost"]) == (before["tokens"], before["cost"]), (before, after)


def redis_key(namespace: str, key: str) -> str:
    """The exact layer's key as Redis holds it (Django's KEY_PREFIX "parley", version 1)."""
    return f"parley:1:llmcache:x:{namespace}:{key}"


def entry_of(cache: CacheSite, reply: int | None) -> tuple[int, str, str]:
    """(id, namespace, key) of the entry a reply was stored as."""
    (row,) = cache.site.topo.query(
        "SELECT id, namespace, key FROM llm_cacheentry WHERE source_message_id = %s", reply
    )
    return int(row[0]), str(row[1]), str(row[2])


async def test_a_key_planted_under_another_tenant_cannot_serve_its_entry(
    cache: CacheSite,
) -> None:
    """caching.md: "A hit is also checked against the database record's namespace, so not
    even a key planted under another tenant can serve an entry"."""
    text = question("How do I see my invoices")
    stored = await ask(cache, text)  # the team organisation's entry
    # Planted under the owner's personal organisation (its own API key asks there).
    entry, namespace, key = entry_of(cache, stored.reply)
    (personal,) = cache.site.topo.query(
        "SELECT id FROM accounts_organisation WHERE personal_owner_id = "
        "(SELECT id FROM accounts_user WHERE username = 'promise-owner')"
    )
    planted = {"entry": entry, "kind": "reply", "answer": "PLANTED", "model": "cache-model"}
    name = redis_key(f"org:{personal[0]}", key)
    cache.redis().set(name, pickle.dumps(planted, pickle.HIGHEST_PROTOCOL), ex=3600)
    before = cache.upstream.count("det")
    heard = await ask(cache, text, key=cache.site.key)
    assert (done(heard)["cached"], heard.text) == (False, ANSWER)
    assert cache.upstream.count("det") == before + 1
    assert namespace != f"org:{personal[0]}"


async def test_an_expired_record_is_not_served(cache: CacheSite) -> None:
    """caching.md: "the record is no longer served after `expires_at`"."""
    text = question("How do I update my billing address")
    stored = await ask(cache, text)
    entry, _, _ = entry_of(cache, stored.reply)
    cache.site.topo.query(
        "WITH old AS (UPDATE llm_cacheentry SET expires_at = now() - interval '1 minute' "
        "WHERE id = %s RETURNING id) SELECT * FROM old",
        entry,
    )
    before = cache.upstream.count("det")
    heard = await ask(cache, text)
    assert done(heard)["cached"] is False
    assert cache.upstream.count("det") == before + 1


async def test_a_lookup_that_fails_counts_as_a_miss_and_the_reply_is_generated(
    cache: CacheSite,
) -> None:
    """caching.md, "Failure": "The cache never stops a reply: any error in a lookup is logged
    and counts as a miss" (here the exact key holds bytes no reader can decode)."""
    text = question("How do I undo a deletion")
    stored = await ask(cache, text)
    _, namespace, key = entry_of(cache, stored.reply)
    cache.redis().set(redis_key(namespace, key), b"\x80\x05 not a pickle", ex=3600)
    before = cache.upstream.count("det")
    heard = await ask(cache, text, settle=False)  # a failed lookup settles nothing
    assert (done(heard)["status"], done(heard)["cached"], heard.text) == (
        "complete",
        False,
        ANSWER,
    )
    assert cache.upstream.count("det") == before + 1


async def test_cancelled_empty_and_too_long_replies_are_never_stored(cache: CacheSite) -> None:
    """caching.md: "… not longer than `CACHE_MAX_ANSWER_CHARS` (16,000) …. Failed, cancelled,
    interrupted, incomplete (cut by the token cap) or empty replies are never stored"."""
    cancelled = question("Write me a long story")
    slow = Reply(text="Once upon a time " * 40, chunk_chars=6, chunk_delay=0.05)
    cache.upstream.script("det", slow)
    mark = settle_mark(cache)
    ws = await cache.site.socket(cache.owner)
    try:
        await ws.send(json.dumps(send_frame(cancelled, model="det")))
        reply = None
        while True:
            frame = await recv_frame(ws, 60)
            if frame["type"] == "ack":
                reply = frame["reply"]
            elif frame["type"] == "delta" and frame["message"] == reply:
                await ws.send(json.dumps({"type": "cancel", "message": reply}))
            elif frame["type"] in ("done", "error") and frame.get("message") == reply:
                break
    finally:
        await ws.close()
    assert (frame["type"], frame["status"]) == ("done", "cancelled"), frame
    await settled(cache, mark)

    empty = question("Say nothing")
    cache.upstream.script("det", Reply(text=""))
    await ask(cache, empty)

    too_long = question("Print the whole manual")
    cache.upstream.script("det", Reply(text="m" * 16_001, chunk_chars=200))
    heard = await ask(cache, too_long)
    assert (done(heard)["status"], len(heard.text)) == ("complete", 16_001)

    before = cache.upstream.count("det")
    for text in (cancelled, empty, too_long):
        heard = await ask(cache, text)
        assert (done(heard)["cached"], heard.text) == (False, ANSWER), text
    assert cache.upstream.count("det") == before + 3


async def test_with_mid_conversation_matching_a_reworded_follow_up_hits_after_the_same_turns(
    cache: CacheSite,
) -> None:
    """caching.md: a follow-up is matched semantically "only if the organisation enables
    `semantic_mid_conversation`, and then only after the very same earlier conversation"."""
    outsider_policy(cache, "promise-owner", semantic_mid_conversation=True)
    key = cache.site.key  # the owner's personal organisation
    # No random tag where a semantic hit is expected: the lexical check reads every word.
    opening = "Tell me about the family plan"
    first = await ask(cache, opening, key=key)
    await ask(
        cache,
        "How do I enable dark mode in the family plan?",
        key=key,
        conversation=first.conversation,
    )
    before = cache.upstream.count("det")
    same = await ask(cache, opening, key=key)  # the very same first turn, answered the same
    reworded = await ask(
        cache,
        "how can I turn on dark mode in the family plan",
        key=key,
        conversation=same.conversation,
    )
    assert (done(reworded)["cached"], routing(cache, reworded.reply).get("cache")) == (
        True,
        "semantic",
    ), routing(cache, reworded.reply)
    other = await ask(cache, "Tell me about the pricing of the family plan", key=key)
    elsewhere = await ask(
        cache,
        "how can I turn on dark mode in the family plan",
        key=key,
        conversation=other.conversation,
    )
    assert done(elsewhere)["cached"] is False
    assert cache.upstream.count("det") == before + 2  # the other opening and its follow-up


OPERATOR = """
from accounts.models import Organisation, User
from accounts.services import membership_set
user = User.objects.create_user(
    username="cache-operator", password="correct horse battery staple", is_staff=True
)
acme = Organisation.objects.get(slug={org!r})
membership_set(organisation=acme, user=user, role="operator", by=None)
"""


async def test_an_organisations_operator_sees_and_purges_its_entries_only(cache: CacheSite) -> None:
    """caching.md, Operators: "Organisation operators see and purge their own organisations'
    entries only"; "purge every organisation's cache" is for superusers."""
    ours, theirs = question("How do I invite a colleague"), question("How do I leave a team")
    await ask(cache, ours)  # the team organisation
    await ask(cache, theirs, key=cache.site.key)  # the owner's personal organisation
    cache.manage("shell", "-c", OPERATOR.format(org=cache.org))
    base = cache.site.topo.base
    cookie = sign_in_cookie(base, "cache-operator", "correct horse battery staple")
    with httpx.Client(base_url=base, headers={"Cookie": cookie}, timeout=30) as admin:
        listing = admin.get("/admin/llm/cacheentry/", params={"all": ""})
        assert listing.status_code == 200, listing.text[:2000]
        assert ours.casefold() in listing.text.casefold(), "the operator's own entry is missing"
        assert theirs.casefold() not in listing.text.casefold()
        assert admin.get("/admin/llm/cacheentry/purge-all/").status_code == 403
        (other,) = cache.site.topo.query(
            "SELECT id FROM llm_cacheentry WHERE question ILIKE %s", f"%{theirs.split()[-1]}%"
        )
        purged = admin_action(admin, "/admin/llm/cacheentry/", "purge_organisations", other[0])
        assert purged.status_code in (200, 302), purged.text[:2000]
    assert done(await ask(cache, theirs, key=cache.site.key))["cached"] is True  # kept


FRESH_TENANT = """
from accounts.services import account_create, api_key_create
user = account_create(username="cache-stats", password="correct horse battery staple")
organisation = user.personal_organisation
print(organisation.pk)
print(api_key_create(user=user, organisation=organisation, name="acceptance").raw)
"""


async def test_a_tenants_statistics_count_its_lookups_hits_stores_and_savings(
    cache: CacheSite,
) -> None:
    """caching.md: `CacheStat` holds "lookups, hits, stores, savings per tenant and day"
    (the admin's "Cache statistics per day": exact and semantic hits)."""
    organisation, key = cache.manage("shell", "-c", FRESH_TENANT).strip().splitlines()[-2:]
    await ask(cache, "How do I enable dark mode in the app?", key=key)  # a store
    await ask(cache, "how do I enable dark mode in the app", key=key)  # exact
    await ask(cache, "how can I turn on dark mode in the app", key=key)  # semantic
    (row,) = cache.site.topo.query(
        "SELECT lookups, exact_hits, semantic_hits, stores, saved_tokens, saved_cost "
        "FROM llm_cachestat WHERE namespace = %s",
        f"org:{organisation}",
    )
    lookups, exact, semantic, stores, saved_tokens, saved_cost = row
    assert (lookups, exact, semantic, stores) == (3, 1, 1, 1), row
    assert saved_tokens > 0 and saved_cost > 0, row


async def test_a_cached_answer_is_served_while_its_deployment_is_at_its_rate_limit(
    cache: CacheSite,
) -> None:
    """caching.md: "A hit replaces the provider call"; routing.md gates a deployment "just
    before each attempt", so a hit, which makes none, is not refused for the deployment's spent
    rpm (1 here) while a new question is (`provider_unavailable`)."""
    sdk = openai.OpenAI(base_url=f"{cache.site.topo.base}/v1", api_key=cache.owner, max_retries=0)
    # A run straddling a minute's edge is tried once more, on a deployment of its own.
    for alias in ("det-rpm", "det-rpm-2"):
        minute = int(time.time() // 60)
        text = question("How do I reset my PIN")
        assert done(await ask(cache, text, alias))["cached"] is False
        refused = await ask(cache, question("How do I reset my PIN"), alias)
        again = await ask(cache, text, alias)
        mark = settle_mark(cache)
        completion = sdk.chat.completions.with_raw_response.create(
            model=alias, messages=[{"role": "user", "content": text}]
        )
        await settled(cache, mark)
        if int(time.time() // 60) != minute:
            continue
        assert refused.final is not None and refused.final["code"] == "provider_unavailable"
        assert (done(again)["cached"], again.text) == (True, ANSWER), again.frames
        assert completion.parse().choices[0].message.content == ANSWER
        reply = int(completion.headers["x-parley-message"])
        assert routing(cache, reply)["cache"] == "exact"
        return
    pytest.fail("the replies never fell in one minute")


async def test_cache_purge_takes_chosen_entries_or_only_the_expired_ones(cache: CacheSite) -> None:
    """caching.md, "Commands": `cache_purge --entry 12 13 | --org acme | --all [--expired]`
    (expired records are deleted "by `cache_purge --all --expired`")."""
    fresh, stale = question("How do I merge two accounts"), question("How do I split a bill")
    kept, _, _ = entry_of(cache, (await ask(cache, fresh)).reply)
    old, _, _ = entry_of(cache, (await ask(cache, stale)).reply)
    cache.site.topo.query(
        "WITH old AS (UPDATE llm_cacheentry SET expires_at = now() - interval '1 minute' "
        "WHERE id = %s RETURNING id) SELECT * FROM old",
        old,
    )
    out = cache.manage("cache_purge", "--all", "--expired")
    assert "Removed" in out, out
    left = {row[0] for row in cache.site.topo.query("SELECT id FROM llm_cacheentry")}
    assert old not in left and kept in left
    assert done(await ask(cache, fresh))["cached"] is True
    cache.manage("cache_purge", "--entry", str(kept))
    assert kept not in {row[0] for row in cache.site.topo.query("SELECT id FROM llm_cacheentry")}
    assert done(await ask(cache, fresh))["cached"] is False
