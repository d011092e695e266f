"""Token counts and cost, checked against figures computed by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.urls import reverse

from chat import services
from chat.models import Message
from llm.accounting import cost_of, estimate_tokens, usage_daily, usage_final
from llm.catalog import DeploymentConfig
from tests.fault_server import Reply


def _priced(input_price: str | None, output_price: str | None) -> DeploymentConfig:
    return DeploymentConfig(
        name="p",
        kind="openai",
        model="m",
        input_price=None if input_price is None else Decimal(input_price),
        output_price=None if output_price is None else Decimal(output_price),
    )


@pytest.mark.parametrize(
    ("prices", "prompt", "completion", "expected"),
    [
        # 1200 × $2.50/M + 350 × $10.00/M = 0.003 + 0.0035
        (("2.50", "10.00"), 1200, 350, "0.00650000"),
        # 3 × $0.15/M + 0 = 0.00000045
        (("0.15", "0.60"), 3, 0, "0.00000045"),
        # 1 000 000 × $0.15/M + 500 000 × $0.60/M = 0.15 + 0.30
        (("0.15", "0.60"), 1_000_000, 500_000, "0.45000000"),
        # 7 × $0.000003/M = 0.000000000021: rounds to nothing at 8 places
        (("0.000003", "0"), 7, 0, "0E-8"),
        # 5 × $1/M + 1 × $0.0025/M = 0.0000050025 → 0.00000500
        (("1", "0.0025"), 5, 1, "0.00000500"),
        # 2 × $0.0025/M = 0.000000005: exactly half, rounds up
        (("0.0025", "0"), 2, 0, "0.00000001"),
        # only an output price: prompt costs nothing
        ((None, "4"), 100, 250, "0.00100000"),
    ],
)
def test_cost_is_tokens_times_the_price_per_million(prices, prompt, completion, expected):
    assert cost_of(_priced(*prices), prompt, completion) == Decimal(expected)


def test_no_prices_or_no_tokens_means_no_cost():
    assert cost_of(_priced(None, None), 100, 100) is None
    assert cost_of(None, 100, 100) is None
    assert cost_of(_priced("1", "1"), None, None) is None


def test_an_unreported_prompt_is_priced_from_its_estimate():
    # prompt unknown, estimated at 400 tokens; 100 completion tokens: 400·3 + 100·15 per 1M
    cost = cost_of(_priced("3", "15"), None, 100, prompt_estimate=400)
    assert cost == Decimal("0.00270000")


def test_estimates_are_four_characters_a_token_and_say_so():
    assert [estimate_tokens(t) for t in ("", "a", "abcd", "abcdefghij")] == [0, 1, 1, 2]
    assert usage_final(prompt_tokens=10, completion_tokens=5, text="xxxx", complete=True) == (
        10,
        5,
        False,
    )
    # Not reported: the completion is estimated from the text, the prompt stays unknown.
    assert usage_final(
        prompt_tokens=None, completion_tokens=None, text="x" * 40, complete=True
    ) == (
        None,
        10,
        True,
    )
    # A reply that did not complete is estimated even if some usage came.
    assert usage_final(prompt_tokens=9, completion_tokens=50, text="x" * 8, complete=False) == (
        9,
        2,
        True,
    )


@pytest.mark.django_db(transaction=True)
async def test_a_reply_without_reported_usage_is_estimated_and_priced(
    fault, deploy, generate, settings
):
    await sync_to_async(deploy)("quiet", input_price=Decimal("1.00"), output_price=Decimal("2.00"))
    text = "Twenty-eight characters!!..."  # 28 characters: 7 tokens estimated
    fault.default("quiet", Reply(text, usage=False))

    done = await generate(text="Hello?")

    prompt_estimate = round(len(settings.LLM_SYSTEM_PROMPT + "Hello?") / 4)
    message = done.message
    assert (message.prompt_tokens, message.completion_tokens) == (None, 7)
    assert message.tokens_estimated is True
    expected = (Decimal(prompt_estimate) * 1 + Decimal(7) * 2) / Decimal(1_000_000)
    assert message.cost == expected.quantize(Decimal("0.00000001"))


# --- per user and per day -----------------------------------------------------------------


def _finished_reply(user, text: str, *, prompt: int, completion: int, cost: str, day: date):
    result = services.message_send(author=user, conversation=None, text=text, client_id=text)
    services.reply_start(message_id=result.reply.pk)
    services.reply_finish(
        message_id=result.reply.pk,
        content="answer",
        status=Message.Status.COMPLETE,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost=Decimal(cost),
    )
    at = datetime(day.year, day.month, day.day, 12, 0, tzinfo=UTC)
    Message.objects.filter(pk=result.reply.pk).update(created_at=at)


@pytest.fixture
def usage_history(owner, member, monkeypatch):
    monkeypatch.setattr("llm.dispatch.dispatch_generation", lambda mid, provider: None)
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

    olivia_today = rows[(today, "olivia")]
    assert (olivia_today.replies, olivia_today.prompt_tokens, olivia_today.completion_tokens) == (
        2,
        2000,
        500,
    )
    assert olivia_today.cost == Decimal("0.01000000")  # 0.0065 + 0.0035
    assert rows[(yesterday, "olivia")].cost == Decimal("0.00035000")
    assert rows[(today, "marek")].cost == Decimal("0.00000045")
    assert [r.day for r in usage_daily()] == [today, today, yesterday]  # newest first

    assert [r.username for r in usage_daily(username="mar")] == ["marek"]
    assert [r.day for r in usage_daily(since=today)] == [today, today]
    assert [r.day for r in usage_daily(until=yesterday)] == [yesterday]


@pytest.mark.django_db
def test_operators_see_usage_per_user_and_day_in_the_admin(client, usage_history):
    from accounts.models import User

    operator = User.objects.create_superuser(username="ops", password="operator passphrase")
    client.force_login(operator)
    url = reverse("admin:llm_usagereport_changelist")
    page = client.get(url).content.decode()
    assert page.count('class="usage-row"') == 3
    assert "2026-03-14" in page and "0.01000000" in page and "0.00035000" in page
    assert '<th id="usage-total-cost">0.01035045</th>' in page  # 0.01 + 0.00035 + 0.00000045

    filtered = client.get(url, {"user": "marek"}).content.decode()
    assert filtered.count('class="usage-row"') == 1 and "0.00000045" in filtered
