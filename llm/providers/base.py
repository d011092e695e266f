"""What every provider kind shares: its configuration and the error it raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ProviderConfig:
    """One configured deployment: a provider kind, a model, and how to reach it."""

    name: str
    kind: str  # local | openai | anthropic | simulated
    model: str
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    timeout: float = 60.0
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        """Local inference is CPU-bound and runs on its own worker queue."""
        return self.kind == "local"


class ProviderError(Exception):
    """A provider failed; `retryable` says whether trying again may succeed."""

    def __init__(self, code: str, detail: str, *, retryable: bool) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.retryable = retryable


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
            return ProviderError(
                "provider_unavailable",
                f"The model provider answered {status}; try again.",
                retryable=True,
            )
        return ProviderError(
            "provider_rejected",
            f"The model provider refused the request ({status}).",
            retryable=False,
        )
    transient = ("Timeout", "Connection", "Connect", "ReadError", "RemoteProtocol")
    if isinstance(exc, (TimeoutError, ConnectionError)) or any(t in name for t in transient):
        return ProviderError(
            "provider_unavailable",
            "The model provider could not be reached; try again.",
            retryable=True,
        )
    return ProviderError("provider_error", f"The model provider failed ({name}).", retryable=False)
