"""Routing policy: weighted rotation, priority tiers, fallback chains, pinned aliases, rate
limits, and the settings catalogue that serves when there are no rows."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.core.cache.backends.base import BaseCache

from llm import limits
from llm.breaker import CircuitBreaker
from llm.catalog import DeploymentConfig, all_deployments, settings_deployments
from llm.models import Deployment, FallbackChain, Provider
from llm.providers.base import ProviderError
from llm.router import (
    Skip,
    attempt_failed,
    attempt_succeeded,
    gate,
    provider_choose,
    rotation,
    route_plan,
    weighted_pick,
)


def _config(key: str, *, weight: int = 1, priority: int = 0, **fields) -> DeploymentConfig:
    return DeploymentConfig(
        name=key,
        kind="simulated",
        model="m",
        alias="default",
        key=key,
        weight=weight,
        priority=priority,
        **fields,
    )


def test_weighted_pick_gives_each_slot_exactly_its_weight_per_cycle():
    picks = Counter(weighted_pick([3, 1], turn) for turn in range(400))
    assert picks == {0: 300, 1: 100}
    picks = Counter(weighted_pick([5, 2, 1], turn) for turn in range(800))
    assert picks == {0: 500, 1: 200, 2: 100}


def test_rotation_over_400_replies_sends_three_to_one_by_weight():
    heavy, light = _config("heavy", weight=3), _config("light", weight=1)
    firsts = Counter(rotation("default", [heavy, light])[0].key for _ in range(400))
    assert abs(firsts["heavy"] - 300) <= 20 and abs(firsts["light"] - 100) <= 20
    # The one not picked is next in line, in case the pick fails.
    assert {d.key for d in rotation("default", [heavy, light])} == {"heavy", "light"}


def test_the_rotation_counter_is_shared_per_alias_and_tier():
    a, b = _config("a"), _config("b")
    assert [rotation("x", [a, b])[0].key for _ in range(4)] == ["a", "b", "a", "b"]
    assert rotation("y", [a, b])[0].key == "a"  # another alias has its own turn


def test_a_lower_tier_is_only_after_the_whole_best_tier():
    tier0 = [_config("p1"), _config("p2")]
    tier1 = [_config("s1", priority=1, weight=9)]
    for _ in range(6):
        order = [d.key for d in rotation("default", [tier1[0], *tier0])]
        assert set(order[:2]) == {"p1", "p2"} and order[2] == "s1"


def test_disabled_deployments_are_left_out_of_the_rotation():
    order = rotation("default", [_config("on"), _config("off", enabled=False, weight=50)])
    assert [d.key for d in order] == ["on"]


@pytest.mark.django_db
def test_with_no_rows_the_settings_providers_serve_under_their_own_names(settings):
    settings.OPENAI_API_KEY = ""
    settings.ANTHROPIC_API_KEY = ""
    settings.OPENAI_COMPATIBLE_BASE_URL = ""
    chosen = provider_choose()
    assert (chosen.name, chosen.alias, chosen.key) == (
        "simulated",
        "simulated",
        "settings-simulated",
    )
    assert provider_choose(pinned="local").is_local
    assert set(settings_deployments()) == {"local", "simulated"}
    assert [d.key for d in route_plan("simulated").candidates] == ["settings-simulated"]


@pytest.mark.django_db
def test_a_pinned_model_alias_resolves_to_its_deployment():
    provider = Provider.objects.create(name="acme", kind="simulated")
    Deployment.objects.create(provider=provider, alias="gpt-4o-mini", model="acme-small")
    Deployment.objects.create(provider=provider, alias="default", model="acme-big")
    chosen = provider_choose(pinned="gpt-4o-mini")
    assert (chosen.name, chosen.model, chosen.alias) == ("acme", "acme-small", "gpt-4o-mini")


@pytest.mark.django_db
def test_an_unknown_model_alias_is_refused():
    with pytest.raises(ProviderError) as info:
        provider_choose(pinned="no-such-model")
    assert (info.value.code, info.value.retryable) == ("provider_rejected", False)
    with pytest.raises(ProviderError):
        route_plan("no-such-model")


@pytest.mark.django_db
def test_rows_take_an_alias_over_from_the_settings(settings):
    provider = Provider.objects.create(name="mine", kind="simulated")
    Deployment.objects.create(provider=provider, alias="simulated", model="custom")
    assert [d.model for d in route_plan("simulated").candidates] == ["custom"]
    keys = [d.key for d in all_deployments()]
    assert "settings-simulated" not in keys and "settings-local" in keys


@pytest.mark.django_db
def test_the_plan_walks_tiers_then_the_fallback_chain_in_order():
    remote = Provider.objects.create(name="remote", kind="simulated")
    other = Provider.objects.create(name="other", kind="simulated")
    Deployment.objects.create(provider=remote, alias="smart", model="m1", priority=0)
    Deployment.objects.create(provider=other, alias="smart", model="m2", priority=1)
    Deployment.objects.create(provider=other, alias="claude", model="m3")
    FallbackChain.objects.create(alias="smart", fallbacks="claude, local, smart")
    plan = route_plan("smart")
    assert plan.chain == ["smart", "claude", "local"]
    assert [(d.alias, d.model) for d in plan.candidates] == [
        ("smart", "m1"),
        ("smart", "m2"),
        ("claude", "m3"),
        ("local", "smollm2-135m-instruct"),  # a settings provider can be a fallback too
    ]


@pytest.mark.django_db
def test_the_settings_can_seed_a_fallback_chain(settings):
    settings.LLM_FALLBACKS = {"simulated": ["local"]}
    assert [d.alias for d in route_plan("simulated").candidates] == ["simulated", "local"]


def test_an_open_breaker_gates_a_deployment_off():
    deployment = _config("tired")
    breaker = CircuitBreaker(deployment.key)
    for _ in range(5):
        breaker.record_failure(breaker.allow())
    verdict = gate(deployment, prompt_tokens=10)
    assert isinstance(verdict, Skip) and verdict.reason == "circuit_open"
    assert 0 < verdict.retry_in <= 30


def test_the_requests_per_minute_limit_holds_for_the_minute():
    deployment = _config("rpm", rpm_limit=3)
    verdicts = [gate(deployment, prompt_tokens=1) for _ in range(5)]
    assert [isinstance(v, Skip) for v in verdicts] == [False, False, False, True, True]
    assert verdicts[-1].reason == "rpm_limit" and 0 < verdicts[-1].retry_in <= 60


def test_the_tokens_per_minute_limit_counts_what_replies_used():
    deployment = _config("tpm", tpm_limit=1000)
    assert not isinstance(gate(deployment, prompt_tokens=5000), Skip)  # empty window: one goes
    limits.tokens_record(deployment, 900)
    assert not isinstance(gate(deployment, prompt_tokens=100), Skip)
    verdict = gate(deployment, prompt_tokens=101)
    assert isinstance(verdict, Skip) and verdict.reason == "tpm_limit"


def test_a_retry_after_pauses_the_deployment_for_everyone():
    deployment = _config("paused")
    limits.pause(deployment, 30)
    verdict = gate(deployment, prompt_tokens=1)
    assert isinstance(verdict, Skip) and verdict.reason == "retry_after"
    assert 25 < verdict.retry_in <= 30


with_db = pytest.mark.django_db(transaction=True)


@with_db
async def test_replies_rotate_three_to_one_across_two_keys_over_http(fault, deploy, generate):
    await sync_to_async(deploy)("key-a", weight=3)
    await sync_to_async(deploy)("key-b", weight=1)
    answered = Counter()
    for _ in range(8):
        answered[(await generate()).message.provider] += 1
    assert answered == {"key-a": 6, "key-b": 2}
    assert (fault.count("key-a"), fault.count("key-b")) == (6, 2)


@with_db
async def test_an_rpm_limited_deployment_passes_traffic_to_the_next(
    fault, deploy, generate, monkeypatch
):
    # One fixed minute window for the whole test: a real clock can cross a minute boundary.
    monkeypatch.setattr("llm.limits.time.time", lambda: 1_800_000_030.0)
    await sync_to_async(deploy)("small", rpm_limit=2, priority=0)
    await sync_to_async(deploy)("big", priority=1)
    providers = [(await generate()).message.provider for _ in range(4)]
    assert providers == ["small", "small", "big", "big"]
    last = (await generate()).message.routing
    assert last["skipped"][0]["reason"] == "rpm_limit"


@with_db
async def test_the_answering_deployment_prices_the_reply(fault, deploy, generate):
    await sync_to_async(deploy)(
        "priced", input_price=Decimal("2.50"), output_price=Decimal("10.00")
    )
    done = await generate()
    # The fault server reports 11 prompt tokens and one completion token per chunk (5 here).
    assert (done.message.prompt_tokens, done.message.completion_tokens) == (11, 5)
    assert done.message.cost == Decimal("0.00007750")  # 11·2.5/1e6 + 5·10/1e6


class DownCache(BaseCache):
    """A cache whose server is unreachable: every operation raises."""

    def __init__(self, location, params):
        super().__init__(params)

    def _down(self, *args, **kwargs):
        raise ConnectionError("redis is down")

    add = get = set = incr = delete = get_many = delete_many = touch = clear = _down


def test_routing_fails_open_when_the_cache_is_unreachable(settings, caplog):
    settings.CACHES = {"default": {"BACKEND": "llm.tests.test_router.DownCache"}}
    deployment = _config("anyway")
    permit = gate(deployment, prompt_tokens=1)
    assert not isinstance(permit, Skip) and not permit.probe
    error = ProviderError("provider_unavailable", "x")
    attempt_failed(deployment, permit, error)  # logged, not raised
    attempt_succeeded(deployment, permit, first_token_ms=5)
    assert [d.key for d in rotation("default", [_config("a"), _config("b")])] == ["a", "b"]
    assert "routing state" in caplog.text
