"""The deployment catalogue kept per process (llm/catalog.py): read once, then from memory
until a change anywhere sets a new version in the shared cache; never the breakers."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import connection, transaction
from django.urls import reverse

from llm import catalog as catalog_module
from llm.breaker import CircuitBreaker
from llm.catalog import CATALOG_MAX_AGE, deployments_for, fallbacks_for
from llm.models import CATALOG_VERSION_KEY, Deployment, FallbackChain, Provider
from llm.pricing import price_ceiling
from llm.router import Skip, gate, provider_choose, route_plan

# Transactions commit here as in production, so what a thread saves others can read.
pytestmark = pytest.mark.django_db(transaction=True)


def _deployment(alias: str = "chat", *, model: str = "m1", weight: int = 1) -> Deployment:
    provider, _ = Provider.objects.get_or_create(name="house", kind=Provider.Kind.SIMULATED)
    return Deployment.objects.create(provider=provider, alias=alias, model=model, weight=weight)


def _models(alias: str = "chat") -> list[str]:
    return [d.model for d in deployments_for([alias])[alias]]


def _behind_the_cache(sql: str, *params: int) -> None:
    """A write the signals and the version key never hear of (raw SQL, a restored dump)."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_the_catalogue_is_read_once_then_served_from_memory(django_assert_num_queries):
    _deployment()
    with django_assert_num_queries(2):  # the deployments with their providers; the chains
        assert _models() == ["m1"]
    with django_assert_num_queries(0):
        assert _models() == ["m1"]
        assert provider_choose(pinned="chat").model == "m1"
        assert fallbacks_for("chat") == []
        assert price_ceiling(alias="chat").input_per_million == 0


def test_a_change_another_process_makes_is_seen_at_the_next_lookup():
    """Another process saves a row (its transaction; its signal sets a new version in the
    shared cache): this process's next lookup reads the rows again."""
    deployment = _deployment()
    assert _models() == ["m1"]
    _behind_the_cache(
        f"UPDATE {Deployment._meta.db_table} SET model = 'm2' WHERE id = %s", deployment.pk
    )
    assert _models() == ["m1"]  # unheard of: the copy in memory still serves
    cache.set(CATALOG_VERSION_KEY, cache.get(CATALOG_VERSION_KEY) + 1, None)  # its signal
    assert _models() == ["m2"]


def test_a_change_the_cache_never_hears_of_is_seen_within_the_maximum_age(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(catalog_module, "_clock", lambda: now[0])
    deployment = _deployment()
    assert _models() == ["m1"]
    _behind_the_cache(
        f"UPDATE {Deployment._meta.db_table} SET model = 'm2' WHERE id = %s", deployment.pk
    )
    now[0] += CATALOG_MAX_AGE - 1
    assert _models() == ["m1"]
    now[0] += 1
    assert _models() == ["m2"]


def test_saves_deletes_and_bulk_writes_each_take_effect_at_the_next_lookup():
    first = _deployment(model="m1")
    assert _models() == ["m1"]
    second = _deployment(model="m2", weight=5)  # post_save
    assert _models() == ["m2", "m1"]
    Deployment.objects.filter(pk=second.pk).update(enabled=False)  # no signal: the queryset's
    assert [d.model for d in deployments_for(["chat"])["chat"] if d.enabled] == ["m1"]
    Provider.objects.update(base_url="http://changed.example")
    assert {d.base_url for d in deployments_for(["chat"])["chat"]} == {"http://changed.example"}
    Deployment.objects.bulk_create([Deployment(provider=first.provider, alias="chat", model="m3")])
    assert sorted(_models()) == ["m1", "m2", "m3"]
    FallbackChain.objects.create(alias="chat", fallbacks="local")
    assert fallbacks_for("chat") == ["local"]
    Deployment.objects.filter(model="m3").delete()  # post_delete, per row
    first.provider.delete()  # its deployments go with it
    assert _models() == []


def test_prices_follow_a_price_change_at_the_next_lookup():
    deployment = _deployment()
    assert price_ceiling(alias="chat").output_per_million == 0
    deployment.output_price = Decimal("12.5")
    deployment.save()
    assert price_ceiling(alias="chat").output_per_million == Decimal("12.5")


def test_the_admins_bulk_delete_takes_effect_at_the_next_lookup(admin_client):
    deployment = _deployment()
    assert _models() == ["m1"]
    response = admin_client.post(
        reverse("admin:llm_deployment_changelist"),
        {"action": "delete_selected", "_selected_action": [deployment.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert _models() == []


def test_a_row_saved_in_an_open_transaction_is_seen_by_others_after_its_commit():
    """Between the save and the commit another thread reads the old rows: it keeps them under
    the version the save set, and the commit sets another."""
    _deployment()
    assert _models() == ["m1"]
    seen: list[list[str]] = []

    def other_thread() -> None:
        try:
            seen.append(_models())
        finally:
            connection.close()

    with transaction.atomic():
        Deployment.objects.update(model="m2")
        assert _models() == ["m2"]  # this transaction sees its own change
        reader = threading.Thread(target=other_thread)
        reader.start()
        reader.join()
    assert seen == [["m1"]]  # not committed yet when it read
    assert _models() == ["m2"]


def test_a_catalogue_read_by_a_transaction_rolled_back_is_not_kept():
    _deployment()
    assert _models() == ["m1"]
    with pytest.raises(RuntimeError), transaction.atomic():
        Deployment.objects.update(model="m2")
        assert _models() == ["m2"]
        raise RuntimeError("the admin's save failed")
    assert _models() == ["m1"]


def test_a_changed_setting_is_seen_at_the_next_lookup(settings):
    assert fallbacks_for("simulated") == []
    settings.LLM_FALLBACKS = {"simulated": ["local"]}
    assert fallbacks_for("simulated") == ["local"]
    settings.SIMULATED_TOKENS_PER_SECOND = 7.0
    assert deployments_for(["simulated"])["simulated"][0].options["tokens_per_second"] == 7.0


def test_breakers_are_read_at_every_gate_not_kept_with_the_catalogue(django_assert_num_queries):
    _deployment()
    (deployment,) = route_plan("chat").candidates
    assert not isinstance(gate(deployment, prompt_tokens=1), Skip)
    breaker = CircuitBreaker(deployment.key)
    for _ in range(5):
        breaker.record_failure(breaker.allow())
    with django_assert_num_queries(0):  # the catalogue from memory, the breaker from the cache
        (again,) = route_plan("chat").candidates
        verdict = gate(again, prompt_tokens=1)
    assert isinstance(verdict, Skip) and verdict.reason == "circuit_open"


def test_a_cache_outage_serves_the_copy_in_hand(monkeypatch, django_assert_num_queries):
    _deployment()
    assert _models() == ["m1"]

    class Down:
        def get(self, *args: object, **kwargs: object) -> None:
            raise ConnectionError("cache down")

    monkeypatch.setattr(catalog_module, "cache", Down())
    with django_assert_num_queries(0):
        assert _models() == ["m1"]
