"""Token counts and cost, checked against figures computed by hand."""

from __future__ import annotations

from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from llm.accounting import cost_of, estimate_tokens, usage_final
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
    # An estimate never exceeds the cap the provider was given: it generated at most that.
    assert usage_final(
        prompt_tokens=None, completion_tokens=None, text="x" * 130, complete=True, max_tokens=30
    ) == (None, 30, True)
    # A reply that did not complete is estimated even if some usage came.
    assert usage_final(prompt_tokens=9, completion_tokens=50, text="x" * 8, complete=False) == (
        9,
        2,
        True,
    )


@pytest.mark.django_db(transaction=True)
async def test_an_estimated_reply_is_never_counted_above_its_token_cap(
    fault, deploy, generate, settings
):
    """A provider that reports no usage (llama.cpp's server, streaming) cut at 5 tokens: its
    28 characters would estimate 7, but it generated at most 5, and the budget reserved 5."""
    await sync_to_async(deploy)("quiet")
    settings.LLM_MAX_TOKENS = 5
    fault.default("quiet", Reply("Twenty-eight characters!!...", usage=False))

    done = await generate(text="Hello?")

    assert (done.message.completion_tokens, done.message.tokens_estimated) == (5, True)


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
