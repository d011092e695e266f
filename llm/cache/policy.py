"""Per-organisation cache settings (CachePolicy rows) over the CACHE_* defaults, and the
generation parameters a request's key covers."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from llm.cache.keys import Params
from llm.cache_models import CachePolicy
from llm.catalog import deployments_for


@dataclass(frozen=True)
class Policy:
    enabled: bool
    cache_sampled: bool
    semantic_enabled: bool
    threshold: float
    mid_conversation: bool
    ttl: int
    max_entries: int


def policy_default() -> Policy:
    return Policy(
        enabled=settings.CACHE_ENABLED,
        cache_sampled=settings.CACHE_SAMPLED_REPLIES,
        semantic_enabled=settings.CACHE_SEMANTIC_ENABLED,
        threshold=settings.CACHE_SEMANTIC_THRESHOLD,
        mid_conversation=settings.CACHE_SEMANTIC_MID_CONVERSATION,
        ttl=settings.CACHE_TTL,
        max_entries=settings.CACHE_MAX_ENTRIES,
    )


def policy_for(organisation_id: int | None) -> Policy:
    """The organisation's policy: its row's choices, the settings for what it leaves empty.
    CACHE_ENABLED=false switches the cache off for everyone."""
    default = policy_default()
    row = (
        CachePolicy.objects.filter(organisation_id=organisation_id).first()
        if organisation_id is not None
        else None
    )
    if row is None:
        return default
    return Policy(
        enabled=default.enabled and row.enabled,
        cache_sampled=row.cache_sampled,
        semantic_enabled=row.semantic_enabled,
        threshold=row.semantic_threshold
        if row.semantic_threshold is not None
        else default.threshold,
        mid_conversation=row.semantic_mid_conversation,
        ttl=row.ttl_seconds or default.ttl,
        max_entries=row.max_entries or default.max_entries,
    )


def params_for(alias: str) -> Params:
    """Temperatures, token limit and deployments of everything that may serve `alias`."""
    found = [d for d in deployments_for([alias])[alias] if d.enabled]
    temperatures = {float(d.options.get("temperature", settings.LLM_TEMPERATURE)) for d in found}
    return Params(
        temperatures=tuple(sorted(temperatures)),
        max_tokens=settings.LLM_MAX_TOKENS,
        deployments=tuple(sorted(d.label for d in found)),
    )
