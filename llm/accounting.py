"""Tokens and cost of one model reply (chat stores them on its Message, chat/replies/).

Token counts come from the provider when it reports them (OpenAI, Anthropic and the simulated
model do; the bundled local model counts with its own llama.cpp tokenizer). Otherwise they are
estimated at ~4 characters a token and the message says so (tokens_estimated). tiktoken is not
used: its encodings are downloaded at run time, which an offline install cannot do.

Cost is tokens × the deployment's prices per million tokens, in Decimal, rounded half-up to
the 8 places Message.cost keeps. An unreported prompt count stays null on the message (the
provider did not say), but its estimate is priced, under the same tokens_estimated flag.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from llm.catalog import DeploymentConfig

CHARS_PER_TOKEN = 4
MILLION = Decimal(1_000_000)
COST_PLACES = Decimal("0.00000001")


def estimate_tokens(text: str) -> int:
    """A rough token count for text no tokenizer is at hand for: ~4 characters a token."""
    return max(1, round(len(text) / CHARS_PER_TOKEN)) if text else 0


def usage_final(
    *,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    text: str,
    complete: bool,
    max_tokens: int | None = None,
) -> tuple[int | None, int | None, bool]:
    """(prompt, completion, estimated): reported usage for a complete reply that has it;
    otherwise the completion estimated from the text that was produced, never above the
    reply's token cap (the provider generated at most that many; the budget reserved that)."""
    if completion_tokens is not None and complete:
        return prompt_tokens, completion_tokens, False
    if not text and prompt_tokens is None:
        return None, None, False
    estimate = estimate_tokens(text)
    if max_tokens is not None:
        estimate = min(estimate, max_tokens)
    return prompt_tokens, estimate, True


def cost_of(
    deployment: DeploymentConfig | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    *,
    prompt_estimate: int = 0,
) -> Decimal | None:
    """What a reply cost at the deployment's prices; None when it has no prices or no tokens."""
    if deployment is None or (deployment.input_price is None and deployment.output_price is None):
        return None
    if prompt_tokens is None and completion_tokens is None:
        return None
    prompt = prompt_tokens if prompt_tokens is not None else prompt_estimate
    cost = (
        Decimal(prompt) * (deployment.input_price or 0)
        + Decimal(completion_tokens or 0) * (deployment.output_price or 0)
    ) / MILLION
    return cost.quantize(COST_PLACES, rounding=ROUND_HALF_UP)
