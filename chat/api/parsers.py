"""The REST API's only parser: JSON bodies bounded in size and depth (chat/bounded_json.py).

DRF's own JSONParser reads the whole stream whatever its size (Django's
DATA_UPLOAD_MAX_MEMORY_SIZE guards only `request.body` and forms) and lets a deeply nested body
raise RecursionError; this one reads at most the limit and refuses the rest as an API error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework import exceptions, status
from rest_framework.parsers import BaseParser

from chat.bounded_json import JSONRefused, json_parse


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"
    default_detail = "The request body is too large."


class BoundedJSONParser(BaseParser):
    media_type = "application/json"

    def parse(
        self,
        stream: IO[bytes] | None,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:  # any JSON value, as DRF's JSONParser returns
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(f"The request body must be at most {limit} bytes.")
        encoding = (parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET
        try:
            text = raw.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            raise exceptions.ParseError(f"The body is not valid {encoding} text.") from None
        try:
            return json_parse(text, max_size=limit)
        except JSONRefused as refused:
            raise exceptions.ParseError(refused.detail) from None
