"""OpenAI and OpenAI-compatible servers (vLLM, Ollama, llama.cpp's server) via ChatOpenAI."""

from __future__ import annotations

import asyncio
import json
import weakref
from collections import OrderedDict
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


class _DictChunks:
    """`AsyncOpenAI.chat.completions` whose streams yield each chunk as the JSON object it is.

    ChatOpenAI streams through the SDK's `create`, which builds a ChatCompletionChunk model per
    chunk (pydantic construct, behind a runtime Protocol check) that langchain-openai dumps
    straight back to a dict: two fifths of a streamed reply's CPU in the process generating it
    (bench/openai_bench.py). The same request is posted through the client's own `post`
    (auth, retries, errors, SSE decoding and closing unchanged) with the chunks left as dicts,
    which langchain-openai reads as they are. Anything but a stream goes to the SDK's `create`.
    """

    def __init__(self, completions: Any, client: openai.AsyncOpenAI) -> None:
        self._completions = completions
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._completions, name)

    async def create(self, **params: Any) -> Any:
        if not params.get("stream"):
            return await self._completions.create(**params)
        options: Any = {"security": {"bearer_auth": True}}  # as the SDK's own create
        for name, option in (
            ("extra_headers", "headers"),
            ("extra_query", "params"),
            ("extra_body", "extra_json"),
            ("timeout", "timeout"),
        ):
            if (value := params.pop(name, None)) is not None:
                options[option] = value
        return await self._client.post(
            "/chat/completions",
            body=params,
            options=options,
            cast_to=object,
            stream=True,
            stream_cls=openai.AsyncStream[Any],
        )


# Built models, per event loop, most recently used last. Building one costs a sync and an async
# SDK client, and each new async client runs its platform probe in a thread on its first
# request; a model holds no request's state, so the replies of one loop share it. Per loop:
# pooled connections belong to the loop that opened them.
_built: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, OrderedDict[str, ChatOpenAI]] = (
    weakref.WeakKeyDictionary()
)
BUILT_PER_LOOP = 64  # distinct (deployment, max tokens, options) kept; requests' options vary


def build(
    config: ProviderConfig, *, max_tokens: int, options: GenerationOptions | None = None
) -> BaseChatModel:
    """The deployment's chat model with these options: built once per event loop and reused
    (outside a running loop, a new one each time)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _build(config, max_tokens=max_tokens, options=options)
    key = json.dumps(
        [
            config.kind,
            config.model,
            config.base_url,
            config.api_key,
            config.timeout,
            config.connect_timeout,
            config.options,
            max_tokens,
            options.as_json() if options is not None else None,
        ],
        sort_keys=True,
        default=str,
    )
    models = _built.setdefault(loop, OrderedDict())
    model = models.get(key)
    if model is None:
        model = models[key] = _build(config, max_tokens=max_tokens, options=options)
        if len(models) > BUILT_PER_LOOP:
            models.popitem(last=False)
    else:
        models.move_to_end(key)
    return model


def _build(
    config: ProviderConfig, *, max_tokens: int, options: GenerationOptions | None
) -> ChatOpenAI:
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
        model = ChatOpenAI(  # type: ignore[call-arg]
            max_tokens=max_tokens, extra_body=body or None, **common
        )
    else:
        # Compatible servers (llama.cpp's among them) ignore max_completion_tokens and would
        # run unbounded; send the classic field they understand.
        model = ChatOpenAI(extra_body={**body, "max_tokens": max_tokens}, **common)
    model.async_client = _DictChunks(model.async_client, model.root_async_client)
    return model


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
