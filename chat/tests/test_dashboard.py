"""The operators' dashboard: its totals are the ledger's, it is scoped to the operator's
organisations, and it draws its charts without inline script or style (strict CSP)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import Membership, UsageLedger, User
from chat import services
from chat.models import Message

SETTLED = UsageLedger.State.SETTLED


def _ledger(organisation, user, *, days_ago=0, state=SETTLED, **fields):
    created = timezone.now() - timedelta(days=days_ago)
    return UsageLedger.objects.create(
        organisation=organisation, user=user, state=state, created_at=created, **fields
    )


def _reply(organisation, user, *, status, error_code="", error_message=""):
    conversation = services.conversation_create(owner=user, organisation=organisation)
    return Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        status=status,
        model="simulated",
        provider="simulated",
        error_code=error_code,
        error_message=error_message,
    )


@pytest.fixture
def seeded(owner, organisation, outsider, other_organisation):
    """Acme (the owner's team) and the outsider's personal organisation, with usage."""
    acme = [
        _ledger(
            organisation,
            owner,
            prompt_tokens=100,
            completion_tokens=50,
            used_tokens=150,
            cost=Decimal("0.0015"),
            model="gpt-a",
            outcome="complete",
            first_token_ms=200,
        ),
        _ledger(
            organisation,
            owner,
            days_ago=2,
            prompt_tokens=10,
            completion_tokens=0,
            used_tokens=10,
            cost=Decimal("0.0001"),
            model="gpt-a",
            outcome="failed",
            error_code="provider_failed",
            first_token_ms=None,
        ),
        _ledger(
            organisation,
            owner,
            days_ago=1,
            prompt_tokens=400,
            completion_tokens=600,
            used_tokens=1000,
            cost=Decimal("0.0300"),
            model="claude-b",
            outcome="complete",
            first_token_ms=900,
        ),
        # Still running: charged its reserved worst case, as the counters are.
        _ledger(
            organisation,
            owner,
            state=UsageLedger.State.RESERVED,
            reserved_tokens=2048,
            reserved_cost=Decimal("0.0040"),
        ),
        # Released (never ran): charged nothing.
        _ledger(organisation, owner, state=UsageLedger.State.RELEASED, reserved_tokens=999),
    ]
    theirs = [
        _ledger(
            other_organisation,
            outsider,
            prompt_tokens=7000,
            completion_tokens=7000,
            used_tokens=14000,
            cost=Decimal("1.2500"),
            model="secret-model",
            outcome="complete",
            first_token_ms=50,
        ),
    ]
    _reply(
        organisation,
        owner,
        status=Message.Status.FAILED,
        error_code="provider_failed",
        error_message="Acme upstream answered 502",
    )
    _reply(
        other_organisation,
        outsider,
        status=Message.Status.FAILED,
        error_code="provider_rejected",
        error_message="Oscar's content filter said no",
    )
    _reply(organisation, owner, status=Message.Status.STREAMING)
    return acme, theirs


def _charged(entries):
    live = [e for e in entries if e.state != UsageLedger.State.RELEASED]
    tokens = sum(e.charged_tokens for e in live)
    cost = sum(
        (e.reserved_cost if e.state == UsageLedger.State.RESERVED else e.cost for e in live),
        start=Decimal(0),
    )
    return len(live), tokens, cost


@pytest.mark.django_db
def test_the_dashboards_totals_are_the_ledgers(client, seeded):
    acme, theirs = seeded
    client.force_login(User.objects.create_superuser(username="root", password="pw"))
    response = client.get(reverse("admin-dashboard"))
    assert response.status_code == 200
    totals = response.context["totals"]
    replies, tokens, cost = _charged(acme + theirs)
    assert (totals.replies, totals.tokens, totals.cost) == (replies, tokens, cost)
    assert (replies, tokens) == (5, 150 + 10 + 1000 + 2048 + 14000)
    assert totals.failed == 1 and totals.in_flight == 1
    # Every day and every organisation/model adds up to the same totals.
    assert sum(r["totals"].tokens for r in response.context["model_rows"]) == tokens
    assert sum(r["totals"].cost for r in response.context["model_rows"]) == cost
    assert response.context["first_token_p50"] == 200
    assert response.context["first_token_p95"] == 900
    page = response.content.decode()
    assert f'<dd id="kpi-tokens">{tokens}</dd>' in page
    assert page.count('class="failed-row"') == 2 and page.count('class="live-row"') == 1


@pytest.mark.django_db
def test_an_operator_of_one_organisation_cannot_see_anothers_figures(client, seeded, organisation):
    acme, _theirs = seeded
    operator = User.objects.create_user(username="ops", password="pw", is_staff=True)
    Membership.objects.create(
        user=operator, organisation=organisation, role=Membership.Role.OPERATOR
    )
    client.force_login(operator)
    response = client.get(reverse("admin-dashboard"))
    assert response.status_code == 200
    totals = response.context["totals"]
    assert (totals.replies, totals.tokens, totals.cost) == _charged(acme)
    page = response.content.decode()
    assert "Acme upstream answered 502" in page
    for secret in ("Oscar", "secret-model", "1.2500", "oscar"):
        assert secret not in page
    # Asking for the other organisation by id gives nothing of it either.
    other = seeded[1][0].organisation_id
    refused = client.get(reverse("admin-dashboard"), {"organisation": other})
    assert "secret-model" not in refused.content.decode()
    assert refused.context["totals"].tokens == _charged(acme)[1]


@pytest.mark.django_db
def test_the_dashboard_is_for_operators_only(client, owner):
    assert client.get(reverse("admin-dashboard")).status_code == 302  # to the admin login
    client.force_login(owner)  # operates organisations, but is not staff
    assert client.get(reverse("admin-dashboard")).status_code == 302
    staff = User.objects.create_user(username="staff", password="pw", is_staff=True)
    client.force_login(staff)  # staff, but operates no organisation
    assert client.get(reverse("admin-dashboard")).status_code == 403


@pytest.mark.django_db
def test_the_dashboard_has_no_inline_script_or_style_and_draws_svg(client, seeded):
    client.force_login(User.objects.create_superuser(username="root", password="pw"))
    response = client.get(reverse("admin-dashboard"), {"days": 7})
    page = response.content.decode()
    assert page.count('<svg class="chart"') == 8
    assert " style=" not in page and "<style" not in page
    assert "<script>" not in page and " onclick=" not in page
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp


@pytest.mark.django_db
def test_the_admin_index_links_the_dashboard_and_provider_health(client):
    client.force_login(User.objects.create_superuser(username="root", password="pw"))
    page = client.get(reverse("admin:index")).content.decode()
    assert f'href="{reverse("admin-dashboard")}"' in page
    assert 'href="/llm/health"' in page
