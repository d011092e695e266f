"""HTTP rate limits (django-ratelimit, counted in the shared cache) that answer 429 with
Retry-After instead of django-ratelimit's bare 403."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.http import HttpRequest
from django_ratelimit.core import get_usage
from django_ratelimit.exceptions import Ratelimited

from core.observability import metrics

F = TypeVar("F", bound=Callable[..., Any])


class ViewRateLimited(Ratelimited):
    """Ratelimited that knows when the window ends (accounts.middleware turns it into 429)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many requests; retry in {retry_after} s.")
        self.retry_after = max(1, retry_after)
        metrics.REFUSALS.labels("rate_limited", "http").inc()


def rate_limit(
    *, group: str, key: str | Callable[..., str], rate: str, method: str
) -> Callable[[F], F]:
    """Like django_ratelimit's `ratelimit(block=True)`, but the exception carries Retry-After."""

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            usage = get_usage(
                request, group=group, key=key, rate=rate, method=method, increment=True
            )
            if usage is not None and usage["should_limit"]:
                raise ViewRateLimited(int(usage["time_left"]))
            return view(request, *args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorator
