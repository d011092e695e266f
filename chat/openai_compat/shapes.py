"""OpenAI's request and response shapes, and its error shape, for the compatible endpoints."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from django.conf import settings
from django.http import JsonResponse

from chat.bounded_json import JSONRefused, json_parse
from chat.errors import ChatError
from chat.models import Message
from chat.services import PriorMessage
from core.errors import ParleyError
from llm.options import GenerationOptions
from llm.providers.base import ProviderError

# --- errors -------------------------------------------------------------------------------


class OpenAIError(Exception):
    """An error as OpenAI answers it: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JsonResponse:
        response = JsonResponse(self.body(), status=self.status)
        if self.retry_after is not None:
            response["Retry-After"] = str(self.retry_after)
        return response


def openai_error_from(error: ParleyError) -> OpenAIError:
    """A service's error as OpenAI says it (status, type and code from core/errors.py)."""
    vocabulary = error.vocabulary
    retry_after = None
    if "retry_after" in error.extra:
        retry_after = int(error.extra["retry_after"])
    elif isinstance(error, ProviderError) and error.retry_after:
        retry_after = max(1, round(error.retry_after))
    return OpenAIError(
        vocabulary.openai_status,
        error.detail,
        type=vocabulary.openai_type,
        code=vocabulary.openai_code,
        retry_after=retry_after,
    )


def internal_error() -> OpenAIError:
    """A bug, answered in OpenAI's shape (a 500 `server_error`) after it is logged: an SDK
    raises its own InternalServerError rather than failing to read Django's error page."""
    return openai_error_from(ChatError("internal", "Something went wrong on our side."))


def reply_error(message: Message) -> OpenAIError:
    """The error a failed reply answers with: its code's status, and Retry-After when the
    provider asked for a wait (its 429) or the router knows when one will be tried again."""
    code = message.error_code or "internal"
    retry_after = (message.routing or {}).get("retry_after")
    if retry_after is None and code == "provider_rate_limited":
        retry_after = 1
    extra = {"retry_after": retry_after} if retry_after is not None else None
    return openai_error_from(
        ChatError(code, message.error_message or "The reply failed.", extra=extra)
    )


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


# --- the request --------------------------------------------------------------------------


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    history: list[PriorMessage]  # everything before the last user message
    text: str  # the last user message
    stream: bool
    include_usage: bool
    payload: dict[str, Any]  # the request as sent (its fingerprint keys idempotency)
    system: str = ""  # the request's system (and developer) messages, joined
    options: GenerationOptions = field(default_factory=GenerationOptions)


def _invalid(message: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param)


def _text_of(content: object, param: str) -> str:
    """A message's content: a string, or a list of text parts."""
    text = _joined_text(content, param)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (\ud800 in JSON): not storable text
        raise _invalid("`content` must be valid Unicode text.", param) from None
    return text


