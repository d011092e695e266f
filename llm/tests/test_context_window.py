"""A prompt fitted to its model's context window (llm/context.py): the oldest turns left out,
the system prompt and the question always kept, the reply's room kept; a question too long
alone refused; the window of an alias the smallest among the deployments it may reach."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from core.errors import ParleyError
from llm.catalog import alias_window, catalog_forget
from llm.context import ESTIMATE_MARGIN, message_tokens, prompt_fit, question_check
from llm.models import Deployment, FallbackChain, Provider

TURN = "The quick brown fox jumps over the lazy dog. " * 14  # ~630 characters, ~165 tokens


def conversation(turns: int) -> list[BaseMessage]:
    messages: list[BaseMessage] = [SystemMessage(content="You are helpful.")]
    for n in range(turns):
        cls = HumanMessage if n % 2 == 0 else AIMessage
        messages.append(cls(content=f"{n}: {TURN}"))
    messages.append(HumanMessage(content="And what did I say first?"))
    return messages


def tokens(messages: list[BaseMessage]) -> int:
    return sum(message_tokens(m) for m in messages)


def test_without_a_known_window_the_prompt_goes_as_it_is():
    messages = conversation(40)
    fitted = prompt_fit(messages, window=None, max_tokens=512)
    assert fitted.messages == messages and fitted.max_tokens == 512 and fitted.left_out == 0


def test_a_prompt_that_fits_is_not_touched():
    messages = conversation(4)
    fitted = prompt_fit(messages, window=8192, max_tokens=512)
    assert fitted.messages == messages and fitted.max_tokens == 512 and fitted.left_out == 0


def test_the_oldest_turns_are_left_out_and_the_newest_kept_in_order():
    messages = conversation(20)  # ~3,400 tokens against a window of 2,048
    fitted = prompt_fit(messages, window=2048, max_tokens=512)
    kept = fitted.messages
    assert kept[0] == messages[0], "the system prompt always goes"
    assert kept[-1] == messages[-1], "and the question"
    assert kept[1:-1] == messages[-1 - len(kept[1:-1]) : -1], "the newest turns, in order"
    assert isinstance(kept[1], HumanMessage), "a turn begins with the user"
    assert fitted.left_out == len(messages) - len(kept) > 0
    # What is kept leaves the reply its room and the estimate's margin.
    assert tokens(kept) + fitted.max_tokens <= 2048 - int(2048 * ESTIMATE_MARGIN)
    assert fitted.max_tokens == 512


def test_the_reply_keeps_a_quarter_of_the_window_when_its_cap_is_larger():
    fitted = prompt_fit(conversation(20), window=2048, max_tokens=4000)
    assert 512 <= fitted.max_tokens < 4000
    assert tokens(fitted.messages) + fitted.max_tokens <= 2048


def test_a_question_too_long_on_its_own_is_refused():
    messages = [SystemMessage(content="Be brief."), HumanMessage(content="word " * 3000)]
    with pytest.raises(ParleyError) as refused:
        prompt_fit(messages, window=2048, max_tokens=512)
    assert refused.value.code == "context_length_exceeded"
    assert refused.value.retryable is False
    assert "2048" in refused.value.detail
    with pytest.raises(ParleyError):
        question_check(window=2048, system=("Be brief.",), question="word " * 3000, max_tokens=512)
    question_check(window=None, system=(), question="word " * 3000, max_tokens=512)
    question_check(window=2048, system=("Be brief.",), question="word " * 100, max_tokens=512)


@pytest.mark.django_db
def test_an_aliass_window_is_the_smallest_it_may_be_sent_to(settings):
    """Its deployments' and its fallbacks', enabled ones only; the bundled model's is its n_ctx."""
    catalog_forget()
    upstream = Provider.objects.create(
        name="vllm", kind="openai-compatible", base_url="http://127.0.0.1:9/v1"
    )
    Deployment.objects.create(provider=upstream, alias="big", model="m", context_window=32768)
    assert alias_window("big") == 32768
    Deployment.objects.create(provider=upstream, alias="big", model="n", context_window=8192)
    Deployment.objects.create(
        provider=upstream, alias="big", model="o", context_window=1024, enabled=False
    )
    assert alias_window("big") == 8192
    Deployment.objects.create(provider=upstream, alias="small", model="m", context_window=4096)
    FallbackChain.objects.create(alias="big", fallbacks="small")
    assert alias_window("big") == 4096
    Deployment.objects.create(provider=upstream, alias="unknown", model="m")
    assert alias_window("unknown") is None
    assert alias_window("local") == settings.LLM_LOCAL_CONTEXT
    assert alias_window("simulated") is None
