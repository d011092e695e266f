"""The happy path through the router against llama.cpp's real OpenAI-compatible server: an
admin-configured provider answers a pinned alias, with routing, cost and health recorded."""

from __future__ import annotations

from decimal import Decimal

import pytest

from llm.accounting import estimate_tokens
from llm.health import key_health
from llm.models import Deployment, Provider
from tests.llama_server import LlamaServer, llama_server_fixture  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


async def test_a_configured_llama_server_answers_its_alias(
    llama_server: LlamaServer, generate, settings
):
    settings.LLM_MAX_TOKENS = 24
    provider = await Provider.objects.acreate(
        name="llama",
        kind=Provider.Kind.OPENAI_COMPATIBLE,
        base_url=llama_server.base_url,
        connect_timeout=3,
        first_token_timeout=30,
        inter_token_timeout=15,
    )
    deployment = await Deployment.objects.acreate(
        provider=provider,
        alias="smol",
        model="smollm2",
        input_price=Decimal("0.10"),
        output_price=Decimal("0.40"),
    )

    done = await generate("smol", text="Name three colors.")

    message = done.message
    # Answered: whole, or cut short by the 24-token cap, which says so (finish reason length).
    finished = {"complete": "stop", "incomplete": "length"}
    assert message.status in finished, (message.error_code, message.error_message)
    assert message.routing["finish_reason"] == finished[message.status]
    assert message.content.strip() and message.content == done.streamed_text
    assert (message.provider, message.model) == ("llama", "smollm2")
    assert [a["outcome"] for a in done.attempts] == ["answered"]
    assert message.routing["answered_by"] == deployment.key
    # llama_cpp.server reports no usage when streaming: counts are estimates, and say so.
    assert message.tokens_estimated and message.prompt_tokens is None
    assert message.completion_tokens == estimate_tokens(message.content)
    prompt = estimate_tokens(settings.LLM_SYSTEM_PROMPT + "Name three colors.")
    expected = Decimal(prompt) * Decimal("0.10") + message.completion_tokens * Decimal("0.40")
    assert message.cost == (expected / 1_000_000).quantize(Decimal("0.00000001"))

    status, record = key_health(deployment.key)
    assert status.state == "closed" and record["last_first_token_ms"] > 0
