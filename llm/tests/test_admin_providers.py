"""Operators configure providers in the admin (keys are write-only) and see their health there
and at /llm/health."""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command
from django.urls import reverse

from accounts.models import User
from llm import crypto, router
from llm.breaker import CircuitBreaker, State
from llm.catalog import all_deployments, deployments_for
from llm.models import Deployment, Provider
from llm.providers.base import ProviderError

pytestmark = pytest.mark.django_db

SECRET = "sk-live-abcdef0123456789"


@pytest.fixture
def operator(db) -> User:
    return User.objects.create_superuser(username="ops", password="operator passphrase")


@pytest.fixture
def admin_client(client, operator):
    client.force_login(operator)
    return client


def _provider_form(**overrides) -> dict[str, str]:
    data = {
        "name": "openai-main",
        "kind": "openai",
        "base_url": "",
        "api_key": "",
        "api_key_env": "",
        "connect_timeout": "5",
        "first_token_timeout": "30",
        "inter_token_timeout": "20",
        "options": "{}",
        "enabled": "on",
        "deployments-TOTAL_FORMS": "1",
        "deployments-INITIAL_FORMS": "0",
        "deployments-MIN_NUM_FORMS": "0",
        "deployments-MAX_NUM_FORMS": "1000",
        "deployments-0-alias": "default",
        "deployments-0-model": "gpt-4o-mini",
        "deployments-0-weight": "3",
        "deployments-0-priority": "0",
        "deployments-0-enabled": "on",
    }
    data.update(overrides)
    return data


def test_an_operator_adds_a_provider_whose_key_is_stored_encrypted_and_never_shown(
    admin_client,
):
    response = admin_client.post(reverse("admin:llm_provider_add"), _provider_form(api_key=SECRET))
    assert response.status_code == 302, response.content.decode()[:3000]

    provider = Provider.objects.get(name="openai-main")
    assert SECRET not in provider.api_key_encrypted
    assert crypto.decrypt(provider.api_key_encrypted) == SECRET
    deployment = provider.deployments.get()
    assert (deployment.alias, deployment.model, deployment.weight) == ("default", "gpt-4o-mini", 3)
    config = deployments_for(["default"])["default"][0]
    assert config.api_key == SECRET and SECRET not in repr(config)

    page = admin_client.get(reverse("admin:llm_provider_change", args=[provider.pk]))
    html = page.content.decode()
    assert SECRET not in html and provider.api_key_encrypted not in html
    assert "stored (encrypted)" in html

    # Saving again without typing a key keeps the stored one; ticking "remove" removes it.
    form = _provider_form(**{"deployments-TOTAL_FORMS": "0"})
    admin_client.post(reverse("admin:llm_provider_change", args=[provider.pk]), form)
    provider.refresh_from_db()
    assert crypto.decrypt(provider.api_key_encrypted) == SECRET
    form["clear_api_key"] = "on"
    admin_client.post(reverse("admin:llm_provider_change", args=[provider.pk]), form)
    provider.refresh_from_db()
    assert provider.api_key_encrypted == "" and provider.key_source == "none"


def test_a_key_can_be_read_from_an_environment_variable_instead(admin_client, monkeypatch):
    response = admin_client.post(
        reverse("admin:llm_provider_add"), _provider_form(api_key_env="ACME_OPENAI_KEY")
    )
    assert response.status_code == 302
    provider = Provider.objects.get(name="openai-main")
    assert provider.api_key_encrypted == "" and provider.key_source == "env ACME_OPENAI_KEY"

    monkeypatch.setenv("ACME_OPENAI_KEY", SECRET)
    assert deployments_for(["default"])["default"][0].api_key == SECRET
    monkeypatch.delenv("ACME_OPENAI_KEY")
    config = deployments_for(["default"])["default"][0]
    assert config.api_key == "" and "ACME_OPENAI_KEY is not set" in config.problem


def test_a_stored_key_and_an_environment_variable_together_are_refused(admin_client):
    response = admin_client.post(
        reverse("admin:llm_provider_add"),
        _provider_form(api_key=SECRET, api_key_env="ACME_OPENAI_KEY"),
    )
    assert response.status_code == 200
    assert "not both" in response.content.decode()
    assert not Provider.objects.exists()


def test_a_key_stored_under_another_encryption_key_is_reported_not_used(settings):
    provider = Provider.objects.create(name="old", kind="openai")
    provider.api_key_set(SECRET)
    provider.save()
    Deployment.objects.create(provider=provider, alias="default", model="m")
    settings.PARLEY_ENCRYPTION_KEY = "a-brand-new-encryption-key"
    config = deployments_for(["default"])["default"][0]
    assert config.api_key == "" and "cannot be decrypted" in config.problem


def test_operators_see_breaker_state_and_last_error_in_the_deployment_list(admin_client):
    provider = Provider.objects.create(name="acme", kind="openai-compatible", base_url="http://x")
    broken = Deployment.objects.create(provider=provider, alias="default", model="broken")
    healthy = Deployment.objects.create(provider=provider, alias="default", model="healthy")
    configs = {c.model: c for c in deployments_for(["default"])["default"]}
    error = ProviderError("provider_unavailable", "answered 503", status=503)
    for _ in range(5):
        router.attempt_failed(configs["broken"], CircuitBreaker(broken.key).allow(), error)
    router.attempt_succeeded(
        configs["healthy"], CircuitBreaker(healthy.key).allow(), first_token_ms=123
    )

    html = admin_client.get(reverse("admin:llm_deployment_changelist")).content.decode()
    assert re.search(r"open \(\d+ s\)", html)
    assert "http_503 at" in html
    assert ">123<" in html and ">closed (0)<" in html

    detail = admin_client.get(reverse("admin:llm_deployment_change", args=[broken.pk]))
    assert "breaker open, 5 failures in a row" in detail.content.decode()

    # The reset action closes the breaker.
    admin_client.post(
        reverse("admin:llm_deployment_changelist"),
        {"action": "reset_breakers", "_selected_action": [broken.pk]},
    )
    assert CircuitBreaker(broken.key).status().state == State.CLOSED


def test_the_deployment_list_can_be_searched_and_filtered(admin_client):
    acme = Provider.objects.create(name="acme", kind="openai", base_url="")
    Deployment.objects.create(provider=acme, alias="default", model="gpt-4o-mini")
    Deployment.objects.create(provider=acme, alias="cheap", model="gpt-4.1-nano")
    url = reverse("admin:llm_deployment_changelist")
    assert "gpt-4.1-nano" not in admin_client.get(url, {"q": "mini"}).content.decode()
    assert "gpt-4o-mini" not in admin_client.get(url, {"alias": "cheap"}).content.decode()


def test_people_without_staff_rights_cannot_open_provider_admin(client, owner):
    client.force_login(owner)
    assert client.get(reverse("admin:llm_provider_changelist")).status_code == 302


def test_the_health_endpoint_reports_every_deployment_as_json(admin_client):
    client = admin_client
    provider = Provider.objects.create(name="acme", kind="simulated")
    row = Deployment.objects.create(provider=provider, alias="default", model="sim")

    body = client.get("/llm/health").json()
    assert body["status"] == "ok"
    by_key = {d["key"]: d for d in body["deployments"]}
    assert {row.key, "settings-local", "settings-simulated"} <= set(by_key)
    assert by_key[row.key]["state"] == "closed" and by_key[row.key]["alias"] == "default"
    assert "api_key" not in by_key[row.key] and "base_url" not in by_key[row.key]

    configs = {d.key: d for d in all_deployments()}
    error = ProviderError("provider_unavailable", "slow", reason="timeout")
    for _ in range(5):
        router.attempt_failed(configs[row.key], CircuitBreaker(row.key).allow(), error)
    body = client.get("/llm/health").json()
    tripped = next(d for d in body["deployments"] if d["key"] == row.key)
    assert body["status"] == "degraded"
    assert (tripped["state"], tripped["consecutive_failures"]) == ("open", 5)
    assert tripped["last_error_reason"] == "timeout" and tripped["last_error_at"]

    for key, config in configs.items():
        for _ in range(5 if key != row.key else 0):
            router.attempt_failed(config, CircuitBreaker(key).allow(), error)
    response = client.get("/llm/health")
    assert response.status_code == 503 and response.json()["status"] == "down"


