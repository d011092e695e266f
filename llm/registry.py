"""Which providers exist, built from settings; each becomes a LangChain chat model."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.utils.module_loading import import_string
from langchain_core.language_models.chat_models import BaseChatModel

from llm.options import GenerationOptions, option_unsupported
from llm.providers.base import ProviderConfig, ProviderError

# kind -> module with build(config, *, max_tokens, options) -> BaseChatModel
PROVIDER_KINDS = {
    "local": "llm.providers.local",
    "openai": "llm.providers.openai_compatible",
    "openai-compatible": "llm.providers.openai_compatible",
    "anthropic": "llm.providers.anthropic",
    "simulated": "llm.providers.simulated",
}


def provider_configs() -> dict[str, ProviderConfig]:
    """Every provider the settings configure, by name. Local and simulated are always there."""
    timeout = settings.LLM_REQUEST_TIMEOUT
    configs = [
        ProviderConfig(
            name="local",
            kind="local",
            model="smollm2-135m-instruct",
            timeout=timeout,
            options={
                "n_ctx": settings.LLM_LOCAL_CONTEXT,
                "n_threads": settings.LLM_LOCAL_THREADS,
                "temperature": settings.LLM_TEMPERATURE,
            },
        ),
        ProviderConfig(
            name="simulated",
            kind="simulated",
            model="simulated",
            options={
                "tokens_per_second": settings.SIMULATED_TOKENS_PER_SECOND,
                "first_token_delay": settings.SIMULATED_FIRST_TOKEN_DELAY,
                "stamp_tokens": settings.SIMULATED_STAMP_TOKENS,
            },
        ),
    ]
    if settings.OPENAI_API_KEY:
        configs.append(
            ProviderConfig(
                name="openai",
                kind="openai",
                model=settings.OPENAI_MODEL,
                api_key=settings.OPENAI_API_KEY,
                timeout=timeout,
                options={"temperature": settings.LLM_TEMPERATURE},
            )
        )
    if settings.OPENAI_COMPATIBLE_BASE_URL:
        configs.append(
            ProviderConfig(
                name="openai-compatible",
                kind="openai-compatible",
                model=settings.OPENAI_COMPATIBLE_MODEL,
                base_url=settings.OPENAI_COMPATIBLE_BASE_URL,
                api_key=settings.OPENAI_COMPATIBLE_API_KEY,
                timeout=timeout,
                options={
                    "temperature": settings.LLM_TEMPERATURE,
                    "context_window": settings.OPENAI_COMPATIBLE_CONTEXT_WINDOW,
                },
            )
        )
    if settings.ANTHROPIC_API_KEY:
        configs.append(
            ProviderConfig(
                name="anthropic",
                kind="anthropic",
                model=settings.ANTHROPIC_MODEL,
                api_key=settings.ANTHROPIC_API_KEY,
                timeout=timeout,
                options={"temperature": settings.LLM_TEMPERATURE},
            )
        )
    return {config.name: config for config in configs}


def provider_config(name: str) -> ProviderConfig:
    try:
        return provider_configs()[name]
    except KeyError:
        raise ProviderError(
            "provider_rejected", f"No provider named {name!r} is configured."
        ) from None


def chat_model_for(
    config: ProviderConfig, *, max_tokens: int, options: GenerationOptions | None = None
) -> BaseChatModel:
    """Build the LangChain chat model for one configured provider, with the caller's generation
    options; an option this kind cannot honour is refused, never dropped."""
    if config.kind not in PROVIDER_KINDS:
        raise ProviderError("provider_rejected", f"Unknown provider kind {config.kind!r}.")
    if options is not None and (param := option_unsupported(options, config.kind)):
        raise ProviderError(
            "provider_rejected",
            f"The model provider {config.name!r} ({config.kind}) cannot honour `{param}`.",
            reason="unsupported_option",
        )
    build: Callable[..., BaseChatModel] = import_string(f"{PROVIDER_KINDS[config.kind]}.build")
    return build(config, max_tokens=max_tokens, options=options)