def _joined_text(content: object, param: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise _invalid("Only text content parts are supported.", param)
            text = part.get("text")
            if not isinstance(text, str):
                raise _invalid("A text content part needs a `text` string.", param)
            parts.append(text)
        return "".join(parts)
    raise _invalid("`content` must be a string or a list of text parts.", param)


def json_object_parse(raw: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object, bounded in size (413) and shape (400)."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if len(raw) > limit:
        raise OpenAIError(413, f"The request body must be at most {limit} bytes.")
    try:
        payload = json_parse(raw or b"null", max_size=limit)
    except JSONRefused as refused:
        raise _invalid(
            f"We could not parse the JSON body of your request: {refused.detail}"
        ) from None
    if not isinstance(payload, dict):
        raise _invalid("The request body must be a JSON object.")
    return payload


def completion_request_parse(raw: bytes) -> CompletionRequest:
    """Validate a /v1/chat/completions body (bounded: chat/bounded_json.py): every parameter is
    either taken (generation options, carried to the provider) or refused with a 400 naming it;
    whether the model's providers can honour the options is checked by the view."""
    payload = json_object_parse(raw)
    model = payload.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _invalid("You must provide a model parameter.", "model")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("`messages` must be a non-empty array.", "messages")
    stream = payload.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _invalid("`stream` must be a boolean.", "stream")
    stream_options = payload.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise _invalid("`stream_options` must be an object.", "stream_options")
    if stream_options and not stream:  # as OpenAI answers it: not accepted and ignored
        raise _invalid(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    _refuse_unsupported(payload)
    options = _options_of(payload)
    converted: list[PriorMessage] = []
    system: list[str] = []
    for index, message in enumerate(messages):
        param = f"messages.[{index}]"
        if not isinstance(message, dict):
            raise _invalid("Each message must be an object.", param)
        role = message.get("role")
        text = _text_of(message.get("content"), f"{param}.content")
        if role in ("system", "developer"):
            # The conversation's own instructions: the model gets them as system text after
            # Parley's system prompt (chat/replies/prompt.py), wherever they stood.
            if text.strip():
                system.append(text)
        elif role == "user":
            converted.append(PriorMessage(Message.Role.USER, text))
        elif role == "assistant":
            if message.get("tool_calls") or message.get("function_call"):
                raise _invalid("Tool calls are not supported.", f"{param}.tool_calls")
            if text:
                converted.append(PriorMessage(Message.Role.ASSISTANT, text))
        elif role in ("tool", "function"):
            raise _invalid("Tool messages are not supported.", f"{param}.role")
        else:
            raise _invalid(f"Unknown role {role!r}.", f"{param}.role")
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user" or not converted:
        raise _invalid("The last message must be the user's.", "messages")
    text = converted[-1].content
    if not text.strip():
        raise _invalid("The last user message is empty.", "messages")
    if len(text) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise _invalid(
            f"The last message is too long (at most {settings.CHAT_MAX_MESSAGE_CHARS} characters).",
            "messages",
        )
    return CompletionRequest(
        model=model.strip(),
        history=converted[:-1],
        text=text,
        stream=stream,
        include_usage=bool(stream_options.get("include_usage")),
        payload=payload,
        system="\n\n".join(system),
        options=options,
    )


# Parameters taken without effect on the text: OpenAI's own bookkeeping, and tool choices that
# say "no tools" (LangChain sends some of these by default).
_IGNORABLE = frozenset({"store", "metadata", "service_tier", "parallel_tool_calls"})
_KNOWN = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "n",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "seed",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "user",
        "response_format",
        "logprobs",
        "top_logprobs",
        "tools",
        "functions",
        "tool_choice",
        "function_call",
        "logit_bias",
    }
)


def _refuse_unsupported(payload: dict[str, Any]) -> None:
    """Refuse what Parley cannot do (never accept it and answer as if it had not been asked)."""
    for name in payload:
        if name not in _KNOWN and name not in _IGNORABLE:
            raise _invalid(f"Unrecognized request argument supplied: {name}", name)
    n = payload.get("n", 1)
    if n not in (None, 1) or isinstance(n, bool):
        raise _invalid("Only n=1 is supported.", "n")
    if payload.get("tools") or payload.get("functions"):
        raise _invalid("Tools and function calling are not supported.", "tools")
    if payload.get("tool_choice") not in (None, "none", "auto"):
        raise _invalid("Tools and function calling are not supported.", "tool_choice")
    if payload.get("function_call") not in (None, "none", "auto"):
        raise _invalid("Tools and function calling are not supported.", "function_call")
    if payload.get("logprobs") not in (None, False):
        raise _invalid("Log probabilities are not supported.", "logprobs")
    if payload.get("top_logprobs") is not None:
        raise _invalid("Log probabilities are not supported.", "top_logprobs")
    if payload.get("logit_bias"):
        raise _invalid("`logit_bias` is not supported.", "logit_bias")


def _number(payload: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(f"`{name}` must be a number.", name)
    if not low <= value <= high:
        raise _invalid(f"`{name}` must be between {low:g} and {high:g}; got {value}.", name)
    return float(value)


def _max_tokens(payload: dict[str, Any]) -> int | None:
    chosen = None
    for name in ("max_tokens", "max_completion_tokens"):  # the newer name wins if both are set
        value = payload.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid(f"`{name}` must be an integer.", name)
        cap = settings.LLM_MAX_TOKENS
        if not 1 <= value <= cap:
            raise _invalid(f"`{name}` must be between 1 and {cap}; got {value}.", name)
        chosen = value
    return chosen


def _stop(payload: dict[str, Any]) -> tuple[str, ...] | None:
    value = payload.get("stop")
    if value is None:
        return None
    words = [value] if isinstance(value, str) else value
    if (
        not isinstance(words, list)
        or not 1 <= len(words) <= 4
        or not all(isinstance(w, str) and w for w in words)
    ):
        raise _invalid("`stop` must be a non-empty string or a list of up to 4 of them.", "stop")
    return tuple(words)


def _response_format(payload: dict[str, Any]) -> dict[str, Any] | None:
    value = payload.get("response_format")
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None  # the default: plain text
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = value.get("json_schema")
        if not isinstance(schema, dict) or not isinstance(schema.get("schema", {}), dict):
            raise _invalid("`response_format.json_schema` must be an object.", "response_format")
        try:
            jsonschema.validators.validator_for(schema.get("schema", {})).check_schema(
                schema.get("schema", {})
            )
        except jsonschema.exceptions.SchemaError as error:
            raise _invalid(
                f"`response_format.json_schema.schema` is not a valid JSON Schema: {error.message}",
                "response_format",
            ) from None
        return {"type": "json_schema", "json_schema": schema}
    raise _invalid(
        "`response_format.type` must be one of text, json_object, json_schema.", "response_format"
    )


def _options_of(payload: dict[str, Any]) -> GenerationOptions:
    """The request's generation choices, each checked as OpenAI checks it."""
    seed = payload.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _invalid("`seed` must be an integer.", "seed")
    user = payload.get("user")
    if user is not None and (not isinstance(user, str) or len(user) > 256):
        raise _invalid("`user` must be a string of at most 256 characters.", "user")
    return GenerationOptions(
        max_tokens=_max_tokens(payload),
        temperature=_number(payload, "temperature", 0, 2),
        top_p=_number(payload, "top_p", 0, 1),
        seed=seed,
        stop=_stop(payload),
        presence_penalty=_number(payload, "presence_penalty", -2, 2),
        frequency_penalty=_number(payload, "frequency_penalty", -2, 2),
        user=user,
        response_format=_response_format(payload),
    )


def options_refused(options: GenerationOptions, param: str, alias: str) -> OpenAIError:
    return _invalid(
        f"`{param}` is not supported by the model `{alias}` (one of its providers cannot "
        "honour it).",
        param,
    )


# --- the response -------------------------------------------------------------------------


def completion_id(reply: Message) -> str:
    return f"chatcmpl-parley-{reply.pk}"


def created_of(reply: Message) -> int:
    return int(reply.created_at.timestamp()) if reply.created_at else int(time.time())


def finish_reason(reply: Message) -> str:
    """`length` when the token cap cut the reply (the provider said so), else `stop`."""
    return "length" if reply.status == Message.Status.INCOMPLETE else "stop"


def usage_of(reply: Message) -> dict[str, int]:
    prompt, completion = reply.prompt_tokens or 0, reply.completion_tokens or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_body(reply: Message, *, model: str) -> dict[str, Any]:
    """A `chat.completion` for a final reply."""
    return {
        "id": completion_id(reply),
        "object": "chat.completion",
        "created": created_of(reply),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason(reply),
            }
        ],
        "usage": usage_of(reply),
        "system_fingerprint": None,
    }


@dataclass(frozen=True)
class ChunkMaker:
    """`chat.completion.chunk`s of one streamed reply."""

    id: str
    created: int
    model: str
    include_usage: bool

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> str:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            body["usage"] = None
        return sse_data(body)

    def usage(self, reply: Message) -> str:
        return sse_data(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": None,
                "choices": [],
                "usage": usage_of(reply),
            }
        )


def sse_data(body: dict[str, Any] | str) -> str:
    data = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    return f"data: {data}\n\n"


def models_body(aliases: list[str]) -> dict[str, Any]:
    return {"object": "list", "data": [model_body(alias) for alias in aliases]}


def model_body(alias: str) -> dict[str, Any]:
    return {"id": alias, "object": "model", "created": 0, "owned_by": "parley"}
