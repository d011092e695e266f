"""One error body for the whole REST API: {"error": {"code", "detail", ...}}.

Errors of the services (ChatError, the router's ProviderError, budgets and rate limits) keep
their meaning from the WebSocket protocol (docs/protocol.md) and get their HTTP status and code
from the one vocabulary (core/errors.py); DRF's own exceptions keep their status and use their
default code. Fields some errors add: `fields` (validation),
`retry_after` and `resets_at` (429s; Retry-After is also a header).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from django_ratelimit.exceptions import Ratelimited
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import ParleyError
from llm.providers.base import ProviderError

logger = logging.getLogger(__name__)


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "detail": detail, **extra}}


def error_response(
    status: int, code: str, detail: str, *, retry_after: int | None = None, **extra: Any
) -> Response:
    if retry_after is not None:
        extra["retry_after"] = retry_after
    response = Response(error_body(code, detail, **extra), status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def chat_error_response(error: ParleyError) -> Response:
    vocabulary = error.vocabulary
    extra = dict(error.extra)
    retry_after = extra.pop("retry_after", None)
    if isinstance(error, ProviderError) and error.retry_after:
        retry_after = math.ceil(error.retry_after)
    return error_response(
        vocabulary.http_status, vocabulary.api_code, error.detail, retry_after=retry_after, **extra
    )


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's EXCEPTION_HANDLER (project/settings.py): every API error in the one shape."""
    if isinstance(exc, ParleyError):
        return chat_error_response(exc)
    if isinstance(exc, Ratelimited):
        # django-ratelimit's refusal is a PermissionDenied (403); here it is what it means.
        wait = int(getattr(exc, "retry_after", 60))
        return error_response(
            429, "rate_limited", f"Too many requests; retry in {wait} s.", retry_after=wait
        )
    if isinstance(exc, RequestDataTooBig):  # a form past DATA_UPLOAD_MAX_MEMORY_SIZE
        return error_response(413, "too_large", "The request body is too large.")
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        logger.exception("API request failed", exc_info=exc)
        return error_response(500, "internal", "Something went wrong on our side.")
    response = drf_exception_handler(exc, context)
    assert response is not None  # DRF handles every APIException
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body("invalid", "Some fields are not valid.", fields=fields)
        return response
    code = exc.default_code if isinstance(exc.default_code, str) else "error"
    extra: dict[str, Any] = {}
    throttle_wait = getattr(exc, "wait", None)
    if isinstance(exc, exceptions.Throttled) and throttle_wait is not None:
        extra["retry_after"] = max(1, math.ceil(throttle_wait))
        code = "rate_limited"
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    response.data = error_body(code, str(detail), **extra)
    return response


# --- for the schema -----------------------------------------------------------------------


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(
        help_text="A stable machine word: invalid, not_found, rate_limited, …"
    )
    detail = serializers.CharField(help_text="What went wrong, for a person.")
    retry_after = serializers.IntegerField(
        required=False, help_text="Seconds to wait before trying again (429)."
    )
    resets_at = serializers.DateTimeField(
        required=False, help_text="When an exceeded budget resets (quota_exceeded)."
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        # Declared here: a class attribute named `fields` would hide Serializer.fields.
        fields = super().get_fields()
        fields["fields"] = serializers.DictField(
            required=False, help_text="Validation errors by field (code `invalid`)."
        )
        return fields


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()
