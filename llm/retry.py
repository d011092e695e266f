"""When to try a failed reply again, and how long to wait first.

Exponential backoff with full jitter (a random wait between 0 and base·2^n, capped), so that
workers that failed together do not retry together. A provider's Retry-After is a floor on the
wait, honoured up to `retry_after_max`; a longer one ends the reply at once with a retryable
error rather than holding it. Everything is bounded: attempts per reply and a time budget.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from django.conf import settings

from llm.providers.base import ProviderError


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4  # attempts per reply, across every deployment tried
    base_delay: float = 0.5
    max_delay: float = 8.0
    budget: float = 30.0  # seconds from the first attempt after which nothing new starts
    retry_after_max: float = 20.0

    @classmethod
    def from_settings(cls) -> RetryPolicy:
        return cls(
            max_attempts=settings.LLM_RETRY_MAX_ATTEMPTS,
            base_delay=settings.LLM_RETRY_BASE_DELAY,
            max_delay=settings.LLM_RETRY_MAX_DELAY,
            budget=settings.LLM_RETRY_BUDGET,
            retry_after_max=settings.LLM_RETRY_AFTER_MAX,
        )

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """Full jitter: uniform in [0, min(max_delay, base_delay · 2^retry)]."""
        ceiling = min(self.max_delay, self.base_delay * (2**retry))
        return (rng or random).uniform(0, ceiling)

    def delay(
        self, retry: int, errors: list[ProviderError], rng: random.Random | None = None
    ) -> float | None:
        """The wait before the next round of attempts, or None when no retry should happen.

        `errors` are the round's failures; only retryable ones count. The earliest any
        deployment may be tried again is the smallest Retry-After among them (none counts as 0).
        """
        retryable = [e for e in errors if e.retryable]
        if not retryable:
            return None
        asked = min(e.retry_after or 0.0 for e in retryable)
        if asked > self.retry_after_max:
            return None
        return max(self.backoff(retry, rng), asked)
