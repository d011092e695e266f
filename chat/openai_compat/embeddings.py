"""POST /v1/embeddings: OpenAI's request and answer shapes around llm/embedding_models.py.

The request is checked whole before anything runs: every field is known, `input` is text (a
string or a list of strings; token arrays are refused, Parley's models take text), `dimensions`
matches the model's when the model has a fixed width. Then the socket's send rate limit, then
the service (budgets reserved and settled like a reply's).
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from accounts import limits
from chat.api.follow import connection_release
from chat.openai_compat.shapes import (
    OpenAIError,
    internal_error,
    json_object_parse,
    openai_error_from,
)
from chat.openai_compat.views import api_key_authenticate, method_not_allowed
from core.errors import ParleyError
from llm.embedding_models import (
    EmbeddingInputRefused,
    EmbeddingModel,
    EmbeddingResult,
    embedding_model_resolve,
    embedding_models,
    embeddings_create,
)

logger = logging.getLogger(__name__)

_KNOWN = frozenset({"model", "input", "encoding_format", "dimensions", "user"})


@dataclass(frozen=True)
class EmbeddingRequest:
    model: str
    texts: list[str]
    base64: bool
    dimensions: int | None


def _invalid(message: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param)


def _texts(value: object) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _invalid("`input` must be a non-empty string or array of strings.", "input")
    if all(isinstance(item, int) and not isinstance(item, bool) for item in value) or all(
        isinstance(item, list) for item in value
    ):
        raise _invalid(
            "Token arrays are not supported: send `input` as text (a string or an array of "
            "strings); each model counts tokens with its own tokenizer.",
            "input",
        )
    limit = settings.EMBEDDINGS_MAX_INPUTS
    if len(value) > limit:
        raise _invalid(f"`input` may hold at most {limit} strings.", "input")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise _invalid(f"`input[{index}]` must be a string.", "input")
        if not item:
            raise _invalid(f"`input[{index}]` is empty.", "input")
        try:
            item.encode("utf-8")
        except UnicodeEncodeError:
            raise _invalid(f"`input[{index}]` must be valid Unicode text.", "input") from None
    return list(value)


def embedding_request_parse(raw: bytes) -> EmbeddingRequest:
    payload = json_object_parse(raw)
    for name in payload:
        if name not in _KNOWN:
            raise _invalid(f"Unrecognized request argument supplied: {name}", name)
    model = payload.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _invalid("You must provide a model parameter.", "model")
    if "input" not in payload:
        raise _invalid("You must provide an input parameter.", "input")
    encoding = payload.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise _invalid("`encoding_format` must be `float` or `base64`.", "encoding_format")
    dimensions = payload.get("dimensions")
    if dimensions is not None and (
        not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1
    ):
        raise _invalid("`dimensions` must be a positive integer.", "dimensions")
    user = payload.get("user")
    if user is not None and not isinstance(user, str):
        raise _invalid("`user` must be a string.", "user")
    return EmbeddingRequest(
        model=model.strip(),
        texts=_texts(payload["input"]),
        base64=encoding == "base64",
        dimensions=dimensions,
    )


def _model_for(request: EmbeddingRequest) -> EmbeddingModel:
    model = embedding_model_resolve(request.model)
    if model is None:
        names = ", ".join(m.id for m in embedding_models()) or "none is configured"
        raise OpenAIError(
            404,
            f"The embedding model `{request.model}` does not exist or you do not have access "
            f"to it (embedding models: {names}).",
            param="model",
            code="model_not_found",
        )
    if (
        request.dimensions is not None
        and model.dimensions is not None
        and request.dimensions != model.dimensions
    ):
        raise _invalid(
            f"{model.id} makes {model.dimensions}-dimensional vectors; `dimensions` must be "
            f"{model.dimensions} or left out.",
            "dimensions",
        )
    return model


def _vector(values: list[float], as_base64: bool) -> list[float] | str:
    if not as_base64:
        return values
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


def embeddings_body(result: EmbeddingResult, *, as_base64: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": _vector(vector, as_base64)}
            for index, vector in enumerate(result.vectors)
        ],
        "model": result.model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }


@csrf_exempt
async def embeddings(request: HttpRequest) -> HttpResponseBase:
    if request.method != "POST":
        return method_not_allowed("POST")
    try:
        key = await api_key_authenticate(request)
        parsed = embedding_request_parse(request.read(settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1))
        model = await sync_to_async(_model_for)(parsed)
        await limits.send_check(user_id=key.user_id, organisation_id=key.organisation_id)

        def embed() -> EmbeddingResult:
            try:
                return embeddings_create(
                    user_id=key.user_id,
                    organisation_id=key.organisation_id,
                    model=model,
                    texts=parsed.texts,
                    dimensions=parsed.dimensions,
                )
            finally:
                connection_release()  # a pool thread must not keep a pooled connection

        # Off the thread Django's sync calls share: the model computes for a while.
        result = await sync_to_async(embed, thread_sensitive=False)()
    except OpenAIError as error:
        return error.response()
    except EmbeddingInputRefused as refused:
        return _invalid(refused.detail, "input").response()
    except ParleyError as error:
        return openai_error_from(error).response()
    except Exception:
        logger.exception("embeddings request failed")
        return internal_error().response()
    return JsonResponse(embeddings_body(result, as_base64=parsed.base64))
