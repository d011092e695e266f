"""OpenAI and OpenAI-compatible servers (vLLM, Ollama, llama.cpp's server) via ChatOpenAI."""

from __future__ import annotations

from functools import cache
from typing import Any

import openai
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_openai import ChatOpenAI

from llm.options import GenerationOptions, sampling_kwargs
from llm.providers.base import ProviderConfig, ProviderError, provider_error_from


def request_timeout(config: ProviderConfig) -> float | tuple[float, float, float, float]:
    """The client's timeout: (connect, read, write, pool) when a connect timeout is set.

    A tuple, not an httpx.Timeout: langchain-openai shares one pooled HTTP client per
    (base_url, timeout) and can only do so for a hashable timeout; an httpx.Timeout would make
    it build a new client (and new TLS connections) for every reply.
    """
    if config.connect_timeout is None:
        return config.timeout
    return (config.connect_timeout, config.timeout, config.timeout, config.timeout)


def build(
    config: ProviderConfig, *, max_tokens: int, options: GenerationOptions | None = None
) -> BaseChatModel:
    sampling = sampling_kwargs(options)
    common: dict[str, Any] = dict(
        model=config.model,
        api_key=config.api_key or "not-needed",
        base_url=config.base_url or None,
        timeout=request_timeout(config),
        max_retries=0,  # retries are the router's job, with backoff it controls
        streaming=True,
        stream_usage=True,
        # No per-chunk timeout of its own: llm/failover.py bounds every chunk for every kind, and
        # langchain-openai's wraps each chunk in asyncio.wait_for, which on Python 3.11 drops a
        # cancel arriving as the chunk does (and costs a task per chunk).
        stream_chunk_timeout=0,
        temperature=float(sampling.pop("temperature", config.options.get("temperature", 0.7))),
    )
    # The request's own choices go into the body as they are, by OpenAI's names, which
    # compatible servers (vLLM, llama.cpp's, Ollama's) read too.
    body: dict[str, Any] = dict(sampling)
    if options is not None and options.user is not None:
        body["user"] = options.user
    if options is not None and options.response_format is not None:
        body["response_format"] = options.response_format
    if config.kind == "openai":
        # OpenAI's own API takes max_completion_tokens, which ChatOpenAI sends for max_tokens.
        return ChatOpenAI(  # type: ignore[call-arg]
            max_tokens=max_tokens, extra_body=body or None, **common
        )
    # Compatible servers (llama.cpp's among them) ignore max_completion_tokens and would run
    # unbounded; send the classic field they understand.
    return ChatOpenAI(extra_body={**body, "max_tokens": max_tokens}, **common)


@cache
def _embeddings_client(base_url: str, api_key: str, timeout: float) -> Any:
    """One pooled client per upstream (its HTTP connections are reused across requests)."""
    return openai.OpenAI(
        base_url=base_url or None, api_key=api_key or "not-needed", timeout=timeout, max_retries=0
    )


def embed(
    config: ProviderConfig, texts: list[str], *, dimensions: int | None = None
) -> tuple[list[list[float]], int | None]:
    """Vectors for `texts` from the deployment's /embeddings (input order), and the prompt
    tokens it reports (None if it reports none). `dimensions` is passed on when asked for; a
    vendor error becomes our ProviderError."""
    client = _embeddings_client(config.base_url, config.api_key, config.timeout)
    extra: dict[str, Any] = {} if dimensions is None else {"dimensions": dimensions}
    try:
        response = client.embeddings.create(
            model=config.model, input=texts, encoding_format="float", **extra
        )
    except Exception as exc:
        raise provider_error_from(exc) from exc
    rows = sorted(response.data, key=lambda row: row.index)
    if len(rows) != len(texts) or any(not isinstance(row.embedding, list) for row in rows):
        raise ProviderError(
            "provider_failed",
            f"The embeddings provider answered {len(rows)} vectors for {len(texts)} inputs.",
            reason="bad_answer",
        )
    usage = getattr(response, "usage", None)
    tokens = getattr(usage, "prompt_tokens", None)
    return [list(row.embedding) for row in rows], tokens if isinstance(tokens, int) else None
