"""Frames of the WebSocket protocol (docs/protocol.md): parsing client frames. What of a
reply's text a reader is sent is the reply cursor's call (chat/cursor.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings

from chat.bounded_json import JSONRefused, json_parse
from chat.errors import ChatError


@dataclass(frozen=True)
class SendFrame:
    conversation: int | None
    text: str
    client_id: str
    # The caller's choices for the reply (None/"": the default model, the deployment's settings).
    model: str = ""
    max_tokens: int | None = None
    temperature: float | None = None


@dataclass(frozen=True)
class CancelFrame:
    message: int


@dataclass(frozen=True)
class ResumeFrame:
    message: int
    after_seq: int


@dataclass(frozen=True)
class SubscribeFrame:
    conversation: int


@dataclass(frozen=True)
class RegenerateFrame:
    message: int


@dataclass(frozen=True)
class EditFrame:
    message: int
    text: str
    client_id: str


@dataclass(frozen=True)
class PingFrame:
    pass


Frame = (
    SendFrame | CancelFrame | ResumeFrame | SubscribeFrame | RegenerateFrame | EditFrame | PingFrame
)


def _bad(detail: str) -> ChatError:
    return ChatError("bad_frame", detail)


def _id(data: dict[str, Any], field: str, *, nullable: bool = False) -> int | None:
    value = data.get(field)
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(f"`{field}` must be a positive integer id.")
    return value


def frame_decode(text: str | None) -> object:
    """The JSON value of one text frame; ChatError('bad_frame', why) for anything else: binary
    frames, malformed or too deeply nested JSON, frames over WS_MAX_FRAME_CHARS, NULs, lone
    surrogates (chat/bounded_json.py)."""
    if text is None:
        raise _bad("Frames must be JSON text.")
    try:
        return json_parse(text, max_size=settings.WS_MAX_FRAME_CHARS)
    except JSONRefused as refused:
        if refused.too_large:
            raise _bad(
                f"A frame must be at most {settings.WS_MAX_FRAME_CHARS} characters."
            ) from None
        raise _bad(refused.detail) from None


def frame_parse(data: object) -> Frame:
    """Validate one client frame; raise ChatError('bad_frame', why) for anything else."""
    if not isinstance(data, dict):
        raise _bad("A frame must be a JSON object with a `type`.")
    kind = data.get("type")
    if kind == "send":
        text, client_id = _text_and_client_id(data)
        return SendFrame(
            _id(data, "conversation", nullable=True), text, client_id, *_send_choices(data)
        )
    if kind == "edit":
        text, client_id = _text_and_client_id(data)
        return EditFrame(_id(data, "message"), text, client_id)  # type: ignore[arg-type]
    if kind == "regenerate":
        return RegenerateFrame(_id(data, "message"))  # type: ignore[arg-type]
    if kind == "cancel":
        return CancelFrame(_id(data, "message"))  # type: ignore[arg-type]
    if kind == "resume":
        # Required: a missing position taken as 0 would re-send text the client may hold.
        after_seq = data.get("after_seq")
        if isinstance(after_seq, bool) or not isinstance(after_seq, int) or after_seq < 0:
            raise _bad("`after_seq` must be an integer ≥ 0 (the last `seq` held; 0 for none).")
        return ResumeFrame(_id(data, "message"), after_seq)  # type: ignore[arg-type]
    if kind == "subscribe":
        return SubscribeFrame(_id(data, "conversation"))  # type: ignore[arg-type]
    if kind == "ping":
        return PingFrame()
    raise _bad(
        f"Unknown frame type {kind!r}: "
        "use send, cancel, resume, subscribe, regenerate, edit or ping."
    )


def _text_and_client_id(data: dict[str, Any]) -> tuple[str, str]:
    client_id = data.get("client_id")
    if not isinstance(client_id, str) or not 1 <= len(client_id) <= 64:
        raise _bad("`client_id` must be a string of 1 to 64 characters.")
    text = data.get("text")
    if not isinstance(text, str):
        raise _bad("`text` must be a string.")
    return text, client_id


def _send_choices(data: dict[str, Any]) -> tuple[str, int | None, float | None]:
    """A send's optional `model`, `max_tokens` and `temperature`, checked as the REST API does."""
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not 1 <= len(model) <= 100):
        raise _bad("`model` must be a model alias (a string of 1 to 100 characters).")
    max_tokens = data.get("max_tokens")
    cap = settings.LLM_MAX_TOKENS
    if max_tokens is not None and (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= cap
    ):
        raise _bad(f"`max_tokens` must be an integer from 1 to {cap}.")
    temperature = data.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not 0 <= temperature <= 2
    ):
        raise _bad("`temperature` must be a number from 0 to 2.")
    return (
        model or "",
        max_tokens,
        float(temperature) if temperature is not None else None,
    )
