"""An operator's change is saved while the cache (Redis) cannot be reached: the cached copies
of budget rules and allowed models only spare queries, so failing to drop one must not fail the
save (core/cache.py `cached_forget`)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.models import Budget, Organisation
from accounts.quotas import budgets_for
from tests.harness.processes import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cache_down(settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "project.cache.SharedClientRedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }


def test_a_budget_added_in_the_admin_is_saved_and_enforced_with_the_cache_down(
    admin_client, organisation, cache_down
):
    response = admin_client.post(
        reverse("admin:accounts_budget_add"),
        {"organisation": organisation.pk, "period": "day", "max_tokens": "5"},
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    assert Budget.objects.filter(organisation=organisation, max_tokens=5).exists()
    assert [rule.max_tokens for rule in budgets_for(organisation_id=organisation.pk)] == [5]


def test_an_organisation_saved_with_the_cache_down_keeps_its_change(organisation, cache_down):
    organisation.name = "Acme Renamed"
    organisation.save()

    assert Organisation.objects.get(pk=organisation.pk).name == "Acme Renamed"
