"""What replies used, per user and day: the sum of their ledger rows, and its admin page."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.urls import reverse

from accounts.models import UsageLedger
from accounts.usage import usage_daily
from chat import services
from chat.models import Message
from chat.replies import lifecycle


def _finished_reply(user, text: str, *, prompt: int, completion: int, cost: str, day: date):
    result = services.message_send(author=user, conversation=None, text=text, client_id=text)
    lifecycle.reply_start(message_id=result.reply.pk)
    lifecycle.reply_finish(
        message_id=result.reply.pk,
        content="answer",
        status=Message.Status.COMPLETE,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost=Decimal(cost),
    )
    at = datetime(day.year, day.month, day.day, 12, 0, tzinfo=UTC)
    Message.objects.filter(pk=result.reply.pk).update(created_at=at)
    UsageLedger.objects.filter(message_id=result.reply.pk).update(created_at=at)


@pytest.fixture
def usage_history(owner, member, no_dispatch):
    today = date(2026, 3, 14)
    yesterday = today - timedelta(days=1)
    _finished_reply(owner, "o1", prompt=1200, completion=350, cost="0.00650000", day=today)
    _finished_reply(owner, "o2", prompt=800, completion=150, cost="0.00350000", day=today)
    _finished_reply(owner, "o3", prompt=100, completion=10, cost="0.00035000", day=yesterday)
    _finished_reply(member, "m1", prompt=3, completion=0, cost="0.00000045", day=today)
    return today, yesterday


@pytest.mark.django_db
def test_usage_is_summed_per_user_and_day(usage_history, owner, member):
    today, yesterday = usage_history
    rows = {(r.day, r.username): r for r in usage_daily()}
    assert set(rows) == {(today, "olivia"), (today, "marek"), (yesterday, "olivia")}

    olivia_today = rows[(today, "olivia")].totals
    assert (olivia_today.replies, olivia_today.prompt_tokens, olivia_today.completion_tokens) == (
        2,
        2000,
        500,
    )
    assert olivia_today.tokens == 2500
    assert olivia_today.cost == Decimal("0.01000000")  # 0.0065 + 0.0035
    assert rows[(yesterday, "olivia")].totals.cost == Decimal("0.00035000")
    assert rows[(today, "marek")].totals.cost == Decimal("0.00000045")
    assert [r.day for r in usage_daily()] == [today, today, yesterday]  # newest first

    assert [r.username for r in usage_daily(username="mar")] == ["marek"]
    assert [r.day for r in usage_daily(since=today)] == [today, today]
    assert [r.day for r in usage_daily(until=yesterday)] == [yesterday]


@pytest.mark.django_db
def test_operators_see_usage_per_user_and_day_in_the_admin(client, usage_history):
    from accounts.models import User

    operator = User.objects.create_superuser(username="ops", password="operator passphrase")
    client.force_login(operator)
    url = reverse("admin:chat_usagereport_changelist")
    page = client.get(url).content.decode()
    assert page.count('class="usage-row"') == 3
    assert "2026-03-14" in page and "0.01000000" in page and "0.00035000" in page
    assert '<th id="usage-total-cost">0.01035045</th>' in page  # 0.01 + 0.00035 + 0.00000045
    assert '<th id="usage-total-tokens">2613</th>' in page  # 2500 + 110 + 3

    filtered = client.get(url, {"user": "marek"}).content.decode()
    assert filtered.count('class="usage-row"') == 1 and "0.00000045" in filtered


@pytest.mark.django_db
def test_an_operator_sees_only_their_organisations_in_the_usage_report(
    client, usage_history, owner, member
):
    from accounts.models import Membership, Organisation, User

    operator = User.objects.create_user(username="ops", password="pw", is_staff=True)
    Membership.objects.create(
        user=operator,
        organisation=Organisation.objects.get(personal_owner=member),
        role=Membership.Role.OPERATOR,
    )
    client.force_login(operator)
    page = client.get(reverse("admin:chat_usagereport_changelist")).content.decode()
    assert page.count('class="usage-row"') == 1
    assert "marek" in page and "olivia" not in page and "0.01000000" not in page
