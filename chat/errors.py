from __future__ import annotations


class ChatError(Exception):
    """A request the chat cannot carry out; `code` and `detail` go to the client as they are."""

    def __init__(self, code: str, detail: str, *, retryable: bool = False) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.retryable = retryable
