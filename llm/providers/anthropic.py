"""Anthropic's Claude models via langchain-anthropic."""

from __future__ import annotations

from langchain_anthropic import ChatAnthropic
from langchain_core.language_models.chat_models import BaseChatModel

from llm.options import GenerationOptions
from llm.providers.base import ProviderConfig


def build(
    config: ProviderConfig, *, max_tokens: int, options: GenerationOptions | None = None
) -> BaseChatModel:
    options = options or GenerationOptions()
    temperature = options.temperature
    if temperature is None:
        temperature = float(config.options.get("temperature", 0.7))
    # ChatAnthropic takes one number for every HTTP timeout (connect included); a separate
    # connect timeout would need a hand-built client. Opening the connection is still bounded
    # by the deployment's first-token timeout, which llm/failover.py enforces for every kind.
    return ChatAnthropic(  # type: ignore[call-arg]
        model=config.model,
        api_key=config.api_key,  # type: ignore[arg-type]
        base_url=config.base_url or None,
        timeout=config.timeout,
        max_retries=0,
        max_tokens=max_tokens,
        streaming=True,
        stream_usage=True,  # the stream's last event then carries stop_reason (llm/failover.py)
        # Anthropic's temperature runs 0..1: above it, its own 400 reaches the caller.
        temperature=temperature,
        top_p=options.top_p,
        stop=list(options.stop) if options.stop else None,
    )
