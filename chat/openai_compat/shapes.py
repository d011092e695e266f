"""OpenAI's request and response shapes, and its error shape, for the compatible endpoints."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import JsonResponse

from chat.bounded_json import JSONRefused, json_parse
from chat.errors import ChatError
from chat.models import Message
from chat.services import PriorMessage
from core.errors import ParleyError
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


def reply_error(message: Message) -> OpenAIError:
    """The error a failed reply answers with."""
    return openai_error_from(
        ChatError(message.error_code or "internal", message.error_message or "The reply failed.")
    )


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


# --- the request --------------------------------------------------------------------------

SYSTEM_PREFIX = "System: "


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    history: list[PriorMessage]  # everything before the last user message
    text: str  # the last user message
    stream: bool
    include_usage: bool
    payload: dict[str, Any]  # the request as sent (its fingerprint keys idempotency)


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


def completion_request_parse(raw: bytes) -> CompletionRequest:
    """Validate a /v1/chat/completions body (bounded: chat/bounded_json.py). Parameters that
    tune sampling (temperature, max_tokens, top_p, stop, …) are accepted and left to the
    deployment's own settings."""
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
    options = payload.get("stream_options") or {}
    if not isinstance(options, dict):
        raise _invalid("`stream_options` must be an object.", "stream_options")
    n = payload.get("n", 1)
    if n not in (None, 1):
        raise _invalid("Only n=1 is supported.", "n")
    if payload.get("tools") or payload.get("functions"):
        raise _invalid("Tools and function calling are not supported.", "tools")
    converted: list[PriorMessage] = []
    for index, message in enumerate(messages):
        param = f"messages.[{index}]"
        if not isinstance(message, dict):
            raise _invalid("Each message must be an object.", param)
        role = message.get("role")
        text = _text_of(message.get("content"), f"{param}.content")
        if role in ("system", "developer"):
            # Parley's messages are the user's or the assistant's: the request's own system
            # prompt reaches the model as a user turn that says what it is.
            if text.strip():
                converted.append(PriorMessage(Message.Role.USER, SYSTEM_PREFIX + text))
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
        include_usage=bool(options.get("include_usage")),
        payload=payload,
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
