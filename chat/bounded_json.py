"""JSON from clients, bounded: size, nesting depth, and only text PostgreSQL can store.

Every input path parses through `json_parse` (socket frames in chat/consumers.py, REST bodies in
chat/api/parsers.py, the OpenAI endpoint in chat/openai_compat/shapes.py), so a hostile body is
refused in that path's own error shape (`bad_frame`, 400 `parse_error`, `invalid_request_error`)
instead of surfacing as a RecursionError, a database error on a NUL byte or an encode error on a
lone surrogate deep inside a service.
"""

from __future__ import annotations

import json
from typing import NoReturn

# Deeper than any shape Parley accepts (an OpenAI request with content parts is 4 levels), far
# shallower than the parser's own recursion limit.
MAX_DEPTH = 32


class JSONRefused(ValueError):
    """A body that is not JSON Parley accepts; `detail` says why, for the client."""

    def __init__(self, detail: str, *, too_large: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.too_large = too_large


def _no_constant(name: str) -> NoReturn:
    raise JSONRefused(f"{name} is not JSON.")


def json_parse(raw: str | bytes, *, max_size: int, max_depth: int = MAX_DEPTH) -> object:
    """Parse `raw` (at most `max_size` bytes, or characters for text) into plain JSON values.

    Refuses with JSONRefused: a larger body, malformed JSON, NaN/Infinity, nesting deeper than
    `max_depth`, and any string (key or value) holding a NUL character or a lone surrogate.
    """
    if len(raw) > max_size:
        raise JSONRefused(f"The body is larger than {max_size} bytes.", too_large=True)
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise JSONRefused(f"JSON nested deeper than {max_depth} levels.") from None
    except JSONRefused:
        raise
    except ValueError:  # also UnicodeDecodeError, and integers too long to convert
        raise JSONRefused("The body is not valid JSON.") from None
    _check(value, max_depth=max_depth)
    return value


def _check(value: object, *, max_depth: int) -> None:
    # Iterative: the depth limit is what this walk enforces, so it must not recurse itself.
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise JSONRefused(f"JSON nested deeper than {max_depth} levels.")
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_text(key)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise JSONRefused("Strings must not contain NUL (\\u0000) characters.")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise JSONRefused(
                "Strings must be valid Unicode: a lone surrogate (\\ud800-\\udfff) is not."
            ) from None
