"""The most a reply may cost per token, for budget reservations (accounts/quotas.py).

A reply is reserved before it is routed, and the router may answer it from any deployment of
its alias or of the alias's fallbacks, so the reservation is priced at the highest input and
output prices among all of them (disabled ones too: they may be enabled before it runs).
Deployments without prices (those the settings serve) add nothing here; QUOTA_COST_PER_TOKEN
still bounds them.

Asked on every send, so the answer is cached (per alias) and dropped whenever a provider,
deployment or fallback chain is saved or deleted.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from accounts.quotas import TokenPrices
from llm.catalog import default_alias, deployments_for, fallbacks_for
from llm.models import Deployment, FallbackChain, Provider

CACHE_KEY = "llm:price-ceiling:v{version}:{alias}"
VERSION_KEY = "llm:price-ceiling:version"
CACHE_SECONDS = 300


def _version() -> int:
    return int(cache.get_or_set(VERSION_KEY, time.time_ns, None) or 0)


def price_ceiling(*, alias: str = "") -> TokenPrices:
    """The highest prices per million tokens a reply to `alias` (default: the default model)
    may be charged, whichever deployment ends up answering it."""
    alias = alias or default_alias()
    key = CACHE_KEY.format(version=_version(), alias=alias)
    cached: TokenPrices | None = cache.get(key)
    if cached is not None:
        return cached
    candidates = [d for ds in deployments_for([alias, *fallbacks_for(alias)]).values() for d in ds]
    zero = Decimal(0)
    prices = TokenPrices(
        input_per_million=max((d.input_price or zero for d in candidates), default=zero),
        output_per_million=max((d.output_price or zero for d in candidates), default=zero),
    )
    cache.set(key, prices, CACHE_SECONDS)
    return prices


def prices_forget() -> None:
    """Every alias's cached ceiling is stale (a chain change reaches other aliases too)."""
    cache.set(VERSION_KEY, time.time_ns(), None)


def _catalog_changed(sender: Any, **kwargs: Any) -> None:
    # Now, and again after the commit, so no reader caches the old prices in between.
    prices_forget()
    transaction.on_commit(prices_forget)


def receivers_connect() -> None:
    """Called once from LlmConfig.ready, so every process drops the prices an admin changes."""
    for model in (Provider, Deployment, FallbackChain):
        for signal in (post_save, post_delete):
            signal.connect(_catalog_changed, sender=model, dispatch_uid=f"prices-{model.__name__}")
