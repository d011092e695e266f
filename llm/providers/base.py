"""What every provider kind shares: its configuration and the error it raises."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import ParleyError


@dataclass(frozen=True)
class ProviderConfig:
    """One configured deployment: a provider kind, a model, and how to reach it.

    `timeout` bounds each HTTP read (a backstop: first-token and inter-token timeouts are
    enforced by llm/failover.py for every kind); `connect_timeout`, when set, bounds opening
    the connection.
    """

    name: str
    kind: str  # local | openai | openai-compatible | anthropic | simulated
    model: str
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    timeout: float = 60.0
    options: dict[str, Any] = field(default_factory=dict)
    connect_timeout: float | None = None

    @property
    def is_local(self) -> bool:
        """Local inference is CPU-bound and runs on its own worker queue."""
        return self.kind == "local"


class ProviderError(ParleyError):
    """A provider failed; its code says whether trying again may succeed (`retryable`).

    `status` is the HTTP status when there was one, `retry_after` the seconds the provider
    asked us to wait (Retry-After), `reason` a short machine word for routing records and
    health (e.g. "http_429", "first_token_timeout", "connection").
    """

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        reason: str = "",
        context_window: int | None = None,
    ) -> None:
        super().__init__(
            code, detail, extra={"context_window": context_window} if context_window else None
        )
        self.status = status
        self.retry_after = retry_after
        self.reason = reason or (f"http_{status}" if status else code)
        # A context_length_exceeded refusal: the window the provider said it has, if it did.
        self.context_window = context_window

    @property
    def deployment_fault(self) -> bool:
        """The fault lies with this deployment's credentials or setup (401, 403, a missing
        key), not with the request: another deployment may well answer."""
        return self.status in (401, 403) or self.reason == "misconfigured"


def retry_after_from(
    headers: Mapping[str, str] | None, *, now: float | None = None
) -> float | None:
    """Seconds to wait from `retry-after-ms` (OpenAI) or `retry-after` (seconds or an HTTP
    date); None when absent or unreadable."""
    if not headers:
        return None
    try:
        millis = headers.get("retry-after-ms")
        if millis is not None:
            return max(0.0, float(millis) / 1000)
    except (TypeError, ValueError):
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _headers_of(exc: BaseException) -> Mapping[str, str] | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return headers if isinstance(headers, Mapping) else None


# How providers say a prompt is longer than the model reads: OpenAI and llama-cpp-python's
# server ("This model's maximum context length is 8192 tokens. However, ..."), vLLM (the same
# words, or "... maximum context length is 2048 tokens and your request has ..."), llama.cpp's
# server (type exceed_context_size_error, with n_ctx), Anthropic ("prompt is too long: 210000
# tokens > 200000 maximum").
_CONTEXT_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error"})
_CONTEXT_WORDS = re.compile(
    r"maximum context length|context (?:length|window|size)|prompt is too long", re.IGNORECASE
)
_WINDOW_SAID = re.compile(
    r"maximum context length is (\d+)|context window of (\d+)|tokens? > (\d+) maximum",
    re.IGNORECASE,
)


def context_refusal(exc: BaseException) -> ProviderError | None:
    """The provider's refusal of a prompt longer than its model's context window, as
    context_length_exceeded with the window when the provider says it; None for any other
    error. Parley fits prompts to a known window (llm/context.py); this is how it learns one
    it was not told (llm/failover.py)."""
    body = getattr(exc, "body", None)
    error = body.get("error", body) if isinstance(body, dict) else None
    fields = error if isinstance(error, dict) else {}
    message = fields.get("message") or getattr(exc, "message", None) or str(exc)
    message = message if isinstance(message, str) else str(message)
    said = {str(fields.get("code") or ""), str(fields.get("type") or "")}
    if said.isdisjoint(_CONTEXT_CODES) and not _CONTEXT_WORDS.search(message):
        return None
    window: int | None = None
    n_ctx = fields.get("n_ctx")
    if isinstance(n_ctx, int) and n_ctx > 0:
        window = n_ctx
    elif found := _WINDOW_SAID.search(message):
        window = int(next(group for group in found.groups() if group))
    return ProviderError(
        "context_length_exceeded",
        "The conversation is longer than the model reads"
        + (f" (a context window of {window} tokens)" if window else "")
        + ". Shorten the message or choose a model with a larger context window.",
        status=400,
        context_window=window,
    )


def provider_error_from(exc: BaseException) -> ProviderError:
    """Translate a vendor or transport exception into our own ProviderError."""
    if isinstance(exc, ProviderError):
        return exc
    status = getattr(exc, "status_code", None)
    if status is None:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    name = type(exc).__name__
    if isinstance(status, int):
        if status == 429 or status >= 500 or status == 408:
            code = {429: "provider_rate_limited", 408: "provider_unavailable"}.get(
                status, "provider_failed"
            )
            return ProviderError(
                code,
                f"The model provider answered {status}; try again.",
                status=status,
                retry_after=retry_after_from(_headers_of(exc)),
            )
        if status in (400, 413) and (refused := context_refusal(exc)) is not None:
            return refused
        return ProviderError(
            "provider_rejected",
            f"The model provider refused the request ({status}).",
            status=status,
        )
    transient = ("Timeout", "Connection", "Connect", "ReadError", "RemoteProtocol")
    if isinstance(exc, (TimeoutError, ConnectionError)) or any(t in name for t in transient):
        timed_out = isinstance(exc, TimeoutError) or "Timeout" in name
        return ProviderError(
            "provider_unavailable",
            "The model provider could not be reached; try again.",
            reason="timeout" if timed_out else "connection",
        )
    return ProviderError("provider_error", f"The model provider failed ({name}).")
