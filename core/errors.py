"""One error vocabulary for every edge: a code knows what the WebSocket says about it
(`retryable`), its HTTP status and code on the REST API, and its status, type and code on the
OpenAI-compatible endpoint.

Services raise a ParleyError (or a subclass: chat's ChatError, llm's ProviderError, the budget
and rate-limit errors of accounts) with a code from CODES; the socket, the REST API, the SSE
stream and the OpenAI-compatible endpoint render it from the same entry, so a code cannot
mean two things on two edges. docs/protocol.md and docs/api.md list the codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorCode:
    """One code of the vocabulary, and how each edge says it."""

    code: str
    retryable: bool  # the WebSocket `error` frame's `retryable`: trying again may succeed
    http_status: int  # the REST API's status
    api_code: str  # the REST API's `error.code` (docs/api.md)
    openai_status: int
    openai_type: str  # OpenAI's `error.type`
    openai_code: str  # OpenAI's `error.code`


def _entry(
    code: str,
    *,
    retryable: bool,
    http_status: int,
    openai_type: str,
    api_code: str = "",
    openai_status: int = 0,
    openai_code: str = "",
) -> ErrorCode:
    return ErrorCode(
        code=code,
        retryable=retryable,
        http_status=http_status,
        api_code=api_code or code,
        openai_status=openai_status or http_status,
        openai_type=openai_type,
        openai_code=openai_code or code,
    )


CODES: dict[str, ErrorCode] = {
    entry.code: entry
    for entry in (
        # The request: a frame, a body or a parameter the server cannot take.
        _entry(
            "bad_frame",
            retryable=False,
            http_status=400,
            api_code="invalid",
            openai_type="invalid_request_error",
        ),
        _entry("invalid", retryable=False, http_status=400, openai_type="invalid_request_error"),
        # A message that cannot fit its model's context window even alone (llm/context.py).
        _entry(
            "context_length_exceeded",
            retryable=False,
            http_status=400,
            openai_type="invalid_request_error",
        ),
        _entry("not_found", retryable=False, http_status=404, openai_type="invalid_request_error"),
        _entry(
            "forbidden",
            retryable=False,
            http_status=403,
            api_code="permission_denied",
            openai_type="permission_error",
        ),
        _entry("conflict", retryable=False, http_status=409, openai_type="invalid_request_error"),
        # The organisation's allow-list does not have the model (a tenant feature).
        _entry(
            "model_not_allowed", retryable=False, http_status=403, openai_type="permission_error"
        ),
        # Documents (chat/documents/, docs/documents.md): an upload that is not taken.
        _entry(
            "document_too_large",
            retryable=False,
            http_status=413,
            openai_type="invalid_request_error",
        ),
        _entry(
            "document_unsupported",
            retryable=False,
            http_status=415,
            openai_type="invalid_request_error",
        ),
        _entry(
            "document_unreadable",
            retryable=False,
            http_status=422,
            openai_type="invalid_request_error",
        ),
        _entry(
            "document_too_many_pages",
            retryable=False,
            http_status=422,
            openai_type="invalid_request_error",
        ),
        _entry(
            "documents_disabled", retryable=False, http_status=403, openai_type="permission_error"
        ),
        # Limits: a rate window ends soon; a budget only when its period resets.
        _entry(
            "rate_limited",
            retryable=True,
            http_status=429,
            openai_type="requests",
            openai_code="rate_limit_exceeded",
        ),
        _entry(
            "quota_exceeded",
            retryable=False,
            http_status=429,
            openai_type="insufficient_quota",
            openai_code="insufficient_quota",
        ),
        # The model providers (llm/): a refusal is the request's fault for an OpenAI client
        # (400, as OpenAI answers it), an upstream failure for the REST API (502).
        _entry(
            "provider_rejected",
            retryable=False,
            http_status=502,
            openai_status=400,
            openai_type="invalid_request_error",
        ),
        _entry("provider_error", retryable=False, http_status=502, openai_type="server_error"),
        # What the upstream said, carried through once retries and failover are spent: its
        # rate limit (429, with its Retry-After), a bad answer (5xx, a stream cut before any
        # text: 502); no provider could be reached or tried (timeouts, circuits open: 503).
        _entry(
            "provider_rate_limited",
            retryable=True,
            http_status=429,
            openai_type="requests",
        ),
        _entry("provider_failed", retryable=True, http_status=502, openai_type="server_error"),
        _entry("provider_unavailable", retryable=True, http_status=503, openai_type="server_error"),
        # A reply that stopped before it was complete; its partial text is kept.
        _entry("interrupted", retryable=True, http_status=503, openai_type="server_error"),
        # A send saved with its reply, but the reply could not be handed to its generator (the
        # Celery broker down): the same send again (same client_id) starts it.
        _entry("not_started", retryable=True, http_status=503, openai_type="server_error"),
        # Live updates are cut (the channel layer's Redis is down); they come back by themselves.
        _entry("unavailable", retryable=True, http_status=503, openai_type="server_error"),
        _entry("internal", retryable=False, http_status=500, openai_type="server_error"),
        # nginx's own answers (nginx.conf), never Parley's: no replica took the request, or
        # one took longer than nginx waits. HTTP only; a socket never sees them.
        _entry("bad_gateway", retryable=True, http_status=502, openai_type="server_error"),
        _entry("gateway_timeout", retryable=True, http_status=504, openai_type="server_error"),
    )
}


def error_code(code: str) -> ErrorCode:
    """The vocabulary's entry for `code`. A code outside it (a stored reply's, written by an
    older release) is an internal error that keeps its name where OpenAI shows the code."""
    entry = CODES.get(code)
    if entry is not None:
        return entry
    return ErrorCode(
        code=code,
        retryable=False,
        http_status=500,
        api_code="internal",
        openai_status=500,
        openai_type="server_error",
        openai_code=code,
    )


class ParleyError(Exception):
    """A request that cannot be carried out: `code` (its meaning is in CODES) and `detail` reach
    the client as they are, and so do `extra` fields (e.g. `retry_after` of a rate limit)."""

    def __init__(self, code: str, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.extra = extra or {}

    @property
    def vocabulary(self) -> ErrorCode:
        return error_code(self.code)

    @property
    def retryable(self) -> bool:
        """Whether trying again may succeed: the code says (CODES)."""
        return self.vocabulary.retryable
