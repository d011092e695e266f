from __future__ import annotations

from typing import Any


class ChatError(Exception):
    """A request the chat cannot carry out; `code` and `detail` go to the client as they are,
    and so do `extra` fields (e.g. `retry_after` of a rate limit)."""

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        retryable: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.retryable = retryable
        self.extra = extra or {}
