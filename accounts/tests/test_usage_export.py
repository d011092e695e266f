"""The monthly usage export per organisation (CSV): its rows add up to the ledger, and only
those who operate the organisation get it."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.urls import reverse

from accounts.models import Membership, UsageLedger, User
from accounts.usage import EXPORT_COLUMNS

pytestmark = pytest.mark.django_db

MARCH = datetime(2026, 3, 1, tzinfo=UTC)


def _entry(organisation, user, *, day, model, used, cost, state=UsageLedger.State.SETTLED):
    return UsageLedger.objects.create(
        organisation=organisation,
        user=user,
        state=state,
        model=model,
        prompt_tokens=used // 3,
        completion_tokens=used - used // 3,
        used_tokens=used,
        cost=Decimal(cost),
        reserved_tokens=used,
        created_at=MARCH.replace(day=day, hour=10),
    )


@pytest.fixture
def march(owner, member, organisation, outsider, other_organisation):
    entries = [
        _entry(organisation, owner, day=3, model="gpt-a", used=300, cost="0.0030"),
        _entry(organisation, owner, day=3, model="gpt-a", used=150, cost="0.0015"),
        _entry(organisation, owner, day=3, model="claude-b", used=90, cost="0.0100"),
        _entry(organisation, member, day=17, model="gpt-a", used=1200, cost="0.0120"),
        _entry(organisation, member, day=31, model="gpt-a", used=10, cost="0.0001"),
        _entry(
            organisation,
            member,
            day=18,
            model="",
            used=0,
            cost="0",
            state=UsageLedger.State.RELEASED,
        ),
    ]
    # Not in the export: another month, another organisation.
    UsageLedger.objects.create(
        organisation=organisation,
        user=owner,
        state=UsageLedger.State.SETTLED,
        used_tokens=999,
        created_at=datetime(2026, 4, 1, 0, 0, tzinfo=UTC),
    )
    _entry(other_organisation, outsider, day=3, model="gpt-a", used=5000, cost="5")
    return [e for e in entries if e.state != UsageLedger.State.RELEASED]


def _rows(response) -> list[dict[str, str]]:
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(response.content.decode()))
    assert tuple(reader.fieldnames or ()) == EXPORT_COLUMNS
    return list(reader)


def test_the_monthly_export_adds_up_to_the_ledger(client, march, organisation):
    client.force_login(User.objects.create_superuser(username="root", password="pw"))
    url = reverse("admin:accounts_organisation_usage_export")
    response = client.get(url, {"organisation": organisation.pk, "month": "2026-03"})
    assert f'filename="usage-{organisation.slug}-2026-03.csv"' in response["Content-Disposition"]
    rows = _rows(response)
    assert sum(int(r["tokens"]) for r in rows) == sum(e.used_tokens for e in march) == 1750
    assert sum(Decimal(r["cost"]) for r in rows) == sum(e.cost for e in march)
    assert sum(int(r["messages"]) for r in rows) == len(march) == 5
    for row in rows:
        assert int(row["prompt_tokens"]) + int(row["completion_tokens"]) == int(row["tokens"])
    # One row per day, user and model.
    keys = [(r["day"], r["user"], r["model"]) for r in rows]
    assert keys == [
        ("2026-03-03", "olivia", "claude-b"),
        ("2026-03-03", "olivia", "gpt-a"),
        ("2026-03-17", "marek", "gpt-a"),
        ("2026-03-31", "marek", "gpt-a"),
    ]
    assert {r["organisation"] for r in rows} == {organisation.slug}
    assert rows[1]["messages"] == "2" and rows[1]["tokens"] == "450"


def test_the_export_is_also_an_organisation_action(client, march, owner, organisation):
    today = UsageLedger.objects.create(
        organisation=organisation,
        user=owner,
        state=UsageLedger.State.SETTLED,
        model="gpt-a",
        prompt_tokens=20,
        completion_tokens=22,
        used_tokens=42,
        cost=Decimal("0.42"),
    )
    client.force_login(User.objects.create_superuser(username="root", password="pw"))
    response = client.post(
        reverse("admin:accounts_organisation_changelist"),
        {"action": "export_usage_this_month", "_selected_action": [organisation.pk]},
    )
    [row] = _rows(response)  # this month's only: March's entries are not in it
    assert (row["day"], row["user"], row["tokens"], row["cost"]) == (
        f"{today.created_at:%Y-%m-%d}",
        "olivia",
        "42",
        "0.42000000",
    )


def test_an_operator_exports_only_their_organisations(client, march, organisation, outsider):
    operator = User.objects.create_user(username="ops", password="pw", is_staff=True)
    Membership.objects.create(
        user=operator, organisation=organisation, role=Membership.Role.OPERATOR
    )
    client.force_login(operator)
    url = reverse("admin:accounts_organisation_usage_export")
    mine = client.get(url, {"organisation": organisation.pk, "month": "2026-03"})
    assert sum(int(r["tokens"]) for r in _rows(mine)) == 1750
    theirs = outsider.personal_organisation.pk
    assert client.get(url, {"organisation": theirs, "month": "2026-03"}).status_code == 403
    assert client.get(url, {"organisation": organisation.pk, "month": "March"}).status_code == 400