def test_the_health_endpoint_is_closed_to_anonymous_callers_without_a_token(
    client, settings, owner, operator
):
    settings.LLM_HEALTH_TOKEN = ""
    assert client.get("/llm/health").status_code == 401
    assert client.get("/llm/health", HTTP_AUTHORIZATION="Bearer ").status_code == 401
    client.force_login(owner)  # signed in, not staff
    assert client.get("/llm/health").status_code == 401
    client.force_login(operator)
    assert client.get("/llm/health").status_code == 200


def test_the_health_endpoint_can_require_a_token(client, settings, operator):
    settings.LLM_HEALTH_TOKEN = "probe-token"
    assert client.get("/llm/health").status_code == 401
    assert client.get("/llm/health", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/llm/health", HTTP_AUTHORIZATION="Bearer probe-token").status_code == 200
    client.force_login(operator)
    assert client.get("/llm/health").status_code == 200


def test_seed_providers_turns_the_settings_into_rows_once(settings, monkeypatch):
    settings.OPENAI_API_KEY = "sk-from-env"
    settings.ANTHROPIC_API_KEY = ""
    settings.OPENAI_COMPATIBLE_BASE_URL = ""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    call_command("seed_providers")
    call_command("seed_providers")  # idempotent

    assert sorted(Provider.objects.values_list("name", flat=True)) == [
        "local",
        "openai",
        "simulated",
    ]
    openai = Provider.objects.get(name="openai")
    assert openai.api_key_env == "OPENAI_API_KEY" and openai.api_key_encrypted == ""
    assert Deployment.objects.get(provider=openai).alias == "openai"
    # The rows now serve those aliases, with the same models as before.
    chosen = router.provider_choose(pinned="openai")
    assert (chosen.key, chosen.model, chosen.api_key) == (
        Deployment.objects.get(provider=openai).key,
        settings.OPENAI_MODEL,
        "sk-from-env",
    )
    assert router.provider_choose().name == "simulated"


def test_providers_configured_by_environment_show_beside_admin_made_ones(admin_client):
    provider = Provider.objects.create(name="acme", kind="simulated")
    Deployment.objects.create(provider=provider, alias="local", model="sim")  # takes "local"
    configs = {d.key: d for d in all_deployments()}
    error = ProviderError("provider_unavailable", "answered 503", status=503)
    for _ in range(5):
        router.attempt_failed(
            configs["settings-simulated"], CircuitBreaker("settings-simulated").allow(), error
        )

    html = admin_client.get(reverse("admin:llm_provider_changelist")).content.decode()
    section = html[html.index('id="settings-providers"') :]
    rows = re.findall(r'<tr class="settings-provider">(.*?)</tr>', section, re.S)
    by_alias = {re.search(r"<td>(.*?)</td>", row).group(1): row for row in rows}
    assert {"local", "simulated"} <= set(by_alias)
    assert re.search(r'class="breaker">open \(\d+(\.\d+)? s\) \(5\)', by_alias["simulated"])
    assert "<code>provider_unavailable</code> answered 503" in by_alias["simulated"]
    assert "<td>yes</td>" in by_alias["simulated"]
    assert "<td>no</td>" in by_alias["local"]  # the admin row serves that alias now
    assert 'href="/llm/health"' in html
    # The admin-made provider's own row summarises its deployments' breakers.
    assert ">closed<" in html.split('id="settings-providers"')[0]
