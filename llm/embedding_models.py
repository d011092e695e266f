"""Embedding models callers may ask for (POST /v1/embeddings), and one request's life: count,
reserve against the organisation's budgets, embed, settle.

Which models exist: the bundled all-MiniLM-L6-v2 (llm/embeddings.py, the reply cache's own
model, always there unless EMBEDDINGS_LOCAL_ENABLED=false), plus an embeddings model of the
OpenAI-compatible server and of OpenAI when their settings name one
(OPENAI_COMPATIBLE_EMBEDDING_MODEL, OPENAI_EMBEDDING_MODEL). Each is asked for by its own
name; `default` names EMBEDDINGS_DEFAULT_MODEL.

Usage is charged like a reply's: the prompt tokens are reserved before the model runs (so a
spent budget refuses the request and charges nothing), then settled to what the model counted,
or released when it failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from django.conf import settings

from accounts.quotas import TokenPrices, ledger_settle, quota_reserve
from llm.embeddings import Vectors, embedder, model_dir
from llm.providers.base import ProviderConfig, ProviderError
from llm.providers.openai_compatible import embed as remote_embed

BUNDLED = "all-MiniLM-L6-v2"
# The bundled embedder truncates at this many tokens (llm/embeddings.py); a longer input is
# refused rather than embedded in part.
BUNDLED_MAX_TOKENS = 128
BUNDLED_DIMENSIONS = 384
DEFAULT_NAME = "default"


@dataclass(frozen=True)
class EmbeddingModel:
    id: str  # the name callers ask for
    kind: str  # local | openai | openai-compatible
    dimensions: int | None  # None: whatever the upstream returns (it is asked for `dimensions`)
    max_tokens: int | None = None  # per input; None: the upstream decides
    config: ProviderConfig | None = None  # how to reach a remote one


@dataclass(frozen=True)
class EmbeddingResult:
    model: str
    vectors: list[list[float]]
    prompt_tokens: int


class EmbeddingInputRefused(ProviderError):
    """An input the model cannot take whole (too long): the caller's 400, naming `input`."""

    def __init__(self, detail: str) -> None:
        super().__init__("bad_frame", detail, reason="input_too_long")


def embedding_models() -> list[EmbeddingModel]:
    """Every embedding model the settings configure, the bundled one first."""
    models = []
    if settings.EMBEDDINGS_LOCAL_ENABLED:
        models.append(
            EmbeddingModel(
                id=BUNDLED,
                kind="local",
                dimensions=BUNDLED_DIMENSIONS,
                max_tokens=BUNDLED_MAX_TOKENS,
            )
        )
    remote = [
        (
            "openai-compatible",
            settings.OPENAI_COMPATIBLE_BASE_URL and settings.OPENAI_COMPATIBLE_EMBEDDING_MODEL,
            settings.OPENAI_COMPATIBLE_BASE_URL,
            settings.OPENAI_COMPATIBLE_API_KEY,
            settings.OPENAI_COMPATIBLE_EMBEDDING_MODEL,
            settings.OPENAI_COMPATIBLE_EMBEDDING_DIMENSIONS,
        ),
        (
            "openai",
            settings.OPENAI_API_KEY and settings.OPENAI_EMBEDDING_MODEL,
            "",
            settings.OPENAI_API_KEY,
            settings.OPENAI_EMBEDDING_MODEL,
            None,
        ),
    ]
    for kind, enabled, base_url, api_key, model, dimensions in remote:
        if not enabled:
            continue
        config = ProviderConfig(
            name=f"{kind}-embeddings",
            kind=kind,
            model=model,
            base_url=base_url,
            api_key=api_key,
            timeout=settings.LLM_REQUEST_TIMEOUT,
            connect_timeout=settings.LLM_CONNECT_TIMEOUT,
        )
        models.append(
            EmbeddingModel(id=model, kind=kind, dimensions=dimensions or None, config=config)
        )
    return models


def embedding_model_resolve(name: str) -> EmbeddingModel | None:
    """The model a request's `model` names (`default`: EMBEDDINGS_DEFAULT_MODEL), or None."""
    models = {model.id: model for model in embedding_models()}
    if name in models:
        return models[name]
    if name == DEFAULT_NAME:
        return models.get(settings.EMBEDDINGS_DEFAULT_MODEL)
    return None


@cache
def _counting_tokenizer():  # type: ignore[no-untyped-def]
    """The bundled model's tokenizer without truncation: counts an input's real length."""
    from tokenizers import Tokenizer  # a Rust wheel; no model download

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.no_truncation()  # tokenizer.json itself truncates at 128
    tokenizer.no_padding()
    return tokenizer


def token_counts(model: EmbeddingModel, texts: list[str]) -> list[int]:
    """Tokens per input: the bundled tokenizer's count (special tokens included, as the model
    sees them), else an estimate of four characters a token for reserving."""
    if model.kind == "local":
        return [len(e.ids) for e in _counting_tokenizer().encode_batch(texts)]
    return [max(1, len(text) // 4) for text in texts]


def _embed_local(texts: list[str]) -> list[list[float]]:
    vectors: Vectors = embedder().embed(texts)
    return [row.tolist() for row in np.asarray(vectors, dtype=np.float32)]


def _embed(
    model: EmbeddingModel, texts: list[str], dimensions: int | None
) -> tuple[list[list[float]], int | None]:
    if model.kind == "local":
        return _embed_local(texts), None
    assert model.config is not None
    return remote_embed(model.config, texts, dimensions=dimensions)


def embeddings_create(
    *,
    user_id: int,
    organisation_id: int,
    model: EmbeddingModel,
    texts: list[str],
    dimensions: int | None = None,
) -> EmbeddingResult:
    """Embed `texts` with `model`, charged to the organisation's budgets (QuotaExceeded when
    they are spent); a too-long input is refused (EmbeddingInputRefused) before anything is
    charged. Vectors come back in input order."""
    counts = token_counts(model, texts)
    if model.max_tokens is not None:
        for index, count in enumerate(counts):
            if count > model.max_tokens:
                raise EmbeddingInputRefused(
                    f"Input {index} is {count} tokens; {model.id} takes at most "
                    f"{model.max_tokens} tokens per input. Split it into shorter pieces."
                )
    reservation = quota_reserve(
        user_id=user_id,
        organisation_id=organisation_id,
        prompt_tokens=sum(counts),
        max_tokens=0,
        prices=TokenPrices(),
    )
    try:
        vectors, reported = _embed(model, texts, dimensions)
    except BaseException:
        ledger_settle(entry_id=reservation.pk, used_tokens=None)
        raise
    used = reported if reported is not None else sum(counts)
    ledger_settle(entry_id=reservation.pk, used_tokens=used)
    return EmbeddingResult(model=model.id, vectors=vectors, prompt_tokens=used)
